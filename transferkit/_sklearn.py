"""Input checks shared by transferkit's scikit-learn-style estimators (the shallow adapters,
``DAClassifier``, ``SelfTrainingClassifier``): one-line errors in scikit-learn's conventions."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import validate_data

from .errors import DataError, NonNumericDataError

__all__ = ["check_X", "check_class_labels", "masked_labels"]


def check_X(X, *, who: str, min_rows: int = 1, estimator=None, reset: bool = True) -> np.ndarray:
    """``X`` as a finite 2-D float64 array, or a one-line :class:`DataError` saying what to do.

    Accepts array-likes, pandas frames and torch tensors. Rejects sparse matrices, complex
    values, non-numeric values, 1-D or N-D arrays, no features, fewer than ``min_rows`` rows and
    NaN/inf (the wording contains the phrases scikit-learn's estimator checks look for).

    With ``estimator``, also does what :func:`sklearn.utils.validation.validate_data` does with
    the feature count and names: ``reset=True`` (fit) sets ``n_features_in_`` (and
    ``feature_names_in_`` for a frame with string column names); ``reset=False`` (transform,
    predict) checks them against the fitted values.
    """
    original = X
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # torch tensor
        X = X.detach().cpu().numpy()
    if sparse.issparse(X):
        raise DataError(
            f"{who}: X is a scipy sparse matrix ({X.shape}); these estimators need a dense array, "
            "pass X.toarray()."
        )
    try:
        A = np.asarray(X)
    except (TypeError, ValueError):
        raise DataError(f"{who}: X must be a numeric array, got {type(X).__name__}.") from None
    if np.iscomplexobj(A):
        raise DataError(f"{who}: Complex data not supported (X has dtype {A.dtype}); pass the real part or features.")
    try:
        A = A.astype(np.float64)
    except TypeError as exc:  # an entry that is not a number or a string (a dict, a list...)
        raise NonNumericDataError(
            f"{who}: X must be numeric, but an entry is not ({exc}); encode non-numeric columns first."
        ) from None
    except ValueError as exc:
        raise DataError(
            f"{who}: X must be numeric, got dtype {A.dtype} ({exc}); encode non-numeric columns first."
        ) from None
    if A.ndim == 1:
        raise DataError(
            f"{who}: X must be 2-D (n_samples, n_features), got a 1-D array of shape {A.shape}; "
            "Reshape your data with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample."
        )
    if A.ndim != 2:
        raise DataError(f"{who}: X must be 2-D (n_samples, n_features), got shape {A.shape}.")
    n, d = A.shape
    if n < min_rows:
        raise DataError(
            f"{who}: X has {n} sample(s) (shape={A.shape}) while a minimum of {min_rows} is required; "
            "pass more rows."
        )
    if d == 0:
        raise DataError(
            f"{who}: X has 0 feature(s) (shape=({n}, 0)) while a minimum of 1 is required; pass at least one column."
        )
    if not np.isfinite(A).all():
        bad = int((~np.isfinite(A)).any(axis=1).sum())
        raise DataError(f"{who}: X contains NaN or infinite values in {bad} rows; clean or drop them first.")
    if estimator is not None:
        name = type(estimator).__name__
        if not reset and d != estimator.n_features_in_:
            raise DataError(
                f"X has {d} features, but {name} is expecting {estimator.n_features_in_} features as input; "
                "pass rows with the same columns as in fit."
            )
        # feature names (pandas) and n_features_in_, exactly as scikit-learn records and checks them
        validate_data(estimator, original if hasattr(original, "columns") else A, skip_check_array=True, reset=reset)
    return A


def masked_labels(y: np.ndarray) -> np.ndarray:
    """Rows whose label is masked (skada: ``-1`` for class labels, NaN for a continuous target)."""
    if y.dtype.kind in "iu":
        return y == -1
    if y.dtype.kind == "f":
        if np.isnan(y).any() or y.ndim != 1:
            return np.isnan(y)
        # class labels stored as floats mask with -1; a continuous target only with NaN
        discrete = type_of_target(y) in ("binary", "multiclass")
        return (y == -1) if discrete else np.zeros(len(y), dtype=bool)
    if y.dtype.kind == "O":
        return np.array([isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                         and (v == -1 or v != v) for v in y], dtype=bool)
    return np.zeros(len(y), dtype=bool)  # strings, booleans: nothing is masked


def check_class_labels(y, n: int, who: str, *, mask_unlabeled: bool = False) -> np.ndarray:
    """``y`` as a 1-D array of class labels for ``n`` rows, or a one-line :class:`DataError`.

    A column vector ``(n, 1)`` is raveled with a :class:`~sklearn.exceptions.DataConversionWarning`
    (scikit-learn's convention); any other 2-D ``y`` is refused (one label per row), and so is a
    continuous ``y`` (these are classifiers). With ``mask_unlabeled``, rows labeled ``-1`` are
    left out of the label-type check (unlabeled rows).
    """
    if y is None:
        raise DataError(f"{who} requires y to be passed, but the target y is None; give one class label per row "
                        "(-1 for unlabeled rows).")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(f"A column-vector y was passed when a 1d array was expected; {who} ravels it to shape "
                      f"({y.shape[0]},) (pass y.ravel() to silence this).", DataConversionWarning, stacklevel=3)
        y = y.ravel()
    if y.ndim != 1:
        raise DataError(f"{who}: y should be a 1d array, got an array of shape {y.shape} instead; "
                        "give one class label per row (multi-output targets are not supported).")
    if len(y) != n:
        raise DataError(f"{who}: y has {len(y)} labels but X has {n} rows; give one label per row (-1 when unlabeled).")
    if y.dtype.kind == "f" and np.isinf(y).any():
        raise DataError(f"{who}: y contains infinity in {int(np.isinf(y).sum())} rows; give class labels "
                        "(-1 for unlabeled rows).")
    labeled = y[~masked_labels(y)] if mask_unlabeled else y
    kind = type_of_target(labeled) if len(labeled) else "binary"
    if kind not in ("binary", "multiclass"):
        example = labeled[np.flatnonzero(labeled != np.round(labeled))[0]] if kind == "continuous" else labeled[0]
        example = example.item() if isinstance(example, np.generic) else example
        raise DataError(
            f"{who}: Unknown label type {kind!r} for y (e.g. {example!r}); this is a classifier, so pass class "
            "labels (integers or strings, -1 for unlabeled rows), not a continuous or multi-output target."
        )
    return y
