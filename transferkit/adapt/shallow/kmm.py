"""Kernel Mean Matching importance weights (Huang, Gretton, Borgwardt, Schölkopf & Smola, 2007)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg, optimize
from scipy.sparse import linalg as sparse_linalg
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import pairwise_distances_argmin

from ..._registry import register
from ..._validation import check_choice, check_number
from ...errors import ConfigError
from ...nn.bandwidth import median_heuristic
from ._base import BaseReweighter, split_domains
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

    Parameters
    ----------
    kernel : {"rbf", "linear"}, default "rbf"
        ``"linear"`` matches only the means.
    gamma : float or None, default None
        RBF parameter in :math:`\exp(-\gamma\lVert x-x'\rVert^2)`; ``None``: median heuristic
        :math:`\gamma = 1/(2\sigma^2)`, :math:`\sigma` the median pairwise distance of the pooled
        rows (at most 1000, seed 0).
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

    Attributes
    ----------
    weights_ : ndarray of shape (n_source,)
        :math:`\beta`, in the order of the source rows of ``X``.
    X_source_ : ndarray of shape (n_source, n_features)
    gamma_ : float or None
    n_iter_ : int
    objective_ : float
        Final :math:`\tfrac12\beta^\top K\beta - \kappa^\top\beta`.
    n_features_in_ : int

    References
    ----------
    J. Huang, A. Gretton, K. Borgwardt, B. Schölkopf and A. J. Smola. "Correcting Sample
    Selection Bias by Unlabeled Data." NeurIPS 2007.
    A. Beck and M. Teboulle. "A Fast Iterative Shrinkage-Thresholding Algorithm." SIAM J.
    Imaging Sciences 2(1), 2009 (FISTA); B. O'Donoghue and E. Candès, "Adaptive Restart for
    Accelerated Gradient Schemes", 2015.
    """

    def __init__(self, kernel: str = "rbf", gamma: float | None = None, B: float = 1000.0, eps: float | None = None,
                 solver: str = "pgd", max_iter: int = 1000, tol: float = 1e-5):
        self.kernel = kernel
        self.gamma = gamma
        self.B = B
        self.eps = eps
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol

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
        check_choice("kernel", self.kernel, ("rbf", "linear"))
        check_choice("solver", self.solver, ("pgd", "slsqp"))
        if self.gamma is not None:
            check_number("gamma", self.gamma, low=0.0, low_inclusive=False)
        upper = check_number("B", self.B, low=0.0, low_inclusive=False)
        max_iter = check_number("max_iter", self.max_iter, low=1, integer=True)
        tol = check_number("tol", self.tol, low=0.0)
        X, _, is_source, is_target = self._fit_input(X, y, sample_domain, min_rows_per_domain=1)
        Xs, Xt = split_domains(X, is_source, is_target)
        ns, nt = len(Xs), len(Xt)
        eps = (np.sqrt(ns) - 1) / np.sqrt(ns) if self.eps is None else check_number("eps", self.eps, low=0.0)
        lo, hi = max(ns * (1 - eps), 0.0), ns * (1 + eps)
        if lo > ns * upper:
            raise ConfigError(
                f"B={upper!r} is too small: the weights must sum to at least n_source*(1-eps)="
                f"{lo:.4g}, which needs B >= 1 - eps = {1 - eps:.4g}."
            )
        if self.kernel == "rbf":
            gamma = self.gamma
            if gamma is None:
                gamma = 1.0 / (2.0 * median_heuristic(Xs, Xt, seed=0) ** 2)
            self.gamma_ = float(gamma)
        else:
            self.gamma_ = None
        K = kernel_matrix(Xs, Xs, self.kernel, self.gamma_)
        kappa = (ns / nt) * kernel_matrix(Xs, Xt, self.kernel, self.gamma_).sum(axis=1)
        if self.solver == "pgd":
            beta, n_iter = self._fista(K, kappa, upper, lo, hi, max_iter, tol)
        else:
            beta, n_iter = self._slsqp(K, kappa, upper, lo, hi, max_iter, tol)
        self.weights_ = beta
        self.X_source_ = Xs
        self.n_iter_ = n_iter
        self.objective_ = float(0.5 * beta @ K @ beta - kappa @ beta)
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
                return beta, it
        warnings.warn(
            f"KMMReweighter: projected gradient did not converge in max_iter={max_iter} iterations; "
            "increase max_iter or tol.", ConvergenceWarning, stacklevel=3,
        )
        return beta, max_iter

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
        if not res.success:
            warnings.warn(f"KMMReweighter: SLSQP stopped early ({res.message}).", ConvergenceWarning, stacklevel=3)
        return project_box_sum(res.x, upper, lo, hi), int(res.nit)

    def _weights_at(self, Xs: np.ndarray) -> np.ndarray:
        idx = pairwise_distances_argmin(Xs, self.X_source_)
        w = self.weights_[idx].copy()
        # a fitted row keeps its own weight (compare exactly: the argmin distance has round-off)
        new = np.any(Xs != self.X_source_[idx], axis=1)
        if new.any():
            Kx = kernel_matrix(Xs[new], self.X_source_, self.kernel, self.gamma_)
            if self.kernel == "linear":
                Kx = np.maximum(Kx, 0.0)
            den = Kx.sum(axis=1)
            w[new] = np.where(den > 0, (Kx @ self.weights_) / np.where(den > 0, den, 1.0), w[new])
        return w
