"""``transferkit benchmark label-spaces``: transfer when the classes differ or there are several sources.

Every part works on frozen backbone features (EfficientNet-Lite0 at 64 px for images, ``minilm``
for text), extracted once per domain and passed to the package's strategies as tabular datasets
with the ``identity`` backbone, the same code a user's ``transferkit run`` reaches. Per seed each
target domain is split 50/50 (stratified) into an unlabeled pool (what adaptation sees) and a test
split (what is scored); checkpoints are selected without target labels (``dev`` on held-out source
rows; source-only and domain generalisation: the held-out source rows alone). Parts:

- ``partial`` (source: all 10 classes; target: 5 classes of a shifted domain): ``source_only``,
  ``dann`` (plain adversarial alignment: the negative-transfer case of Cao et al. 2018),
  ``pada``, ``ba3us`` and ``reweight`` (the bottleneck + head retrained with the source classes
  reweighted by the MLLS estimate of the target priors: ``adapt`` with
  ``label_shift="mlls+reweight"``). Score: accuracy on the 5 target classes (predicting over 10).
- ``open_set`` (source: classes 0-5; target: 0-9, classes 6-9 unknown; and a universal task,
  ``fashion_universal``, whose target also lacks source classes 0-2): ``threshold`` (the
  source-only classifier's max-softmax, the threshold keeping 95% of held-out source rows as
  known), ``osbp`` and ``ovanet``. Scores: OS*, UNK and the H-score.
- ``zero_shot`` (train on 5 classes, test on the other 5, chosen per seed; class names as text):
  ESZSL, DeViSE and ConSE with class-name vectors from ``minilm``, GloVe 6B 50-d and WordLlama.
  Scores: per-class accuracy on the unseen classes (chance 20%) and the generalised accuracies
  (seen, unseen and their harmonic mean when predicting over all 10).
- ``multi_source`` (three labeled sources, the fourth domain the unlabeled target; each domain
  in turn is the target): ``single`` (source-only on each source alone: the mean and the best of
  the three, the best picked with target test labels: an oracle, shown as a ceiling only),
  ``pooled`` (source-only on the pooled sources), ``pooled_moment`` (single-source moment
  matching of the pool against the target), ``m3sda``, ``weighted`` and ``m3sda+weighted``.
- ``dg`` (the same domains; the target never seen before test; DomainBed's leave-one-domain-out
  with training-domain validation: 20% of each source held out): ``erm`` (pooled), ``irm``,
  ``vrex``, ``groupdro``, ``coral``.

Domains of ``multi_source`` and ``dg``: Fashion-MNIST test images in four disjoint quarters,
rotated by 0, 30, 60 and 90 degrees (RotatedMNIST's construction), and reviews as text: the
fine-food reviews, the drug reviews for birth control and for mental-health conditions as
sources, the drug reviews for every other condition as the target (great vs other, neutral drug
reviews dropped). Each finished cell is kept under ``cells/`` so an interrupted run continues.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .errors import ConfigError

PARTS = ("partial", "open_set", "zero_shot", "multi_source", "dg")
IMAGE_BACKBONE, IMAGE_SIZE, TEXT_BACKBONE = "efficientnet_lite0", 64, "minilm"
FASHION_SOURCE = "fashion_mnist:split=train,n=2000"
_FIRST_FIVE, _FIRST_SIX = "keep_classes=[0,1,2,3,4]", "keep_classes=[0,1,2,3,4,5]"
#: fashion's shifted target: the real-shift suite's severity-3 corruption mix
_FASHION_SHIFTED = [f"fashion_mnist:split=test,subset={k}/20,corrupt={c},severity=3"
                    for k, c in enumerate(("gaussian_noise", "defocus_blur", "contrast", "fog"))]
_DIGITS_SHIFTED = "digits:subset=1/2,rotate=22..45,translate=0.1,seed=0"

PARTIAL_TASKS = {
    "digits": {"source": "digits:subset=0/2", "target": f"{_DIGITS_SHIFTED},{_FIRST_FIVE}"},
    "fashion": {"source": FASHION_SOURCE, "target": [f"{t},{_FIRST_FIVE}" for t in _FASHION_SHIFTED]},
}
OPEN_SET_TASKS = {
    "digits": {"source": f"digits:subset=0/2,{_FIRST_SIX}", "target": _DIGITS_SHIFTED, "n_known": 6},
    "fashion": {"source": f"{FASHION_SOURCE},{_FIRST_SIX}", "target": _FASHION_SHIFTED, "n_known": 6},
    # universal: the target lacks source classes 0-2 and holds the unknown 6-9 (shared: 3-5)
    "fashion_universal": {"source": f"{FASHION_SOURCE},{_FIRST_SIX}",
                          "target": [f"{t},keep_classes=[3,4,5,6,7,8,9]" for t in _FASHION_SHIFTED], "n_known": 6},
}
ZERO_SHOT_TASKS = {
    "fashion": {"train": "fashion_mnist:split=train,n=3000", "test": "fashion_mnist:split=test,n=2000"},
    "animal": {"train": "animal_mnist:subset=0/2,n=3000", "test": "animal_mnist:subset=1/2,n=2000"},
}
ROTATIONS = (0, 30, 60, 90)
_DRUGS = "drug_reviews:labels=binary,neutral=drop"
_MENTAL = ["Depression", "Anxiety", "Bipolar Disorde", "ADHD", "Insomnia", "Panic Disorde", "Anxiety and Stress",
           "Major Depressive Disorde", "Generalized Anxiety Disorde"]
DOMAIN_TASKS = {
    "fashion_rot": {"modality": "image", "domains": {
        f"rot{r}": f"fashion_mnist:split=test,subset={k}/4,n=1500,rotate={r}" for k, r in enumerate(ROTATIONS)},
        "targets": [f"rot{r}" for r in ROTATIONS]},
    "reviews": {"modality": "text", "domains": {
        "fine_foods": "fine_foods:split=all,n=1500",
        "drugs_birth_control": {"name": "drug_reviews", "labels": "binary", "neutral": "drop",
                                "condition": "Birth Control"},
        "drugs_mental": {"name": "drug_reviews", "labels": "binary", "neutral": "drop", "condition": _MENTAL},
        "drugs_other": _DRUGS,  # minus the two condition groups above (see _domain_data)
    }, "targets": ["drugs_other"]},
}
PARTIAL_METHODS = ["source_only", "dann", "pada", "ba3us", "reweight"]
OPEN_SET_METHODS = ["threshold", "osbp", "ovanet"]
ZSL_METHODS = ["eszsl", "devise", "conse"]
EMBEDDINGS = ["minilm", "glove", "wordllama"]
MULTI_SOURCE_METHODS = ["single", "pooled", "pooled_moment", "m3sda", "weighted", "m3sda+weighted"]
DG_METHODS = ["erm", "irm", "vrex", "groupdro", "coral"]

PROTOCOL = ("frozen features (EfficientNet-Lite0 at 64 px; minilm for text); every target split 50/50 per seed "
            "(stratified) into an unlabeled pool and a test split; no target label is read before scoring: "
            "checkpoints chosen by DEV on held-out source rows (source-only, the open-set threshold and domain "
            "generalisation: the held-out source rows' loss; OSBP and OVANet: the last epoch, the papers' fixed "
            "budget); moment-matching weights from [0.01, 0.1, 1] by DEV; zero-shot classes split 5/5 per seed, "
            "hyper-parameters at their papers' defaults; 'single best' picks a source with target test labels and "
            "is an oracle ceiling, not a method")


def check_label_space_args(parts=None, seeds: int = 3, epochs: int = 20) -> dict:
    """Check the benchmark's arguments before anything runs."""
    from .train.rundir import check_parts_args

    return check_parts_args(parts, PARTS, seeds, epochs)


# ------------------------------------------------------------------ data and features
_FEATURES: dict = {}


def _load(spec):
    from .data.spec import load_dataset
    from .realshift import _load as load_specs

    return load_dataset(spec) if isinstance(spec, dict) else load_specs(spec)


def _featurize(spec, modality: str = "image"):
    """The dataset of ``spec`` as a tabular dataset of frozen backbone features (one extraction
    per process and spec; the labels, classes and per-row attributes kept)."""
    from .data import DomainDataset

    key = json.dumps(spec, sort_keys=True)
    if key not in _FEATURES:
        ds = _load(spec)
        _FEATURES[key] = _features_of(ds)
    return _FEATURES[key]


def _features_of(ds):
    import torch

    from .backbones import create_backbone
    from .data import DomainDataset
    from .features.extractor import extract_features

    name, size = (IMAGE_BACKBONE, IMAGE_SIZE) if ds.modality == "image" else (TEXT_BACKBONE, None)
    bkey = (name, size)
    if bkey not in _FEATURES:
        torch.manual_seed(0)
        _FEATURES[bkey] = create_backbone(name, image_size=size) if size else create_backbone(name)
    bb = _FEATURES[bkey].eval()
    F = extract_features(bb, ds.inputs, batch_size=128)
    return DomainDataset(np.asarray(F, dtype=np.float32), ds.labels, ds.name, "tabular", classes=ds.classes,
                         meta={k: v for k, v in ds.meta.items() if k == "attributes"})


def _pool_test(ds, seed: int):
    """Stratified 50/50 split of a target: (unlabeled pool, labeled test)."""
    from .data import stratified_split

    pool, test = stratified_split(ds.labels, [0.5, 0.5], seed=seed)
    return ds.subset(pool).without_labels(), ds.subset(test)


# ------------------------------------------------------------------ cells
def _common(seed: int, epochs: int) -> dict:
    return {"backbone": "identity", "seed": seed, "epochs": epochs, "device": "cpu"}


def _partial_cell(task: str, method: str, seed: int, epochs: int) -> dict:
    from .strategies import Adapt, SourceOnly

    t = PARTIAL_TASKS[task]
    src, (pool, test) = _featurize(t["source"]), _pool_test(_featurize(t["target"]), seed)
    c = _common(seed, epochs)
    opts = METHOD_OPTIONS["partial"][method]
    if method == "source_only":
        s = SourceOnly(**c, **opts).fit(None, source=src)
    else:
        s = Adapt(**c, **opts).fit(pool, source=src)
    pred = s.predict(test)
    out = {"accuracy": float(np.mean(pred == test.labels)), "selection": s.selection_}
    absent = sorted(set(range(10)) - set(np.unique(test.labels).tolist()))
    out["predicted_absent"] = float(np.mean(np.isin(pred, absent)))  # share of target rows put in a class it lacks
    if getattr(s, "source_class_weights_", None) is not None:
        out["class_weights"] = [float(v) for v in s.source_class_weights_]
    return out


def _open_set_cell(task: str, method: str, seed: int, epochs: int) -> dict:
    from .strategies.open_set import OpenSet

    t = OPEN_SET_TASKS[task]
    k = t["n_known"]
    src, (pool, test) = _featurize(t["source"]), _pool_test(_featurize(t["target"]), seed)
    s = OpenSet(**_common(seed, epochs), method=method).fit(pool, source=src)
    if s.n_known_ != k:  # the source's label space, as the strategy reads it from its rows
        raise ConfigError(f"open-set task {task!r}: the source shows {s.n_known_} classes, expected {k}.")
    r = s.open_set_report(test)  # target classes the source lacks count as unknown
    return {"h_score": float(r.value), **{key: float(r.details[key]) for key in ("os", "os_star", "unk")},
            "selection": s.selection_}


def _class_split(seed: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(1000 + seed)
    perm = rng.permutation(10)
    return sorted(perm[:5].tolist()), sorted(perm[5:].tolist())


def _zero_shot_cell(task: str, method: str, emb: str, seed: int) -> dict:
    from .adapt.zero_shot import ConSE, DeViSE, ESZSL
    from .features.label_embeddings import dataset_class_embeddings
    from .metrics.zero_shot import calibrated_stacking, gzsl_scores, per_class_accuracy

    t = ZERO_SHOT_TASKS[task]
    tr, te = _featurize(t["train"]), _featurize(t["test"])
    seen, unseen = _class_split(seed)
    S = dataset_class_embeddings(tr, kind=emb)  # the dataset's own class names, no template (fixed beforehand)
    mu, sd = tr.inputs.mean(0), tr.inputs.std(0) + 1e-6
    Xtr, Xte = (tr.inputs - mu) / sd, (te.inputs - mu) / sd
    keep = np.isin(tr.labels, seen)
    remap = {c: i for i, c in enumerate(seen)}
    ytr = np.array([remap[c] for c in tr.labels[keep]])
    model = {"eszsl": lambda: ESZSL(), "devise": lambda: DeViSE(seed=seed), "conse": lambda: ConSE(seed=seed)}[method]()
    model.fit(Xtr[keep], ytr, S[seen])
    un = np.isin(te.labels, unseen)
    pred_u = np.asarray(unseen)[model.predict(Xte[un], S[unseen])]
    zsl = per_class_accuracy(te.labels[un], pred_u).value
    scores = model.decision_function(Xte, S)  # over all 10 classes: generalised zero-shot
    g = gzsl_scores(te.labels, scores.argmax(1), seen=seen)
    # calibrated stacking (Chao et al. 2016) with a label-free gamma: the seen-class margin's quantile
    # at which the unseen classes get their share of the predictions (5 of 10 classes: the median)
    margin = scores[:, seen].max(1) - scores[:, unseen].max(1)
    gamma = float(np.quantile(margin, len(unseen) / scores.shape[1]))
    gc = gzsl_scores(te.labels, calibrated_stacking(scores, seen=seen, gamma=gamma), seen=seen)
    return {"unseen_accuracy": float(zsl), "gzsl_seen": float(g.details["seen"]),
            "gzsl_unseen": float(g.details["unseen"]), "gzsl_h": float(g.value),
            "cs_seen": float(gc.details["seen"]), "cs_unseen": float(gc.details["unseen"]), "cs_h": float(gc.value),
            "gamma": gamma, "seen": seen, "unseen": unseen}


def _domain_data(task: str) -> dict:
    """name -> featurized domain of a multi-domain task."""
    t = DOMAIN_TASKS[task]
    out = {}
    for name, spec in t["domains"].items():
        ds = _featurize(spec)
        if task == "reviews" and name == "drugs_other":  # every condition the two drug sources do not hold
            cond = np.asarray(ds.meta["attributes"]["condition"])
            ds = ds.subset(np.flatnonzero(~np.isin(cond, ["Birth Control", *_MENTAL])))
        out[name] = ds
    return out


def _multi_source_cell(task: str, target: str, method: str, seed: int, epochs: int) -> dict:
    from .strategies import Adapt, SourceOnly
    from .strategies.multi_source import MultiSource

    doms = _domain_data(task)
    pool, test = _pool_test(doms[target], seed)
    sources = [d for n, d in doms.items() if n != target]
    c = _common(seed, epochs)
    if method == "single":
        accs = [float(SourceOnly(**c).fit(None, source=s).score(test)) for s in sources]
        return {"accuracy": float(np.mean(accs)), "per_source": accs, "best": float(max(accs))}
    if method in ("pooled", "pooled_moment"):
        from .data import concat_datasets

        pooled = concat_datasets(sources)
        s = (SourceOnly(**c).fit(None, source=pooled) if method == "pooled"
             else Adapt(**c, **METHOD_OPTIONS["multi_source"][method]).fit(pool, source=pooled))
        return {"accuracy": float(s.score(test)), "selection": s.selection_}
    s = MultiSource(**c, **METHOD_OPTIONS["multi_source"][method]).fit(pool, source=sources)
    return {"accuracy": float(s.score(test)), "source_weights": [float(w) for w in s.source_weights_],
            "selection": s.selection_}


def _dg_cell(task: str, target: str, method: str, seed: int, epochs: int) -> dict:
    from .strategies.domain_generalization import DomainGeneralization

    doms = _domain_data(task)
    _, test = _pool_test(doms[target], seed)  # the same test rows as multi_source; the pool is never used
    sources = [d for n, d in doms.items() if n != target]
    s = DomainGeneralization(**_common(seed, epochs), method=method).fit(None, source=sources)
    return {"accuracy": float(s.score(test)), "selection": s.selection_}


# ------------------------------------------------------------------ runner
#: The DA weight candidates of the methods that have one, chosen per cell by the label-free DEV score.
WEIGHT_GRID = [0.01, 0.1, 1.0]
#: What each method's cell is, beyond the task and the epochs (part of each kept cell's definition).
METHOD_OPTIONS = {
    "partial": {"dann": {"method": "dann"}, "pada": {"method": "pada"}, "ba3us": {"method": "ba3us"},
                "reweight": {"method": None, "domain_bn": False, "label_shift": "mlls+reweight"},
                "source_only": {"selection": "source_val"}},
    "multi_source": {"pooled_moment": {"method": "moment", "weight": WEIGHT_GRID},
                     "m3sda": {"method": "m3sda", "weight": WEIGHT_GRID},
                     "m3sda+weighted": {"method": "m3sda+weighted", "weight": WEIGHT_GRID},
                     "weighted": {"method": "weighted"}},
}
#: The order the parts run in (the quick and the finished first).
RUN_ORDER = ("partial", "zero_shot", "multi_source", "dg", "open_set")


def _cells(a: dict):
    """(part, cell name, definition, compute) for every cell of the arguments, in run order."""
    ep = a["epochs"]
    for part in [p for p in RUN_ORDER if p in a["parts"]]:
        opts = METHOD_OPTIONS.get(part, {})
        for seed in range(a["seeds"]):
            if part == "partial":
                for task in PARTIAL_TASKS:
                    for m in PARTIAL_METHODS:
                        yield (part, f"partial--{task}--{m}--seed{seed}",
                               {"task": PARTIAL_TASKS[task], "epochs": ep, "options": opts.get(m)},
                               lambda task=task, m=m, seed=seed: _partial_cell(task, m, seed, ep))
            elif part == "open_set":
                for task in OPEN_SET_TASKS:
                    for m in OPEN_SET_METHODS:
                        yield (part, f"open_set--{task}--{m}--seed{seed}", {"task": OPEN_SET_TASKS[task], "epochs": ep},
                               lambda task=task, m=m, seed=seed: _open_set_cell(task, m, seed, ep))
            elif part == "zero_shot":
                for task in ZERO_SHOT_TASKS:
                    for e in EMBEDDINGS:
                        for m in ZSL_METHODS:
                            yield (part, f"zero_shot--{task}--{m}--{e}--seed{seed}", {"task": ZERO_SHOT_TASKS[task]},
                                   lambda task=task, m=m, e=e, seed=seed: _zero_shot_cell(task, m, e, seed))
            else:
                methods, fn = ((MULTI_SOURCE_METHODS, _multi_source_cell) if part == "multi_source"
                               else (DG_METHODS, _dg_cell))
                for task, t in DOMAIN_TASKS.items():
                    for target in t["targets"]:
                        for m in methods:
                            yield (part, f"{part}--{task}--{target}--{m}--seed{seed}",
                                   {"domains": t["domains"], "epochs": ep, "options": opts.get(m)},
                                   lambda task=task, target=target, m=m, seed=seed, fn=fn: fn(task, target, m, seed,
                                                                                              ep))


def _cell_key(part: str, name: str) -> dict:
    bits = name.split("--")[1:]
    seed = int(bits[-1].removeprefix("seed"))
    if part == "zero_shot":
        return {"task": bits[0], "method": bits[1], "embedding": bits[2], "seed": seed}
    if part in ("multi_source", "dg"):
        return {"task": bits[0], "target": bits[1], "method": bits[2], "seed": seed}
    return {"task": bits[0], "method": bits[1], "seed": seed}


def run_label_spaces(parts=None, seeds: int = 3, *, epochs: int = 20, out_dir=None, echo=print) -> dict:
    """Run the parts of the label-spaces benchmark; ``{part: [cell rows], "summary", "protocol"}``."""
    import warnings

    from .train.rundir import cached_cell

    a = check_label_space_args(parts, seeds, epochs)
    out = None if out_dir is None else Path(out_dir)
    res: dict = {"suite": "label-spaces", "arguments": a}
    cells = list(_cells(a))
    t0 = time.perf_counter()
    for i, (part, name, definition, compute) in enumerate(cells):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # per-cell warnings (one seed, EM convergence) go to the log only
            value = cached_cell(out, name, definition, compute, echo)
        res.setdefault(part, []).append({**_cell_key(part, name), **value})
        shown = {k: round(v, 3) for k, v in value.items() if isinstance(v, float)}
        echo(f"[{i + 1}/{len(cells)}] {name} {shown} ({(time.perf_counter() - t0) / 60:.1f} min)")
    res["summary"] = summarize(res)
    res["protocol"] = PROTOCOL
    return res


def _mean_std(v) -> dict:
    from .metrics._base import mean_std_dict

    return mean_std_dict(v)


def summarize(res: dict) -> dict:
    """Mean ± std over seeds of every (part, task, method[, embedding / target]) cell."""
    out: dict = {}
    keys = {"partial": ["accuracy"], "open_set": ["os_star", "unk", "h_score"],
            "zero_shot": ["unseen_accuracy", "gzsl_seen", "gzsl_unseen", "gzsl_h", "cs_seen", "cs_unseen", "cs_h"],
            "multi_source": ["accuracy", "best"], "dg": ["accuracy"]}
    for part, metrics in keys.items():
        rows = res.get(part)
        if not rows:
            continue
        groups: dict = {}
        for r in rows:
            gk = tuple((k, r[k]) for k in ("task", "target", "method", "embedding") if k in r)
            groups.setdefault(gk, []).append(r)
        out[part] = [{**dict(gk), **{m: _mean_std(r[m] for r in rs) for m in metrics if all(m in r for r in rs)},
                      "n_seeds": len(rs)} for gk, rs in groups.items()]
    return out


def _fmt(ms: dict | None) -> str:
    if not ms:
        return "—"
    return f"{ms['mean']:.3f} ± {ms['std']:.3f}"


def markdown(res: dict) -> str:
    """results.md: one table per part, the protocol, and the goals' verdicts."""
    s = res.get("summary") or summarize(res)
    lines = ["# Label spaces: partial, open-set, zero-shot, multi-source, domain generalisation", "",
             f"Protocol: {res.get('protocol', PROTOCOL)}.", ""]
    if "partial" in s:
        lines += ["## Partial (target: 5 of the source's 10 classes): accuracy", "",
                  "| task | " + " | ".join(PARTIAL_METHODS) + " |", "|---" * (len(PARTIAL_METHODS) + 1) + "|"]
        for task in PARTIAL_TASKS:
            by = {r["method"]: r for r in s["partial"] if r["task"] == task}
            lines.append(f"| {task} | " + " | ".join(_fmt(by.get(m, {}).get("accuracy")) for m in PARTIAL_METHODS)
                         + " |")
        lines.append("")
    if "open_set" in s:
        lines += ["## Open-set (source: classes 0-5; target: 0-9, 6-9 unknown; universal: the target also lacks "
                  "0-2)", "",
                  "| task | method | OS* | UNK | H-score |", "|---|---|---|---|---|"]
        for r in s["open_set"]:
            lines.append(f"| {r['task']} | {r['method']} | {_fmt(r.get('os_star'))} | {_fmt(r.get('unk'))} | "
                         f"{_fmt(r.get('h_score'))} |")
        lines.append("")
    if "zero_shot" in s:
        lines += ["## Zero-shot (5 seen / 5 unseen classes per seed; chance on the unseen: 0.200)", "",
                  "Unseen acc: per-class accuracy over the 5 unseen classes. GZSL: predicting over all 10 (seen "
                  "and unseen test rows), raw scores and with calibrated stacking (gamma: the label-free quantile "
                  "that gives the unseen classes their share of the predictions).", "",
                  "| task | method | embedding | unseen acc | GZSL seen | GZSL unseen | GZSL H | calibrated H |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in s["zero_shot"]:
            lines.append(f"| {r['task']} | {r['method']} | {r['embedding']} | {_fmt(r.get('unseen_accuracy'))} | "
                         f"{_fmt(r.get('gzsl_seen'))} | {_fmt(r.get('gzsl_unseen'))} | {_fmt(r.get('gzsl_h'))} | "
                         f"{_fmt(r.get('cs_h'))} |")
        lines.append("")
    for part, methods, title in (("multi_source", MULTI_SOURCE_METHODS, "Multi-source (target: the domain named)"),
                                 ("dg", DG_METHODS, "Domain generalisation (leave one domain out)")):
        if part not in s:
            continue
        cols = [*methods, "single (best, oracle)"] if part == "multi_source" else methods
        lines += [f"## {title}: accuracy", "", "| task | target | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 2) + "|"]
        for task, t in DOMAIN_TASKS.items():
            for target in t["targets"]:
                by = {r["method"]: r for r in s[part] if r["task"] == task and r["target"] == target}
                if not by:
                    continue
                vals = [_fmt(by.get(m, {}).get("accuracy")) for m in methods]
                if part == "multi_source":
                    vals.append(_fmt(by.get("single", {}).get("best")))
                lines.append(f"| {task} | {target} | " + " | ".join(vals) + " |")
        lines.append("")
    return "\n".join(lines)


def run_label_spaces_dir(out, *, overwrite: bool = False, echo=print, **kw) -> dict:
    """:func:`run_label_spaces` into ``out`` (finished cells kept: a rerun with the same arguments
    continues; other arguments are refused); writes ``results.json`` and ``results.md``."""
    from .train.rundir import run_suite_dir

    return run_suite_dir(out, "label-spaces", check_label_space_args(**kw), run_label_spaces, markdown, overwrite=overwrite, echo=echo)
