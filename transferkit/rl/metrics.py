r"""Transfer metrics of reinforcement learning (Taylor & Stone 2009, "Transfer learning for
reinforcement learning domains: a survey", JMLR 10, section 2.1).

A *learning curve* is the evaluation return :math:`R(t_j)` of the agent after :math:`t_j`
environment steps on the target, :math:`0 = t_0 < t_1 < \dots < t_m`. With :math:`R^T` the
curve of a transfer method and :math:`R^S` the curve of learning from scratch under the same
budget:

- **jumpstart**: :math:`J = R^T(t_0) - R^S(t_0)`, the initial gain;
- **asymptotic performance**: :math:`\bar R_{\text{final}} = \frac1k \sum_{j=m-k+1}^{m} R(t_j)`,
  the mean of the last ``tail`` evaluations (and its gain, transfer minus scratch);
- **time to threshold**: :math:`\min\{t_j : R(t_j) \ge \theta\}` (``None`` when the curve never
  gets there within its budget);
- **total reward** (area): :math:`A = \int_0^{T} (R(t) - R_{\min})\,dt` by the trapezoid rule,
  :math:`R_{\min}` the lowest return an episode can have (0 for CartPole, -500 for Acrobot), so
  that the area of a task with negative rewards is still positive; the **transfer ratio**
  :math:`r = (A^T - A^S) / A^S` over the steps both curves cover (Taylor & Stone's "total
  reward" ratio). A policy evaluated without learning (zero-shot) has a flat curve.

Over seeds, the per-seed *mean return over the budget* :math:`A/T + R_{\min}` of the transfer
method and of scratch (paired by seed: the same evaluation episodes) go to
:func:`transferkit.diagnostics.negative_transfer.compare_scores`, whose interval gives the
verdict (:func:`~transferkit.diagnostics.negative_transfer.verdict_from_interval`): an interval
below 0 is negative transfer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError


def as_curve(curve) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, returns)`` float arrays of a learning curve given as a mapping ``{"steps": [...],
    "returns": [...]}`` or a pair; steps strictly increasing from >= 0, every value finite."""
    if isinstance(curve, Mapping):
        if "steps" not in curve or "returns" not in curve:
            raise DataError("a learning curve is a mapping with 'steps' and 'returns' (one return per step count).")
        s, r = curve["steps"], curve["returns"]
    elif isinstance(curve, (tuple, list)) and len(curve) == 2:
        s, r = curve
    else:
        raise DataError(f"a learning curve is {{'steps': [...], 'returns': [...]}} or (steps, returns), got "
                        f"{type(curve).__name__}.")
    s, r = np.asarray(s, dtype=float).ravel(), np.asarray(r, dtype=float).ravel()
    if len(s) == 0 or len(s) != len(r):
        raise DataError(f"a learning curve needs one return per step count and at least one point, got {len(s)} "
                        f"steps and {len(r)} returns.")
    if not (np.isfinite(s).all() and np.isfinite(r).all()):
        raise DataError("a learning curve holds NaN or inf; every step count and return must be finite.")
    if s[0] < 0 or (len(s) > 1 and not (np.diff(s) > 0).all()):
        raise DataError("a learning curve's step counts must start at >= 0 and increase strictly.")
    return s, r


def jumpstart(transfer, scratch) -> float:
    """:math:`R^T(t_0) - R^S(t_0)`: the first evaluation's gain (both curves start at step 0)."""
    return float(as_curve(transfer)[1][0] - as_curve(scratch)[1][0])


def asymptotic_performance(curve, tail: int = 3) -> float:
    """Mean of the last ``tail`` evaluations (all of them when the curve is shorter)."""
    if isinstance(tail, bool) or not isinstance(tail, (int, np.integer)) or tail < 1:
        raise ConfigError(f"tail={tail!r} must be a whole number >= 1 (the last evaluations averaged).")
    r = as_curve(curve)[1]
    return float(r[-int(tail):].mean())


def time_to_threshold(curve, threshold: float) -> float | None:
    """The first evaluated step count whose return is >= ``threshold``; ``None`` if none is."""
    s, r = as_curve(curve)
    hit = np.flatnonzero(r >= float(threshold))
    return float(s[hit[0]]) if len(hit) else None


def area_under_curve(curve, *, floor: float = 0.0, until: float | None = None) -> float:
    r""":math:`\int_0^{T} (R(t) - R_{\min})\,dt` by the trapezoid rule, ``T = until`` (default: the
    curve's last step; the curve is interpolated linearly at ``until``, held flat beyond its
    last point). A one-point curve is flat: its area is :math:`(R - R_{\min})\,T`."""
    s, r = as_curve(curve)
    end = float(s[-1] if until is None else until)
    if end < 0:
        raise ConfigError(f"until={until!r} must be >= 0.")
    y = r - float(floor)
    if len(s) == 1:
        return float(y[0] * end)
    keep = s < end
    xs = np.concatenate([s[keep], [end]])
    ys = np.concatenate([y[keep], [np.interp(end, s, y)]])
    if s[0] > 0:  # before the first evaluation the curve is held at its first value
        xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[y[0]], ys])
    return float(np.trapezoid(ys, xs))


def mean_return_over_budget(curve, budget: float, *, floor: float = 0.0) -> float:
    """:math:`A / T + R_{\\min}`: the average evaluation return over the first ``budget`` steps."""
    if not budget > 0:
        raise ConfigError(f"budget={budget!r} must be > 0 steps.")
    return area_under_curve(curve, floor=floor, until=budget) / float(budget) + float(floor)


def transfer_ratio(transfer, scratch, *, floor: float = 0.0, until: float | None = None) -> float:
    """Taylor & Stone's total-reward ratio :math:`(A^T - A^S) / A^S` over ``[0, until]`` (default:
    the steps both curves cover; a flat zero-shot curve covers any budget)."""
    st, ss = as_curve(transfer)[0], as_curve(scratch)[0]
    if until is None:
        until = min(st[-1] if len(st) > 1 else np.inf, ss[-1] if len(ss) > 1 else np.inf)
        if not np.isfinite(until):
            raise ConfigError("both curves are single points: give until= (the budget in steps).")
    a_t = area_under_curve(transfer, floor=floor, until=until)
    a_s = area_under_curve(scratch, floor=floor, until=until)
    if a_s <= 0:
        raise DataError(f"the scratch curve's area above floor={floor} is {a_s:g}; the ratio needs a positive area "
                        "(set floor to the task's lowest return).")
    return float((a_t - a_s) / a_s)


def _ms(values) -> dict:
    vals = [float(v) for v in values]
    a = np.asarray(vals, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": vals}


def _ms_defined(values) -> dict:
    """:func:`_ms` over the values that are not ``None`` (``mean`` ``None`` when none is)."""
    ok = [v for v in values if v is not None]
    out = _ms(ok) if ok else {"mean": None, "std": None}
    out["values"] = list(values)
    return out


def _ratio_or_none(t, s, floor, budget):
    # a scratch curve at the task's lowest return all along (MountainCar's -200) has no area to divide by
    try:
        return transfer_ratio(t, s, floor=floor, until=budget)
    except DataError:
        return None


def transfer_metrics(transfer: Sequence, scratch: Sequence, *, budget: float, threshold: float, floor: float = 0.0,
                     tail: int = 3, confidence: float = 0.95) -> dict:
    """Every metric of one transfer method against scratch, per seed and over seeds.

    Parameters
    ----------
    transfer, scratch
        One learning curve per seed (paired by position: seed ``i`` of both).
    budget
        The target budget in steps ``T`` (a zero-shot curve is flat over it).
    threshold, floor, tail, confidence
        :math:`\\theta`, :math:`R_{\\min}`, the evaluations averaged for the asymptotic
        performance, and the interval level of the verdict.

    Returns
    -------
    dict
        ``jumpstart``, ``asymptotic`` (transfer's), ``asymptotic_gain``, ``transfer_ratio`` (a
        seed whose scratch curve stays at the floor has none: ``None``, left out of the mean),
        ``time_to_threshold`` and ``scratch_time_to_threshold`` (per seed, ``None`` = not
        reached; ``mean`` counts an unreached seed as the budget, a lower bound), each with mean,
        std and values; ``reached`` (seeds reaching the threshold, of ``n_seeds``); ``verdict``:
        :func:`~transferkit.diagnostics.negative_transfer.compare_scores` on the per-seed mean
        return over the budget (transfer minus scratch), with ``n_seeds`` and the interval.
    """
    from ..diagnostics.negative_transfer import compare_scores

    if len(transfer) != len(scratch) or not transfer:
        raise DataError(f"transfer_metrics pairs curves by seed: got {len(transfer)} transfer and {len(scratch)} "
                        "scratch curves; run both on the same seeds.")
    ttt = [time_to_threshold(c, threshold) for c in transfer]
    tts = [time_to_threshold(c, threshold) for c in scratch]

    def censored(v):
        return float(budget) if v is None else min(float(v), float(budget))

    score_t = [mean_return_over_budget(c, budget, floor=floor) for c in transfer]
    score_s = [mean_return_over_budget(c, budget, floor=floor) for c in scratch]
    out = {
        "n_seeds": len(transfer),
        "jumpstart": _ms([jumpstart(t, s) for t, s in zip(transfer, scratch)]),
        "asymptotic": _ms([asymptotic_performance(c, tail) for c in transfer]),
        "asymptotic_gain": _ms([asymptotic_performance(t, tail) - asymptotic_performance(s, tail)
                                for t, s in zip(transfer, scratch)]),
        "transfer_ratio": _ms_defined([_ratio_or_none(t, s, floor, budget) for t, s in zip(transfer, scratch)]),
        "time_to_threshold": {**_ms([censored(v) for v in ttt]), "values": ttt},
        "scratch_time_to_threshold": {**_ms([censored(v) for v in tts]), "values": tts},
        "reached": sum(v is not None for v in ttt), "scratch_reached": sum(v is not None for v in tts),
        "mean_return": _ms(score_t), "scratch_mean_return": _ms(score_s),
        "threshold": float(threshold), "budget": float(budget), "floor": float(floor),
    }
    out["verdict"] = (compare_scores(score_t, score_s, confidence=confidence) if len(transfer) >= 2 else
                      {"verdict": "not tested (one seed)", "n_seeds": 1, "delta_mean": score_t[0] - score_s[0]})
    return out


def retention(student: float, teacher: float, *, floor: float = 0.0) -> float:
    """:math:`(R_{student} - R_{\\min}) / (R_{teacher} - R_{\\min})`: the share of the teacher's
    return (above the task's lowest) that a distilled student keeps."""
    d = float(teacher) - float(floor)
    if d <= 0:
        raise DataError(f"the teacher's return {teacher:g} is not above the floor {floor:g}; retention is undefined.")
    return float((float(student) - float(floor)) / d)


__all__ = ["area_under_curve", "as_curve", "asymptotic_performance", "jumpstart", "mean_return_over_budget",
           "retention", "time_to_threshold", "transfer_metrics", "transfer_ratio"]
