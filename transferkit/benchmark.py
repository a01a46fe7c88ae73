"""``transferkit benchmark digits-shift``: domain adaptation methods on shifted digits.

Source: ``digits:subset=0/2`` (labeled). Each task's target is ``digits:subset=1/2`` with a
shift; per seed the target is split 50/50 (stratified) into an unlabeled training pool and a
test split. Methods see the source labels and the unlabeled pool; checkpoints are selected by
an unsupervised scorer (``dev`` by default, recorded per row); target labels are used only to
score the test split, and by the ``target_only`` oracle (all pool labels).

The baselines: ``source_only`` (the strategy of that name) uses no target input at all, not
even for checkpoint selection (``source_val``: the labeled source validation loss) or
BatchNorm statistics; ``source_only_lr`` is the shallow methods' classifier on source features
alone; ``adabn`` is the ``source_only`` network with the target pool's BatchNorm statistics and
its checkpoint chosen by the benchmark's scorer (both use target inputs, so it is an
adaptation method).

Label shift: the tasks of :data:`LABEL_SHIFT_TASKS` (not in the default run; ``--tasks priors
rot30_priors``) change the target's class priors per seed by subsampling it
(:func:`prior_subsample`: three random classes hold 70%) before the pool/test split; a method
``M+mlls`` (or ``+bbse``, ``+bbse_soft``) is ``adapt``'s ``label_shift`` correction on top of
``M`` (its cells also record the estimated priors' error against the pool's class frequencies,
which nothing trains on); ``majority_class`` predicts the source's most frequent class.

It runs strategies and experiments, so it sits with the other runners (``diagnostics``,
``assess``), above ``experiment``.
"""

from __future__ import annotations

import time
from pathlib import Path

from .errors import ConfigError

SOURCE = "digits:subset=0/2"
TASKS = {
    "rot30": "digits:subset=1/2,rotate=30,seed=0",
    "rot45_trans": "digits:subset=1/2,rotate=22..45,translate=0.1,seed=0",
    "invert": "digits:subset=1/2,invert=true",
    "noise_blur": "digits:subset=1/2,noise=0.2,blur=1.0,seed=0",
    "scale": "digits:subset=1/2,scale=0.6..0.8,seed=0",
}
DEEP = ["dan", "jan", "dann", "cdan", "cdan_e", "deep_coral", "mcc", "entropy", "deepjdot", "kl_align", "jan+mcc"]
SHALLOW = ["coral", "sa", "tca", "ot_mapping", "kmm", "kliep", "self_training"]
DEFAULT_METHODS = ["source_only", "source_only_lr", "adabn"] + DEEP + SHALLOW + ["target_only"]

#: Tasks whose target's class priors change per seed (:func:`prior_subsample` with
#: :data:`PRIOR_PATTERN`): ``priors`` is pure label shift (the source's other half, unchanged
#: images), ``rot30_priors`` label shift on top of a covariate shift. Run them by name.
LABEL_SHIFT_TASKS = {
    "priors": "digits:subset=1/2",
    "rot30_priors": "digits:subset=1/2,rotate=30,seed=0",
}
#: How :func:`target_priors` draws a label-shift task's target priors.
PRIOR_PATTERN = "top3"
#: ``METHOD+SUFFIX``: ``adapt``'s ``label_shift`` correction on top of ``METHOD``.
LABEL_SHIFT_SUFFIXES = ("mlls", "bbse", "bbse_soft")
#: Methods that take no ``+mlls`` (not an ``adapt`` fit, or trained on the target's own priors).
_NO_LABEL_SHIFT = ("source_only", "target_only", "majority_class")


#: Scorers a benchmark may select checkpoints with (no target labels: the pool is unlabeled).
SELECTIONS = ("dev", "iwcv", "snd", "entropy")

#: File in a benchmark directory holding the arguments it was started with (``--resume`` reads it).
ARGS_FILE = "benchmark.json"

#: Folder of a benchmark directory holding one JSON file per finished (task, method, seed) cell.
CELLS_DIR = "cells"


def split_label_shift(method: str) -> tuple[str, str | None]:
    """``"coral+mlls"`` -> ``("coral", "mlls")``; a method without a label-shift suffix -> ``(method, None)``."""
    base, _, last = str(method).rpartition("+")
    return (base, last) if base and last in LABEL_SHIFT_SUFFIXES else (str(method), None)


def target_priors(n_classes: int, seed: int, pattern: str = PRIOR_PATTERN):
    """A label-shift task's target class priors for ``seed`` (an array of shape ``(n_classes,)``).

    ``"top3"``: three classes drawn at random hold 70% of the target (0.7/3 each) and the others
    share 30% equally (total variation 0.4 from uniform priors); ``"dirichlet"``: one draw from
    Dirichlet(1, ..., 1), the uniform distribution on the simplex."""
    import numpy as np

    rng = np.random.default_rng([int(seed), 0x1AB3])
    k = int(n_classes)
    if pattern == "top3":
        if k <= 3:
            raise ConfigError(f"pattern='top3' needs more than 3 classes, got {k}; use pattern='dirichlet'.")
        q = np.full(k, 0.3 / (k - 3))
        q[rng.choice(k, 3, replace=False)] = 0.7 / 3
        return q
    if pattern == "dirichlet":
        return rng.dirichlet(np.ones(k))
    raise ConfigError(f"pattern={pattern!r} must be 'top3' or 'dirichlet'.")


def prior_subsample(labels, seed: int, pattern: str = PRIOR_PATTERN):
    """The largest subsample of ``labels`` with the class priors :func:`target_priors` draws for
    ``seed``: ``(indices, priors)``, indices sorted.

    Its size is :math:`\\min_k a_k / q_k` (``a``: the rows of class ``k``), rounded per class by
    largest remainder (:func:`transferkit.adapt.label_shift.prior_matched_counts`); rows are drawn
    without replacement within each class, seeded."""
    import numpy as np

    from .adapt.label_shift import prior_matched_counts

    y = np.asarray(labels)
    k = int(y.max()) + 1
    avail = np.bincount(y, minlength=k)
    q = target_priors(k, seed, pattern)
    pos = q > 0
    n = int(min(len(y), np.floor(np.min(avail[pos] / q[pos]) + 1e-9)))
    counts = prior_matched_counts(n, q, avail)
    rng = np.random.default_rng([int(seed), 0x1AB4])
    idx = [rng.choice(np.flatnonzero(y == c), int(m), replace=False) for c, m in enumerate(counts) if m]
    return np.sort(np.concatenate(idx)), q


def _task_spec(task: str) -> str:
    return TASKS[task] if task in TASKS else LABEL_SHIFT_TASKS[task]


def check_benchmark_args(tasks=None, methods=None, seeds: int = 3, *, selection: str = "dev", epochs: int = 30,
                         backbone: str = "efficientnet_lite0", image_size: int = 64) -> dict:
    """Validate a benchmark's arguments in one pass, before any training or disk write; return
    them normalized (``tasks``/``methods`` as lists, defaults filled in)."""
    from ._registry import available
    from ._validation import check_number, suggest

    tasks = list(TASKS) if tasks is None else list(tasks)
    methods = list(DEFAULT_METHODS) if methods is None else list(methods)
    if not tasks or not methods:
        raise ConfigError(f"the benchmark needs at least one task and one method (tasks: {', '.join(TASKS)}; "
                          f"methods: {', '.join(DEFAULT_METHODS)}).")
    all_tasks = [*TASKS, *LABEL_SHIFT_TASKS]
    for t in tasks:
        if t not in all_tasks:
            raise ConfigError(f"unknown task {t!r}." + suggest(t, all_tasks) + f" Tasks: {', '.join(TASKS)}; "
                              f"label shift: {', '.join(LABEL_SHIFT_TASKS)}.")
    deep = set(available("da_loss"))
    known = list(dict.fromkeys([*DEFAULT_METHODS, "majority_class", *sorted(deep), *available("shallow_da")]))
    for m in methods:
        base, ls = split_label_shift(m) if isinstance(m, str) else (m, None)
        parts = str(base).split("+")
        if not isinstance(m, str) or (base not in known and not (len(parts) > 1 and all(x in deep for x in parts))):
            raise ConfigError(f"unknown benchmark method {m!r}." + suggest(str(m), known)
                              + " Methods: the defaults (" + ", ".join(DEFAULT_METHODS) + "), majority_class, any "
                              "deep loss of 'transferkit list da_losses' or a sum of them (jan+mcc), each but "
                              f"{', '.join(_NO_LABEL_SHIFT)} optionally with a label-shift correction "
                              f"(+{', +'.join(LABEL_SHIFT_SUFFIXES)}: coral+mlls).")
        if ls is not None and base in _NO_LABEL_SHIFT:
            raise ConfigError(f"benchmark method {m!r}: {base} takes no label-shift correction (it is not an adapt "
                              f"fit, or it trains on the target's own priors); use {base} alone.")
    for what, items in (("task", tasks), ("method", methods)):
        dup = sorted({x for x in items if items.count(x) > 1})
        if dup:
            raise ConfigError(f"{what} {dup[0]!r} is given twice; list each {what} once.")
    seeds = check_number("seeds", seeds, low=1, high=1000, integer=True)
    epochs = check_number("epochs", epochs, low=1, high=100_000, integer=True)
    image_size = check_number("image_size", image_size, low=8, high=1024, integer=True)
    if selection not in SELECTIONS:
        raise ConfigError(f"selection={selection!r} must be one of {', '.join(SELECTIONS)} (the target pool is "
                          "unlabeled, so no scorer may use target labels)." + suggest(str(selection), SELECTIONS))
    if not isinstance(backbone, str) or not backbone:
        raise ConfigError(f"backbone={backbone!r} must be a backbone name (see 'transferkit list backbones').")
    from ._registry import get

    get("backbone", backbone)  # an unknown name fails here, with the nearest names, before any folder is made
    _check_backbone(backbone, int(image_size))
    return {"tasks": tasks, "methods": methods, "seeds": int(seeds), "selection": selection, "epochs": int(epochs),
            "backbone": backbone, "image_size": int(image_size)}


def _check_backbone(backbone: str, image_size: int) -> None:
    """The suite's images through the backbone once (two samples): a text or tabular backbone,
    or one that cannot take ``image_size`` images, fails here with one line, before any folder
    is made."""
    from .backbones import create_backbone
    from .data.spec import load_dataset
    from .experiment import _check_inputs

    def factory(pretrained=True):
        return create_backbone(backbone, pretrained=pretrained, image_size=image_size)

    factory.name = backbone
    _check_inputs("benchmark's source", load_dataset(SOURCE), factory)


def cell_path(out_dir, task: str, method: str, seed: int) -> Path:
    """Where a finished (task, method, seed) cell is stored under a benchmark directory (task and
    method are checked names: no separators)."""
    return Path(out_dir) / CELLS_DIR / f"{task}--{method}--seed{int(seed)}.json"


def _load_cell(path: Path, task: str, method: str, seed: int) -> dict | None:
    """A stored cell, or ``None`` when it is missing or not that cell's (never trusted blindly)."""
    import json
    import math

    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(row, dict) or (row.get("task"), row.get("method"), row.get("seed")) != (task, method, seed):
        return None
    acc = row.get("accuracy")
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc) or not 0 <= acc <= 1:
        return None
    return row


def run_benchmark(tasks=None, methods=None, seeds: int = 3, *, backbone: str = "efficientnet_lite0",
                  image_size: int = 64, selection: str = "dev", epochs: int = 30, echo=print,
                  out_dir=None) -> dict:
    """Run every (task, method, seed); return ``{"rows": [...], "runs": [...]}``.

    ``out_dir``: a benchmark directory; each finished cell is written there at once, atomically
    (:func:`cell_path`), and a cell already stored there is kept instead of being run again, so
    an interrupted benchmark continues where it stopped (see :func:`run_benchmark_dir`).
    """
    from ._faults import fault_point
    from .data import stratified_split
    from .data.spec import load_dataset
    from .metrics._base import mean_std
    from .strategies import Adapt, SourceOnly

    a = check_benchmark_args(tasks, methods, seeds, selection=selection, epochs=epochs, backbone=backbone,
                             image_size=image_size)
    tasks, methods, seeds = a["tasks"], a["methods"], a["seeds"]
    src = load_dataset(SOURCE)
    runs = []
    for task in tasks:
        full = load_dataset(_task_spec(task))
        for seed in range(seeds):
            # a label-shift task's target: this seed's prior-changed subsample, then the usual split
            tgt = full.subset(prior_subsample(full.labels, seed)[0]) if task in LABEL_SHIFT_TASKS else full
            pool, test_idx = stratified_split(tgt.labels, [0.5, 0.5], seed=seed)
            labeled_pool, test = tgt.subset(pool), tgt.subset(test_idx)
            unlabeled = labeled_pool.without_labels()
            for m in methods:
                stored = cell_path(out_dir, task, m, seed) if out_dir is not None else None
                kept = _load_cell(stored, task, m, seed) if stored is not None else None
                if kept is not None:
                    runs.append(kept)
                    echo(f"  {task:<12} {m:<14} seed {seed}  {kept['accuracy']:.3f}  (complete, kept)")
                    continue
                t0 = time.perf_counter()
                common = dict(backbone=backbone, image_size=a["image_size"], seed=seed, epochs=a["epochs"])
                base, ls = split_label_shift(m)
                if ls is not None:
                    common["label_shift"] = ls
                if m == "majority_class":
                    s = _MajorityClass(src)
                    sel = s.selection_
                elif m == "target_only":
                    # oracle: the same adapter trained on the labeled pool as its "source"
                    s = Adapt(**common, method=None, selection="dev").fit(unlabeled, source=labeled_pool)
                    sel = "oracle (target labels)"
                elif m == "source_only":
                    # no target input at all: the pool is not even handed over
                    s = SourceOnly(**common).fit(None, source=src)
                    sel = s.selection_
                elif base == "adabn":
                    # no DA loss: the pool's BatchNorm statistics, checkpoint by the benchmark's scorer
                    s = Adapt(**common, method=None, selection=selection, domain_bn=True)
                    s.fit(unlabeled, source=src)
                    sel = s.selection_
                else:
                    s = Adapt(**common, method=base, selection=selection)
                    s.fit(unlabeled, source=src)
                    sel = s.selection_
                acc = s.score(test)
                row = {"task": task, "method": m, "seed": seed, "accuracy": acc, "selection": sel,
                       "seconds": time.perf_counter() - t0}
                if ls is not None:  # evaluation only: the pool's labels score the estimate, nothing trains on them
                    est = s.label_shift_.priors
                    row["prior_error"] = prior_error(est, class_frequencies(labeled_pool.labels, len(est)))
                if stored is not None:
                    from .train.rundir import write_json

                    write_json(stored, row)
                    fault_point("benchmark.cell")
                runs.append(row)
                echo(f"  {task:<12} {m:<14} seed {seed}  {acc:.3f}  ({time.perf_counter() - t0:.1f}s, {sel})")
    rows = []
    for task in tasks:
        for m in methods:
            rs = [r for r in runs if r["task"] == task and r["method"] == m]
            mean, std = mean_std([r["accuracy"] for r in rs])
            rows.append({"task": task, "method": m, "accuracy_mean": mean, "accuracy_std": std, "n_seeds": len(rs),
                         "selection": rs[0]["selection"]})
            if split_label_shift(m)[1] is not None:
                for key in ("max_abs", "tv"):
                    rows[-1][f"prior_{key}_mean"], rows[-1][f"prior_{key}_std"] = mean_std(
                        [r["prior_error"][key] for r in rs])
    protocol = ("target split 50/50 per seed into an unlabeled pool and a test split; checkpoint selection "
                f"by '{selection}' (no target labels), except source_only: labeled source validation loss "
                "(source_val), no target input at all; target labels only score the test split and train "
                "the target_only oracle")
    res = {"rows": rows, "runs": runs, "source": SOURCE, "tasks": {t: _task_spec(t) for t in tasks}}
    shifted = [t for t in tasks if t in LABEL_SHIFT_TASKS]
    if shifted:
        res["target_priors"] = {t: f"{PRIOR_PATTERN}: per seed, 3 classes drawn at random hold 70% of the target "
                                   "(the largest subsample of the spec's images with those priors), the others 30%"
                                for t in shifted}
        protocol += (f"; label-shift tasks ({', '.join(shifted)}): the target is subsampled per seed to changed "
                     "class priors before the split; a +mlls/+bbse method's estimated priors are compared with the "
                     "pool's class frequencies (max abs and total variation), which nothing trains on")
    res["protocol"] = protocol
    return res


def prior_error(estimated, true) -> dict:
    """How far estimated class priors are from the true ones (two vectors of shape ``(K,)``):
    ``{"max_abs": max_k |q̂_k - q_k|, "tv": ½ Σ_k |q̂_k - q_k|}`` (total variation)."""
    import numpy as np

    d = np.abs(np.asarray(estimated, dtype=float) - np.asarray(true, dtype=float))
    return {"max_abs": float(d.max()), "tv": float(0.5 * d.sum())}


def class_frequencies(labels, n_classes: int):
    """The class frequencies of the labeled entries (``>= 0``) of ``labels``, shape ``(n_classes,)``."""
    import numpy as np

    y = np.asarray(labels)
    y = y[y >= 0]
    return np.bincount(y, minlength=n_classes)[:n_classes] / max(len(y), 1)


class _MajorityClass:
    """Predicts the source's most frequent class (ties: the lowest index) for every sample;
    reads no target input."""

    selection_ = "none (constant: the source's most frequent labeled class)"

    def __init__(self, source):
        import numpy as np

        y = source.labels[source.labels >= 0]
        self.class_ = int(np.bincount(y).argmax())

    def score(self, dataset) -> float:
        mask = dataset.labels >= 0
        return float((dataset.labels[mask] == self.class_).mean())


def run_benchmark_dir(out_dir, tasks=None, methods=None, seeds: int = 3, *, backbone: str = "efficientnet_lite0",
                      image_size: int = 64, selection: str = "dev", epochs: int = 30, overwrite: bool = False,
                      resume: bool = False, echo=print) -> dict:
    """:func:`run_benchmark` into the benchmark directory ``out_dir``, checkpointed per cell.

    The arguments are checked first (nothing is written when one is wrong); the directory
    obeys :func:`transferkit.train.rundir.open_run_dir` (a new folder, or an old transferkit
    output replaced only when the new benchmark completes, with ``overwrite``; one writer at a
    time). It stores the arguments in :data:`ARGS_FILE` and every finished cell under
    :data:`CELLS_DIR` as soon as it is done, then ``results.json`` and ``results.md``.
    ``resume=True`` continues an interrupted benchmark in ``out_dir`` with its stored
    arguments (the ones given here are ignored; see :func:`resume_benchmark`): stored cells are
    kept, the missing ones are run. Returns the results dict (``output_dir`` added).
    """
    from .train.rundir import (completed, locate_resume, mark_complete, mark_incomplete, open_run_dir, write_json,
                               write_text)

    final = Path(out_dir)
    if resume:
        src = locate_resume(final, ARGS_FILE, "benchmark", "transferkit benchmark digits-shift --out DIR", echo=echo)
        stored = _stored_args(src)
        args = check_benchmark_args(**stored)
    else:
        args = check_benchmark_args(tasks, methods, seeds, selection=selection, epochs=epochs, backbone=backbone,
                                    image_size=image_size)
    with open_run_dir(final, overwrite=overwrite, resume=resume, kind="benchmark") as d:
        if resume:
            res = completed(d, "results.json", "rows")
            if res is not None:
                echo(f"{final} is complete; nothing to resume.")
                return res
            echo(f"resuming {final}")
        else:
            mark_incomplete(d)
            write_json(d / ARGS_FILE, {"suite": "digits-shift", **args})
        res = run_benchmark(args["tasks"], args["methods"], args["seeds"], backbone=args["backbone"],
                            image_size=args["image_size"], selection=args["selection"], epochs=args["epochs"],
                            echo=echo, out_dir=d)
        res["arguments"] = args
        res["output_dir"] = str(final)
        write_json(d / "results.json", res)
        write_text(d / "results.md", markdown_table(res) + "\n\n" + res["protocol"] + "\n")
        mark_complete(d)
    return res


def _stored_args(out_dir: Path) -> dict:
    from .train.rundir import stored_arguments

    if not out_dir.is_dir():
        raise ConfigError(f"benchmark directory {str(out_dir)!r} does not exist; check the path given to --resume.")
    return stored_arguments(out_dir, ARGS_FILE, ("tasks", "methods", "seeds", "selection", "epochs", "backbone",
                                                 "image_size"))


def resume_benchmark(out_dir, *, echo=print) -> dict:
    """Continue the interrupted benchmark in ``out_dir`` with the arguments stored in it."""
    return run_benchmark_dir(out_dir, resume=True, echo=echo)


def _mean_std_text(mean: float, std: float, n_seeds: int) -> str:
    return f"{mean:.3f} (1 seed)" if n_seeds == 1 else f"{mean:.3f} ± {std:.3f}"


def _cell(r: dict) -> str:
    return _mean_std_text(r["accuracy_mean"], r["accuracy_std"], r["n_seeds"])


def markdown_table(res: dict) -> str:
    tasks = list(res["tasks"])
    methods = list(dict.fromkeys(r["method"] for r in res["rows"]))
    cell = {(r["task"], r["method"]): r for r in res["rows"]}
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_cell(cell[(t, m)]) for t in tasks) + " |")
    corrected = [m for m in methods if split_label_shift(m)[1] is not None]
    if corrected:  # the label-shift rows' prior estimates: total variation from the pool's class frequencies
        lines += ["", "Estimated target priors, total variation from the pool's class frequencies (mean ± std):", "",
                  "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for m in corrected:
            tv = [_mean_std_text(cell[(t, m)]["prior_tv_mean"], cell[(t, m)]["prior_tv_std"], cell[(t, m)]["n_seeds"])
                  for t in tasks]
            lines.append(f"| {m} | " + " | ".join(tv) + " |")
    return "\n".join(lines)
