"""Negative transfer: does the transfer strategy beat training from scratch, over seeds?

Negative transfer is transfer that *hurts*: the target model that starts from the source does
worse than one trained on the target alone under the same budget (Rosenstein, Marx, Kaelbling
& Dietterich 2005, "To transfer or not to transfer"; Wang, Dai, Poczos & Carbonell 2019,
"Characterizing and avoiding negative transfer"). It is measured here as the difference of
target test accuracy, transfer minus baseline, over seeds that share their splits:

    d_s = acc_transfer(seed s) - acc_baseline(seed s),   s = 1..n.

**Interval** (level ``confidence``, two-sided), by ``method``:

- ``"t"`` (default): the paired t interval ``dbar +- t_{n-1, 1-alpha/2} s_d / sqrt(n)`` and the
  paired t-test's p-value (Student 1908). Exact when the ``d_s`` are normal; it is the
  default because seeds are few.
- ``"bootstrap"``: the paired percentile bootstrap, ``n_resamples`` resamples of the seeds with
  replacement (Efron & Tibshirani 1993, ch. 13). Distribution-free but it *undercovers* with
  few seeds: with 3 seeds it excludes 0 whenever all three differences share a sign (25% of
  the time under the null). Use it with 10 or more seeds.
- ``"welch"``: the unpaired Welch interval with the Welch-Satterthwaite degrees of freedom
  (Welch 1947); it ignores the pairing, so it is wider, and fits runs that share no splits.

``p_value`` is the t-test's (paired, or Welch's for ``"welch"``) in every case.

**Verdict**: the interval lies above 0 -> ``"positive transfer"``; below 0 -> ``"negative
transfer"``; it contains 0 -> ``"no significant difference"``. An interval that only touches
0 counts as containing it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

VERDICTS = ("positive transfer", "no significant difference", "negative transfer")

#: What the source-only baseline of a diagnosis is, in the words its results carry.
SOURCE_ONLY_DESCRIPTION = "trained on labeled source only: no target labels, no target inputs"
METHODS = ("t", "bootstrap", "welch")


def verdict_from_interval(ci_low: float, ci_high: float) -> str:
    """``"positive transfer"`` if ``ci_low > 0``, ``"negative transfer"`` if ``ci_high < 0``,
    else ``"no significant difference"``."""
    if ci_low > 0:
        return "positive transfer"
    if ci_high < 0:
        return "negative transfer"
    return "no significant difference"


def _t_interval(mean: float, se: float, df: float, confidence: float) -> tuple[float, float, float]:
    from scipy import stats

    if se == 0.0 or not math.isfinite(se):
        # no spread: the difference is the same every seed, so it is either exactly 0 or certain
        return mean, mean, (1.0 if mean == 0 else 0.0)
    q = float(stats.t.ppf(0.5 + confidence / 2, df))
    p = float(2 * stats.t.sf(abs(mean / se), df))
    return mean - q * se, mean + q * se, p


def compare_scores(transfer: Sequence[float], baseline: Sequence[float], *, method: str = "t",
                   confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Compare per-seed scores of a transfer strategy and a baseline (paired by position).

    Parameters
    ----------
    transfer, baseline
        Scores (accuracy, higher is better), one per seed; ``transfer[i]`` and ``baseline[i]``
        share seed ``i``'s splits. Equal lengths >= 2 (``"welch"``: each >= 2, any lengths).
    method
        ``"t"``, ``"bootstrap"`` or ``"welch"`` (see the module docstring).
    confidence
        Two-sided interval level.
    n_resamples, seed
        Bootstrap resamples and their seed (``method="bootstrap"``).

    Returns
    -------
    dict
        ``verdict``, ``delta_mean`` (mean of ``transfer - baseline``), ``ci_low``, ``ci_high``,
        ``n_seeds``, ``p_value``, ``method``, ``confidence``, ``differences`` (per seed; ``None``
        for Welch with unequal lengths), ``transfer_mean``, ``baseline_mean``.
    """
    if method not in METHODS:
        from .._validation import suggest

        raise ConfigError(f"method={method!r} must be one of {', '.join(map(repr, METHODS))}." + suggest(method, METHODS))
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence!r} must lie strictly between 0 and 1 (e.g. 0.95).")
    a = np.asarray(transfer, dtype=float).ravel()
    b = np.asarray(baseline, dtype=float).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError("scores must be finite numbers; a run returned NaN or inf.")
    if method != "welch" and len(a) != len(b):
        raise DataError(f"paired comparison needs one baseline score per transfer score, got {len(a)} and "
                        f"{len(b)}; run both strategies on the same seeds, or use method='welch'.")
    if min(len(a), len(b)) < 2:
        raise DataError(f"a comparison needs at least 2 seeds per strategy (3 or more recommended), got "
                        f"{min(len(a), len(b))}; raise 'seeds' in the config.")
    paired = len(a) == len(b)
    d = a - b if paired else None
    if method == "welch":
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else float("inf")
        delta = float(a.mean() - b.mean())
        lo, hi, p = _t_interval(delta, se, df, confidence)
    else:
        delta = float(d.mean())
        se = float(d.std(ddof=1) / math.sqrt(len(d)))
        lo, hi, p = _t_interval(delta, se, len(d) - 1, confidence)
        if method == "bootstrap":
            rng = np.random.default_rng(seed)
            idx = rng.integers(0, len(d), size=(int(n_resamples), len(d)))
            means = d[idx].mean(axis=1)
            alpha = 1 - confidence
            lo, hi = (float(x) for x in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
    return {
        "verdict": verdict_from_interval(lo, hi),
        "delta_mean": delta,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_seeds": int(min(len(a), len(b))),
        "p_value": float(p),
        "method": {"t": "paired t", "bootstrap": f"paired bootstrap ({int(n_resamples)} resamples)",
                   "welch": "Welch t"}[method],
        "confidence": float(confidence),
        "differences": [float(x) for x in d] if d is not None else None,
        "transfer_mean": float(a.mean()),
        "baseline_mean": float(b.mean()),
    }


def rising_val_loss(history: Sequence[dict], *, rtol: float = 0.05, min_epochs: int = 3) -> bool:
    """Flag fine-tuning whose validation loss rises from the start.

    With ``L_0 .. L_{E-1}`` the per-epoch validation losses in ``history`` (``L_0`` after the
    first epoch, the earliest the Trainer measures), the run is flagged when all of:

    1. ``E >= min_epochs``;
    2. no later epoch improves on the first by more than ``rtol``:
       ``min_{e >= 1} L_e >= (1 - rtol) L_0``;
    3. the last epoch is worse than the first by more than ``rtol``: ``L_{E-1} > (1 + rtol) L_0``;
    4. the trend is upward: Kendall's tau between epoch and loss is positive.

    Such a run starts from its best point and drifts away: typically a learning rate too high
    for the pretrained weights, destroying what made them useful, or overfitting from the
    first step (Li et al. 2020, "Rethinking the hyperparameters for fine-tuning").

    Parameters
    ----------
    history
        The Trainer's per-epoch rows (``strategy.history_``); rows without ``val_loss`` are
        skipped.
    rtol, min_epochs
        Relative tolerance and the minimum number of validated epochs.
    """
    from scipy.stats import kendalltau

    losses = np.array([r["val_loss"] for r in history if r.get("val_loss") is not None], dtype=float)
    losses = losses[np.isfinite(losses)]
    if len(losses) < max(int(min_epochs), 2):
        return False
    first = losses[0]
    if losses[1:].min() < (1 - rtol) * first or not losses[-1] > (1 + rtol) * first:
        return False
    tau = kendalltau(np.arange(len(losses)), losses).statistic
    return bool(np.isfinite(tau) and tau > 0)


def label_spaces_match(source, target) -> bool:
    """Whether a source and target share their label space (same class count and, when both
    name their classes, the same names in the same order)."""
    if source is None or source.labels is None or target.labels is None:
        return False
    if source.n_classes != target.n_classes:
        return False
    if source.classes and target.classes:
        return list(source.classes) == list(target.classes)
    return True


def strategy_config(cfg, name: str):
    """The :class:`~transferkit.config.StrategyConfig` for ``name``: the config's strategy with
    that key (its parameters), else the registered strategy with its defaults."""
    from ..config import StrategyConfig, _parse_strategy

    for s in cfg.strategies:
        if s.key == name:
            return s
    return _parse_strategy(name, 0) if isinstance(name, str) else StrategyConfig(name)


#: Key (strategy name and result folder) of the source-only baseline in a negative-transfer run.
SOURCE_ONLY = "source_only"


def source_only_config(cfg):
    """The source-only baseline's :class:`~transferkit.config.StrategyConfig`: the registered
    strategy ``source_only`` (labeled source only: no target label, no target input), with the
    parameters of the config's own ``source_only`` strategy entry when it lists one. Only an
    entry of that strategy counts: another strategy merely labeled ``source_only`` (say
    ``adapt`` with ``method: null``, which uses target inputs) is not the baseline."""
    from ..config import StrategyConfig

    for s in cfg.strategies:
        if s.key == SOURCE_ONLY and s.name == SOURCE_ONLY:
            return s
    return StrategyConfig(SOURCE_ONLY)


def negative_transfer_config(cfg, *, transfer: str = "finetune", baseline: str = "scratch",
                             source_only: bool | str = "auto"):
    """The experiment :func:`run_negative_transfer` runs: a copy of ``cfg`` whose strategies
    are ``transfer``, ``baseline`` (and the ``source_only`` strategy when ``source_only`` asks
    for it, the label spaces match and neither compared strategy is it already). Returns
    ``(config, transfer_config, baseline_config, uses_source_only)``; nothing is trained or
    written, so callers can validate it first."""
    import dataclasses

    from ..data.spec import load_dataset

    t_cfg, b_cfg = strategy_config(cfg, transfer), strategy_config(cfg, baseline)
    strategies = [t_cfg, b_cfg]
    use_source_only = False
    if source_only is True or source_only == "auto":
        src = load_dataset(cfg.source) if cfg.source is not None else None
        match = src is not None and label_spaces_match(src, load_dataset(cfg.target))
        if source_only is True and not match:
            raise ConfigError("diagnose.source_only=true needs a labeled 'source' whose classes match the target's; "
                              "set source_only: auto or false.")
        use_source_only = match and SOURCE_ONLY not in (t_cfg.key, b_cfg.key)
    if use_source_only:
        strategies.append(source_only_config(cfg))
    return dataclasses.replace(cfg, strategies=strategies), t_cfg, b_cfg, use_source_only


def check_seeds(cfg) -> None:
    """The comparison needs at least 2 distinct seeds: checked before anything is trained."""
    seeds = list(cfg.seeds)
    if len(seeds) < 2:
        raise ConfigError(f"the negative-transfer test needs at least 2 seeds (3 or more recommended), the config "
                          f"has {len(seeds)}; set 'seeds: 3' in the config or pass --seeds 3.")


def run_negative_transfer(cfg, out_dir: str | Path, *, transfer: str = "finetune", baseline: str = "scratch",
                          source_only: bool | str = "auto", method: str = "t", confidence: float = 0.95,
                          n_resamples: int = 10_000, overwrite: bool = False, echo=print, on_run=None,
                          resume: bool = False, force: bool = False) -> dict:
    """Train ``transfer`` and ``baseline`` (and source-only) on every seed of ``cfg``; test the
    difference.

    Runs :func:`transferkit.experiment.run_experiment` on a copy of ``cfg`` whose strategies are
    the two compared (with the parameters ``cfg`` gives them, if it lists them), so both share
    every seed's splits and the budget the config sets. With ``source_only`` (``"auto"``: when
    ``cfg.source`` is given and its label space matches the target's), the source-only
    baseline runs too and is compared with the baseline: the strategy ``source_only`` (a
    bottleneck + head on labeled source features alone; it reads no target label and no target
    input: no AdaBN, checkpoint on the labeled source validation loss), so on a target whose
    labels are a permutation of the source's it scores about 0.
    ``resume=True`` continues an interrupted run in ``out_dir`` (finished runs are kept; their
    per-epoch histories are read back from ``metrics.jsonl``); ``force`` runs again the runs
    whose ``result.json`` is missing even when the directory is marked complete.

    Returns
    -------
    dict
        :func:`compare_scores`'s result plus ``transfer``, ``baseline``, ``rising_val_loss``
        (``{"flagged": any seed, "seeds": [...]}``), ``source_only`` (its comparison with
        ``accuracy_mean``, ``accuracy_std``, ``strategy`` and ``description`` added, or
        ``None``), ``experiment`` (the run's results dict).
    """
    import json

    from ._runs import run_or_resume

    check_seeds(cfg)
    sub, t_cfg, b_cfg, use_source_only = negative_transfer_config(cfg, transfer=transfer, baseline=baseline,
                                                                  source_only=source_only)
    if len(cfg.seeds) < 3:
        echo(f"note: {len(cfg.seeds)} seeds; the negative-transfer test wants 3 or more.")
    histories: dict[str, dict[int, list]] = {}

    def hook(strat, row, splits):
        histories.setdefault(row["strategy"], {})[row["seed"]] = list(getattr(strat, "history_", []) or [])
        if on_run is not None:
            on_run(strat, row, splits)

    res = run_or_resume(sub, out_dir, resume=resume, overwrite=overwrite, echo=echo, on_run=hook, force=force)
    by = {k: {r["seed"]: r["accuracy"] for r in res["runs"] if r["strategy"] == k} for k in res["summary"]}
    seeds = list(cfg.seeds)
    for s in seeds:  # runs kept from an interrupted run: their Trainer history is on disk
        if s not in histories.get(t_cfg.key, {}):
            f = Path(out_dir) / t_cfg.key / f"seed{s}" / "metrics.jsonl"
            rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []
            histories.setdefault(t_cfg.key, {})[s] = rows
    out = compare_scores([by[t_cfg.key][s] for s in seeds], [by[b_cfg.key][s] for s in seeds], method=method,
                         confidence=confidence, n_resamples=n_resamples)
    out["transfer"], out["baseline"] = t_cfg.key, b_cfg.key
    flags = [rising_val_loss(histories.get(t_cfg.key, {}).get(s, [])) for s in seeds]
    out["rising_val_loss"] = {"flagged": any(flags), "seeds": [s for s, f in zip(seeds, flags) if f],
                              "rule": "val loss lowest after epoch 0 and >5% higher at the end, upward trend"}
    out["source_only"] = None
    if use_source_only:
        so = compare_scores([by[SOURCE_ONLY][s] for s in seeds], [by[b_cfg.key][s] for s in seeds],
                            method=method, confidence=confidence, n_resamples=n_resamples)
        so["accuracy_mean"] = res["summary"][SOURCE_ONLY]["accuracy_mean"]
        so["accuracy_std"] = res["summary"][SOURCE_ONLY]["accuracy_std"]
        so["strategy"] = SOURCE_ONLY
        so["description"] = SOURCE_ONLY_DESCRIPTION
        out["source_only"] = so
    out["histories"] = histories
    out["experiment"] = res
    return out
