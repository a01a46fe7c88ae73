"""Regression metrics: mean squared error, mean absolute error, the coefficient of determination.

Pure, validated functions of ``(y_true, y_pred)``: 1-D arrays of ``n`` values, or 2-D ``(n, k)``
arrays of ``k`` outputs, which are averaged uniformly (scikit-learn's
``multioutput="uniform_average"``, its default). They equal :func:`sklearn.metrics.mean_squared_error`,
:func:`~sklearn.metrics.mean_absolute_error` and :func:`~sklearn.metrics.r2_score` (the tests
compare them); they exist here so that multi-task heads and reports validate their inputs in the
one error format (a NaN, a shape mismatch or a string is a one-line
:class:`~transferkit.errors.DataError`) and need no scikit-learn import.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

__all__ = ["mae", "mse", "r2", "regression_report", "rmse"]


def _values(v, name: str) -> np.ndarray:
    a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
    if a.dtype.kind not in "biuf":
        shown = a.ravel()[0] if a.size else None
        shown = shown.item() if hasattr(shown, "item") else shown
        raise DataError(f"{name} must hold numbers, got dtype {a.dtype}"
                        + (f" (values such as {shown!r})" if shown is not None else "") + "; give numeric values.")
    a = a.astype(np.float64)
    if a.ndim not in (1, 2):
        raise DataError(f"{name} must be 1-D (n,) or 2-D (n, k), got shape {a.shape}.")
    return a


def _pair(y_true, y_pred, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, y_pred)`` as float64 ``(n, k)`` arrays of one shape, finite, ``n >= min_rows``."""
    t, p = _values(y_true, "y_true"), _values(y_pred, "y_pred")
    if t.ndim == 1:
        t = t[:, None]
    if p.ndim == 1:
        p = p[:, None]
    if t.shape != p.shape:
        raise DataError(f"y_true has shape {np.shape(y_true)} but y_pred {np.shape(y_pred)}; give one prediction "
                        "per target value.")
    if t.shape[0] < min_rows:
        raise DataError(f"y_true has {t.shape[0]} values; at least {min_rows} are needed.")
    for a, name in ((t, "y_true"), (p, "y_pred")):
        bad = ~np.isfinite(a)
        if bad.any():
            raise DataError(f"{name} holds {int(bad.any(axis=1).sum())} NaN or infinite value(s); drop those rows "
                            "(a missing target is not a prediction error).")
    return t, p


def mse(y_true, y_pred) -> float:
    """Mean squared error ``1/n sum_i (y_i - yhat_i)^2`` (averaged over outputs)."""
    t, p = _pair(y_true, y_pred)
    return float(((t - p) ** 2).mean(axis=0).mean())


def rmse(y_true, y_pred) -> float:
    """Root mean squared error: ``sqrt(mse)`` of each output, averaged over outputs (as
    scikit-learn's ``root_mean_squared_error``)."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(((t - p) ** 2).mean(axis=0)).mean())


def mae(y_true, y_pred) -> float:
    """Mean absolute error ``1/n sum_i |y_i - yhat_i|`` (averaged over outputs)."""
    t, p = _pair(y_true, y_pred)
    return float(np.abs(t - p).mean(axis=0).mean())


def r2(y_true, y_pred) -> float:
    """Coefficient of determination ``R^2 = 1 - SS_res / SS_tot``.

    ``SS_res = sum_i (y_i - yhat_i)^2`` and ``SS_tot = sum_i (y_i - mean(y))^2``, per output,
    then averaged over outputs. 1 is a perfect fit, 0 the constant prediction ``mean(y)``, and it
    is negative for predictions worse than that. A constant ``y_true`` (``SS_tot = 0``) gives 1
    when the predictions are exact and 0 otherwise (scikit-learn's ``force_finite=True``).
    Needs at least 2 values.
    """
    t, p = _pair(y_true, y_pred, min_rows=2)
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    out = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.where(ss_res == 0, 1.0, 0.0))
    return float(out.mean())


def regression_report(y_true, y_pred) -> dict[str, float]:
    """``{"mse", "rmse", "mae", "r2", "n"}`` of one set of predictions (``r2`` is NaN for one value)."""
    t, _ = _pair(y_true, y_pred)
    return {"mse": mse(y_true, y_pred), "rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred),
            "r2": r2(y_true, y_pred) if len(t) >= 2 else float("nan"), "n": int(len(t))}
