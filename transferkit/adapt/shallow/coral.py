"""CORAL: correlation alignment of second-order statistics (Sun, Feng & Saenko, 2016)."""

from __future__ import annotations

import numpy as np

from ..._registry import register
from ..._validation import check_number
from ...errors import ConfigError
from ._base import BaseMappingAdapter, split_domains, sym_power


@register("shallow_da", "coral")
class CORALAdapter(BaseMappingAdapter):
    r"""CORAL: re-colour whitened source features with the target covariance.

    With :math:`C_s, C_t` the source and target feature covariances,

    .. math::

        \tilde C_s = C_s + \lambda I, \qquad \tilde C_t = C_t + \lambda I, \qquad
        A = \tilde C_s^{-1/2}\, \tilde C_t^{1/2},

    and a source row :math:`x` is mapped to

    .. math:: \phi(x) = (x - \mu_s) A + \mu_t

    (``center=True``; with ``center=False`` the paper's plain :math:`\phi(x) = x A`).
    :math:`A` is the closed-form minimiser of :math:`\lVert A^\top \tilde C_s A - \tilde C_t\rVert_F`
    (Sun et al., 2016, Sec. 3), so the mapped source has covariance
    :math:`A^\top C_s A = \tilde C_t - \lambda\, \tilde C_t^{1/2} \tilde C_s^{-1} \tilde C_t^{1/2}`,
    i.e. exactly :math:`C_t` as :math:`\lambda \to 0` on full-rank data. Target rows are left
    unchanged. A classifier trained on :math:`\phi(X_s)` is then applied to the raw target.

    Parameters
    ----------
    reg : float, default 1.0
        :math:`\lambda \ge 0`, added to the diagonal of both covariances (the paper uses 1 on
        standardized features). Needed whenever ``n_features`` exceeds the rows of a domain.
    center : bool, default True
        Also align the means: centre the source before whitening and add the target mean after.
        The paper applies :math:`A` to uncentred features; centring makes the map send the
        source's first two moments to the target's.

    Attributes
    ----------
    mean_source_, mean_target_ : ndarray of shape (n_features,)
    cov_source_, cov_target_ : ndarray of shape (n_features, n_features)
        The regularized covariances :math:`\tilde C_s, \tilde C_t`.
    coral_matrix_ : ndarray of shape (n_features, n_features)
        :math:`A = \tilde C_s^{-1/2} \tilde C_t^{1/2}`.
    diagnostics_ : dict
        See :mod:`transferkit.adapt.shallow._base` (closed form: only the row counts).
    n_features_in_ : int

    References
    ----------
    B. Sun, J. Feng and K. Saenko. "Return of Frustratingly Easy Domain Adaptation." AAAI 2016.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(size=(50, 3)), 2 * rng.normal(size=(60, 3)) + 1])
    >>> sd = np.r_[np.ones(50, int), -np.ones(60, int)]
    >>> Z = CORALAdapter(reg=1e-6).fit_transform(X, sample_domain=sd)
    >>> np.allclose(np.cov(Z[:50].T), np.cov(X[50:].T), atol=1e-4)
    True
    """

    _key = "coral"

    def __init__(self, reg: float = 1.0, center: bool = True):
        self.reg = reg
        self.center = center

    def _check_params(self) -> dict:
        reg = check_number("reg", self.reg, low=0.0)
        if not isinstance(self.center, (bool, np.bool_)):
            raise ConfigError(f"center must be True or False, got {self.center!r}.")
        return {"reg": reg}

    def fit(self, X, y=None, *, sample_domain=None) -> CORALAdapter:
        """Estimate the two covariances and the alignment matrix.

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
        reg = self._check_params()["reg"]
        X, _, is_source, is_target = self._fit_input(X, y, sample_domain)
        Xs, Xt = split_domains(X, is_source, is_target)
        d = X.shape[1]
        self.mean_source_ = Xs.mean(axis=0)
        self.mean_target_ = Xt.mean(axis=0)
        self.cov_source_ = np.cov(Xs, rowvar=False).reshape(d, d) + reg * np.eye(d)
        self.cov_target_ = np.cov(Xt, rowvar=False).reshape(d, d) + reg * np.eye(d)
        self.coral_matrix_ = sym_power(self.cov_source_, -0.5) @ sym_power(self.cov_target_, 0.5)
        self.diagnostics_ = self._diagnostics([], n_samples=len(X), n_fit_samples=len(X))
        return self

    def transform(self, X, sample_domain=None) -> np.ndarray:
        """Map source rows with :math:`\\phi`; return target rows unchanged.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        sample_domain : array-like of shape (n_samples,), optional
            Positive = source, negative = target; ``None``: all rows are target rows.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        X, is_source = self._new_input(X, sample_domain, default_source=False)
        out = X.copy()
        if is_source.any():
            Xs = X[is_source]
            if self.center:
                out[is_source] = (Xs - self.mean_source_) @ self.coral_matrix_ + self.mean_target_
            else:
                out[is_source] = Xs @ self.coral_matrix_
        return out
