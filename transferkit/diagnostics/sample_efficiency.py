"""Sample efficiency and convergence speed: how many labels and steps transfer saves.

**Sample-efficiency curve.** Target test accuracy of the transfer strategy and the baseline
against the number of labeled training samples per class ``k`` (1, 2, 5, 10, 20, 50 and
"all"), both trained on the same splits and budget at every ``k`` (Yosinski, Clune, Bengio &
Lipson 2014 and Kornblith, Shlens & Le 2019 report transfer this way).

**Labels saved.** For transfer's accuracy ``a`` at ``k``, the number of labels per class
``k*`` the baseline needs for the same accuracy, read off the baseline's curve by linear
interpolation in ``log k`` between the two grid points around its first crossing of ``a``:

    log k* = log k_{i-1} + (a - s_{i-1}) / (s_i - s_{i-1}) * (log k_i - log k_{i-1}),

with ``s_i`` the baseline's mean accuracy at ``k_i``. When the baseline never reaches ``a``
the answer is ``">k_max"``; when it already does at the smallest ``k``, ``"<=k_min"``.
"labels saved per class" is ``k* - k``.

**Convergence speed.** Optimizer steps until the validation accuracy first reaches a
threshold: ``(e + 1) * steps_per_epoch`` for the first epoch ``e`` at or above it, transfer vs
baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

DEFAULT_LABELS_PER_CLASS = (1, 2, 5, 10, 20, 50, "all")


# ---------------------------------------------------------------------------- labels saved
def scratch_equivalent(ks: Sequence[float], accuracies: Sequence[float], target: float) -> dict:
    """Labels per class the baseline needs to reach ``target`` accuracy (log-k interpolation).

    Parameters
    ----------
    ks
        Labels per class of the baseline's curve (positive, any order).
    accuracies
        The baseline's mean accuracy at each ``k``.
    target
        The accuracy to match.

    Returns
    -------
    dict
        ``value``: ``k*`` (float), the smallest grid ``k`` when the baseline is already there,
        ``None`` when it never gets there; ``bound``: ``"="``, ``"<="`` or ``">"``;
        ``display``: e.g. ``"37.2"``, ``"<=1"``, ``">54"``.
    """
    k = np.asarray(ks, dtype=float)
    a = np.asarray(accuracies, dtype=float)
    if len(k) == 0 or len(k) != len(a):
        raise DataError(f"the baseline curve needs one accuracy per k, got {len(k)} k values and {len(a)} accuracies.")
    if (k <= 0).any():
        raise DataError(f"labels per class must be positive, got {k.tolist()}.")
    order = np.argsort(k, kind="stable")
    k, a = k[order], a[order]
    if a[0] >= target:
        return {"value": float(k[0]), "bound": "<=", "display": f"<={_fmt(k[0])}"}
    for i in range(1, len(k)):
        if a[i] >= target:  # first crossing: a[i-1] < target <= a[i]
            if k[i] == k[i - 1]:
                v = float(k[i])
            else:
                frac = (target - a[i - 1]) / (a[i] - a[i - 1])
                v = float(math.exp(math.log(k[i - 1]) + frac * (math.log(k[i]) - math.log(k[i - 1]))))
            return {"value": v, "bound": "=", "display": _fmt(v)}
    return {"value": None, "bound": ">", "display": f">{_fmt(k[-1])}"}


def _fmt(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-9 else f"{x:.1f}"


def labels_saved(curve: list[dict], transfer: str, baseline: str) -> list[dict]:
    """For every point of ``curve``, the baseline labels per class matching transfer's accuracy.

    ``curve`` rows hold ``labels_per_class`` (the effective ``k``), and
    ``accuracy[transfer]``/``accuracy[baseline]`` means (as :func:`run_sample_efficiency`
    builds them). Returns rows ``{"k", "label", "transfer_accuracy", "scratch_equivalent",
    "display", "bound", "labels_saved_per_class", "ratio"}``.
    """
    ks = [r["labels_per_class"] for r in curve]
    sacc = [r["accuracy"][baseline]["mean"] for r in curve]
    out = []
    for r in curve:
        acc = r["accuracy"][transfer]["mean"]
        eq = scratch_equivalent(ks, sacc, acc)
        k = r["labels_per_class"]
        out.append({
            "k": k, "label": r["label"], "transfer_accuracy": acc, "scratch_equivalent": eq["value"],
            "display": eq["display"], "bound": eq["bound"],
            "labels_saved_per_class": (eq["value"] - k) if eq["bound"] == "=" else None,
            "ratio": (eq["value"] / k) if eq["bound"] == "=" else None,
        })
    return out


def headline(saved: list[dict], k: float = 10, transfer: str = "transfer", baseline: str = "scratch") -> str:
    """``"finetune with 10 labels per class equals scratch with 37.2 labels per class"``, at the
    grid point closest to ``k``."""
    if not saved:
        return ""
    row = min(saved, key=lambda r: (abs(math.log(r["k"]) - math.log(k)), r["k"]))
    head = f"{transfer} with {row['label']} labels per class ({row['transfer_accuracy']:.3f})"
    if row["bound"] == ">":  # the baseline never reaches it on the grid
        most = row["display"].lstrip(">")
        return f"{head} is not reached by {baseline} with up to {most} labels per class (the largest on the grid)"
    word = {"=": "equals", "<=": "is matched by"}[row["bound"]]
    return f"{head} {word} {baseline} with {row['display']} labels per class"


# ---------------------------------------------------------------------------- convergence
def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of :class:`transferkit.train.Trainer`: one per batch, a
    trailing batch of one sample skipped (it would break BatchNorm) unless it is the only one."""
    n, bs = int(n_train), int(batch_size)
    if n <= 0 or bs <= 0:
        raise DataError(f"n_train={n_train} and batch_size={batch_size} must be positive.")
    sizes = [min(bs, n - s) for s in range(0, n, bs)]
    return sum(1 for b in sizes if b >= 2 or n == 1)


def steps_to_accuracy(history: Sequence[dict], threshold: float, steps_per_epoch: int,
                      key: str = "val_accuracy") -> int | None:
    """Optimizer steps until ``history[e][key] >= threshold`` first holds: ``(e + 1) *
    steps_per_epoch``; ``None`` if it never does (``history``: the Trainer's per-epoch rows,
    ``epoch`` counted from 0, the metric measured at the end of each epoch)."""
    for i, row in enumerate(history):
        v = row.get(key)
        if v is not None and v >= threshold:
            return (int(row.get("epoch", i)) + 1) * int(steps_per_epoch)
    return None


def convergence_speed(transfer_runs: Sequence[dict], baseline_runs: Sequence[dict], *,
                      threshold: float | None = None, key: str = "val_accuracy") -> dict:
    """Steps to reach ``threshold`` validation accuracy, transfer vs baseline, over seeds.

    Parameters
    ----------
    transfer_runs, baseline_runs
        One dict per seed: ``history`` (Trainer rows), ``n_train``, ``batch_size``.
    threshold
        Validation accuracy to reach. ``None``: 90% of the lowest best-epoch validation
        accuracy over every run of both strategies, so every run reaches it.

    Returns
    -------
    dict
        ``threshold``, ``threshold_rule``, ``transfer`` and ``baseline`` (each ``steps`` per
        seed, ``None`` where not reached, ``steps_mean`` over the seeds that reached it,
        ``reached``, ``n_seeds``), ``speedup`` (baseline mean steps / transfer mean steps, when
        both reached it in every seed), ``speedup_at_least`` (when only the baseline missed it
        in some seed: those seeds counted at their full budget, a lower bound).
    """
    def best(runs):
        vals = [max((r.get(key) for r in run["history"] if r.get(key) is not None), default=None) for run in runs]
        return None if not vals or None in vals else min(vals)

    rule = "given"
    if threshold is None:
        bt, bb = best(transfer_runs), best(baseline_runs)
        if bt is None or bb is None:
            return {"threshold": None, "threshold_rule": f"no {key} in the training histories (no validation split "
                    "or a strategy without epochs)", "transfer": None, "baseline": None, "speedup": None,
                    "speedup_at_least": None}
        threshold = 0.9 * min(bt, bb)
        rule = "0.9 x the lowest best validation accuracy of any run (every run reaches it)"
    elif not 0 < threshold <= 1:
        raise ConfigError(f"convergence threshold={threshold!r} must be a validation accuracy in (0, 1].")

    def side(runs):
        steps = [steps_to_accuracy(r["history"], threshold, steps_per_epoch(r["n_train"], r["batch_size"]), key)
                 for r in runs]
        got = [s for s in steps if s is not None]
        return {"steps": steps, "steps_mean": float(np.mean(got)) if got else None, "reached": len(got),
                "n_seeds": len(steps)}

    t, b = side(transfer_runs), side(baseline_runs)
    speed = bound = None
    if t["reached"] == t["n_seeds"] and t["steps_mean"]:
        if b["reached"] == b["n_seeds"]:
            speed = b["steps_mean"] / t["steps_mean"]
        else:  # a seed that never got there counts as its whole budget: a lower bound on the speed-up
            full = [s if s is not None else len(r["history"]) * steps_per_epoch(r["n_train"], r["batch_size"])
                    for s, r in zip(b["steps"], baseline_runs)]
            bound = float(np.mean(full)) / t["steps_mean"]
    return {"threshold": float(threshold), "threshold_rule": rule, "transfer": t, "baseline": b, "speedup": speed,
            "speedup_at_least": bound}


# ---------------------------------------------------------------------------- the curve
def run_sample_efficiency(cfg, out_dir: str | Path, *, transfer: str = "finetune", baseline: str = "scratch",
                          labels_per_class: Sequence = DEFAULT_LABELS_PER_CLASS, overwrite: bool = False,
                          echo=print, precomputed: dict | None = None, resume: bool = False) -> dict:
    """Train ``transfer`` and ``baseline`` at every ``k`` of ``labels_per_class`` on every seed.

    Each ``k`` is one :func:`transferkit.experiment.run_experiment` (under ``out_dir/k{k}``) of
    a copy of ``cfg`` with ``split.labels_per_class = k`` and the two strategies, so both see
    the same splits per seed and the budget of ``cfg``. ``"all"`` uses
    ``split.labels_per_class = None``: the ``split.train_fraction`` share of the target trains
    (its effective ``k`` is the mean training count per class). A ``k`` the target cannot
    supply (a class with ``k`` or fewer samples) is skipped and listed in ``skipped``.
    ``precomputed`` maps a ``k`` to the results of a :func:`run_experiment` already run with
    that split, the same seeds and both strategies (the negative-transfer run); it is reused.
    ``resume=True`` continues an interrupted curve in ``out_dir``: finished ``k`` runs are read
    back, the interrupted one is resumed, the others are run.

    Returns
    -------
    dict
        ``curve`` (rows ``{"label", "labels_per_class", "n_train", "accuracy": {strategy:
        {"mean", "std", "runs"}}}`` sorted by ``k``), ``labels_saved`` (see
        :func:`labels_saved`), ``headline`` (at ``k = 10``), ``skipped``, ``transfer``,
        ``baseline``.
    """
    import dataclasses

    from ..data.spec import load_dataset
    from ..experiment import make_splits
    from ._runs import run_or_resume
    from .negative_transfer import strategy_config

    t_cfg, b_cfg = strategy_config(cfg, transfer), strategy_config(cfg, baseline)
    target = load_dataset(cfg.target)
    out = Path(out_dir)
    curve, skipped = [], []
    for k in labels_per_class:  # every entry checked before the first k trains
        if k != "all" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"labels_per_class entries must be positive integers or 'all', got {k!r}.")
    for k in labels_per_class:
        split = dataclasses.replace(cfg.split, labels_per_class=None if k == "all" else int(k))
        try:
            for s in cfg.seeds:
                make_splits(target, split, s, load=load_dataset)
        except DataError as exc:
            skipped.append({"label": str(k), "reason": str(exc)})
            echo(f"sample efficiency: skipping k={k}: {exc}")
            continue
        res = (precomputed or {}).get(k)
        if res is None:
            echo(f"sample efficiency: k={k}")
            sub = dataclasses.replace(cfg, split=split, strategies=[t_cfg, b_cfg])
            res = run_or_resume(sub, out / f"k{k}", resume=resume, overwrite=overwrite, echo=echo,
                                report_features=False)  # t-SNE per k is not reported
        else:
            echo(f"sample efficiency: k={k} reuses {res['output_dir']}")
        n_classes = target.n_classes
        n_train = float(np.mean([r["n_train"] for r in res["runs"] if r["strategy"] == t_cfg.key]))
        acc = {}
        for key in (t_cfg.key, b_cfg.key):
            rs = [r["accuracy"] for r in res["runs"] if r["strategy"] == key]
            summ = res["summary"][key]  # the experiment's own mean ± std over seeds
            acc[key] = {"mean": summ["accuracy_mean"], "std": summ["accuracy_std"], "runs": rs}
        curve.append({"label": str(k), "labels_per_class": (n_train / n_classes) if k == "all" else float(k),
                      "n_train": n_train, "accuracy": acc, "output_dir": res["output_dir"]})
    curve.sort(key=lambda r: r["labels_per_class"])
    saved = labels_saved(curve, t_cfg.key, b_cfg.key) if curve else []
    return {"transfer": t_cfg.key, "baseline": b_cfg.key, "curve": curve, "labels_saved": saved,
            "headline": headline(saved, 10, t_cfg.key, b_cfg.key), "skipped": skipped,
            "interpolation": "linear in log(labels per class) on the baseline's mean accuracy curve"}


def format_curve(result: dict) -> str:
    """The curve as a Markdown table with the labels-saved column."""
    t, b = result["transfer"], result["baseline"]
    lines = [f"| labels/class | n train | {t} | {b} | {b} labels/class to match {t} |", "|---|---|---|---|---|"]
    saved = {r["label"]: r for r in result["labels_saved"]}
    for r in result["curve"]:
        at, ab = r["accuracy"][t], r["accuracy"][b]
        lab = r["label"] if r["label"] != "all" else f"all ({r['labels_per_class']:.1f})"
        lines.append(f"| {lab} | {r['n_train']:.0f} | {at['mean']:.3f} ± {at['std']:.3f} | "
                     f"{ab['mean']:.3f} ± {ab['std']:.3f} | {saved[r['label']]['display']} |")
    return "\n".join(lines)
