"""Decide what a run directory's report holds: each section only where its data exists.

============================  ======================================================  =========================
file in RUN_DIR               sections                                                 written by
============================  ======================================================  =========================
``results.json`` + runs       configuration, results (mean ± std), learning curves,    ``run``, ``demo``
                              confusion matrices, t-SNE before/after adaptation
``assess.json``               divergences (table + plot), transferability, bound,      ``assess``
                              verdict, t-SNE of source and target features
``results.json`` with rows    benchmark table (mean ± std) and heat map                ``benchmark``
``diagnose.json``             negative-transfer verdict with intervals,                ``diagnose``
                              sample-efficiency curve, forgetting, sharpness
============================  ======================================================  =========================
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .._faults import fault_point
from ..artifacts import FEATURES, PREDICTIONS, load_npz
from ..errors import ConfigError, DataError
from . import plots
from .document import Code, Image, KeyValues, Report, Section, Table, Text


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {str(path)!r} ({exc}); the run may have been interrupted while writing it. "
                        "Re-run the command that produced it.") from None


def load_suite_results(run_dir, is_kind, *, what: str, command: str, build):
    """Read a benchmark's ``results.json`` and build its report with ``build(results, folder)``:
    a missing file, a file of another kind (``is_kind(results)`` false) and content the builder
    cannot read are each one-line :class:`DataError` naming the file and what to do (the drift,
    few-shot and label-spaces reports)."""
    d = Path(run_dir)
    path = d / "results.json"
    if not path.is_file():
        raise DataError(f"{str(d)!r} has no results.json; give the output directory of {command} (continue an "
                        "interrupted one with --resume).")
    res = _read_json(path)
    if not is_kind(res):
        raise DataError(f"{path}: not the results of {what}; use 'transferkit report' for other run directories.")
    try:
        return build(res, d)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise DataError(f"{path}: unexpected content ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); the "
                        "file is damaged or was not written by transferkit: re-run the command that wrote it.") from None


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not np.isfinite(x):
            return str(x)
        return f"{x:.{digits}f}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.{digits}g}"
    return str(x)


def _pm(mean, std) -> str:
    return "-" if mean is None else f"{mean:.3f} ± {std:.3f}"


#: Where each kind of result is read from (for messages that name the file).
SOURCE_FILE = {"experiment": "results.json", "benchmark": "results.json", "assess": "assess.json",
               "diagnose": "diagnose.json"}
_REDO = "the file is damaged or was not written by transferkit: re-run the command that wrote it (or restore it)"


def _bad(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}; {_REDO}.")


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_experiment(path: Path, res: dict) -> None:
    """The parts of a run's ``results.json`` the report relies on, checked before any is used."""
    summary, runs = res["summary"], res["runs"]
    if not isinstance(summary, dict):
        raise _bad(path, f"'summary' must be a mapping of strategy to results, got {type(summary).__name__}")
    if not isinstance(runs, list):
        raise _bad(path, f"'runs' must be a list of runs, got {type(runs).__name__}")
    for key, sm in summary.items():
        if not isinstance(sm, dict):
            raise _bad(path, f"summary[{key!r}] must be a mapping, got {type(sm).__name__}")
        label_free = sm.get("accuracy_mean") is None and sm.get("accuracy_std") is None  # no labeled test split
        for k in ("accuracy_mean", "accuracy_std", "train_time_mean", "trainable_params", "n_seeds"):
            if not _is_num(sm.get(k)) and not (label_free and k in ("accuracy_mean", "accuracy_std")):
                raise _bad(path, f"summary[{key!r}][{k!r}] must be a number, got {sm.get(k)!r}")
        if sm.get("val_accuracy_mean") is not None and not _is_num(sm["val_accuracy_mean"]):
            raise _bad(path, f"summary[{key!r}]['val_accuracy_mean'] must be a number, got {sm['val_accuracy_mean']!r}")
    for i, r in enumerate(runs):
        if not isinstance(r, dict) or not isinstance(r.get("strategy"), str):
            raise _bad(path, f"runs[{i}] must be a mapping with a 'strategy' name")
        if not isinstance(r.get("seed"), int) or isinstance(r.get("seed"), bool):
            raise _bad(path, f"runs[{i}]['seed'] must be an integer, got {r.get('seed')!r}")
        if r.get("accuracy") is not None and not _is_num(r["accuracy"]):
            raise _bad(path, f"runs[{i}]['accuracy'] must be a number, got {r['accuracy']!r}")
    if "seeds" in res and not isinstance(res["seeds"], list):
        raise _bad(path, f"'seeds' must be a list, got {type(res['seeds']).__name__}")


def _warnings_of(path: Path, res: dict) -> list[str]:
    """The ``"warnings"`` of a results file: a list of strings (see TransferKitWarning)."""
    w = res.get("warnings")
    if w is None:
        return []
    if not isinstance(w, list) or not all(isinstance(x, str) for x in w):
        raise _bad(path, "'warnings' must be a list of strings")
    return [" ".join(x.split()) for x in w]


def detect(run_dir: str | Path) -> dict[str, dict]:
    """What ``run_dir`` holds: ``{"experiment"|"benchmark"|"assess"|"diagnose": data}``."""
    d = Path(run_dir)
    if d.exists() and not d.is_dir():
        raise ConfigError(f"{str(d)!r} is a file, not a run directory; give the --out directory of a transferkit "
                          "run, demo, assess, benchmark or diagnose.")
    if not d.is_dir():
        raise ConfigError(f"run directory {str(d)!r} does not exist; give the --out directory of a transferkit "
                          "run, demo, assess, benchmark or diagnose.")
    found: dict[str, dict] = {}
    if (d / "results.json").is_file():
        path = d / "results.json"
        res = _read_json(path)
        if not isinstance(res, dict):
            raise _bad(path, f"expected a JSON object, got {type(res).__name__}")
        if "summary" in res and "runs" in res:
            _check_experiment(path, res)
            found["experiment"] = res
        elif "rows" in res:
            if not isinstance(res["rows"], list) or not all(isinstance(r, dict) for r in res["rows"]):
                raise _bad(path, "'rows' must be a list of mappings")
            found["benchmark"] = res
        else:
            missing = "'runs'" if "summary" in res else "'summary' and 'runs'"
            raise _bad(path, f"has no {missing} (a run's results) and no 'rows' (a benchmark's)")
    for kind, name in (("assess", "assess.json"), ("diagnose", "diagnose.json")):
        if (d / name).is_file():
            res = _read_json(d / name)
            if not isinstance(res, dict):
                raise _bad(d / name, f"expected a JSON object, got {type(res).__name__}")
            found[kind] = res
    return found


def _inside(d: Path, p: Path) -> bool:
    try:
        Path(p).resolve().relative_to(d.resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def _sections(kind: str, d: Path, build, *args) -> list[Section]:
    """``build(*args)``, with an unexpected shape of the file's content (a missing key, a string
    where a number belongs) reported as one line naming the file instead of a traceback."""
    from ..errors import TransferKitError

    try:
        return build(*args)
    except TransferKitError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise _bad(d / SOURCE_FILE[kind], f"unexpected content ({type(exc).__name__}: "
                                          f"{' '.join(str(exc).split())[:120]})") from None


def build_report(run_dir: str | Path) -> Report:
    """The :class:`~transferkit.reports.document.Report` of ``run_dir`` (see the module table)."""
    d = Path(run_dir)
    found = detect(d)
    if not found:
        raise ConfigError(
            f"{str(d)!r} holds nothing transferkit can report on (no results.json, assess.json or diagnose.json); "
            "give the output directory of 'transferkit run', 'demo', 'assess', 'benchmark' or 'diagnose'.")
    name = (found.get("experiment") or found.get("diagnose") or {}).get("name") or d.name
    kinds = ", ".join(found)
    rep = Report(title=f"transferkit report: {name}", subtitle=f"{kinds} · {d.resolve()}")
    warnings: list[str] = []
    for kind, res in found.items():
        warnings += [w for w in _warnings_of(d / SOURCE_FILE[kind], res) if w not in warnings]
    if "experiment" in found:
        rep.sections += _sections("experiment", d, experiment_sections, d, found["experiment"])
        fault_point("report.sections")
    if "assess" in found:
        rep.sections += _sections("assess", d, assess_sections, d, found["assess"])
    if "benchmark" in found:
        rep.sections += _sections("benchmark", d, benchmark_sections, found["benchmark"])
    if "diagnose" in found:
        rep.sections += _sections("diagnose", d, diagnose_sections, found["diagnose"])
        # `transferkit diagnose` keeps the runs of its negative-transfer test in a subfolder
        sub = d / "negative_transfer"
        if "experiment" not in found and (sub / "results.json").is_file() and _inside(d, sub):
            res = detect(sub).get("experiment")
            if res is not None:
                warnings += [w for w in _warnings_of(sub / "results.json", res) if w not in warnings]
                rep.sections.append(Section("Runs behind the negative-transfer test").add(
                    Text(f"the {', '.join(res['summary'])} runs in {sub.name}/ (the same seeds and splits)")))
                for sec in _sections("experiment", sub, experiment_sections, sub, res):
                    sec.level = 3
                    rep.sections.append(sec)
    if warnings:  # first, so that nobody reads a number without its caveat
        sec = Section("Warnings")
        sec.add(Text(f"{len(warnings)} warning(s) were raised during the run; read them before the results.",
                     emphasis=True, warning=True))
        sec.add(*[Text(w, warning=True) for w in warnings])
        rep.sections.insert(0, sec)
    return rep


# ---------------------------------------------------------------------------- experiment
def _config_summary(d: Path, res: dict) -> Section:
    sec = Section("Configuration")
    cfg = {}
    text = ""
    if (d / "config.yaml").is_file():
        from ..config import read_yaml_file

        try:
            cfg = read_yaml_file(d / "config.yaml") or {}
            text = (d / "config.yaml").read_text(encoding="utf-8")
        except (ConfigError, OSError, UnicodeDecodeError):
            cfg = {}  # the configuration section is an extra: a damaged config.yaml is skipped
        if not isinstance(cfg, dict):
            cfg = {}
    items = [("name", res.get("name", "-")), ("target", res.get("target", "-"))]
    if res.get("source"):
        items.append(("source", res["source"]))
    bb = cfg.get("backbone") or {}
    bb = bb if isinstance(bb, dict) else {"name": str(bb)}
    items.append(("backbone", str(res.get("backbone", bb.get("name", "-")))
                  + (f" at {bb['image_size']}px" if bb.get("image_size") else "")
                  + ("" if bb.get("pretrained", True) else " (random init)")))
    split = cfg.get("split") or {}
    if isinstance(split, dict) and split:
        parts = []
        if split.get("labels_per_class") is not None:
            parts.append(f"{split['labels_per_class']} labels per class train")
        else:
            parts.append(f"train fraction {split.get('train_fraction')}")
        parts.append(f"validation fraction of the rest {split.get('val_fraction')}")
        items.append(("split", "; ".join(parts)))
    strategies = cfg.get("strategies") or [{"name": k} for k in res.get("summary", {})]
    for s in strategies if isinstance(strategies, list) else []:
        s = {"name": s} if isinstance(s, str) else dict(s) if isinstance(s, dict) else {"name": str(s)}
        key = s.pop("label", None) or s.get("name")
        nm = s.pop("name", key)
        params = ", ".join(f"{k}={v}" for k, v in s.items())
        items.append((f"strategy {key}", nm + (f" ({params})" if params else "")))
    items.append(("seeds", ", ".join(map(str, res.get("seeds", [])))))
    items.append(("model selection", res.get("selection", "-")))
    if _is_num(res.get("wall_time")):
        items.append(("wall time", f"{res['wall_time']:.0f} s"))
    env = _read_json(d / "environment.json") if (d / "environment.json").is_file() else None
    if isinstance(env, dict):
        pk = env.get("packages", {})
        pk = pk if isinstance(pk, dict) else {}
        items.append(("environment", f"Python {env.get('python')}, torch {pk.get('torch')}, transferkit "
                                     f"{pk.get('transferkit')}, {env.get('platform')}"))
    sec.add(KeyValues([(k, str(v)) for k, v in items]))
    if text:
        sec.add(Code(text, summary="resolved config.yaml"))
    return sec


def _run_dirs(d: Path, res: dict, key: str) -> list[Path]:
    out = []
    for r in res["runs"]:
        if r["strategy"] != key:
            continue
        p = d / key / f"seed{r['seed']}"
        if not p.is_dir() and isinstance(r.get("run_dir"), str):
            p = Path(r["run_dir"])
        if _inside(d, p):  # a results.json from elsewhere must not make the report read outside the run
            out.append(p)
    return out


def _history(p: Path) -> list[dict]:
    f = p / "metrics.jsonl"
    if not f.is_file():
        return []
    rows: dict[int, dict] = {}
    for i, line in enumerate(f.read_text().splitlines()):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by an interruption
            rows[int(row.get("epoch", i))] = row  # a resumed run repeats epochs: keep the last
    return [rows[k] for k in sorted(rows)]


def experiment_sections(d: Path, res: dict) -> list[Section]:
    from ..experiment import gains_over_baseline

    summary = res["summary"]
    secs = [_config_summary(d, res)]
    sec = Section("Results")
    head = ["strategy", "test accuracy (mean ± std)", "val accuracy", "train time (s)", "trainable params", "seeds"]
    rows = [[k, _pm(s["accuracy_mean"], s["accuracy_std"]), _fmt(s.get("val_accuracy_mean")),
             f"{s['train_time_mean']:.1f}", f"{s['trainable_params']:,}", str(s["n_seeds"])]
            for k, s in summary.items()]
    for k, b in (res.get("baselines") or {}).items():
        if isinstance(b, dict) and _is_num(b.get("accuracy_mean")) and _is_num(b.get("accuracy_std")):
            rows.append([f"{k} (baseline, from the {b.get('from', 'training labels')})",
                         _pm(b["accuracy_mean"], b["accuracy_std"]), "-", "0.0", "0", _fmt(b.get("n_seeds"))])
    sec.add(Table(head, rows, caption="mean ± sample standard deviation over seeds; test split scored once after fit; "
                                      "majority_class: always the most frequent training class; class_prior: random "
                                      "guesses with the training class frequencies (expected accuracy)"))
    gains = gains_over_baseline(summary)
    if gains:
        sec.add(Text(gains))
    if res.get("label_free"):
        from ..experiment import LABEL_FREE_TITLE, label_free_note

        lf = res["label_free"]
        sec.add(Table(["strategy", "mean entropy", "predicted class shares", "selection score", "same as source-only"],
                      [[k, f"{v['entropy_mean']:.3f} of {v['entropy_max']:.3f}",
                        " / ".join(f"{x:.2f}" for x in v["predicted_priors"][:10]), _fmt(v.get("selection_score"), 4),
                        "-" if v.get("agreement_with_source_only") is None else f"{v['agreement_with_source_only']:.1%}"]
                       for k, v in lf.items()], caption=LABEL_FREE_TITLE))
        sec.add(Text(label_free_note(lf)))
    seeds = list(dict.fromkeys(r["seed"] for r in res["runs"]))
    by = {(r["strategy"], r["seed"]): r for r in res["runs"]}
    sec.add(Table(["strategy"] + [f"seed {s}" for s in seeds],
                  [[k] + [_fmt(by[(k, s)]["accuracy"]) if (k, s) in by else "-" for s in seeds] for k in summary],
                  caption="test accuracy per seed"))
    tasks = _task_table(res["runs"])
    if tasks is not None:
        sec.add(tasks)
    scored = {k: s for k, s in summary.items() if s["accuracy_mean"] is not None}
    if scored:
        sec.add(Image("accuracy", plots.accuracy_bars(list(scored), [s["accuracy_mean"] for s in scored.values()],
                                                      [s["accuracy_std"] for s in scored.values()]),
                      caption="test accuracy, mean ± std over seeds"))
    secs.append(sec)

    curves = Section("Learning curves")
    no_epochs = []
    for key in summary:
        hs = [h for h in (_history(p) for p in _run_dirs(d, res, key)) if h]
        if not hs:
            no_epochs.append(key)
            continue
        curves.add(Image(f"curves-{key}", plots.learning_curves(hs, title=key),
                         caption=f"{key}: per-epoch training and validation metrics, "
                                 f"mean ± std over {len(hs)} seed(s)"))
    if no_epochs:
        curves.add(Text(f"no per-epoch metrics for {', '.join(no_epochs)} (closed-form head or no metrics.jsonl)."))
    if any(isinstance(b, Image) for b in curves.blocks):
        secs.append(curves)

    cms = Section("Confusion matrices")
    for key in summary:
        cm, classes, n = confusion_from_runs(_run_dirs(d, res, key))
        if cm is not None:
            cms.add(Image(f"confusion-{key}", plots.confusion_matrix_plot(cm, classes, title=key),
                          caption=f"{key}: test-split confusion matrix, counts summed over {n} seed(s), "
                                  "colour = fraction of the true class"))
    if cms.blocks:
        secs.append(cms)

    ts = tsne_section(d, res)
    if ts is not None:
        secs.append(ts)
    return secs


#: The metrics a multi-task run records per head, in the order the table shows them.
_TASK_METRICS = ("accuracy", "mse", "rmse", "mae", "r2")


def _task_table(runs: list[dict]) -> Table | None:
    """Per strategy and task head: each recorded metric (accuracy; MSE, RMSE, MAE and R^2 in the
    target's units for a regression head), mean ± std over seeds; ``None`` when no run has heads."""
    from ..metrics._base import mean_std

    vals: dict = {}
    for r in runs:
        for task, m in (r.get("tasks") or {}).items():
            if not isinstance(m, dict):
                continue
            for k in _TASK_METRICS:
                if _is_num(m.get(k)):
                    vals.setdefault((r["strategy"], task, k), []).append(float(m[k]))
    if not vals:
        return None
    rows = []
    for (strat, task) in dict.fromkeys((a, b) for a, b, _ in vals):
        cells = []
        for k in _TASK_METRICS:
            v = vals.get((strat, task, k))
            cells.append("-" if not v else _pm(*mean_std(v)))
        rows.append([strat, task, *cells])
    return Table(["strategy", "task", "accuracy", "MSE", "RMSE", "MAE", "R^2"], rows,
                 caption="each task head on the test split (regression: in the target's units), mean ± std over seeds")


def confusion_from_runs(run_dirs) -> tuple[np.ndarray | None, list[str], int]:
    """``(counts, class_names, n_runs)``: the confusion matrix (rows true, columns predicted)
    of the labeled test samples in each run's ``predictions.npz``, summed over runs."""
    cm, classes, n = None, [], 0
    for p in run_dirs:
        if not (Path(p) / PREDICTIONS).is_file():
            continue
        f = Path(p) / PREDICTIONS
        z = load_npz(f, required=("y_true", "y_pred", "classes"))
        yt, yp = z["y_true"], z["y_pred"]
        if (yt.ndim != 1 or yp.shape != yt.shape or yt.dtype.kind not in "iu" or yp.dtype.kind not in "iu"
                or z["classes"].ndim != 1):
            raise _bad(f, f"y_true {yt.shape} {yt.dtype} and y_pred {yp.shape} {yp.dtype} must be integer "
                          "label vectors of one length, classes a vector of names")
        k = max(len(z["classes"]), int(max(yt.max(initial=0), yp.max(initial=0))) + 1)
        if k > MAX_CLASSES or yt.min(initial=0) < -1 or yp.min(initial=0) < 0:
            raise _bad(f, f"labels must lie in 0..{MAX_CLASSES - 1} (y_true may be -1 for unlabeled), got "
                          f"{int(min(yt.min(initial=0), yp.min(initial=0)))}..{k - 1}")
        m = yt >= 0
        c = np.zeros((k, k), dtype=np.int64)
        np.add.at(c, (yt[m], yp[m]), 1)
        if cm is None:
            cm, classes = c, [str(x) for x in z["classes"]]
        elif cm.shape == c.shape:
            cm = cm + c
        else:
            continue
        n += 1
    return cm, classes, n


#: The largest label space a confusion matrix is drawn for (k x k counts).
MAX_CLASSES = 1000


def _features(f: Path) -> dict:
    """A ``features.npz`` checked before t-SNE: 2-D finite float features with one label per row."""
    z = load_npz(f, required=("y_target",))
    for stage in ("before", "after"):
        t, s = z.get(f"{stage}_target"), z.get(f"{stage}_source")
        for name, X, y in ((f"{stage}_target", t, z.get("y_target")), (f"{stage}_source", s, z.get("y_source"))):
            if X is None:
                continue
            if X.ndim != 2 or X.dtype.kind != "f" or not len(X) or not np.isfinite(X).all():
                raise _bad(f, f"{name} must be a non-empty 2-D array of finite floats, got {X.shape} {X.dtype}")
            if y is None or y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(X):
                what = "are missing" if y is None else f"are {y.shape} {y.dtype}"
                raise _bad(f, f"{name} has {len(X)} rows but its labels {what}")
        if t is not None and s is not None and t.shape[1] != s.shape[1]:
            raise _bad(f, f"{stage}_source and {stage}_target differ in width ({s.shape[1]} vs {t.shape[1]})")
    return z


def _embedding_plots(z: dict, stage: str, title: str, cache: dict, seed: int = 0):
    t = z.get(f"{stage}_target")
    if t is None:
        return None, None
    s = z.get(f"{stage}_source")
    X = t if s is None else np.vstack([s, t])
    # the same features reached by two strategies (e.g. the pretrained backbone of feature
    # extraction and of fine-tuning) may differ in the last float bits: compare with a tolerance
    for h, (X0, _) in cache.items():
        if X0.shape == X.shape and np.allclose(X0, X, rtol=0, atol=1e-4 * (float(np.abs(X0).max()) + 1e-12)):
            return h, None
    h = hashlib.sha1(np.ascontiguousarray(X).tobytes()).hexdigest()
    dom = None if s is None else np.array(["source"] * len(s) + ["target"] * len(t))
    y = z["y_target"] if s is None else np.r_[z["y_source"], z["y_target"]]
    Y = plots.tsne_embed(X, seed=seed)
    png = plots.tsne_plot(Y, dom, y, [str(c) for c in z.get("classes", [])], title=title)
    cache[h] = (X, png)
    return h, png


def tsne_section(d: Path, res: dict) -> Section | None:
    """t-SNE of the saved feature subsamples; an embedding shared by several strategies (the
    same pretrained features) is drawn once and its caption names them all."""
    sec = Section("Feature space (t-SNE)")
    cache: dict[str, tuple] = {}
    owners: dict[str, list[str]] = {}
    order: list[tuple[str, str, str]] = []  # (hash, stage, desc)
    for key in res["summary"]:
        for p in _run_dirs(d, res, key):
            if (p / FEATURES).is_file():
                z = _features(p / FEATURES)
                break
        else:
            continue
        for stage in ("before", "after"):
            desc = str(z.get(f"{stage}_desc", stage))
            h, _ = _embedding_plots(z, stage, f"{stage} adaptation: {desc}", cache)
            if h is None:
                continue
            if h not in owners:
                owners[h] = []
                order.append((h, stage, desc))
            owners[h].append(key)
    if not order:
        return None
    sec.add(Text("t-SNE (perplexity 30, seed 0) of the first 50 principal components of up to 300 source and 300 "
                 "target test samples per strategy (first seed). 'before': the starting backbone's features; "
                 "'after': the fine-tuned backbone or the adapter's bottleneck. Distances between clusters in "
                 "t-SNE are not meaningful; overlap of the domains and separation of the classes are."))
    order.sort(key=lambda o: o[1] != "before")  # every "before" first, then every "after" (stable)
    for h, stage, desc in order:
        who = ", ".join(owners[h])
        sec.add(Image(f"tsne-{stage}-{who}", cache[h][1], caption=f"{stage} adaptation ({desc}): {who}"))
    return sec


# ---------------------------------------------------------------------------- assess
def assess_sections(d: Path, res: dict) -> list[Section]:
    secs = []
    sec = Section("Assessment: source and target")
    sp = res.get("target_split")
    if isinstance(sp, dict):
        from ..assess import labels_used_text

        split_rows = [("target labels used", labels_used_text(sp)), ("split", str(sp.get("text"))),
                      ("held out", str(sp.get("held_out")))] + [("note", str(n)) for n in sp.get("notes") or []]
    else:  # an assess.json written before assess took the run's split
        split_rows = [("target labels used", "not recorded: this assess.json predates the split options; that "
                                             "version of assess read every labeled target sample")]
    sec.add(KeyValues([("source", f"{res.get('source')} ({res.get('n_source')} samples)"),
                       ("target", f"{res.get('target')} ({res.get('n_target')} samples, "
                                  f"{res.get('n_target_labeled')} labeled)"),
                       *split_rows,
                       ("feature space", str(res.get("feature_space"))), ("seed", str(res.get("seed")))]))
    v = res.get("verdict") or {}
    if v.get("text"):
        sec.add(Text("verdict: " + v["text"], emphasis=True))
    secs.append(sec)
    div = res.get("divergences") or {}
    if div:
        s = Section("Divergences")
        rows, names, vals, ps = [], [], [], []
        for k, r in div.items():
            note = r.get("space", "")
            if k in ("ks_features", "mannwhitney_features"):
                note = "fraction of features shifted (BH, alpha 0.05)"
            if k == "label_shift":
                note = "JS divergence of class frequencies, chi-square test"
            rows.append([k, _fmt(r.get("value"), 4), _fmt(r.get("p_value"), 3) if "p_value" in r else "-", note])
            if r.get("value") is not None and np.isfinite(r["value"]):
                names.append(k)
                vals.append(float(r["value"]))
                ps.append(r.get("p_value"))
        s.add(Table(["divergence", "value", "p-value", "note"], rows))
        if names:
            s.add(Image("divergences", plots.divergence_plot(names, vals, ps),
                        caption="divergences in the first backbone's feature space (scales differ per measure)"))
        secs.append(s)
    pe = res.get("label_shift_estimate") or {}
    if pe.get("priors") is not None:  # assess: the target's class priors without its labels
        s = Section("Class priors without target labels")
        obs = ((div.get("label_shift") or {}).get("details") or {}).get("target_distribution")
        s.add(Table(["class", "source", "target (MLLS)", "95% CI", "BBSE"] + (["observed"] if obs else []),
                    [[str(c), _fmt(pe["source_priors"][i]), _fmt(pe["priors"][i]),
                      f"{_fmt(pe['ci_low'][i], 2)} to {_fmt(pe['ci_high'][i], 2)}", _fmt(pe["bbse"]["priors"][i])]
                     + ([_fmt(obs[i])] if obs else []) for i, c in enumerate(pe["classes"])],
                    caption=f"source-only logistic regression, {pe['n_source']} source / {pe['n_target']} target rows; "
                            f"A-distance {pe['a_distance_before']:.3f} before and {pe['a_distance_reweighted']:.3f} "
                            "after reweighting the source by the estimate: " + (
                                "a prior change explains the shift" if pe["explained"] else
                                "the inputs moved too, so the estimate (which assumes only the priors moved) is "
                                "unreliable") + ("; observed: the target's training labels" if obs else "")))
        secs.append(s)
    trans = res.get("transferability") or {}
    if trans:
        s = Section("Transferability (no training)")
        names = sorted({k for v in trans.values() for k in v})
        def cell(sc, n):
            if n not in sc:
                return "-"
            sat = isinstance(sc[n].get("details"), dict) and sc[n]["details"].get("saturated") is True
            return _fmt(sc[n]["value"], 4) + ("*" if sat else "")

        rows = [[b] + [cell(sc, n) for n in names] for b, sc in trans.items()]
        saturated = any(c.endswith("*") for r in rows for c in r[1:])
        s.add(Table(["backbone"] + names, rows,
                    caption=("scores on the target's training labels" if isinstance(sp, dict) else
                             "scores on the labeled target samples") + "; higher is better for every score"
                    + ("; * saturated: no more labeled samples than feature dimensions, the score is "
                       "n_classes - 1 whatever the features (read hscore_shrinkage)" if saturated else "")))
        secs.append(s)
    b = res.get("bound") or {}
    extra = []
    if res.get("source_only_accuracy") is not None:
        on = "the target's training labels" if isinstance(sp, dict) else "the labeled target"
        extra.append((f"source-only accuracy on {on}", _fmt(res["source_only_accuracy"])))
    o = res.get("target_oracle") or {}
    if o.get("accuracy") is not None:
        extra.append((f"target oracle ({o['n_folds']}-fold CV on the training labels)",
                      f"{o['accuracy']:.3f} ± {o['accuracy_se']:.3f}; headroom over source-only "
                      f"{100 * o['headroom']:+.1f} ± {100 * o['headroom_se']:.1f} points"))
    if b.get("estimate") is not None:
        extra.append(("Ben-David bound (estimate)",
                      f"{b['estimate']:.3f} = source error {b['source_error']:.3f} + A-distance/2 "
                      f"{b['half_a_distance']:.3f} + lambda {b['lambda_hat']:.3f}"))
        extra += [("bound caveat", str(c)) for c in b.get("caveats") or []]
    elif b.get("note"):
        extra.append(("Ben-David bound", b["note"]))
    if extra or v.get("reasons") or v.get("advice"):
        s = Section("Verdict")  # the verdict's text heads the report; here its reasons and numbers
        if extra:
            s.add(KeyValues(extra))
        if v.get("reasons"):
            s.add(Table(["reason"], [[r] for r in v["reasons"]]))
        if v.get("advice"):
            s.add(Table(["advice"], [[a] for a in v["advice"]]))
        secs.append(s)
    if (d / FEATURES).is_file():
        z = _features(d / FEATURES)
        _, png = _embedding_plots(z, "before", "source and target features", {})
        if png is not None:
            s = Section("Feature space (t-SNE)")
            s.add(Image("tsne-assess", png, caption=f"t-SNE of {str(z.get('before_desc', 'features'))}: up to 300 "
                                                    "samples per domain, first 50 principal components, seed 0"))
            secs.append(s)
    return secs


# ---------------------------------------------------------------------------- benchmark
def benchmark_sections(res: dict) -> list[Section]:
    rows = res["rows"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["task"]): r for r in rows}
    s = Section("Benchmark results")
    if res.get("source"):
        specs = [(f"task {t}", spec) for t, spec in (res.get("tasks") or {}).items()]
        s.add(KeyValues([("source", res["source"])] + specs))
    s.add(Table(["method"] + tasks, [[m] + [_pm(by[(m, t)]["accuracy_mean"], by[(m, t)]["accuracy_std"])
                                            if (m, t) in by else "-" for t in tasks] for m in methods],
                caption="target test accuracy, mean ± sample std over seeds"))
    M = np.array([[by[(m, t)]["accuracy_mean"] if (m, t) in by else np.nan for t in tasks] for m in methods])
    s.add(Image("benchmark", plots.heatmap(M, methods, tasks, title="mean target test accuracy"),
                caption="mean target test accuracy per method and task"))
    if res.get("protocol"):
        s.add(Text("protocol: " + res["protocol"]))
    return [s]


# ---------------------------------------------------------------------------- diagnose
def _nt_rows(nt: dict) -> list[tuple[str, dict]]:
    """``[(label, comparison)]`` from a negative-transfer result: a single comparison (with
    ``source_only`` nested), or a mapping of named comparisons."""
    if "verdict" in nt:
        label = f"{nt.get('transfer', 'transfer')} vs {nt.get('baseline', 'baseline')}"
        out = [(label, nt)]
        so = nt.get("source_only")
        if isinstance(so, dict) and "verdict" in so:
            out.append((f"source_only vs {nt.get('baseline', 'baseline')}", so))
        return out
    return [(k, v) for k, v in nt.items() if isinstance(v, dict) and "verdict" in v]


def _scalars(obj, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten scalars of a nested mapping (lists of numbers shown inline, long lists counted)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("histories", "experiment", "runs"):
                continue
            out += _scalars(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}")
    elif isinstance(obj, list):
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in obj) and len(obj) <= 12:
            out.append((prefix.rstrip("."), ", ".join(_fmt(x) for x in obj)))
        elif obj and not isinstance(obj[0], (dict, list)):
            out.append((prefix.rstrip("."), ", ".join(map(str, obj[:12])) + (" ..." if len(obj) > 12 else "")))
    elif obj is not None:
        out.append((prefix.rstrip("."), _fmt(obj, 4)))
    return out


def _curve_data(se: dict):
    """``(x, xlabels, {strategy: (means, stds)})`` from a sample-efficiency result (the
    ``curve`` rows of :func:`transferkit.diagnostics.sample_efficiency.run_sample_efficiency`)."""
    curve = se.get("curve") or []
    if not curve:
        return None
    x = [float(r["labels_per_class"]) for r in curve]
    labels = [str(r.get("label", f"{v:g}")) for r, v in zip(curve, x)]
    names = list(dict.fromkeys(k for r in curve for k in r.get("accuracy", {})))
    curves = {n: ([r["accuracy"][n]["mean"] if n in r["accuracy"] else np.nan for r in curve],
                  [r["accuracy"][n].get("std", 0.0) if n in r["accuracy"] else np.nan for r in curve]) for n in names}
    return x, labels, curves


def diagnose_sections(res: dict) -> list[Section]:
    secs = []
    nt = res.get("negative_transfer")
    if isinstance(nt, dict):
        comps = _nt_rows(nt)
        if comps:
            s = Section("Negative transfer")
            for label, c in comps:
                s.add(Text(f"{label}: {c['verdict']} (difference {c['delta_mean']:+.3f}, "
                           f"{c.get('confidence', 0.95):.0%} CI [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], "
                           f"{c.get('n_seeds', '?')} seeds)", emphasis=True))
            s.add(Table(["comparison", "verdict", "difference (mean)", "CI low", "CI high", "p-value", "seeds",
                         "interval"],
                        [[label, c["verdict"], f"{c['delta_mean']:+.3f}", f"{c['ci_low']:+.3f}", f"{c['ci_high']:+.3f}",
                          _fmt(c.get("p_value")), str(c.get("n_seeds", "-")), str(c.get("method", "-"))]
                         for label, c in comps]))
            s.add(Image("negative-transfer", plots.interval_plot(
                [lb for lb, _ in comps], [c["delta_mean"] for _, c in comps], [c["ci_low"] for _, c in comps],
                [c["ci_high"] for _, c in comps], title="test-accuracy difference and confidence interval"),
                caption="green: interval above 0 (positive transfer); red: below 0 (negative transfer); "
                        "grey: contains 0"))
            rv = nt.get("rising_val_loss")
            if isinstance(rv, dict) and rv.get("flagged"):
                s.add(Text(f"warning: the validation loss of {nt.get('transfer', 'transfer')} rose during training on "
                           f"seed(s) {rv.get('seeds')} ({rv.get('rule', '')})."))
            secs.append(s)
    se = res.get("sample_efficiency")
    if isinstance(se, dict):
        data = _curve_data(se)
        if data is not None:
            x, labels, curves = data
            s = Section("Sample efficiency")
            if se.get("headline"):
                s.add(Text(se["headline"], emphasis=True))
            s.add(Image("sample-efficiency", plots.sample_efficiency_plot(x, curves, labels),
                        caption="test accuracy against labeled samples per class, mean ± std over seeds"))
            saved = {r.get("label"): r for r in se.get("labels_saved") or []}
            names = list(curves)
            head = ["labels/class"] + names
            if saved:
                head.append(f"{se.get('baseline', 'baseline')} labels/class to match {se.get('transfer', 'transfer')}")
            rows = []
            for i, lab in enumerate(labels):
                row = [lab] + [_pm(curves[n][0][i], curves[n][1][i]) for n in names]
                if saved:
                    row.append(str(saved.get(lab, {}).get("display", "-")))
                rows.append(row)
            s.add(Table(head, rows))
            secs.append(s)
    sh = res.get("sharpness")
    if isinstance(sh, dict):
        per = {k: v for k, v in sh.items() if isinstance(v, dict) and "mean" in v}
        if per:
            s = Section("Sharpness")
            if isinstance(sh.get("quantity"), str):
                s.add(Text(sh["quantity"]))
            s.add(Table(["strategy", "top Hessian eigenvalue (mean ± std)", "per seed", "converged"],
                        [[k, f"{v['mean']:.4g} ± {v.get('std', 0.0):.3g}",
                          ", ".join(f"{x:.4g}" for x in v.get("per_seed", [])), _fmt(v.get("converged"))]
                         for k, v in per.items()]))
            secs.append(s)
            sh = None
    for key, title, v in (("forgetting", "Forgetting", res.get("forgetting")), ("sharpness", "Sharpness", sh),
                          ("convergence", "Convergence speed", res.get("convergence"))):
        if isinstance(v, dict) and v:
            items = _scalars(v)
            if items:
                secs.append(Section(title).add(KeyValues(items)))
    notes = res.get("notes")
    if isinstance(notes, list) and notes:
        secs.append(Section("Notes").add(Table(["note"], [[str(n)] for n in notes])))
    return secs
