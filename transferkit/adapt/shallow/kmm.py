"""Kernel Mean Matching importance weights (Huang, Gretton, Borgwardt, Schölkopf & Smola, 2007)."""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize
from scipy.sparse import linalg as sparse_linalg
from sklearn.metrics import pairwise_distances_argmin
from sklearn.utils import check_random_state

from ..._registry import register
from ..._validation import check_choice, check_number
from ...errors import ConfigError
from ...nn.bandwidth import median_heuristic
from ._base import (
    BaseReweighter,
    ShallowConvergenceWarning,
    check_flag,
    check_random_state_param,
    pooled_scaling,
    split_domains,
)
from .tca import kernel_matrix


def project_box_sum(v: np.ndarray, upper: float, lo: float, hi: float) -> np.ndarray:
    r"""Euclidean projection of ``v`` onto :math:`\{\beta : 0 \le \beta_i \le U,\ lo \le \sum_i \beta_i \le hi\}`.

    By the KKT conditions the projection is :math:`\operatorname{clip}(v - \tau, 0, U)` for the
    scalar :math:`\tau` that puts the sum on the violated bound (:math:`\tau = 0` when the
    clipped sum already lies in :math:`[lo, hi]`); the sum is non-increasing in :math:`\tau`,
    so :math:`\tau` is found by bisection. Requires :math:`0 \le lo \le hi` and :math:`lo \le nU`.
    """
    w = np.clip(v, 0.0, upper)
    s = w.sum()
    if lo <= s <= hi:
        return w
    target = hi if s > hi else lo
    if s > hi:
        a, b = 0.0, float(v.max())  # sum(a) > hi >= sum(b) = 0
    else:
        a, b = float(v.min()) - upper, 0.0  # sum(a) = n U >= lo > sum(b)
    for _ in range(100):
        mid = 0.5 * (a + b)
        if np.clip(v - mid, 0.0, upper).sum() > target:
            a = mid
        else:
            b = mid
        if b - a <= 1e-12 * max(1.0, abs(a), abs(b)):
            break
    return np.clip(v - 0.5 * (a + b), 0.0, upper)


@register("shallow_da", "kmm")
class KMMReweighter(BaseReweighter):
    r"""Kernel Mean Matching: source weights whose kernel mean matches the target's.

    With :math:`K_{ij} = k(x^s_i, x^s_j)` and :math:`\kappa_i = \frac{n_s}{n_t} \sum_{j=1}^{n_t}
    k(x^s_i, x^t_j)`, the weights solve the quadratic program (Huang et al., 2007, Eq. 8)

    .. math::

        \min_\beta \ \tfrac12 \beta^\top K \beta - \kappa^\top \beta
        \quad \text{s.t.} \quad 0 \le \beta_i \le B, \quad
        \Big| \sum_i \beta_i - n_s \Big| \le n_s \epsilon ,

    which is :math:`\tfrac{n_s^2}{2}` times the squared MMD between the
    :math:`\beta`-weighted source and the target, up to a constant. ``weights_`` is
    :math:`\beta` (mean close to 1 by the last constraint).

    Solvers: ``"pgd"`` (default), accelerated projected gradient (FISTA with gradient-based
    adaptive restart, step :math:`1/\lambda_{\max}(K)`), whose projection onto the box and
    the sum slab is exact (:func:`project_box_sum`); ``"slsqp"``,
    :func:`scipy.optimize.minimize` with ``method="SLSQP"`` (slower, for small problems).

    For a source row not seen in ``fit``, :meth:`compute_weights` returns the Nadaraya–Watson
    kernel average :math:`\sum_i k(x, x^s_i)\beta_i / \sum_i k(x, x^s_i)` (KMM itself only
    weights its training rows); fitted rows get their :math:`\beta_i` exactly.

    KMM's weights often concentrate on a few rows (an upper bound ``B`` of 1000 allows it): the
    fit records their effective sample size ``ess_`` and warns (a
    :class:`~transferkit.errors.TransferKitWarning`) when it is below
    :data:`~transferkit.adapt.shallow._base.ESS_WARN_FRACTION` of the source rows, and warns
    (:class:`~transferkit.adapt.shallow._base.ShallowConvergenceWarning`) when the solver stops
    at ``max_iter``; ``converged_`` records it.

    Parameters
    ----------
    kernel : {"rbf", "linear"}, default "rbf"
        ``"linear"`` matches only the means.
    gamma : float or None, default None
        RBF parameter in :math:`\exp(-\gamma\lVert x-x'\rVert^2)`; ``None``: median heuristic
        :math:`\gamma = 1/(2\sigma^2)`, :math:`\sigma` the median pairwise distance of the pooled
        rows (at most 1000, seeded by ``random_state``), of the scaled rows with ``standardize``.
    B : float, default 1000.0
        Upper bound on each weight.
    eps : float or None, default None
        :math:`\epsilon`; ``None``: :math:`(\sqrt{n_s} - 1)/\sqrt{n_s}` (Huang et al.'s choice).
    solver : {"pgd", "slsqp"}, default "pgd"
    max_iter : int, default 1000
    tol : float, default 1e-5
        ``"pgd"`` stops when the projected gradient (gradient mapping) :math:`\lambda_{\max}
        \lVert z - \Pi(z - \nabla f(z)/\lambda_{\max})\rVert \le \text{tol}\,\lVert\kappa\rVert`;
        ``"slsqp"`` uses it as ``ftol``. (:math:`K` is often so ill-conditioned that
        :math:`\beta` is not identifiable along flat directions while the objective is.)
    max_samples : int, default 5000
        The QP needs the :math:`n_s \times n_s` kernel and the :math:`n_s \times n_t` cross
        kernel (:math:`O(n^2)` memory and time per iteration). A domain with more rows than this
        is represented by a seeded subsample of ``max_samples`` rows; the source rows left out
        get the Nadaraya–Watson weight above, ``n_fit_samples_`` says how many rows were used,
        and a :class:`~transferkit.errors.TransferKitWarning` says so.
    standardize : bool, default True
        z-score the columns with the mean and standard deviation of all rows (source and target
        pooled) before the kernel, so that it sees every column on one scale.
    random_state : int, RandomState or None, default 0
        Seeds the subsamples (``max_samples``, the median heuristic).

    Attributes
    ----------
    weights_ : ndarray of shape (n_source,)
        :math:`\beta`, in the order of the source rows of ``X`` (fitted rows) or their
        Nadaraya–Watson extension (rows left out by ``max_samples``).
    input_mean_, input_scale_ : ndarray of shape (n_features,)
        The pooled scaling (0 and 1 without ``standardize``).
    X_source_ : ndarray of shape (n_fit_source, n_features)
        The source rows the QP was solved on, scaled.
    beta_ : ndarray of shape (n_fit_source,)
        :math:`\beta` at those rows.
    gamma_ : float or None
    n_iter_ : int
    converged_ : bool
        Whether the solver met its stopping rule before ``max_iter``.
    ess_ : float
        Effective sample size of ``weights_``, :math:`(\sum_i w_i)^2 / \sum_i w_i^2`.
    n_fit_samples_ : int
        Rows (source and target) the QP was solved on.
    objective_ : float
        Final :math:`\tfrac12\beta^\top K\beta - \kappa^\top\beta`.
    diagnostics_ : dict
        See :mod:`transferkit.adapt.shallow._base` (``converged``, ``n_iter``, ``ess``,
        ``n_fit_samples``).
    n_features_in_ : int

    References
    ----------
    J. Huang, A. Gretton, K. Borgwardt, B. Schölkopf and A. J. Smola. "Correcting Sample
    Selection Bias by Unlabeled Data." NeurIPS 2007.
    A. Beck and M. Teboulle. "A Fast Iterative Shrinkage-Thresholding Algorithm." SIAM J.
    Imaging Sciences 2(1), 2009 (FISTA); B. O'Donoghue and E. Candès, "Adaptive Restart for
    Accelerated Gradient Schemes", 2015.
    """

    _key = "kmm"

    def __init__(self, kernel: str = "rbf", gamma: float | None = None, B: float = 1000.0, eps: float | None = None,
                 solver: str = "pgd", max_iter: int = 1000, tol: float = 1e-5, max_samples: int = 5000,
                 standardize: bool = True, random_state=0):
        self.kernel = kernel
        self.gamma = gamma
        self.B = B
        self.eps = eps
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.max_samples = max_samples
        self.standardize = standardize
        self.random_state = random_state

    def _check_params(self) -> dict:
        return {
            "kernel": check_choice("kernel", self.kernel, ("rbf", "linear")),
            "solver": check_choice("solver", self.solver, ("pgd", "slsqp")),
            "gamma": None if self.gamma is None else check_number("gamma", self.gamma, low=0.0, low_inclusive=False),
            "B": check_number("B", self.B, low=0.0, low_inclusive=False),
            "eps": None if self.eps is None else check_number("eps", self.eps, low=0.0),
            "max_iter": check_number("max_iter", self.max_iter, low=1, integer=True),
            "tol": check_number("tol", self.tol, low=0.0),
            "max_samples": check_number("max_samples", self.max_samples, low=2, integer=True),
            "standardize": check_flag("standardize", self.standardize),
            "random_state": check_random_state_param(self.random_state),
        }

    def fit(self, X, y=None, *, sample_domain=None) -> KMMReweighter:
        """Solve the KMM quadratic program for the source rows.

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
        upper, max_iter, tol, max_samples = p["B"], p["max_iter"], p["tol"], p["max_samples"]
        X, _, is_source, is_target = self._fit_input(X, y, sample_domain, min_rows_per_domain=1)
        notes = []
        mean, scale = pooled_scaling(X, p["standardize"])
        X = (X - mean) / scale
        Xs_all, Xt_all = split_domains(X, is_source, is_target)
        rng = check_random_state(p["random_state"])
        Xs, Xt = Xs_all, Xt_all
        if len(Xs) > max_samples:
            Xs = Xs[np.sort(rng.choice(len(Xs), max_samples, replace=False))]
        if len(Xt) > max_samples:
            Xt = Xt[np.sort(rng.choice(len(Xt), max_samples, replace=False))]
        if len(Xs) + len(Xt) < len(Xs_all) + len(Xt_all):
            self._warn_subsample(notes, len(Xs) + len(Xt), len(Xs_all) + len(Xt_all), "its weights",
                                 "the source x source and source x target kernels: O(n^2) memory")
        ns, nt = len(Xs), len(Xt)
        eps = (np.sqrt(ns) - 1) / np.sqrt(ns) if p["eps"] is None else p["eps"]
        lo, hi = max(ns * (1 - eps), 0.0), ns * (1 + eps)
        if lo > ns * upper:
            raise ConfigError(
                f"B={upper!r} is too small: the weights must sum to at least n_source*(1-eps)="
                f"{lo:.4g}, which needs B >= 1 - eps = {1 - eps:.4g}."
            )
        if self.kernel == "rbf":
            gamma = p["gamma"]
            if gamma is None:
                gamma = 1.0 / (2.0 * median_heuristic(Xs, Xt, seed=int(rng.randint(2**31 - 1))) ** 2)
            self.gamma_ = float(gamma)
        else:
            self.gamma_ = None
        K = kernel_matrix(Xs, Xs, self.kernel, self.gamma_)
        kappa = (ns / nt) * kernel_matrix(Xs, Xt, self.kernel, self.gamma_).sum(axis=1)
        if self.solver == "pgd":
            beta, n_iter, converged, detail = self._fista(K, kappa, upper, lo, hi, max_iter, tol)
        else:
            beta, n_iter, converged, detail = self._slsqp(K, kappa, upper, lo, hi, max_iter, tol)
        if not converged:
            self._warn(notes, f"the {detail}; raise max_iter (or tol) and check diagnostics_.",
                       ShallowConvergenceWarning)
        self.input_mean_, self.input_scale_ = mean, scale
        self.X_source_, self.beta_ = Xs, beta
        # source rows left out of the QP (max_samples) get the kernel average of the fitted ones
        self.weights_ = beta if Xs is Xs_all else self._extend(Xs_all)
        self.n_iter_ = n_iter
        self.converged_ = bool(converged)
        self.n_fit_samples_ = ns + nt
        self.objective_ = float(0.5 * beta @ K @ beta - kappa @ beta)
        self.ess_, frac = self._check_ess(notes, self.weights_)
        self.diagnostics_ = self._diagnostics(notes, n_samples=len(X), n_fit_samples=ns + nt, converged=converged,
                                              n_iter=n_iter, ess=self.ess_, ess_fraction=frac)
        return self

    @staticmethod
    def _fista(K, kappa, upper, lo, hi, max_iter, tol):
        n = len(kappa)
        # step 1/L needs L >= lambda_max(K): Lanczos estimate plus a margin for its tolerance
        if n > 50:
            v0 = np.full(n, 1.0 / np.sqrt(n))  # fixed start: deterministic
            L = float(sparse_linalg.eigsh(K, k=1, which="LA", tol=1e-6, v0=v0, return_eigenvectors=False)[0])
        else:
            L = float(linalg.eigvalsh(K)[-1])
        L = max(L * (1 + 1e-4), 1e-12)
        beta = project_box_sum(np.ones(n), upper, lo, hi)
        z, t = beta.copy(), 1.0
        scale = max(float(np.linalg.norm(kappa)), 1e-300)
        for it in range(1, max_iter + 1):
            new = project_box_sum(z - (K @ z - kappa) / L, upper, lo, hi)
            # norm of the gradient mapping L (z - new): zero exactly at the constrained optimum
            converged = L * np.linalg.norm(new - z) <= tol * scale
            step = new - beta
            if (z - new) @ step > 0:  # momentum points uphill: restart (O'Donoghue & Candès)
                t, z = 1.0, new.copy()
            else:
                t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
                z = new + ((t - 1) / t_new) * step
                t = t_new
            beta = new
            if converged:
                return beta, it, True, ""
        rel = L * np.linalg.norm(new - z) / scale
        return beta, max_iter, False, (f"projected gradient (FISTA) stopped at max_iter={max_iter} before converging "
                                       f"(gradient-mapping norm {rel:.2g} of ||kappa||, tol={tol:g})")

    @staticmethod
    def _slsqp(K, kappa, upper, lo, hi, max_iter, tol):
        n = len(kappa)
        cons = [{"type": "ineq", "fun": lambda b: hi - b.sum(), "jac": lambda b: -np.ones(n)},
                {"type": "ineq", "fun": lambda b: b.sum() - lo, "jac": lambda b: np.ones(n)}]
        res = optimize.minimize(
            lambda b: 0.5 * b @ K @ b - kappa @ b, project_box_sum(np.ones(n), upper, lo, hi),
            jac=lambda b: K @ b - kappa, bounds=[(0.0, upper)] * n, constraints=cons, method="SLSQP",
            options={"maxiter": max_iter, "ftol": max(tol, 1e-12)},
        )
        detail = "" if res.success else f"SLSQP solver stopped early after {int(res.nit)} iterations ({res.message})"
        return project_box_sum(res.x, upper, lo, hi), int(res.nit), bool(res.success), detail

    def _weights_at(self, Xs: np.ndarray) -> np.ndarray:
        return self._extend((Xs - self.input_mean_) / self.input_scale_)

    def _extend(self, Z: np.ndarray) -> np.ndarray:
        """Weights of scaled source rows: :math:`\\beta_i` for a fitted row, the Nadaraya–Watson
        average of the fitted weights for any other."""
        idx = pairwise_distances_argmin(Z, self.X_source_)
        w = self.beta_[idx].copy()
        # a fitted row keeps its own weight (compare exactly: the argmin distance has round-off)
        new = np.any(Z != self.X_source_[idx], axis=1)
        if new.any():
            Kx = kernel_matrix(Z[new], self.X_source_, self.kernel, self.gamma_)
            if self.kernel == "linear":
                Kx = np.maximum(Kx, 0.0)
            den = Kx.sum(axis=1)
            w[new] = np.where(den > 0, (Kx @ self.beta_) / np.where(den > 0, den, 1.0), w[new])
        return w
