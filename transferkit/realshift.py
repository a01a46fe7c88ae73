"""``transferkit benchmark real-shift``: transfer on data with real domain shift, from real source models.

Tasks (:data:`REAL_TASKS`), each its own source, target and backbone:

- **source-free digits** (``usps_digits``, ``svhn_digits``, ``mnist_digits``): a digit CNN trained on
  USPS, SVHN or MNIST (``usps_cnn``...; its training data does not ship offline, so only the
  model is transferred) applied to scikit-learn's digits at the net's input side. Rows:
  ``source_only`` (the net's own classifier, nothing adapted), ``adabn`` (BatchNorm statistics
  of the unlabeled target pool), ``mlls`` (the classifier's outputs corrected to target class
  priors estimated by EM on the pool, source priors taken as uniform), ``adabn+mlls``, and the
  ``target_only`` oracle (a logistic regression on the net's frozen features, trained on the
  pool's labels). SHOT's published USPS->MNIST 87.8 -> 98.4 is a different target. Each target is
  framed as the source's own data is: USPS and SVHN digits fill their 16x16 and 32x32 frames as the
  8x8 originals do; MNIST digits sit in a 20x20 box inside 28x28, so the MNIST task reads
  ``digits:size=28,pad=4`` (fixed from MNIST's documented format, not tuned on target labels).
- **features** (``fashion_c3``, ``fashion_c5``: Fashion-MNIST train -> its test images with one
  of four corruptions each (Gaussian noise, defocus blur, contrast, fog) at severity 3 or 5,
  EfficientNet-Lite0 at 64 px; ``foods_drugs``: fine-food reviews -> drug reviews with ``minilm``,
  sentiment great/other, neutral drug reviews dropped, "great" = 5 stars vs a rating above 6).
  Rows: ``majority_class`` (the labeled source's most frequent class for every row: the floor a
  model must clear), ``source_only``, the package's DA default (``adapt``: JAN on frozen features), the other
  methods of each family (deep: dan, dann, cdan, mcc; shallow: coral, sa, tca; semi-supervised:
  self_training), and the ``target_only`` oracle (the same adapter trained on the pool's labels).

Per seed the target is split 50/50 (stratified) into an unlabeled pool and a test split;
checkpoints are selected without target labels (``dev``; ``source_only``: the source validation
loss); target labels only score the test split and train the oracle. Each finished cell is kept
under ``cells/`` so an interrupted run continues.
"""

from __future__ import annotations

import json
import time

import numpy as np

from .errors import ConfigError

CORRUPTIONS_MIX = ("gaussian_noise", "defocus_blur", "contrast", "fog")
FASHION_SOURCE = "fashion_mnist:split=train,n=2000"


def _fashion_target(severity: int) -> list[str]:
    return [f"fashion_mnist:split=test,subset={k}/20,corrupt={c},severity={severity}"
            for k, c in enumerate(CORRUPTIONS_MIX)]


REAL_TASKS: dict[str, dict] = {
    "usps_digits": {"kind": "source_free", "backbone": "usps_cnn", "target": "digits:size=16"},
    "svhn_digits": {"kind": "source_free", "backbone": "svhn_cnn", "target": "digits:size=32"},
    "mnist_digits": {"kind": "source_free", "backbone": "mnist_cnn", "target": "digits:size=28,pad=4"},
    "fashion_c3": {"kind": "features", "backbone": "efficientnet_lite0", "image_size": 64, "source": FASHION_SOURCE,
                   "target": _fashion_target(3)},
    "fashion_c5": {"kind": "features", "backbone": "efficientnet_lite0", "image_size": 64, "source": FASHION_SOURCE,
                   "target": _fashion_target(5)},
    "foods_drugs": {"kind": "features", "backbone": "minilm", "source": "fine_foods:split=train,n=2000",
                    "target": "drug_reviews:labels=binary,neutral=drop"},
}
SOURCE_FREE_METHODS = ["source_only", "adabn", "mlls", "adabn+mlls", "target_only"]
FAMILIES = {"deep": ["adapt", "dan", "dann", "cdan", "mcc"], "shallow": ["coral", "sa", "tca"],
            "semi": ["self_training"]}
FEATURE_METHODS = ["majority_class", "source_only", *[m for ms in FAMILIES.values() for m in ms], "target_only"]
#: what ``adapt`` (the package's default) is: ``Adapt()``'s method
DEFAULT_METHOD = "jan"


def methods_for(task: str) -> list[str]:
    return SOURCE_FREE_METHODS if REAL_TASKS[task]["kind"] == "source_free" else FEATURE_METHODS


def family_of(method: str) -> str:
    for fam, ms in FAMILIES.items():
        if method in ms:
            return fam
    return "source-free" if method in ("adabn", "mlls", "adabn+mlls") else "baseline"


def check_real_args(tasks=None, methods=None, seeds: int = 3, epochs: int = 30) -> dict:
    """Validate before any work: known tasks, methods each task can run, seeds >= 1."""
    from ._validation import suggest

    tasks = list(REAL_TASKS) if tasks is None else list(tasks)
    for t in tasks:
        if t not in REAL_TASKS:
            raise ConfigError(f"unknown real-shift task {t!r}." + suggest(t, list(REAL_TASKS))
                              + f" Tasks: {', '.join(REAL_TASKS)}.")
    if methods is not None:
        known = set(SOURCE_FREE_METHODS) | set(FEATURE_METHODS)
        for m in methods:
            if m not in known:
                raise ConfigError(f"unknown real-shift method {m!r}." + suggest(m, sorted(known))
                                  + f" Source-free tasks: {', '.join(SOURCE_FREE_METHODS)}; feature tasks: "
                                  f"{', '.join(FEATURE_METHODS)}.")
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a whole number >= 1, got {seeds!r}.")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a whole number >= 1, got {epochs!r}.")
    return {"tasks": tasks, "methods": None if methods is None else list(methods), "seeds": seeds, "epochs": epochs}


def _load(spec):
    """One dataset, or several concatenated (same modality and classes)."""
    from .data import DomainDataset
    from .data.spec import load_dataset

    if isinstance(spec, str):
        return load_dataset(spec)
    parts = [load_dataset(s) for s in spec]
    x = np.concatenate([np.asarray(p.inputs[:], dtype=np.float32) for p in parts])
    y = np.concatenate([p.labels for p in parts])
    return DomainDataset(x, y, "+".join(p.name for p in parts), parts[0].modality, classes=parts[0].classes)


# ------------------------------------------------------------------ source-free cells
def _bn_layers(model):
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _source_free_cell(task: str, method: str, pool, test, seed: int) -> float:
    """Accuracy on ``test`` of the task's source CNN adapted by ``method`` on the unlabeled ``pool``."""
    import torch

    from .adapt.label_shift import correct_probs, estimate_target_priors
    from .backbones import create_backbone

    torch.manual_seed(seed)
    bb = create_backbone(REAL_TASKS[task]["backbone"]).eval()

    def feats(ds):
        with torch.inference_mode():
            return bb(bb.preprocess(np.asarray(ds.inputs[:], dtype=np.float32))).numpy()

    if method.startswith("adabn") and _bn_layers(bb):
        x = bb.preprocess(np.asarray(pool.inputs[:], dtype=np.float32))
        for m in _bn_layers(bb):  # the pool's statistics: a cumulative average over all its images
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.inference_mode():
            for i in range(0, len(x), 256):
                bb(x[i:i + 256])
        bb.eval()
    if method == "target_only":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        clf.fit(feats(pool), pool.labels)
        return float((clf.predict(feats(test)) == test.labels).mean())
    probs = bb.source_probs(feats(test))
    if method.endswith("mlls"):
        k = probs.shape[1]
        uniform = np.full(k, 1.0 / k)
        est = estimate_target_priors(None, None, bb.source_probs(feats(pool)), method="mlls", source_priors=uniform,
                                     n_bootstrap=0, seed=seed)
        probs = correct_probs(probs, uniform, est.priors)
    return float((probs.argmax(1) == test.labels).mean())


# ------------------------------------------------------------------ feature cells
def _feature_cell(task: str, method: str, src, pool, labeled_pool, test, seed: int, epochs: int,
                  cache_dir) -> tuple[float, str]:
    from .strategies import Adapt, SourceOnly

    t = REAL_TASKS[task]
    if method == "majority_class":
        # the labeled source's most frequent class for every target row: what a model must beat
        # to have learnt anything the class balance alone does not give (drug reviews: 71% great)
        counts = np.bincount(src.labels[src.labels >= 0], minlength=len(src.classes or []) or None)
        return float(np.mean(test.labels == int(np.argmax(counts)))), "none (the source's majority class)"
    common = dict(backbone=t["backbone"], image_size=t.get("image_size"), seed=seed, epochs=epochs,
                  cache_dir=cache_dir)
    if method == "source_only":
        s = SourceOnly(**common).fit(None, source=src)
    elif method == "target_only":
        s = Adapt(**common, method=None, selection="dev").fit(pool, source=labeled_pool)
        return s.score(test), "oracle (target labels)"
    else:
        s = Adapt(**common, method=DEFAULT_METHOD if method == "adapt" else method, selection="dev")
        s.fit(pool, source=src)
    return s.score(test), s.selection_


def _definition(task: str) -> dict:
    """A task's data, backbone and kind as stored with each of its cells: a cell measured under
    another definition (the code changed between runs) is measured again, never reused."""
    return json.loads(json.dumps(REAL_TASKS[task]))


def run_real_shift(tasks=None, methods=None, seeds: int = 3, *, epochs: int = 30, out_dir=None, echo=print,
                   cache_dir=None) -> dict:
    """Run every (task, method, seed) of the real-shift suite; ``{"rows", "runs", "tasks", "protocol"}``."""
    from .benchmark import _load_cell, cell_path
    from .data import stratified_split
    from .metrics._base import mean_std

    a = check_real_args(tasks, methods, seeds, epochs)
    runs = []
    for task in a["tasks"]:
        t = REAL_TASKS[task]
        tgt = _load(t["target"])
        src = _load(t["source"]) if t["kind"] == "features" else None
        ms = [m for m in methods_for(task) if a["methods"] is None or m in a["methods"]]
        for seed in range(a["seeds"]):
            pool_idx, test_idx = stratified_split(tgt.labels, [0.5, 0.5], seed=seed)
            labeled_pool, test = tgt.subset(pool_idx), tgt.subset(test_idx)
            pool = labeled_pool.without_labels()
            for m in ms:
                stored = cell_path(out_dir, task, m, seed) if out_dir is not None else None
                kept = _load_cell(stored, task, m, seed) if stored is not None else None
                if kept is not None and kept.get("definition") != _definition(task):
                    echo(f"  {task:<13} {m:<14} seed {seed}  stored under another task definition: run again")
                    kept = None
                if kept is not None:
                    runs.append(kept)
                    echo(f"  {task:<13} {m:<14} seed {seed}  {kept['accuracy']:.3f}  (complete, kept)")
                    continue
                t0 = time.perf_counter()
                if t["kind"] == "source_free":
                    acc = _source_free_cell(task, m, pool if m != "target_only" else labeled_pool, test, seed)
                    sel = "oracle (target labels)" if m == "target_only" else "none (no training)"
                else:
                    acc, sel = _feature_cell(task, m, src, pool, labeled_pool, test, seed, a["epochs"], cache_dir)
                row = {"task": task, "method": m, "seed": seed, "accuracy": float(acc), "selection": sel,
                       "family": family_of(m), "seconds": time.perf_counter() - t0, "definition": _definition(task)}
                if stored is not None:
                    from .train.rundir import write_json

                    write_json(stored, row)
                runs.append(row)
                echo(f"  {task:<13} {m:<14} seed {seed}  {acc:.3f}  ({row['seconds']:.1f}s, {sel})")
    rows = []
    for task in a["tasks"]:
        for m in methods_for(task):
            rs = [r for r in runs if r["task"] == task and r["method"] == m]
            if not rs:
                continue
            mean, std = mean_std([r["accuracy"] for r in rs])
            rows.append({"task": task, "method": m, "family": family_of(m), "accuracy_mean": mean,
                         "accuracy_std": std, "n_seeds": len(rs), "selection": rs[0]["selection"],
                         "accuracy_min": min(r["accuracy"] for r in rs), "accuracy_max": max(r["accuracy"] for r in rs)})
    protocol = ("target split 50/50 per seed (stratified) into an unlabeled pool and a test split; checkpoint "
                "selection by 'dev' (no target labels), source_only by the labeled source validation loss; source-free "
                "tasks: no training, the pool only for BatchNorm statistics and prior estimates; target labels only "
                "score the test split and train the target_only oracle")
    return {"suite": "real-shift", "rows": rows, "runs": runs, "protocol": protocol,
            "tasks": {k: {kk: vv for kk, vv in REAL_TASKS[k].items()} for k in a["tasks"]}}


def verdicts(res: dict) -> list[dict]:
    """Per task: does the package's default label-free method beat source-only with non-overlapping
    seed ranges (its worst seed above source-only's best)? The default is ``adapt`` on feature
    tasks and ``adabn`` on source-free ones."""
    cell = {(r["task"], r["method"]): r for r in res["rows"]}
    out = []
    for task in res["tasks"]:
        default = "adabn" if REAL_TASKS[task]["kind"] == "source_free" else "adapt"
        d, s = cell.get((task, default)), cell.get((task, "source_only"))
        if d is None or s is None:
            continue
        out.append({"task": task, "default": default, "gain": d["accuracy_mean"] - s["accuracy_mean"],
                    "separated": d["accuracy_min"] > s["accuracy_max"],
                    "below": d["accuracy_mean"] < s["accuracy_mean"]})
    return out


def markdown_table(res: dict) -> str:
    tasks = list(res["tasks"])
    cell = {(r["task"], r["method"]): r for r in res["rows"]}
    methods = list(dict.fromkeys(r["method"] for r in res["rows"]))
    lines = ["| method | family | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for m in methods:
        vals = []
        for t in tasks:
            r = cell.get((t, m))
            vals.append("—" if r is None else f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}")
        lines.append(f"| {m} | {family_of(m)} | " + " | ".join(vals) + " |")
    v = verdicts(res)
    if v:
        lines += ["", "Default label-free method vs source-only (separated: its worst seed above source-only's best):",
                  ""]
        for x in v:
            lines.append(f"- {x['task']}: {x['default']} {x['gain']:+.3f}"
                         + (" (separated)" if x["separated"] else "") + (" BELOW source-only" if x["below"] else ""))
    return "\n".join(lines)


def run_real_shift_dir(out, *, overwrite: bool = False, echo=print, **kw) -> dict:
    """:func:`run_real_shift` into the benchmark directory ``out`` (cells kept for a rerun with the
    same arguments continues where it stopped; other arguments are refused); writes ``results.json``
    and ``results.md``."""
    from .train.rundir import open_benchmark_dir, write_json

    args = check_real_args(**kw)
    out = open_benchmark_dir(out, "real-shift", args, overwrite=overwrite)
    t0 = time.perf_counter()
    res = run_real_shift(out_dir=out, echo=echo, cache_dir=str(out / "feature-cache"), **args)
    res["seconds"] = time.perf_counter() - t0
    res["output_dir"] = str(out)
    write_json(out / "results.json", res)
    (out / "results.md").write_text(markdown_table(res) + "\n\n" + res["protocol"] + "\n")
    return res
