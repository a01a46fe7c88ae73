"""What every shallow domain-adaptation estimator shares: input checks, the domain split, and
the two base classes (mapping adapters and reweighters).

The data convention is skada's: one matrix ``X`` holds the source and target rows together and
``sample_domain`` says which is which,

- ``sample_domain[i] > 0``: row ``i`` is a **source** row (several positive values = several
  source domains, pooled here into one source),
- ``sample_domain[i] < 0``: row ``i`` is a **target** row (pooled likewise),
- ``0`` is not allowed.

Unlabeled target rows carry ``y = -1``. None of the estimators here reads ``y``: they are
unsupervised with respect to the target, and only :class:`~transferkit.adapt.shallow.DAClassifier`
uses the labels of source rows.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ...errors import DataError
from ...metrics._base import as_2d

__all__ = ["BaseMappingAdapter", "BaseReweighter", "check_domain_input", "split_domains", "sym_power"]


def _check_sample_domain(sample_domain, n: int, who: str, *, required: bool) -> np.ndarray | None:
    """``sample_domain`` as an int64 array of length ``n`` with no zeros (``None`` if allowed)."""
    if sample_domain is None:
        if required:
            raise DataError(
                f"{who} needs sample_domain: an array of shape (n_samples,) with a positive value "
                "for every source row and a negative value for every target row (skada convention, "
                "e.g. 1 for source and -2 for target)."
            )
        return None
    sd = np.asarray(sample_domain)
    if sd.ndim == 0:
        sd = np.full(n, sd.item())
    if sd.ndim != 1 or len(sd) != n:
        raise DataError(
            f"sample_domain has shape {sd.shape} but X has {n} rows; give one domain label per row."
        )
    if not (np.issubdtype(sd.dtype, np.integer) or np.issubdtype(sd.dtype, np.floating)):
        raise DataError(
            f"sample_domain must hold integers (positive = source, negative = target), got dtype {sd.dtype}."
        )
    if np.issubdtype(sd.dtype, np.floating):
        if not np.isfinite(sd).all() or not np.all(sd == np.round(sd)):
            raise DataError("sample_domain must hold integers (positive = source, negative = target).")
    sd = sd.astype(np.int64)
    zeros = int((sd == 0).sum())
    if zeros:
        raise DataError(
            f"sample_domain is 0 for {zeros} rows; use positive values for source rows and negative "
            "values for target rows."
        )
    return sd


def check_domain_input(X, y=None, sample_domain=None, *, who: str = "fit", min_rows_per_domain: int = 2):
    """Validate a skada-style fit input and return ``(X, y, is_source)``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Source and target rows, concatenated in any order. Must be finite.
    y : array-like of shape (n_samples,), optional
        Labels; ``-1`` for unlabeled rows. Only its length is checked here.
    sample_domain : array-like of shape (n_samples,)
        Positive for source rows, negative for target rows. Required.
    who : str
        Name used in error messages (``"CORALAdapter.fit"``).
    min_rows_per_domain : int
        Fewest rows each domain must have.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64
    y : ndarray of shape (n_samples,) or None
    is_source : ndarray of shape (n_samples,), bool

    Raises
    ------
    DataError
        Missing or malformed ``sample_domain``, a domain with no (or too few) rows, lengths that
        disagree, or non-finite values in ``X``.
    """
    X = as_2d(X, "X", min_rows=2)
    n = X.shape[0]
    sd = _check_sample_domain(sample_domain, n, who, required=True)
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n:
            raise DataError(f"y has shape {y.shape} but X has {n} rows; give one label per row (-1 when unlabeled).")
    is_source = sd > 0
    n_s, n_t = int(is_source.sum()), int((~is_source).sum())
    if n_s == 0 or n_t == 0:
        got = "only target rows (all negative)" if n_s == 0 else "only source rows (all positive)"
        raise DataError(
            "sample_domain must contain both positive (source) and negative (target) values; "
            f"got {got}. Pass the source and target rows together in X."
        )
    for name, k in (("source", n_s), ("target", n_t)):
        if k < min_rows_per_domain:
            raise DataError(f"{who}: the {name} domain has {k} rows; at least {min_rows_per_domain} are needed.")
    return X, y, is_source


def split_domains(X: np.ndarray, is_source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(X[is_source], X[~is_source])``: the source block and the target block, rows in order."""
    return X[is_source], X[~is_source]


class _ShallowDA(BaseEstimator):
    """Shared validation for fitted shallow DA estimators (no parameters of its own)."""

    def _fit_input(self, X, y, sample_domain, *, min_rows_per_domain: int = 2):
        X, y, is_source = check_domain_input(
            X, y, sample_domain, who=f"{type(self).__name__}.fit", min_rows_per_domain=min_rows_per_domain
        )
        self.n_features_in_ = X.shape[1]
        return X, y, is_source

    def _new_input(self, X, sample_domain, *, default_source: bool):
        """Validate rows for ``transform``/``compute_weights``; ``sample_domain=None`` means all
        rows are source (``default_source``) or all target."""
        check_is_fitted(self, "n_features_in_")
        X = as_2d(X, "X", min_rows=1)
        if X.shape[1] != self.n_features_in_:
            raise DataError(
                f"X has {X.shape[1]} features but {type(self).__name__} was fitted on "
                f"{self.n_features_in_}; transform rows embedded like the training rows."
            )
        sd = _check_sample_domain(sample_domain, X.shape[0], type(self).__name__, required=False)
        is_source = np.full(X.shape[0], default_source) if sd is None else sd > 0
        return X, is_source


class BaseMappingAdapter(_ShallowDA):
    """Base class of adapters that map rows to a new representation.

    Subclasses implement ``fit(X, y=None, *, sample_domain)`` and ``transform(X, sample_domain=None)``;
    ``sample_domain=None`` in ``transform`` means every row is a target row (what you have at
    prediction time).
    """

    def fit_transform(self, X, y=None, *, sample_domain=None) -> np.ndarray:
        """``fit(X, y, sample_domain=sample_domain).transform(X, sample_domain=sample_domain)``."""
        return self.fit(X, y, sample_domain=sample_domain).transform(X, sample_domain=sample_domain)


class BaseReweighter(_ShallowDA):
    """Base class of adapters that weight source rows instead of moving them.

    After ``fit``, ``weights_`` (shape ``(n_source,)``, source rows in the order they appear in
    ``X``) are the importance weights :math:`w(x) \\approx p_t(x) / p_s(x)` to pass as
    ``sample_weight`` when training on the source rows. ``transform`` leaves rows unchanged so
    a reweighter can stand where a mapping adapter stands.
    """

    def compute_weights(self, X, sample_domain=None) -> np.ndarray:
        """Importance weights of the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        sample_domain : array-like of shape (n_samples,), optional
            Positive = source, negative = target. ``None``: every row is a source row.

        Returns
        -------
        ndarray of shape (n_samples,)
            The weight of each source row; target rows get 0 (they are not training rows).
        """
        X, is_source = self._new_input(X, sample_domain, default_source=True)
        w = np.zeros(X.shape[0])
        if is_source.any():
            w[is_source] = self._weights_at(X[is_source])
        return w

    def transform(self, X, sample_domain=None) -> np.ndarray:
        """Rows unchanged (reweighting does not move samples); validated like a mapping."""
        X, _ = self._new_input(X, sample_domain, default_source=False)
        return X

    def fit_transform(self, X, y=None, *, sample_domain=None) -> np.ndarray:
        return self.fit(X, y, sample_domain=sample_domain).transform(X, sample_domain=sample_domain)

    def _weights_at(self, Xs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def sym_power(C: np.ndarray, p: float, *, floor: float = 0.0) -> np.ndarray:
    r"""``C**p`` for a symmetric positive (semi-)definite matrix, by eigendecomposition.

    .. math:: C^p = V \operatorname{diag}(\lambda_i^p) V^\top,
       \quad \lambda_i \leftarrow \max(\lambda_i, \text{floor})

    Eigenvalues below ``floor`` (or 0) are clipped so that round-off cannot produce NaN.
    """
    lam, V = np.linalg.eigh((C + C.T) / 2)
    lam = np.maximum(lam, floor)
    if p < 0:
        # a negative power of an exactly singular matrix: treat the null space as absent
        tiny = lam.max() * 1e-12 if lam.max() > 0 else 1.0
        lam = np.maximum(lam, tiny)
    return (V * lam**p) @ V.T
