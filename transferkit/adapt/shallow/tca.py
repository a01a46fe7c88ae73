"""Transfer Component Analysis (Pan, Tsang, Kwok & Yang, 2011)."""

from __future__ import annotations

import numpy as np
from scipy import linalg
from sklearn.metrics.pairwise import linear_kernel, rbf_kernel
from sklearn.utils import check_random_state

from ..._registry import register
from ..._validation import check_choice, check_number
from ...nn.bandwidth import median_heuristic
from ._base import BaseMappingAdapter, check_flag, check_random_state_param, pooled_scaling


def kernel_matrix(A: np.ndarray, B: np.ndarray, kernel: str, gamma: float) -> np.ndarray:
    """``k(A, B)`` for ``kernel`` in ``{"linear", "rbf"}`` (rbf: :math:`\\exp(-\\gamma\\lVert a-b\\rVert^2)`)."""
    if kernel == "linear":
        return linear_kernel(A, B)
    return rbf_kernel(A, B, gamma=gamma)


def _landmarks(is_source: np.ndarray, max_samples: int, rng, is_target: np.ndarray | None = None) -> np.ndarray:
    """Sorted row indices of a seeded subsample of ``max_samples`` rows, split between the domains
    in proportion to their sizes (at least 2 rows each); pooled rows (every row in both domains)
    are subsampled as one set."""
    is_target = ~is_source if is_target is None else is_target
    if (is_source & is_target).any():
        return np.sort(rng.choice(len(is_source), max_samples, replace=False))
    src, tgt = np.flatnonzero(is_source), np.flatnonzero(is_target)
    k_s = int(round(max_samples * len(src) / (len(src) + len(tgt))))
    k_s = min(max(k_s, 2), len(src), max_samples - 2)
    k_t = min(max_samples - k_s, len(tgt))
    return np.sort(np.r_[rng.choice(src, k_s, replace=False), rng.choice(tgt, k_t, replace=False)])


@register("shallow_da", "tca")
class TCAAdapter(BaseMappingAdapter):
    r"""Transfer Component Analysis: a kernel embedding where the domains' means agree.

    With :math:`K` the kernel matrix of all :math:`n = n_s + n_t` training rows, :math:`H = I -
    \tfrac1n \mathbf 1 \mathbf 1^\top` the centring matrix and :math:`L = e e^\top`,
    :math:`e_i = 1/n_s` on source rows and :math:`-1/n_t` on target rows (so that
    :math:`\operatorname{tr}(W^\top K L K W)` is the squared MMD between the embedded domains),
    TCA solves (Pan et al., 2011, Eq. 8)

    .. math::

        \min_W \operatorname{tr}(W^\top K L K W) + \mu \operatorname{tr}(W^\top W)
        \quad \text{s.t.} \quad W^\top K H K W = I,

    whose solution is given by the :math:`m` leading generalized eigenvectors of

    .. math:: K H K\, w = \lambda\, (K L K + \mu I)\, w ,

    solved here with :func:`scipy.linalg.eigh` (both sides symmetric, the right one positive
    definite for :math:`\mu > 0`). Each column is scaled so that its component has unit variance
    over the training rows (the constraint above, up to the factor :math:`n`). A row :math:`x` of
    either domain is embedded as :math:`z = k(x, X_{\text{fit}})\, W`.

    The rows are z-scored first (``standardize``, pooled over both domains), so that the kernel
    sees every column on one scale; otherwise the RBF bandwidth, and the embedding, are set by
    the column with the largest units (an income in dollars next to an age in years).

    Parameters
    ----------
    n_components : int, default 30
        :math:`m`, the embedding dimension; capped at the number of fitted rows minus one, and
        at the rank of :math:`KHK` (a linear kernel on few features has low rank).
    kernel : {"rbf", "linear"}, default "rbf"
    gamma : float or None, default None
        RBF parameter in :math:`\exp(-\gamma \lVert x - x' \rVert^2)`. ``None``: median heuristic
        :math:`\gamma = 1 / (2\sigma^2)`, :math:`\sigma` the median pairwise distance of the pooled
        rows (seeded by ``random_state``). Ignored for ``kernel="linear"``. Distances are those of
        the scaled rows when ``standardize`` is on.
    mu : float, default 1.0
        :math:`\mu > 0`, weight of :math:`\operatorname{tr}(W^\top W)`. Larger values keep more
        of the data's variance and align the means less. (skada's ``mu`` multiplies the MMD term
        instead, :math:`(I + \mu_{\text{skada}} K L K)`: :math:`\mu = 1/\mu_{\text{skada}}`
        gives the same eigenvectors.)
    max_samples : int, default 2000
        The problem is an :math:`n \times n` dense eigenproblem (:math:`O(n^3)` time,
        :math:`O(n^2)` memory). With more rows than this, TCA is fitted on a seeded subsample of
        ``max_samples`` landmark rows (both domains in proportion), every row, including the
        others, is embedded through its kernel with the landmarks, ``n_fit_samples_`` says how
        many rows were used, and a :class:`~transferkit.errors.TransferKitWarning` says so.
    standardize : bool, default True
        z-score the columns with the mean and standard deviation of all rows (source and target
        pooled: unsupervised, and it moves neither domain towards the other) before the kernel;
        ``transform`` applies the same scaling.
    random_state : int, RandomState or None, default 0
        Seeds the landmark subsample and the median-heuristic subsample (at most 1000 rows), so
        that repeated fits are identical.

    Attributes
    ----------
    input_mean_, input_scale_ : ndarray of shape (n_features,)
        The pooled scaling (0 and 1 without ``standardize``).
    X_fit_ : ndarray of shape (n_fit, n_features)
        The rows :math:`K` is built on (all rows, or the landmarks), scaled.
    is_source_fit_ : ndarray of shape (n_fit,), bool
    components_ : ndarray of shape (n_fit, n_components_)
        :math:`W`.
    eigenvalues_ : ndarray of shape (n_components_,)
        The generalized eigenvalues :math:`\lambda`, descending.
    gamma_ : float or None
        The RBF parameter used.
    n_components_ : int
    n_fit_samples_ : int
        Rows the kernel was built on (``min(n_samples, max_samples)``).
    diagnostics_ : dict
        See :mod:`transferkit.adapt.shallow._base` (``n_components``, ``n_fit_samples``).
    n_features_in_ : int

    Notes
    -----
    :math:`K L K = (K e)(K e)^\top` has rank one, so TCA is kernel PCA in which the single
    direction :math:`K e` (the kernel mean difference of the domains) is penalized: the
    embedding keeps high-variance directions that do not separate the domains' means.

    References
    ----------
    S. J. Pan, I. W. Tsang, J. T. Kwok and Q. Yang. "Domain Adaptation via Transfer Component
    Analysis." IEEE Transactions on Neural Networks 22(2), 2011.
    """

    _key = "tca"

    def __init__(self, n_components: int = 30, kernel: str = "rbf", gamma: float | None = None, mu: float = 1.0,
                 max_samples: int = 2000, standardize: bool = True, random_state=0):
        self.n_components = n_components
        self.kernel = kernel
        self.gamma = gamma
        self.mu = mu
        self.max_samples = max_samples
        self.standardize = standardize
        self.random_state = random_state

    def _check_params(self) -> dict:
        return {
            "n_components": check_number("n_components", self.n_components, low=1, integer=True),
            "kernel": check_choice("kernel", self.kernel, ("rbf", "linear")),
            "gamma": None if self.gamma is None else check_number("gamma", self.gamma, low=0.0, low_inclusive=False),
            "mu": check_number("mu", self.mu, low=0.0, low_inclusive=False),
            "max_samples": check_number("max_samples", self.max_samples, low=4, integer=True),
            "standardize": check_flag("standardize", self.standardize),
            "random_state": check_random_state_param(self.random_state),
        }

    def fit(self, X, y=None, *, sample_domain=None) -> TCAAdapter:
        """Solve the TCA eigenproblem.

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
        m, mu, max_samples = p["n_components"], p["mu"], p["max_samples"]
        X, _, is_source, is_target = self._fit_input(X, y, sample_domain)
        notes = []
        n_given = X.shape[0]
        mean, scale = pooled_scaling(X, p["standardize"])
        X = (X - mean) / scale
        rng = check_random_state(p["random_state"])
        if n_given > max_samples:
            idx = _landmarks(is_source, max_samples, rng, is_target)
            X, is_source, is_target = X[idx], is_source[idx], is_target[idx]
            self._warn_subsample(notes, len(idx), n_given, "its kernel",
                                 "an n x n kernel: O(n^2) memory, O(n^3) time")
        n = X.shape[0]
        ns, nt = int(is_source.sum()), int(is_target.sum())
        if self.kernel == "rbf":
            gamma = self.gamma
            if gamma is None:
                sigma = median_heuristic(X[is_source], X[is_target], seed=int(rng.randint(2**31 - 1)))
                gamma = 1.0 / (2.0 * sigma**2)
            self.gamma_ = float(gamma)
        else:
            self.gamma_ = None
        K = kernel_matrix(X, X, self.kernel, self.gamma_)
        # pooled rows (no target identified) are in both domains: e = 0, TCA is kernel PCA
        e = is_source / ns - is_target / nt
        v = K @ e
        A = mu * np.eye(n) + np.outer(v, v)  # K L K + mu I
        Kc = K - K.mean(axis=0)  # H K
        B = Kc.T @ Kc  # K H K (H is symmetric and idempotent)
        m = min(m, n - 1)
        # gvx: bisection + inverse iteration, fast for a few leading eigenpairs even when the
        # kernel has low rank (many equal zero eigenvalues slow the default driver down)
        lam, W = linalg.eigh(B, A, subset_by_index=[n - m, n - 1], driver="gvx")
        lam, W = lam[::-1], W[:, ::-1]
        # a rank-deficient kernel (e.g. linear with n_features < m) has null directions whose
        # eigenvalue is round-off; they carry no information and would be blown up below
        keep = lam > max(lam[0], 0.0) * 1e-10
        keep[0] = True
        lam, W = lam[keep], W[:, keep]
        m = len(lam)
        # eigh returns W^T A W = I; rescale to W^T K H K W = n I (unit-variance components)
        W = W * np.sqrt(n / np.maximum(lam, np.finfo(float).tiny))
        self.input_mean_, self.input_scale_ = mean, scale
        self.X_fit_, self.is_source_fit_ = X, is_source
        self.components_, self.eigenvalues_ = W, lam
        self.n_components_ = m
        self.n_fit_samples_ = n
        self.diagnostics_ = self._diagnostics(notes, n_samples=n_given, n_fit_samples=n, n_components=m)
        return self

    def transform(self, X, sample_domain=None) -> np.ndarray:
        """Embed rows of either domain: :math:`z = k(x, X_{\\text{fit}}) W`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        sample_domain : array-like of shape (n_samples,), optional
            Validated only: TCA embeds both domains with the same map.

        Returns
        -------
        ndarray of shape (n_samples, n_components_)
        """
        X, _ = self._new_input(X, sample_domain, default_source=False)
        X = (X - self.input_mean_) / self.input_scale_
        return kernel_matrix(X, self.X_fit_, self.kernel, self.gamma_) @ self.components_
