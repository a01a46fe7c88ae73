"""Label shift: does ``adapt``'s prior correction (``label_shift: mlls | bbse``) recover accuracy?

    OMP_NUM_THREADS=1 python benchmarks/label_shift.py [--seeds 3] [--tasks ...] [--out runs/label-shift.json]

Every task has a labeled source and a target whose class priors differ from the source's. Per
seed the target is split 50/50 (stratified) into an unlabeled pool and a test split; methods see
the labeled source and the unlabeled pool; the pool's labels train only the ``target_only``
oracle and score the prior estimates, the test split's only score accuracy. Nothing is selected
on target labels: ``jan`` picks its checkpoint with the ``dev`` scorer, the closed-form methods
select nothing.

Tasks (source -> target):

- ``digits_priors``: EfficientNet-Lite0 features (64x64, ImageNet weights, through the feature
  cache) of ``digits:subset=0/2`` -> ``digits:subset=1/2`` subsampled per seed to changed priors
  (:func:`transferkit.benchmark.prior_subsample`: three classes drawn at random hold 70%, the
  other seven 30%; ~380 images). The images of both halves come from one distribution, so this
  is pure label shift. The suite's task ``priors`` (``transferkit benchmark digits-shift --tasks
  priors``) is the same target.
- ``digits_rot30_priors``: the same with ``rotate=30`` on the target (label shift on top of a
  covariate shift; the suite's ``rot30_priors``).
- ``table_label``: a generated table (six Gaussian features, the positive class shifts the mean
  of three of them by 1.5, 1, 0.5): 2,000 source rows with 19% positives -> 2,000 target rows
  with 42%; the class-conditionals are the same (pure label shift).
- ``table_label_cov``: the same priors, and the target's features 0 and 3 shifted by +1.0 and
  +0.8 for every row (covariate shift: the class-conditionals move, which breaks the
  label-shift assumption).
- ``breast_cancer``: scikit-learn's bundled Wisconsin breast cancer table split by its ``mean
  texture`` feature: rows at or below the median are the source (16% malignant), the others the
  target (58% malignant); the split itself changes the priors, and moves the features that
  correlate with texture. Standardized with the source's mean and std.

Rows: ``majority_class`` (the source's most frequent class), ``source_only_lr`` (logistic
regression on the source), ``coral``, ``jan`` (feature level, 30 epochs), each plain and with
``+mlls`` / ``+bbse`` (``Adapt(label_shift=...)``: the target priors estimated from the model's
outputs on the pool, predictions corrected by the prior ratio), and ``target_only`` (logistic
regression on the pool's labels: an oracle). ``+bbse`` holds out 20% of the source for its
confusion matrix, so a closed-form model with ``+bbse`` trains on 80% of the source rows.
The prior error compares the estimate with the pool's class frequencies: max abs and total
variation (TV); the "source priors" line is the error of assuming no shift (TV between the
source's and the pool's priors).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

TASKS = {
    "digits_priors": "EfficientNet-Lite0 64x64 features; digits:subset=0/2 -> digits:subset=1/2 subsampled per "
                     "seed so that 3 random classes hold 70% (pure label shift)",
    "digits_rot30_priors": "as digits_priors, target digits:subset=1/2,rotate=30,seed=0 (label + covariate shift)",
    "table_label": "generated table, 6 features; positives 19% -> 42%, same class-conditionals (pure label shift)",
    "table_label_cov": "generated table; positives 19% -> 42%, target features 0 and 3 shifted by +1.0 / +0.8 "
                       "(label + covariate shift)",
    "breast_cancer": "sklearn breast cancer split by 'mean texture' at its median: source low (16% malignant) -> "
                     "target high (58% malignant); standardized with the source's statistics",
}
METHODS = ["majority_class", "source_only_lr", "source_only_lr+mlls", "source_only_lr+bbse", "coral", "coral+mlls",
           "coral+bbse", "jan", "jan+mlls", "jan+bbse", "target_only"]
DIGITS = {"digits_priors": "digits:subset=1/2", "digits_rot30_priors": "digits:subset=1/2,rotate=30,seed=0"}


# --------------------------------------------------------------------------- data

def make_table(n: int, pos: float, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of six N(0, 1) features; class 1 (probability ``pos``) adds (1.5, 1, 0.5, 0, 0, 0);
    every row's features 0 and 3 are shifted by ``shift`` and ``0.8 * shift``."""
    r = np.random.default_rng(seed)
    y = (r.random(n) < pos).astype(np.int64)
    X = r.normal(size=(n, 6)) + y[:, None] * np.array([1.5, 1.0, 0.5, 0.0, 0.0, 0.0])
    X[:, 0] += shift
    X[:, 3] += 0.8 * shift
    return X.astype(np.float32), y


_FEATURES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _digits_features(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """EfficientNet-Lite0 (64x64) features of a digits spec through the on-disk feature cache."""
    if spec not in _FEATURES:
        from transferkit.backbones import create_backbone
        from transferkit.data.spec import load_dataset
        from transferkit.features import FeatureExtractor

        ds = load_dataset(spec)
        fe = FeatureExtractor(create_backbone("efficientnet_lite0", pretrained=True, image_size=64)).fit()
        _FEATURES[spec] = (fe.transform(ds), ds.labels)
    return _FEATURES[spec]


def load_task(task: str, seed: int, n_table: int = 2000):
    """``(Xs, ys, Xt, yt)`` of ``task`` for ``seed`` (the generated tables are drawn per seed)."""
    if task in DIGITS:
        from transferkit.benchmark import SOURCE, prior_subsample

        Xs, ys = _digits_features(SOURCE)
        Xt, yt = _digits_features(DIGITS[task])
        idx, _ = prior_subsample(yt, seed)
        return Xs, ys, Xt[idx], yt[idx]
    if task in ("table_label", "table_label_cov"):
        shift = 1.0 if task == "table_label_cov" else 0.0
        Xs, ys = make_table(n_table, 0.19, 0.0, 2 * seed + 1)
        Xt, yt = make_table(n_table, 0.42, shift, 2 * seed + 2)
        return Xs, ys, Xt, yt
    if task == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        X, y = d.data, d.target
        y = 1 - y  # 1 = malignant (sklearn's 0), so "positives" reads as in the other tables
        tex = X[:, list(d.feature_names).index("mean texture")]
        src = tex <= np.median(tex)
        mu, sd = X[src].mean(0), X[src].std(0)
        X = ((X - mu) / sd).astype(np.float32)
        return X[src], y[src], X[~src], y[~src]
    raise SystemExit(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


# --------------------------------------------------------------------------- one (task, seed)

def _table(X, y, name):
    from transferkit.data import DomainDataset

    return DomainDataset(inputs=np.asarray(X, dtype=np.float32), labels=np.asarray(y, dtype=np.int64), name=name,
                         modality="tabular")


def run_cell(Xs, ys, Xt, yt, seed: int, methods=METHODS, *, epochs: int = 30, task: str = "task") -> list[dict]:
    """Every method on one (source, target) pair and seed; returns one dict per method with
    ``accuracy`` on the test half and, for ``+mlls``/``+bbse``, ``prior_error`` (max abs, tv)
    and the estimated/true priors."""
    from transferkit.benchmark import class_frequencies, prior_error, split_label_shift
    from transferkit.data import stratified_split
    from transferkit.strategies import Adapt

    src, tgt = _table(Xs, ys, f"{task}-source"), _table(Xt, yt, f"{task}-target")
    pool_idx, test_idx = stratified_split(tgt.labels, [0.5, 0.5], seed=seed)
    pool, test = tgt.subset(pool_idx), tgt.subset(test_idx)
    unlabeled = pool.without_labels()
    k = int(max(ys.max(), yt.max())) + 1
    true = class_frequencies(pool.labels, k)
    cells = []
    for m in methods:
        t0 = time.perf_counter()
        base, ls = split_label_shift(m)
        row = {"task": task, "method": m, "seed": seed}
        if m == "majority_class":
            row["accuracy"] = float(np.mean(test.labels == np.bincount(ys).argmax()))
        else:
            # identity: the rows are already features (the digits' came through the feature cache)
            common = dict(backbone="identity", cache_dir=False, seed=seed, epochs=epochs)
            if m == "target_only":  # oracle: logistic regression on the pool's labels
                s = Adapt(**common, method="source_only_lr").fit(None, source=pool)
            else:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    s = Adapt(**common, method=base, label_shift=ls).fit(unlabeled, source=src)
                row["warnings"] = sorted({str(w.message).split(";")[0] for w in caught
                                          if "label" in str(w.message) or "prior" in str(w.message)})
            row["accuracy"] = s.score(test)
            if ls is not None:
                row["prior_error"] = prior_error(s.label_shift_.priors, true)
                row["priors_estimated"] = [float(v) for v in s.label_shift_.priors]
        if ls is not None or m == "source_only_lr":
            row["priors_true"] = [float(v) for v in true]
            row["priors_source"] = [float(v) for v in np.bincount(ys, minlength=k) / len(ys)]
        row["seconds"] = time.perf_counter() - t0
        cells.append(row)
    return cells


# --------------------------------------------------------------------------- the benchmark

def run(tasks=None, methods=None, seeds: int = 3, *, epochs: int = 30, n_table: int = 2000, echo=print) -> dict:
    """Every (task, seed, method): ``{"rows": [...], "runs": [...], "shift": {...}, ...}``."""
    from transferkit.benchmark import prior_error
    from transferkit.metrics._base import mean_std

    tasks = list(TASKS) if tasks is None else list(tasks)
    methods = list(METHODS) if methods is None else list(methods)
    runs, shift = [], {}
    t_start = time.perf_counter()
    for task in tasks:
        t_task = time.perf_counter()
        for seed in range(seeds):
            Xs, ys, Xt, yt = load_task(task, seed, n_table)
            cells = run_cell(Xs, ys, Xt, yt, seed, methods, epochs=epochs, task=task)
            runs += cells
            for c in cells:
                extra = (f"  prior TV {c['prior_error']['tv']:.3f}" if "prior_error" in c else "")
                echo(f"  {task:<20} {c['method']:<20} seed {seed}  {c['accuracy']:.3f}{extra}  ({c['seconds']:.1f}s)")
            k = int(max(ys.max(), yt.max())) + 1
            ps = np.bincount(ys, minlength=k) / len(ys)
            pool_like = np.bincount(yt, minlength=k) / len(yt)
            shift.setdefault(task, []).append({"n_source": len(ys), "n_target": len(yt),
                                               "source_priors": ps.tolist(), "target_priors": pool_like.tolist(),
                                               "tv_source_target": 0.5 * float(np.abs(ps - pool_like).sum())})
        echo(f"{task}: {time.perf_counter() - t_task:.0f}s")
    rows = []
    for task in tasks:
        for m in methods:
            rs = [r for r in runs if r["task"] == task and r["method"] == m]
            mean, std = mean_std([r["accuracy"] for r in rs])
            row = {"task": task, "method": m, "accuracy_mean": mean, "accuracy_std": std, "n_seeds": len(rs)}
            if "prior_error" in rs[0]:
                for key in ("max_abs", "tv"):
                    row[f"prior_{key}_mean"], row[f"prior_{key}_std"] = mean_std([r["prior_error"][key] for r in rs])
            rows.append(row)
        # the error of assuming no shift at all: the source's priors against the pool's
        ref = [r for r in runs if r["task"] == task and "priors_true" in r and r["method"] == "source_only_lr"]
        if ref:
            errs = [prior_error(r["priors_source"], r["priors_true"]) for r in ref]
            row = {"task": task, "method": "source priors (no estimate)"}
            for key in ("max_abs", "tv"):
                row[f"prior_{key}_mean"], row[f"prior_{key}_std"] = mean_std([e[key] for e in errs])
            rows.append(row)
    return {"rows": rows, "runs": runs, "tasks": {t: TASKS[t] for t in tasks}, "shift": shift,
            "methods": methods, "seeds": seeds, "epochs": epochs,
            "protocol": "per seed the target is split 50/50 (stratified) into an unlabeled pool and a test split; "
                        "methods see the labeled source and the unlabeled pool; jan selects its checkpoint with "
                        "'dev' (no target labels), closed-form methods select nothing; the pool's labels train "
                        "only target_only (oracle) and score the prior estimates; test labels only score accuracy",
            "seconds": time.perf_counter() - t_start}


def markdown(res: dict) -> str:
    tasks = list(res["tasks"])
    cell = {(r["task"], r["method"]): r for r in res["rows"]}
    head = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    lines = ["Target test accuracy, mean ± std over seeds:", "", *head]
    for m in res["methods"]:
        accs = [f"{cell[(t, m)]['accuracy_mean']:.3f} ± {cell[(t, m)]['accuracy_std']:.3f}" for t in tasks]
        lines.append(f"| {m} | " + " | ".join(accs) + " |")
    est = [m for m in [*res["methods"], "source priors (no estimate)"]
           if any("prior_tv_mean" in cell.get((t, m), {}) for t in tasks)]
    if est:
        lines += ["", "Estimated target priors against the pool's class frequencies, max abs / total variation "
                      "(mean over seeds):", "", *head]
        for m in est:
            lines.append(f"| {m} | " + " | ".join(
                f"{cell[(t, m)]['prior_max_abs_mean']:.3f} / {cell[(t, m)]['prior_tv_mean']:.3f}"
                if (t, m) in cell else "" for t in tasks) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30, help="jan's training epochs (default 30)")
    ap.add_argument("--n-table", type=int, default=2000, help="rows per domain of the generated tables")
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args(argv)
    if a.seeds < 1 or a.epochs < 1 or a.n_table < 20:
        ap.error("--seeds and --epochs must be >= 1, --n-table >= 20")
    out = Path(a.out) if a.out else None
    if out is not None and out.is_dir():
        ap.error(f"--out {out} is a directory; give a file name such as {out / 'label_shift.json'}")
    res = run(a.tasks, a.methods, a.seeds, epochs=a.epochs, n_table=a.n_table)
    res["command"] = "python benchmarks/label_shift.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print()
    print(markdown(res))
    print(f"\n{res['protocol']}.\ntotal {res['seconds']:.0f}s")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
