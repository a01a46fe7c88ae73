"""Subspace alignment of PCA bases (Fernando, Habrard, Sebban & Tuytelaars, 2013)."""

from __future__ import annotations

import numpy as np
from scipy import linalg

from ..._registry import register
from ..._validation import check_number
from ._base import BaseMappingAdapter, split_domains


def pca_basis(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top-``k`` principal directions (columns, shape ``(d, k)``) of ``X``.

    Exact (no randomized SVD). For ``k`` at most half of ``min(n, d)`` only the ``k`` leading
    eigenpairs of the smaller of the Gram matrix :math:`X_c X_c^\top` and the scatter matrix
    :math:`X_c^\top X_c` are computed (several times faster than a full SVD; the leading
    directions are well conditioned); otherwise a full SVD. Signs are fixed (largest-magnitude
    entry of each direction positive) so the result is deterministic; the alignment is
    invariant to them anyway.
    """
    mean = X.mean(axis=0)
    Xc = X - mean
    n, d = Xc.shape
    if 2 * k <= min(n, d):
        if n < d:
            lam, U = linalg.eigh(Xc @ Xc.T, subset_by_index=[n - k, n - 1], driver="evr")
            lam, U = lam[::-1], U[:, ::-1]
            P = (Xc.T @ U) / np.sqrt(np.maximum(lam, np.finfo(float).tiny))
        else:
            _, P = linalg.eigh(Xc.T @ Xc, subset_by_index=[d - k, d - 1], driver="evr")
            P = P[:, ::-1]
    else:
        P = np.linalg.svd(Xc, full_matrices=False)[2][:k].T
    signs = np.sign(P[np.abs(P).argmax(axis=0), np.arange(P.shape[1])])
    signs[signs == 0] = 1.0
    return mean, P * signs


@register("shallow_da", "sa")
class SubspaceAlignmentAdapter(BaseMappingAdapter):
    r"""Subspace Alignment: align the source PCA basis to the target PCA basis.

    With :math:`P_s, P_t \in \mathbb{R}^{d \times k}` the top-:math:`k` principal directions of
    the (each centred on its own mean) source and target rows, the alignment

    .. math:: M^\star = \arg\min_M \lVert P_s M - P_t \rVert_F = P_s^\top P_t

    (closed form because :math:`P_s` has orthonormal columns; Fernando et al., 2013, Eq. 3)
    gives the :math:`k`-dimensional representations

    .. math:: z_s = (x_s - \mu_s) P_s M^\star, \qquad z_t = (x_t - \mu_t) P_t .

    With :math:`k = d` the map is a rotation: :math:`P_s P_s^\top = I` so
    :math:`z_s = (x_s - \mu_s) P_t`, and pairwise distances are preserved. The adaptation comes
    from choosing :math:`k < d`.

    Parameters
    ----------
    n_components : int or None, default 50
        :math:`k`. Capped at ``min(n_source - 1, n_target - 1, n_features)`` (the most principal
        directions the data define); ``None`` takes that cap. The value used is
        ``n_components_``.

    Attributes
    ----------
    mean_source_, mean_target_ : ndarray of shape (n_features,)
    components_source_, components_target_ : ndarray of shape (n_features, n_components_)
        :math:`P_s` and :math:`P_t`.
    alignment_ : ndarray of shape (n_components_, n_components_)
        :math:`M^\star = P_s^\top P_t`.
    n_components_ : int
    n_features_in_ : int

    References
    ----------
    B. Fernando, A. Habrard, M. Sebban and T. Tuytelaars. "Unsupervised Visual Domain Adaptation
    Using Subspace Alignment." ICCV 2013.
    """

    def __init__(self, n_components: int | None = 50):
        self.n_components = n_components

    def fit(self, X, y=None, *, sample_domain=None) -> SubspaceAlignmentAdapter:
        """Fit both PCA bases and the alignment matrix.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source and target rows together.
        y : array-like of shape (n_samples,), optional
            Labels are not used; only read to find the target rows (``y == -1``) when
            ``sample_domain`` is ``None``.
        sample_domain : array-like of shape (n_samples,), optional
            Positive for source rows, negative for target rows; ``None``: inferred from ``y``
            (:func:`~transferkit.adapt.shallow._base.infer_sample_domain`).

        Returns
        -------
        self
        """
        if self.n_components is not None:
            check_number("n_components", self.n_components, low=1, integer=True)
        X, _, is_source, is_target = self._fit_input(X, y, sample_domain)
        Xs, Xt = split_domains(X, is_source, is_target)
        cap = min(len(Xs) - 1, len(Xt) - 1, X.shape[1])
        k = cap if self.n_components is None else min(int(self.n_components), cap)
        self.mean_source_, self.components_source_ = pca_basis(Xs, k)
        self.mean_target_, self.components_target_ = pca_basis(Xt, k)
        self.alignment_ = self.components_source_.T @ self.components_target_
        self.n_components_ = k
        return self

    def transform(self, X, sample_domain=None) -> np.ndarray:
        """Project source rows with :math:`P_s M^\\star` and target rows with :math:`P_t`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        sample_domain : array-like of shape (n_samples,), optional
            Positive = source, negative = target; ``None``: all rows are target rows.

        Returns
        -------
        ndarray of shape (n_samples, n_components_)
        """
        X, is_source = self._new_input(X, sample_domain, default_source=False)
        out = np.empty((X.shape[0], self.n_components_))
        if is_source.any():
            out[is_source] = (X[is_source] - self.mean_source_) @ (self.components_source_ @ self.alignment_)
        if (~is_source).any():
            out[~is_source] = (X[~is_source] - self.mean_target_) @ self.components_target_
        return out
