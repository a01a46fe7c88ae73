"""What every metric shares: the result type and input checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError


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


def as_2d(X, name: str, *, min_rows: int = 2, dtype=np.float64) -> np.ndarray:
    """``X`` (array-like or torch tensor) as a finite 2-D float array; a 1-D input is one feature."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    try:
        A = np.asarray(X, dtype=dtype)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a numeric array, got {type(X).__name__}.") from None
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2:
        raise DataError(f"{name} must have shape (n_samples, n_features), got {A.shape}.")
    if A.shape[0] < min_rows:
        raise DataError(f"{name} has {A.shape[0]} samples; at least {min_rows} are needed.")
    if not np.isfinite(A).all():
        bad = int((~np.isfinite(A)).any(axis=1).sum())
        raise DataError(f"{name} contains NaN or infinite values in {bad} rows; clean or drop them first.")
    return A


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


def check_labels(y, n: int, name: str = "labels") -> np.ndarray:
    """Integer class labels ``0..K-1`` of length ``n`` (no unlabeled ``-1`` allowed)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{name} must have shape ({n},), got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{name} must be integer class indices, got dtype {y.dtype}.")
    if (y < 0).any():
        raise DataError(f"{name} contains negative values (unlabeled samples?); pass labeled samples only.")
    return y.astype(np.int64)
