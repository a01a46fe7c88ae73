"""What every metric shares: the result type and input checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validation import as_2d, check_labels  # defined at the bottom layer: nn/ and training use them too
from ..errors import DataError

__all__ = ["MetricResult", "as_2d", "check_labels", "check_pair", "mean_std"]


@dataclass(frozen=True)
class MetricResult:
    """A metric's value with, where a test or bootstrap exists, its p-value or interval.

    Attributes
    ----------
    name
        Registry name of the metric (``"mmd"``, ``"a_distance"``, ``"logme"``...).
    value
        The estimate.
    p_value
        p-value of the associated test (e.g. MMD permutation test), else ``None``.
    ci
        ``(low, high)`` confidence interval, else ``None``.
    details
        Extra numbers worth reporting (bandwidth, number of permutations, estimator...).
    """

    name: str
    value: float
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"value": float(self.value)}
        if self.p_value is not None:
            out["p_value"] = float(self.p_value)
        if self.ci is not None:
            out["ci"] = [float(self.ci[0]), float(self.ci[1])]
        if self.details:
            out["details"] = self.details
        return out

    def __float__(self) -> float:
        return float(self.value)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of per-seed values; the std of a single
    value is reported as 0.0. The one convention for every "mean ± std over seeds" table."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def mean_std_dict(values) -> dict:
    """:func:`mean_std` as ``{"mean": ..., "std": ...}`` (the benchmarks' summary cells)."""
    m, sd = mean_std(list(values))
    return {"mean": m, "std": sd}


def check_pair(Xs, Xt, *, min_rows: int = 2, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Source and target samples as 2-D arrays with the same number of features."""
    S = as_2d(Xs, "source samples", min_rows=min_rows, dtype=dtype)
    T = as_2d(Xt, "target samples", min_rows=min_rows, dtype=dtype)
    if S.shape[1] != T.shape[1]:
        raise DataError(
            f"source and target have different feature dimensions ({S.shape[1]} vs {T.shape[1]}); "
            "embed both with the same backbone."
        )
    return S, T


def class_indices(name: str, v) -> np.ndarray:
    """A 1-D array (or tensor) of class indices as int64; integral floats are accepted, anything
    else is a one-line :class:`DataError` naming ``name``."""
    a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of class indices, got shape {a.shape}.")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise DataError(f"{name} must hold integer class indices, got dtype {a.dtype}.")
    return a.astype(np.int64)
