"""KLIEP importance weights (Sugiyama, Nakajima, Kashima, von Bünau & Kawanabe, 2008)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.utils import check_random_state

from ..._registry import register
from ..._validation import check_number
from ...errors import ConfigError, DataError
from ...nn.bandwidth import median_heuristic
from ._base import (
    BaseReweighter,
    ShallowConvergenceWarning,
    check_flag,
    check_random_state_param,
    pooled_scaling,
    split_domains,
)

_TINY = np.finfo(float).tiny


def _gauss(A: np.ndarray, C: np.ndarray, sigma: float) -> np.ndarray:
    r""":math:`\exp(-\lVert a - c\rVert^2 / (2\sigma^2))` for all rows of ``A`` and ``C``."""
    return np.exp(-euclidean_distances(A, C, squared=True) / (2.0 * sigma**2))


def kliep_solve(Phi_t: np.ndarray, b: np.ndarray, max_iter: int = 100, tol: float = 0.0, *,
                return_n_iter: bool = False, return_converged: bool = False):
    r"""Maximise :math:`\frac1{n_t}\sum_j \log(\Phi_t \alpha)_j` s.t. :math:`b^\top\alpha = 1`, :math:`\alpha \ge 0`.

    Sugiyama et al.'s procedure (2008, Fig. 1): gradient ascent
    :math:`\alpha \leftarrow \alpha + \eta\,\Phi_t^\top (1 / \Phi_t\alpha)`, each step followed
    by the projection :math:`\alpha \leftarrow \alpha + (1 - b^\top\alpha) b / b^\top b`,
    :math:`\alpha \leftarrow \max(0, \alpha)`, :math:`\alpha \leftarrow \alpha / b^\top\alpha`;
    a step is kept only if it increases the objective, and the learning rate :math:`\eta` runs
    through :math:`10^3, 10^2, \ldots, 10^{-3}` (at most ``max_iter`` accepted steps each).

    Parameters
    ----------
    Phi_t : ndarray of shape (n_t, n_centers)
        Basis functions at the target rows.
    b : ndarray of shape (n_centers,)
        Mean of the basis functions over the source rows.
    max_iter : int
    tol : float
        A step must improve the objective by more than this.
    return_n_iter : bool
        Also return the number of ascent steps tried (accepted or not), over all learning rates.
    return_converged : bool
        Also return whether the ascent stopped by itself: the last (smallest) learning rate
        ended on a step that no longer improved the objective, rather than at ``max_iter``
        accepted steps.

    Returns
    -------
    alpha : ndarray of shape (n_centers,)
    n_iter : int
        Only with ``return_n_iter``; at least 1 and at most ``7 * max_iter``.
    converged : bool
        Only with ``return_converged``.
    """
    bb = float(b @ b)

    def project(a):
        a = a + (1.0 - b @ a) * b / bb
        a = np.maximum(a, 0.0)
        s = b @ a
        return a / s if s > 0 else np.full_like(a, 1.0 / b.sum())

    def score(a):
        return float(np.mean(np.log(np.maximum(Phi_t @ a, _TINY))))

    alpha = project(np.ones(Phi_t.shape[1]))
    best = score(alpha)
    tried = 0
    for eta in 10.0 ** np.arange(3, -4, -1):
        stalled = False
        for _ in range(max_iter):
            cand = project(alpha + eta * Phi_t.T @ (1.0 / np.maximum(Phi_t @ alpha, _TINY)))
            tried += 1
            s = score(cand)
            if s <= best + tol:
                stalled = True
                break
            alpha, best = cand, s
    out = (alpha,) + ((tried,) if return_n_iter else ()) + ((stalled,) if return_converged else ())
    return out if len(out) > 1 else alpha


@register("shallow_da", "kliep")
class KLIEPReweighter(BaseReweighter):
    r"""KLIEP: the density ratio as a Gaussian mixture fitted by maximum target likelihood.

    The ratio :math:`w(x) \approx p_t(x)/p_s(x)` is modelled as

    .. math:: \hat w(x) = \sum_{l=1}^{b} \alpha_l \exp\!\Big(-\frac{\lVert x - c_l\rVert^2}{2\sigma^2}\Big),

    with centres :math:`c_l` a seeded sample of ``n_centers`` target rows, and :math:`\alpha`
    maximises the log-likelihood of the target under :math:`\hat p_t = \hat w\, p_s`
    (Sugiyama et al., 2008, Eq. 4):

    .. math::

        \max_{\alpha \ge 0} \ \frac1{n_t} \sum_{j=1}^{n_t} \log \hat w(x^t_j)
        \quad \text{s.t.} \quad \frac1{n_s} \sum_{i=1}^{n_s} \hat w(x^s_i) = 1,

    solved by :func:`kliep_solve`. The normalization constraint makes ``weights_`` average
    exactly 1 over the source rows.

    :math:`\sigma` is chosen by likelihood cross-validation (the paper's LCV): the target rows
    are split into ``cv`` seeded folds; for each candidate :math:`\sigma`, :math:`\alpha` is
    fitted on all folds but one and scored by the mean :math:`\log \hat w` on the held-out
    fold; the :math:`\sigma` with the best average wins and :math:`\alpha` is refitted on all
    target rows. When the best candidate of the default grid is its smallest or largest, the
    search goes on in that direction (halving or doubling :math:`\sigma`, at most
    ``4`` more candidates) while the held-out likelihood still rises, as Sugiyama et al.'s own
    search continues until it stops improving; a width still at the edge of the searched range
    is warned about.

    The rows are z-scored first (``standardize``, pooled over both domains), as Sugiyama et al.
    normalise their inputs: one Gaussian width cannot fit columns in different units. The fit
    records the weights' effective sample size ``ess_`` and warns when it is below
    :data:`~transferkit.adapt.shallow._base.ESS_WARN_FRACTION` of the source rows (the
    weights rest on a few rows: typically domains that barely overlap, where LCV picks a narrow
    kernel), and ``converged_``.

    Parameters
    ----------
    sigma : float, sequence of float, or None, default None
        Kernel width (in the units of the scaled rows with ``standardize``). A float: use it
        (no cross-validation). A sequence: candidates for LCV. ``None``: LCV over
        ``sigma_grid`` times the median pairwise distance of the pooled rows (at most 1000 rows,
        seeded), extended at its edges as described above.
    sigma_grid : sequence of float, default (0.25, 0.5, 1.0, 2.0, 4.0)
        Multipliers of the median distance used when ``sigma`` is ``None``.
    n_centers : int, default 100
        :math:`b`, the number of target rows used as centres (all when fewer): a seeded
        subsample of the target, Sugiyama et al.'s default. The cost is
        :math:`O((n_s + n_t)\, b)`, so every row is used otherwise (``n_fit_samples_``).
    cv : int, default 5
        LCV folds (at least 2, at most ``n_target``).
    max_iter : int, default 100
        Accepted ascent steps per learning rate.
    tol : float, default 1e-8
        Minimum objective improvement for a step to be accepted.
    standardize : bool, default True
        z-score the columns with the mean and standard deviation of all rows (source and target
        pooled) before the kernel; ``compute_weights`` applies the same scaling.
    random_state : int, RandomState or None, default 0
        Seeds the centres, the folds and the median subsample, so that repeated fits are
        identical.

    Attributes
    ----------
    weights_ : ndarray of shape (n_source,)
        :math:`\hat w` at the source rows (mean 1).
    input_mean_, input_scale_ : ndarray of shape (n_features,)
        The pooled scaling (0 and 1 without ``standardize``).
    alpha_ : ndarray of shape (n_centers_,)
    centers_ : ndarray of shape (n_centers_, n_features)
        Scaled.
    sigma_ : float
        The width used.
    cv_scores_ : dict[float, float]
        Mean held-out log-likelihood of each candidate (empty when ``sigma`` is a float).
    n_iter_ : int
        Ascent steps tried (accepted or not) in the final fit, over all learning rates.
    converged_ : bool
        Whether the final ascent stopped by itself (see :func:`kliep_solve`).
    ess_ : float
        Effective sample size of ``weights_``, :math:`(\sum_i w_i)^2 / \sum_i w_i^2`.
    n_fit_samples_ : int
        Rows used (all of them).
    diagnostics_ : dict
        See :mod:`transferkit.adapt.shallow._base` (``converged``, ``n_iter``, ``ess``,
        ``n_fit_samples``).
    n_features_in_ : int

    References
    ----------
    M. Sugiyama, S. Nakajima, H. Kashima, P. von Bünau and M. Kawanabe. "Direct Importance
    Estimation with Model Selection and Its Application to Covariate Shift Adaptation."
    NeurIPS 2007 (Annals of the Institute of Statistical Mathematics 60, 2008).
    """

    _key = "kliep"

    #: how many halvings / doublings of sigma the default search may add beyond its grid
    _EXTEND = 4

    def __init__(self, sigma: float | Sequence[float] | None = None,
                 sigma_grid: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 n_centers: int = 100, cv: int = 5, max_iter: int = 100, tol: float = 1e-8, standardize: bool = True,
                 random_state=0):
        self.sigma = sigma
        self.sigma_grid = sigma_grid
        self.n_centers = n_centers
        self.cv = cv
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.random_state = random_state

    def _check_params(self) -> dict:
        def positive(values):
            try:
                arr = np.atleast_1d(np.asarray(values, dtype=float))
            except (TypeError, ValueError):
                return None
            return arr if arr.ndim == 1 and arr.size and np.all(np.isfinite(arr) & (arr > 0)) else None

        p = {"sigma": None, "grid": None}
        if self.sigma is None:
            grid = None if isinstance(self.sigma_grid, str) else positive(self.sigma_grid)
            if grid is None:
                raise ConfigError(
                    f"sigma_grid must be a non-empty sequence of positive numbers, got {self.sigma_grid!r}."
                )
            p["grid"] = sorted(float(g) for g in grid)
        else:
            sig = None if isinstance(self.sigma, str) else positive(self.sigma)
            if sig is None:
                raise ConfigError(f"sigma must be a positive number, a sequence of them, or None; got {self.sigma!r}.")
            p["sigma"] = sorted(float(v) for v in sig)
        p["n_centers"] = check_number("n_centers", self.n_centers, low=1, integer=True)
        p["cv"] = check_number("cv", self.cv, low=2, integer=True)
        p["max_iter"] = check_number("max_iter", self.max_iter, low=1, integer=True)
        p["tol"] = check_number("tol", self.tol, low=0.0)
        p["standardize"] = check_flag("standardize", self.standardize)
        p["random_state"] = check_random_state_param(self.random_state)
        return p

    def fit(self, X, y=None, *, sample_domain=None) -> KLIEPReweighter:
        """Choose :math:`\\sigma` by LCV and fit :math:`\\alpha`.

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
        p = self._check_params()
        max_iter, tol, cv = p["max_iter"], p["tol"], p["cv"]
        X, _, is_source, is_target = self._fit_input(X, y, sample_domain)
        notes = []
        mean, scale = pooled_scaling(X, p["standardize"])
        X = (X - mean) / scale
        Xs, Xt = split_domains(X, is_source, is_target)
        rng = check_random_state(p["random_state"])
        if p["sigma"] is None:
            med = median_heuristic(Xs, Xt, seed=int(rng.randint(2**31 - 1)))
            sigmas = [g * med for g in p["grid"]]
        else:
            sigmas = p["sigma"]
        nt = len(Xt)
        centers = Xt[np.sort(rng.choice(nt, size=min(p["n_centers"], nt), replace=False))]
        self.cv_scores_ = {}
        if len(sigmas) == 1:
            best = sigmas[0]
        else:
            if cv > nt:
                raise ConfigError(f"cv={cv} folds need at least {cv} target rows; got {nt}.")
            folds = np.empty(nt, dtype=int)
            folds[rng.permutation(nt)] = np.arange(nt) * cv // nt

            def lcv(s):
                Phi_t, b = _gauss(Xt, centers, s), _gauss(Xs, centers, s).mean(axis=0)
                if not (b > 0).any():  # so narrow that no centre reaches a source row: no model
                    self.cv_scores_[float(s)] = -np.inf
                    return -np.inf
                held = []
                for k in range(cv):
                    alpha = kliep_solve(Phi_t[folds != k], b, max_iter, tol)
                    held.append(np.mean(np.log(np.maximum(Phi_t[folds == k] @ alpha, _TINY))))
                self.cv_scores_[float(s)] = float(np.mean(held))
                return self.cv_scores_[float(s)]

            for s in sigmas:
                lcv(s)
            best = max(self.cv_scores_, key=self.cv_scores_.get)
            widest = max(self.cv_scores_)
            if p["sigma"] is None and best in (min(self.cv_scores_), widest):  # go on while LCV improves
                step = 2.0 if best == widest else 0.5
                for _ in range(self._EXTEND):
                    nxt = best * step
                    if lcv(nxt) <= self.cv_scores_[best]:
                        break
                    best = nxt
            if best in (min(self.cv_scores_), max(self.cv_scores_)):
                side = "largest" if best == max(self.cv_scores_) else "smallest"
                self._warn(notes, f"likelihood cross-validation chose the {side} kernel width searched "
                                  f"(sigma={best:.3g}), so the best width may lie beyond it; pass sigma candidates "
                                  f"beyond {best:.3g} (a list) and check diagnostics_.")
        b = _gauss(Xs, centers, best).mean(axis=0)
        if not (b > 0).any():
            raise DataError(f"KLIEPReweighter: sigma={best:.3g} is so narrow that every Gaussian centre (a target row) "
                            "is 0 at every source row; give a larger sigma (or sigma=None for the cross-validated "
                            "width).")
        self.alpha_, self.n_iter_, converged = kliep_solve(_gauss(Xt, centers, best), b, max_iter, tol,
                                                           return_n_iter=True, return_converged=True)
        if not converged:
            self._warn(notes, f"the likelihood ascent was still improving after max_iter={max_iter} steps at the "
                              "smallest learning rate; raise max_iter.", ShallowConvergenceWarning)
        self.input_mean_, self.input_scale_ = mean, scale
        self.centers_ = centers
        self.sigma_ = float(best)
        self.weights_ = _gauss(Xs, centers, best) @ self.alpha_
        self.converged_ = bool(converged)
        self.n_fit_samples_ = len(X)
        self.ess_, frac = self._check_ess(notes, self.weights_)
        self.diagnostics_ = self._diagnostics(notes, n_samples=len(X), n_fit_samples=len(X), converged=converged,
                                              n_iter=self.n_iter_, ess=self.ess_, ess_fraction=frac)
        return self

    def _weights_at(self, Xs: np.ndarray) -> np.ndarray:
        return _gauss((Xs - self.input_mean_) / self.input_scale_, self.centers_, self.sigma_) @ self.alpha_
