r"""Divergences and two-sample tests between a source sample and a target sample.

Every function registered under the ``divergence`` kind has the signature::

    f(Xs, Xt, *, seed=0, **options) -> MetricResult

with ``Xs`` of shape (n_s, d) and ``Xt`` of shape (n_t, d) (NumPy arrays, array-likes or torch
tensors), is deterministic for a given ``seed``, and is about 0 when both samples come from the
same distribution. Registered keys:

=======================  ====================================================================
``mmd``                  squared MMD, unbiased U-statistic, Gaussian kernel(s), permutation test
``mmd_linear``           linear-time MMD with its asymptotic normal test (streams in chunks)
``a_distance``           proxy A-distance from a cross-validated domain classifier
``kl_gaussian``          KL(source || target) between Gaussian fits, closed form
``js_gaussian``          Jensen-Shannon between Gaussian fits, Monte Carlo
``kl_knn``               k-nearest-neighbour KL(source || target) estimator
``js_knn``               k-nearest-neighbour Jensen-Shannon estimator (against the mixture)
``wasserstein``          exact optimal transport W_p (POT ``ot.emd2``; sorting in 1-D)
``sliced_wasserstein``   Monte Carlo sliced W_p over random directions
``coral_distance``       squared Frobenius distance of covariances / (4 d^2)
``ks_features``          per-feature Kolmogorov-Smirnov tests, Benjamini-Hochberg
``mannwhitney_features`` per-feature Mann-Whitney U tests, Benjamini-Hochberg
=======================  ====================================================================

Discrete helpers that do not take feature matrices are plain functions, not registered:
:func:`kl_discrete`, :func:`js_discrete`, :func:`label_shift` (label distributions) and
:func:`benjamini_hochberg`. :func:`compute_divergences` runs several divergences at once.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._registry import available, get, register
from .._validation import check_choice, check_number, require, suggest
from ..errors import ConfigError, DataError
# the NumPy kernel helpers and the median heuristic live in nn/ (the shallow adapters use them
# too, and adapt/ is below metrics/); median_heuristic is re-exported here, its public home
from ..nn.bandwidth import median_bandwidth as _median_bandwidth
from ..nn.bandwidth import median_heuristic
from ..nn.bandwidth import pairwise_sq_dists as _sq_dists
from ..nn.bandwidth import row_sq_norms as _sq_norms
from ._base import MetricResult, check_labels, check_pair
from .information import as_probability

__all__ = [
    "a_distance",
    "benjamini_hochberg",
    "compute_divergences",
    "coral_distance",
    "js_discrete",
    "js_gaussian",
    "js_knn",
    "kl_discrete",
    "kl_gaussian",
    "kl_knn",
    "ks_features",
    "label_shift",
    "mannwhitney_features",
    "median_heuristic",
    "mmd",
    "mmd_linear",
    "sliced_wasserstein",
    "wasserstein",
    "DEFAULT_DIVERGENCES",
]

_LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------


def _seed(seed) -> int:
    return check_number("seed", seed, low=0, integer=True)


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(_seed(seed))


def _is_float32(X) -> bool:
    return str(getattr(X, "dtype", "")) in ("float32", "torch.float32")


def _pair_lowmem(Xs, Xt, *, min_rows: int = 2):
    """Like :func:`check_pair`, but keeps float32 inputs as float32 (no 2x copy of large data)."""
    dtype = np.float32 if (_is_float32(Xs) and _is_float32(Xt)) else np.float64
    return check_pair(Xs, Xt, min_rows=min_rows, dtype=dtype)


def _one_blas_thread():
    """See :func:`transferkit._compat.one_blas_thread`."""
    from .._compat import one_blas_thread

    return one_blas_thread()


def _gammas(bandwidth: float, kernel_mults) -> np.ndarray:
    try:
        mults = np.atleast_1d(np.asarray(kernel_mults, dtype=np.float64))
    except (TypeError, ValueError):
        raise ConfigError(f"kernel_mults must be a sequence of positive numbers, got {kernel_mults!r}.") from None
    if mults.ndim != 1 or mults.size == 0 or not np.all(np.isfinite(mults)) or (mults <= 0).any():
        raise ConfigError(f"kernel_mults must be a non-empty sequence of positive numbers, got {kernel_mults!r}.")
    return 1.0 / (2.0 * (mults * bandwidth) ** 2)


def _gauss_from_sq(D2: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """Average of Gaussian kernels exp(-gamma ||x-y||^2) over ``gammas``; overwrites ``D2`` when single."""
    if len(gammas) == 1:
        D2 *= -gammas[0]
        np.exp(D2, out=D2)
        return D2
    K = np.exp(-gammas[0] * D2)
    for g in gammas[1:]:
        K += np.exp(-g * D2)
    K /= len(gammas)
    return K


def _bandwidth(S, T, bandwidth, max_points, rng) -> float:
    if bandwidth is None:
        return _median_bandwidth(S, T, max_points, rng)
    return float(check_number("bandwidth", bandwidth, low=0, low_inclusive=False))


# ----------------------------------------------------------------------------------------------
# MMD
# ----------------------------------------------------------------------------------------------


def _permutation_assignments(N: int, n_s: int, n_permutations: int, rng) -> np.ndarray:
    """(N, 1 + n_permutations) 0/1 matrix; column 0 is the observed split, the others random splits."""
    A = np.zeros((N, n_permutations + 1))
    A[:n_s, 0] = 1.0
    if n_permutations:
        src = np.argsort(rng.random((n_permutations, N)), axis=1)[:, :n_s]
        A[src.ravel(), np.repeat(np.arange(1, n_permutations + 1), n_s)] = 1.0
    return A


def _mmd_statistics(Z: np.ndarray, n_s: int, gammas: np.ndarray, A: np.ndarray, block_size: int) -> np.ndarray:
    r"""Unbiased MMD^2 for every column (a split of the pooled sample) of the assignment matrix ``A``.

    With :math:`K_0` the pooled kernel matrix with its diagonal set to 0, :math:`a` a 0/1 column
    (1 = "source"), :math:`r = K_0 1` and :math:`T = 1^\top K_0 1`:
    :math:`S_{XX} = a^\top K_0 a`, :math:`S_{XY} = a^\top r - S_{XX}`,
    :math:`S_{YY} = T - 2 a^\top r + S_{XX}`. Only :math:`K_0 A` and :math:`r` are needed, and they
    are accumulated over (upper-triangular) blocks of :math:`K_0`, so at most one
    ``block_size x block_size`` kernel block (plus its distance buffer) is alive at a time.
    """
    N = Z.shape[0]
    n_t = N - n_s
    z2 = _sq_norms(Z)
    KA = np.zeros_like(A)
    r = np.zeros(N)
    for i0 in range(0, N, block_size):
        i1 = min(N, i0 + block_size)
        for j0 in range(i0, N, block_size):
            j1 = min(N, j0 + block_size)
            Kb = _gauss_from_sq(_sq_dists(Z[i0:i1], Z[j0:j1], z2[i0:i1], z2[j0:j1]), gammas)
            if i0 == j0:
                np.fill_diagonal(Kb, 0.0)  # U-statistic: no k(z_i, z_i) terms
            KA[i0:i1] += Kb @ A[j0:j1]
            r[i0:i1] += Kb.sum(axis=1)
            if j0 != i0:  # the symmetric block below the diagonal
                KA[j0:j1] += Kb.T @ A[i0:i1]
                r[j0:j1] += Kb.sum(axis=0)
            del Kb
    s_xx = np.einsum("ip,ip->p", A, KA)
    a_r = r @ A
    s_xy = a_r - s_xx
    s_yy = r.sum() - 2.0 * a_r + s_xx
    return s_xx / (n_s * (n_s - 1)) + s_yy / (n_t * (n_t - 1)) - 2.0 * s_xy / (n_s * n_t)


@register("divergence", "mmd")
def mmd(
    Xs,
    Xt,
    *,
    seed: int = 0,
    kernel_mults=(1.0,),
    bandwidth: float | None = None,
    n_permutations: int = 200,
    block_size: int = 2048,
    max_median_points: int = 1000,
) -> MetricResult:
    r"""Squared maximum mean discrepancy (unbiased U-statistic) with a permutation test.

    .. math::

        \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)} \sum_{i \ne j} k(x_i, x_j)
        + \frac{1}{n(n-1)} \sum_{i \ne j} k(y_i, y_j) - \frac{2}{mn} \sum_{i, j} k(x_i, y_j)

    (Gretton et al., 2012, eq. 3) with :math:`x` the ``m`` source and :math:`y` the ``n`` target
    rows, and the kernel the average of Gaussians

    .. math:: k(z, z') = \frac{1}{L} \sum_{l=1}^L \exp\!\Big(-\frac{\lVert z - z'\rVert^2}{2 (c_l \sigma)^2}\Big)

    with multipliers :math:`c_l` = ``kernel_mults`` and :math:`\sigma` the median heuristic
    (median pairwise distance of a seeded subsample of at most ``max_median_points`` pooled rows)
    unless ``bandwidth`` is given. The estimate is unbiased, so it can be slightly negative when
    the distributions are equal.

    The p-value is that of a permutation test of :math:`P = Q`,
    :math:`p = (1 + \#\{b : \widehat{\mathrm{MMD}}^2_{(b)} \ge \widehat{\mathrm{MMD}}^2\}) / (1 + B)`,
    with ``B = n_permutations`` seeded random re-splits of the pooled sample. All ``B``
    statistics come from one blockwise pass over the pooled kernel matrix (products of kernel
    blocks with an (m + n, B + 1) assignment matrix), in float64; memory is
    O(``block_size``^2 + (m + n) B).

    Parameters
    ----------
    Xs : array-like or tensor of shape (m, d)
        Source samples, ``m >= 2``.
    Xt : array-like or tensor of shape (n, d)
        Target samples, ``n >= 2``.
    seed : int, default 0
        Seeds the median subsample and the permutations.
    kernel_mults : sequence of float, default (1.0,)
        Bandwidth multipliers; e.g. ``(0.25, 0.5, 1, 2, 4)`` for a multi-kernel MMD.
    bandwidth : float, optional
        Base bandwidth :math:`\sigma`; default: median heuristic.
    n_permutations : int, default 200
        0 skips the test (``p_value`` is None).
    block_size : int, default 2048
        Side of the kernel blocks.
    max_median_points : int, default 1000

    Returns
    -------
    MetricResult
        ``value`` = MMD^2_u, ``p_value`` = permutation p-value; ``details``: ``bandwidth``,
        ``kernel_mults``, ``n_permutations``, ``null_mean`` (mean permutation statistic).

    References
    ----------
    A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schölkopf and A. Smola, "A kernel two-sample
    test", JMLR 13:723-773, 2012.
    """
    rng = _rng(seed)
    S, T = check_pair(Xs, Xt, min_rows=2)
    n_permutations = check_number("n_permutations", n_permutations, low=0, integer=True)
    block_size = check_number("block_size", block_size, low=1, integer=True)
    max_median_points = check_number("max_median_points", max_median_points, low=2, integer=True)
    sigma = _bandwidth(S, T, bandwidth, max_median_points, rng)
    gammas = _gammas(sigma, kernel_mults)
    Z = np.vstack([S, T])
    Z -= Z.mean(axis=0)  # translation invariant; reduces cancellation in the distance expansion
    A = _permutation_assignments(len(Z), len(S), n_permutations, rng)
    stats_ = _mmd_statistics(Z, len(S), gammas, A, block_size)
    obs = float(stats_[0])
    p_value = None
    details = {
        "bandwidth": sigma,
        "kernel_mults": [float(c) for c in np.atleast_1d(kernel_mults)],
        "n_permutations": n_permutations,
        "estimator": "unbiased",
    }
    if n_permutations:
        null = stats_[1:]
        p_value = float((1 + np.count_nonzero(null >= obs - 1e-12)) / (1 + n_permutations))
        details["null_mean"] = float(null.mean())
    return MetricResult("mmd", obs, p_value=p_value, details=details)


@register("divergence", "mmd_linear")
def mmd_linear(
    Xs,
    Xt,
    *,
    seed: int = 0,
    kernel_mults=(1.0,),
    bandwidth: float | None = None,
    chunk_size: int = 8192,
    max_median_points: int = 1000,
) -> MetricResult:
    r"""Linear-time MMD^2 estimate with its asymptotic (one-sided) normal test.

    With ``m = min(n_s, n_t)`` rows of each sample, seeded shuffles and
    :math:`m_2 = \lfloor m/2 \rfloor` disjoint pairs,

    .. math::

        \widehat{\mathrm{MMD}}^2_l = \frac{1}{m_2} \sum_{i=1}^{m_2} h_i, \quad
        h_i = k(x_{2i-1}, x_{2i}) + k(y_{2i-1}, y_{2i}) - k(x_{2i-1}, y_{2i}) - k(x_{2i}, y_{2i-1})

    (Gretton et al., 2012, Lemma 14); with equal sizes both samples are shuffled by the same
    seeded permutation. Under :math:`P = Q`,
    :math:`\sqrt{m_2}\,\widehat{\mathrm{MMD}}^2_l / \hat\sigma_h \to N(0, 1)` (Corollary 16), so
    ``p_value = 1 - Phi(z)``. The kernel is the same (multi-)Gaussian as :func:`mmd`. The data
    are streamed in ``chunk_size`` pairs (float32 inputs stay float32 until a chunk is cast to
    float64), so the cost is O(m d) time and O(chunk_size d) extra memory.

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
        Both need at least 4 rows (2 pairs).
    seed : int, default 0
        Seeds the shuffles and the median subsample.
    kernel_mults : sequence of float, default (1.0,)
    bandwidth : float, optional
        Default: median heuristic on at most ``max_median_points`` pooled rows.
    chunk_size : int, default 8192
    max_median_points : int, default 1000

    Returns
    -------
    MetricResult
        ``value`` = MMD^2_l; ``p_value`` from the normal approximation; ``details``:
        ``bandwidth``, ``n_pairs``, ``std_h``, ``z``.

    References
    ----------
    Gretton et al., "A kernel two-sample test", JMLR 13, 2012, Sec. 6 (Lemma 14, Corollary 16).
    """
    from scipy.stats import norm

    rng = _rng(seed)
    S, T = _pair_lowmem(Xs, Xt, min_rows=4)
    chunk_size = check_number("chunk_size", chunk_size, low=1, integer=True)
    max_median_points = check_number("max_median_points", max_median_points, low=2, integer=True)
    sigma = _bandwidth(S, T, bandwidth, max_median_points, rng)
    gammas = _gammas(sigma, kernel_mults)
    m = min(len(S), len(T))
    m2 = m // 2
    # Pairing only needs a data-independent order; with equal sizes both samples share it, so that
    # identical inputs give exactly 0.
    ps = rng.permutation(len(S))[: 2 * m2]
    pt = ps if len(S) == len(T) else rng.permutation(len(T))[: 2 * m2]
    h = np.empty(m2)

    def k(a, b):
        d2 = a - b
        d2 = np.einsum("ij,ij->i", d2, d2)
        return _gauss_from_sq(d2, gammas)

    for c0 in range(0, m2, chunk_size):
        c1 = min(m2, c0 + chunk_size)
        x1 = S[ps[2 * c0 : 2 * c1 : 2]].astype(np.float64, copy=False)
        x2 = S[ps[2 * c0 + 1 : 2 * c1 : 2]].astype(np.float64, copy=False)
        y1 = T[pt[2 * c0 : 2 * c1 : 2]].astype(np.float64, copy=False)
        y2 = T[pt[2 * c0 + 1 : 2 * c1 : 2]].astype(np.float64, copy=False)
        h[c0:c1] = k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)
    value = float(h.mean())
    sd = float(h.std(ddof=1))
    if sd > 0:
        z = value / (sd / math.sqrt(m2))
        p_value = float(norm.sf(z))
    else:
        z = 0.0 if value == 0 else math.copysign(math.inf, value)
        p_value = 1.0 if value <= 0 else 0.0
    details = {"bandwidth": sigma, "kernel_mults": [float(c) for c in np.atleast_1d(kernel_mults)],
               "n_pairs": int(m2), "std_h": sd, "z": float(z)}
    return MetricResult("mmd_linear", value, p_value=p_value, details=details)


# ----------------------------------------------------------------------------------------------
# proxy A-distance
# ----------------------------------------------------------------------------------------------


@register("divergence", "a_distance")
def a_distance(
    Xs,
    Xt,
    *,
    seed: int = 0,
    classifier: str = "logistic",
    n_splits: int = 5,
    C: float = 1.0,
    max_iter: int = 500,
) -> MetricResult:
    r"""Proxy A-distance from the cross-validated error of a domain classifier.

    .. math:: \hat d_A = 2 (1 - 2 \epsilon), \quad \text{clipped to } [0, 2]

    where :math:`\epsilon` is the error of a classifier telling source (label 0) from target
    (label 1) rows, estimated by seeded stratified ``n_splits``-fold cross-validation. The larger
    domain is subsampled (seeded) to the size of the smaller so that chance error is 0.5.
    The classifier is a standardization followed by L2-regularized logistic regression
    (``"logistic"``) or a linear SVM (``"linear_svm"``), with inverse regularization ``C``.
    Convergence warnings of the solver are silenced: only the held-out error is used.

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
        Each needs at least ``n_splits`` rows.
    seed : int, default 0
        Seeds the subsampling and the folds.
    classifier : {"logistic", "linear_svm"}
    n_splits : int, default 5
    C : float, default 1.0
    max_iter : int, default 500

    Returns
    -------
    MetricResult
        ``value`` = proxy A-distance in [0, 2]; ``details``: ``error`` (mean CV error),
        ``error_std`` (across folds), ``n_per_domain``, ``classifier``.

    References
    ----------
    S. Ben-David, J. Blitzer, K. Crammer and F. Pereira, "Analysis of representations for domain
    adaptation", NeurIPS 2007; S. Ben-David et al., "A theory of learning from different domains",
    Machine Learning 79, 2010.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = _rng(seed)
    check_choice("classifier", classifier, ("logistic", "linear_svm"))
    n_splits = check_number("n_splits", n_splits, low=2, integer=True)
    C = check_number("C", C, low=0, low_inclusive=False)
    max_iter = check_number("max_iter", max_iter, low=1, integer=True)
    S, T = check_pair(Xs, Xt, min_rows=n_splits)
    m = min(len(S), len(T))
    if len(S) > m:
        S = S[np.sort(rng.choice(len(S), m, replace=False))]
    if len(T) > m:
        T = T[np.sort(rng.choice(len(T), m, replace=False))]
    X = np.vstack([S, T])
    y = np.r_[np.zeros(m, int), np.ones(m, int)]
    if classifier == "logistic":
        clf = LogisticRegression(C=C, max_iter=max_iter)
    else:
        clf = LinearSVC(C=C, max_iter=max_iter)
    model = make_pipeline(StandardScaler(), clf)
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=_seed(seed))
    # The solver's many small matrix-vector products are 10-50x slower with a multi-threaded BLAS
    # (measured on 2 cores, n=1800, d=1280), so the fits run on one BLAS thread.
    with warnings.catch_warnings(), _one_blas_thread():
        warnings.simplefilter("ignore", ConvergenceWarning)
        acc = cross_val_score(model, X, y, cv=cv, scoring="accuracy")
    err = float(1.0 - acc.mean())
    value = float(np.clip(2.0 * (1.0 - 2.0 * err), 0.0, 2.0))
    details = {"error": err, "error_std": float(acc.std()), "n_per_domain": int(m), "classifier": classifier}
    return MetricResult("a_distance", value, details=details)


# ----------------------------------------------------------------------------------------------
# Gaussian fits
# ----------------------------------------------------------------------------------------------


def _gaussian_fit(X: np.ndarray, covariance: str, reg: float):
    """Mean, covariance (+ ridge ``reg * trace / d``) and its Cholesky factor."""
    d = X.shape[1]
    mu = X.mean(axis=0)
    Xc = X - mu
    use_lw = covariance == "ledoit_wolf" or (covariance == "auto" and X.shape[0] <= d)
    if use_lw:
        from sklearn.covariance import ledoit_wolf

        C, _ = ledoit_wolf(X)
    else:
        C = Xc.T @ Xc / (X.shape[0] - 1)
    tr = float(np.trace(C))
    C = C + (reg * (tr / d if tr > 0 else 1.0)) * np.eye(d)
    try:
        L = np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        raise DataError(
            "a covariance matrix is not positive definite even with the ridge; increase reg "
            "(e.g. reg=1e-3) or use covariance='ledoit_wolf'."
        ) from None
    return mu, C, L, ("ledoit_wolf" if use_lw else "empirical")


def _gaussian_kl(mu0, L0, mu1, L1) -> float:
    """KL(N(mu0, L0 L0^T) || N(mu1, L1 L1^T)) via Cholesky factors."""
    from scipy.linalg import solve_triangular

    d = len(mu0)
    M = solve_triangular(L1, L0, lower=True)
    v = solve_triangular(L1, mu1 - mu0, lower=True)
    logdet0 = 2.0 * np.log(np.diag(L0)).sum()
    logdet1 = 2.0 * np.log(np.diag(L1)).sum()
    return 0.5 * (float((M * M).sum()) + float(v @ v) - d + logdet1 - logdet0)


def _check_gauss_options(covariance, reg):
    check_choice("covariance", covariance, ("auto", "empirical", "ledoit_wolf"))
    return check_number("reg", reg, low=0)


@register("divergence", "kl_gaussian")
def kl_gaussian(
    Xs,
    Xt,
    *,
    seed: int = 0,
    reg: float = 1e-6,
    covariance: str = "auto",
) -> MetricResult:
    r"""KL divergence KL(source || target) between Gaussian fits of the two samples, closed form.

    .. math::

        \mathrm{KL}(\mathcal N_0 \,\|\, \mathcal N_1) = \tfrac12 \Big[
        \operatorname{tr}(\Sigma_1^{-1} \Sigma_0) + (\mu_1 - \mu_0)^\top \Sigma_1^{-1} (\mu_1 - \mu_0)
        - d + \ln\frac{\det \Sigma_1}{\det \Sigma_0} \Big]

    with :math:`(\mu_0, \Sigma_0)` fitted to the source and :math:`(\mu_1, \Sigma_1)` to the target,
    each covariance plus a ridge :math:`\mathrm{reg}\cdot\operatorname{tr}(\Sigma)/d \cdot I`.
    In nats, not symmetric. With ``covariance="auto"`` the unbiased empirical covariance is used
    when a sample has more rows than features and the Ledoit-Wolf shrinkage estimate otherwise
    (an empirical covariance with ``n <= d`` is singular and the KL would be dominated by
    the ridge).

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
    seed : int, default 0
        Unused (the estimate is deterministic); accepted for the common signature.
    reg : float, default 1e-6
        Relative ridge added to each covariance.
    covariance : {"auto", "empirical", "ledoit_wolf"}

    Returns
    -------
    MetricResult
        ``details``: ``covariance`` (estimator used per domain), ``mean_term`` (the Mahalanobis part).

    References
    ----------
    S. Kullback, *Information Theory and Statistics*, Wiley, 1959; J. Duchi, "Derivations for
    linear algebra and optimization" (KL between multivariate normals).
    """
    _seed(seed)
    reg = _check_gauss_options(covariance, reg)
    S, T = check_pair(Xs, Xt, min_rows=2)
    from scipy.linalg import solve_triangular

    with _one_blas_thread():
        mu0, _, L0, c0 = _gaussian_fit(S, covariance, reg)
        mu1, _, L1, c1 = _gaussian_fit(T, covariance, reg)
        value = max(0.0, _gaussian_kl(mu0, L0, mu1, L1))
        v = solve_triangular(L1, mu1 - mu0, lower=True)
    return MetricResult("kl_gaussian", value, details={"covariance": [c0, c1], "mean_term": 0.5 * float(v @ v)})


@register("divergence", "js_gaussian")
def js_gaussian(
    Xs,
    Xt,
    *,
    seed: int = 0,
    n_mc: int = 8192,
    reg: float = 1e-6,
    covariance: str = "auto",
) -> MetricResult:
    r"""Jensen-Shannon divergence between Gaussian fits, estimated by Monte Carlo.

    .. math::

        \mathrm{JS}(P, Q) = \tfrac12 \mathbb E_{x \sim P}\Big[\ln \frac{p(x)}{m(x)}\Big]
        + \tfrac12 \mathbb E_{x \sim Q}\Big[\ln \frac{q(x)}{m(x)}\Big], \quad m = \tfrac12 (p + q)

    with :math:`P, Q` the Gaussians fitted to source and target (as in :func:`kl_gaussian`).
    The JS divergence between two Gaussians has no closed form (the mixture is not Gaussian),
    so each expectation is a mean over ``n_mc`` seeded draws from the fitted Gaussian, with the
    control variate :math:`g = \ln q - \ln p`, whose mean :math:`-\mathrm{KL}(P\|Q)` is known in
    closed form (this cuts the Monte Carlo variance several-fold). Natural
    log; the result is clipped to :math:`[0, \ln 2]` (its exact range). ``details['mc_std_error']``
    is the Monte Carlo standard error (it does not include the error of the fits).

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
    seed : int, default 0
        Seeds the Monte Carlo draws.
    n_mc : int, default 8192
        Draws from each Gaussian.
    reg : float, default 1e-6
    covariance : {"auto", "empirical", "ledoit_wolf"}

    Returns
    -------
    MetricResult

    References
    ----------
    J. Lin, "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory 37(1), 1991.
    """
    rng = _rng(seed)
    reg = _check_gauss_options(covariance, reg)
    n_mc = check_number("n_mc", n_mc, low=2, integer=True)
    S, T = check_pair(Xs, Xt, min_rows=2)
    with _one_blas_thread():
        fits = [_gaussian_fit(S, covariance, reg), _gaussian_fit(T, covariance, reg)]
    params = [(mu, L, 2.0 * np.log(np.diag(L)).sum()) for mu, _, L, _ in fits]
    d = S.shape[1]
    terms, variances = [], []
    from scipy.linalg import solve_triangular

    c = d * math.log(2 * math.pi)
    for own, other in ((0, 1), (1, 0)):
        mu, L, logdet = params[own]
        mu_o, L_o, logdet_o = params[other]
        Zs = rng.standard_normal((n_mc, d))  # x = mu + L z
        # whitened by the other Gaussian: L_o^{-1}(x - mu_o) = (L_o^{-1} L) z + L_o^{-1}(mu - mu_o),
        # one d x d triangular solve and one GEMM instead of a solve with n_mc right-hand sides
        with _one_blas_thread():
            M = solve_triangular(L_o, L, lower=True)
            b = solve_triangular(L_o, mu - mu_o, lower=True)
            kl_own_other = _gaussian_kl(mu, L, mu_o, L_o)
        Zo = Zs @ M.T
        Zo += b
        lp = -0.5 * (np.einsum("ij,ij->i", Zs, Zs) + logdet + c)
        lq = -0.5 * (np.einsum("ij,ij->i", Zo, Zo) + logdet_o + c)
        del Zo
        f = lp - (np.logaddexp(lp, lq) - _LN2)  # ln p/m, always <= ln 2
        # control variate: g = ln q - ln p has the closed-form mean -KL(own || other)
        g = (lq - lp) + kl_own_other
        vg = float(g.var())
        beta = float(np.mean((f - f.mean()) * (g - g.mean()))) / vg if vg > 0 else 0.0
        f = f - beta * g
        terms.append(float(f.mean()))
        variances.append(float(f.var(ddof=1)) / n_mc)
    raw = 0.5 * (terms[0] + terms[1])
    details = {"n_mc": n_mc, "mc_std_error": 0.5 * math.sqrt(sum(variances)), "raw": raw,
               "covariance": [fits[0][3], fits[1][3]]}
    return MetricResult("js_gaussian", float(np.clip(raw, 0.0, _LN2)), details=details)


# ----------------------------------------------------------------------------------------------
# k-nearest-neighbour estimators
# ----------------------------------------------------------------------------------------------


def _kth_positive_dist_brute(ref: np.ndarray, Q: np.ndarray, k: int, mem_entries: int = 1 << 22) -> np.ndarray:
    """k-th smallest strictly positive Euclidean distance from each row of Q to the rows of ref."""
    r2 = _sq_norms(ref)
    q2 = _sq_norms(Q)
    out = np.empty(len(Q))
    step = max(1, mem_entries // max(1, len(ref)))
    for c0 in range(0, len(Q), step):
        c1 = min(len(Q), c0 + step)
        D2 = _sq_dists(Q[c0:c1], ref, q2[c0:c1], r2)
        # The expansion is inexact for near-coincident points: recompute those exactly so that
        # exact duplicates (and the query itself) are recognised by a distance of exactly 0.
        near = np.nonzero(D2 <= 1e-6 * (q2[c0:c1, None] + r2[None, :]))
        if near[0].size:
            diff = Q[c0:c1][near[0]] - ref[near[1]]
            D2[near] = np.einsum("ij,ij->i", diff, diff)
        D2[D2 <= 0] = np.inf
        out[c0:c1] = np.partition(D2, k - 1, axis=1)[:, k - 1]
    return np.sqrt(out)


def _kth_positive_dist_tree(ref: np.ndarray, Q: np.ndarray, k: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    tree = cKDTree(ref)
    out = np.full(len(Q), np.inf)
    todo = np.arange(len(Q))
    kk = min(k + 1, len(ref))
    while todo.size:
        dist, _ = tree.query(Q[todo], k=kk)
        dist = dist.reshape(len(todo), kk)
        n_zero = (dist <= 0).sum(axis=1)
        ok = n_zero + k <= kk
        out[todo[ok]] = dist[ok, (n_zero + k - 1)[ok]]
        todo = todo[~ok]
        if kk == len(ref):
            break
        kk = min(2 * kk, len(ref))
    return out


def _kth_positive_dist(ref, Q, k, algorithm) -> np.ndarray:
    if algorithm == "auto":
        algorithm = "kd_tree" if ref.shape[1] <= 16 else "brute"
    fn = _kth_positive_dist_tree if algorithm == "kd_tree" else _kth_positive_dist_brute
    dist = fn(ref, Q, k)
    if not np.isfinite(dist).all():
        raise DataError(
            f"some samples have fewer than k={k} distinct neighbours (too many duplicated rows); "
            "use a smaller k or remove duplicates."
        )
    return dist


def _knn_kl(S, T, k, algorithm) -> float:
    """Wang-Kulkarni-Verdú estimate of KL(P || Q) from S ~ P (n rows) and T ~ Q (m rows)."""
    n, d = S.shape
    m = len(T)
    rho = _kth_positive_dist(S, S, k, algorithm)  # the query itself (distance 0) is skipped
    nu = _kth_positive_dist(T, S, k, algorithm)
    return float(d * np.mean(np.log(nu / rho)) + math.log(m / (n - 1)))


def _check_knn(k, algorithm, n_min):
    k = check_number("k", k, low=1, integer=True)
    check_choice("algorithm", algorithm, ("auto", "kd_tree", "brute"))
    if n_min <= k:
        raise DataError(f"k-nearest-neighbour estimators with k={k} need more than {k} samples per domain, "
                        f"got {n_min}; pass more samples or a smaller k.")
    return k


@register("divergence", "kl_knn")
def kl_knn(Xs, Xt, *, seed: int = 0, k: int = 5, algorithm: str = "auto") -> MetricResult:
    r"""k-nearest-neighbour estimate of KL(source || target).

    .. math::

        \widehat{\mathrm{KL}}(P \,\|\, Q) = \frac{d}{n} \sum_{i=1}^n \ln \frac{\nu_k(i)}{\rho_k(i)}
        + \ln \frac{m}{n - 1}

    with :math:`x_1..x_n \sim P` the source rows, :math:`y_1..y_m \sim Q` the target rows,
    :math:`\rho_k(i)` the distance from :math:`x_i` to its k-th nearest neighbour among the other
    source rows and :math:`\nu_k(i)` to its k-th nearest neighbour among the target rows
    (Euclidean). Consistent for continuous densities as n, m grow with k fixed. The estimator
    assumes continuous data: neighbours at distance exactly 0 (duplicated rows, including the
    same row present in both samples) are skipped, so identical inputs give
    :math:`\ln(m / (n-1)) \approx 0`. In high dimension the bias is large (the factor ``d``);
    compare values across domain pairs of the same dimension, not to a closed form. Neighbours
    come from a k-d tree for ``d <= 16`` and chunked brute force otherwise (``algorithm="auto"``).

    Parameters
    ----------
    Xs : array-like or tensor of shape (n, d)
    Xt : array-like or tensor of shape (m, d)
        Both need more than ``k`` rows.
    seed : int, default 0
        Unused (deterministic); accepted for the common signature.
    k : int, default 5
    algorithm : {"auto", "kd_tree", "brute"}

    Returns
    -------
    MetricResult
        ``value`` in nats (can be negative for finite samples).

    References
    ----------
    Q. Wang, S. R. Kulkarni and S. Verdú, "Divergence estimation for multidimensional densities
    via k-nearest-neighbor distances", IEEE Trans. Inf. Theory 55(5), 2009;
    F. Pérez-Cruz, "Kullback-Leibler divergence estimation of continuous distributions", ISIT 2008.
    """
    _seed(seed)
    S, T = check_pair(Xs, Xt, min_rows=2)
    k = _check_knn(k, algorithm, min(len(S), len(T)))
    mu = np.vstack([S, T]).mean(axis=0)
    value = _knn_kl(S - mu, T - mu, k, algorithm)
    return MetricResult("kl_knn", value, details={"k": k, "n_source": len(S), "n_target": len(T)})


@register("divergence", "js_knn")
def js_knn(Xs, Xt, *, seed: int = 0, k: int = 5, algorithm: str = "auto") -> MetricResult:
    r"""k-nearest-neighbour estimate of the Jensen-Shannon divergence, via the mixture.

    .. math::

        \mathrm{JS}(P, Q) = \tfrac12 \mathrm{KL}(P \,\|\, M) + \tfrac12 \mathrm{KL}(Q \,\|\, M),
        \quad M = \tfrac12 (P + Q)

    The larger sample is subsampled (seeded) to the size ``n`` of the smaller, so the pooled
    ``2n`` rows are a sample of :math:`M`. Each KL term is the :func:`kl_knn` estimator of the
    domain's rows against the pooled rows (the query row itself, at distance 0, is skipped, so
    the reference has ``2n - 1`` rows):
    :math:`\widehat{\mathrm{KL}}(P\|M) = \frac{d}{n}\sum_i \ln\frac{\nu_k(i)}{\rho_k(i)} + \ln\frac{2n-1}{n-1}`.
    Exact duplicate rows of the pooled sample are collapsed first (with ``N`` distinct pooled
    rows the last term is :math:`\ln\frac{N-1}{n-1}`), so identical inputs give 0.
    Natural log; clipped to :math:`[0, \ln 2]` (the unclipped value is in ``details['raw']``).

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
    seed : int, default 0
        Seeds the subsampling of the larger domain.
    k : int, default 5
    algorithm : {"auto", "kd_tree", "brute"}

    Returns
    -------
    MetricResult

    References
    ----------
    Wang, Kulkarni & Verdú (2009), see :func:`kl_knn`; J. Lin, IEEE Trans. Inf. Theory 37(1), 1991.
    """
    rng = _rng(seed)
    S, T = check_pair(Xs, Xt, min_rows=2)
    n = min(len(S), len(T))
    k = _check_knn(k, algorithm, n)
    if len(S) > n:
        S = S[np.sort(rng.choice(len(S), n, replace=False))]
    if len(T) > n:
        T = T[np.sort(rng.choice(len(T), n, replace=False))]
    Z = np.vstack([S, T])
    mu = Z.mean(axis=0)
    S, T = S - mu, T - mu
    # Exact duplicates are collapsed (the estimator assumes continuous data; a row present in both
    # domains would otherwise be a zero-distance "twin" that the neighbour search skips).
    Z = np.unique(Z, axis=0) - mu
    # _knn_kl adds ln(|Z| / (n - 1)); the query row itself is in Z and skipped, so the reference
    # has |Z| - 1 rows.
    corr = math.log((len(Z) - 1) / len(Z))
    kl_p = _knn_kl(S, Z, k, algorithm) + corr
    kl_q = _knn_kl(T, Z, k, algorithm) + corr
    raw = 0.5 * (kl_p + kl_q)
    details = {"k": k, "n_per_domain": n, "kl_source_mixture": kl_p, "kl_target_mixture": kl_q, "raw": raw}
    return MetricResult("js_knn", float(np.clip(raw, 0.0, _LN2)), details=details)


# ----------------------------------------------------------------------------------------------
# discrete distributions and label shift
# ----------------------------------------------------------------------------------------------


def _log_div(base) -> float:
    if base is None:
        return 1.0
    base = check_number("base", base, low=0, low_inclusive=False)
    if base == 1:
        raise ConfigError("base=1 is not a valid logarithm base; use None (nats), 2 (bits) or 10.")
    return math.log(base)


def _kl_vec(p: np.ndarray, q: np.ndarray) -> float:
    from scipy.special import rel_entr

    return float(np.sum(rel_entr(p, q)))


def _two_probs(p, q, smoothing):
    p = as_probability(p, "p", smoothing=smoothing)
    q = as_probability(q, "q", smoothing=smoothing)
    if p.shape != q.shape:
        raise DataError(f"p and q must have the same number of categories, got {p.size} and {q.size}.")
    return p, q


def kl_discrete(p, q, *, smoothing: float = 0.0, base: float | None = None) -> float:
    r"""Exact KL divergence between two discrete distributions.

    .. math:: \mathrm{KL}(p \,\|\, q) = \sum_k p_k \ln \frac{p_k}{q_k}

    Parameters
    ----------
    p, q : array-like of shape (K,)
        Probabilities or counts (each normalized to sum to one).
    smoothing : float, default 0.0
        Additive smoothing of both vectors, ``(p + a) / (1 + K a)``; with 0, ``q_k = 0 < p_k``
        gives ``inf``.
    base : float, optional
        Logarithm base; ``None`` = nats.

    Returns
    -------
    float
    """
    p, q = _two_probs(p, q, smoothing)
    return _kl_vec(p, q) / _log_div(base)


def js_discrete(p, q, *, smoothing: float = 0.0, base: float | None = None) -> float:
    r"""Exact Jensen-Shannon divergence between two discrete distributions.

    .. math:: \mathrm{JS}(p, q) = \tfrac12 \mathrm{KL}(p \,\|\, m) + \tfrac12 \mathrm{KL}(q \,\|\, m),
              \quad m = \tfrac12 (p + q)

    Always finite, in :math:`[0, \ln 2]` nats (``[0, 1]`` bits).

    Parameters
    ----------
    p, q : array-like of shape (K,)
    smoothing : float, default 0.0
    base : float, optional

    Returns
    -------
    float

    References
    ----------
    J. Lin, "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory 37(1), 1991.
    """
    p, q = _two_probs(p, q, smoothing)
    m = 0.5 * (p + q)
    js = 0.5 * _kl_vec(p, m) + 0.5 * _kl_vec(q, m)
    return float(np.clip(js, 0.0, _LN2)) / _log_div(base)


def _labels_1d(y, name: str) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of class indices, got shape {y.shape}.")
    return check_labels(y, len(y), name)


def label_shift(y_s, y_t, n_classes: int | None = None, *, smoothing: float = 1.0) -> MetricResult:
    r"""How much the label distribution differs between source and target.

    Class frequencies :math:`\hat p_s, \hat p_t` are estimated with additive smoothing
    (pseudo-count ``smoothing`` per class: :math:`\hat p_k = (c_k + a) / (n + K a)`), and

    * ``value`` = :math:`\mathrm{JS}(\hat p_s, \hat p_t)` (nats, symmetric, bounded by ln 2),
    * ``details['kl']`` = :math:`\mathrm{KL}(\hat p_s \,\|\, \hat p_t)`,
      ``details['kl_reverse']`` = :math:`\mathrm{KL}(\hat p_t \,\|\, \hat p_s)`,
    * ``p_value`` = chi-square test of homogeneity of the raw counts (classes absent from both
      domains dropped); ``None`` when fewer than two classes occur.

    Not registered as a divergence: it takes labels, not feature matrices.

    Parameters
    ----------
    y_s : array-like of shape (n_s,)
        Integer source labels ``0..K-1``.
    y_t : array-like of shape (n_t,)
        Integer target labels.
    n_classes : int, optional
        ``K``; default ``max(label) + 1`` over both.
    smoothing : float, default 1.0
        Laplace smoothing; 0 gives the raw frequencies (KL can then be ``inf``).

    Returns
    -------
    MetricResult
    """
    from scipy.stats import chi2_contingency

    ys = _labels_1d(y_s, "y_s")
    yt = _labels_1d(y_t, "y_t")
    if len(ys) == 0 or len(yt) == 0:
        raise DataError("y_s and y_t need at least one label each.")
    k_max = int(max(ys.max(), yt.max())) + 1
    if n_classes is None:
        n_classes = k_max
    n_classes = check_number("n_classes", n_classes, low=1, integer=True)
    if n_classes < k_max:
        raise DataError(f"n_classes={n_classes} but labels go up to {k_max - 1}; pass n_classes >= {k_max}.")
    smoothing = check_number("smoothing", smoothing, low=0)
    cs = np.bincount(ys, minlength=n_classes).astype(np.float64)
    ct = np.bincount(yt, minlength=n_classes).astype(np.float64)
    ps = (cs + smoothing) / (cs.sum() + n_classes * smoothing)
    pt = (ct + smoothing) / (ct.sum() + n_classes * smoothing)
    m = 0.5 * (ps + pt)
    js = float(np.clip(0.5 * _kl_vec(ps, m) + 0.5 * _kl_vec(pt, m), 0.0, _LN2))
    present = (cs + ct) > 0
    p_value = None
    if present.sum() >= 2:
        p_value = float(chi2_contingency(np.vstack([cs[present], ct[present]]))[1])
    details = {"kl": _kl_vec(ps, pt), "kl_reverse": _kl_vec(pt, ps), "js": js, "smoothing": smoothing,
               "source_distribution": ps.tolist(), "target_distribution": pt.tolist()}
    return MetricResult("label_shift", js, p_value=p_value, details=details)


# ----------------------------------------------------------------------------------------------
# optimal transport
# ----------------------------------------------------------------------------------------------


def _quantile_merge(n: int, m: int):
    """Weights and indices pairing the quantile functions of two empirical 1-D distributions.

    On each interval of the union of the breakpoints ``i/n`` and ``j/m`` both quantile functions
    are constant; breakpoints are integers in units of ``1/(n m)`` so the merge is exact.
    """
    b = np.union1d(np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n)
    w = np.diff(np.concatenate([[0], b])) / (n * m)
    return w, (b + m - 1) // m - 1, (b + n - 1) // n - 1


def _w_pp_sorted(xs: np.ndarray, xt: np.ndarray, p: int, merge=None) -> np.ndarray:
    """W_p^p between 1-D empirical distributions along axis 1 of sorted (L, n) and (L, m) arrays."""
    n, m = xs.shape[1], xt.shape[1]
    if n == m:
        diff = np.abs(xs - xt)
        return (diff if p == 1 else diff**p).mean(axis=1)
    w, i_s, i_t = merge if merge is not None else _quantile_merge(n, m)
    diff = np.abs(xs[:, i_s] - xt[:, i_t])
    return (diff if p == 1 else diff**p) @ w


def _check_p(p) -> int:
    p = check_number("p", p, integer=True)
    if p not in (1, 2):
        raise ConfigError(f"p={p!r} is not supported; use p=1 (W1, earth mover's) or p=2 (W2).")
    return p


@register("divergence", "wasserstein")
def wasserstein(
    Xs,
    Xt,
    *,
    seed: int = 0,
    p: int = 2,
    max_pairs: float = 25e6,
    num_itermax: int = 10_000_000,
) -> MetricResult:
    r"""Exact p-Wasserstein distance between the two empirical distributions.

    .. math::

        W_p(\hat P, \hat Q) = \Big(\min_{\gamma \in \Pi(a, b)} \sum_{i, j} \gamma_{ij}
        \lVert x_i - y_j \rVert^p\Big)^{1/p}, \quad a = \tfrac{1}{n_s} 1, \; b = \tfrac{1}{n_t} 1

    solved exactly by network simplex (POT ``ot.emd2``, optional extra ``ot``), so O(n^3) time
    and an ``n_s x n_t`` cost matrix; ``n_s * n_t > max_pairs`` raises (use
    :func:`sliced_wasserstein` or subsample). For ``d = 1`` the exact value comes from sorted
    samples (quantile coupling, no POT needed, any size); with ``p=1`` it equals
    ``scipy.stats.wasserstein_distance``.

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
    seed : int, default 0
        Unused (exact); accepted for the common signature.
    p : {1, 2}, default 2
        Order; the ground metric is Euclidean.
    max_pairs : float, default 25e6
    num_itermax : int, default 10_000_000
        Network simplex iteration limit; a warning is issued if it is reached.

    Returns
    -------
    MetricResult
        ``details``: ``cost`` (= W_p^p), ``p``, ``method`` (``"emd"`` or ``"sorting"``).

    References
    ----------
    C. Villani, *Optimal Transport: Old and New*, Springer, 2009; G. Peyré and M. Cuturi,
    "Computational Optimal Transport", Found. Trends ML 11(5-6), 2019; R. Flamary et al.,
    "POT: Python Optimal Transport", JMLR 22(78), 2021.
    """
    _seed(seed)
    p = _check_p(p)
    max_pairs = check_number("max_pairs", max_pairs, low=1)
    num_itermax = check_number("num_itermax", num_itermax, low=1, integer=True)
    S, T = check_pair(Xs, Xt, min_rows=1)
    n_s, n_t = len(S), len(T)
    if S.shape[1] == 1:
        cost = float(_w_pp_sorted(np.sort(S[:, 0])[None], np.sort(T[:, 0])[None], p)[0])
        method = "sorting"
    else:
        if n_s * n_t > max_pairs:
            raise ConfigError(
                f"exact wasserstein needs an n_s x n_t = {n_s} x {n_t} cost matrix (> max_pairs={max_pairs:.3g}); "
                "use the 'sliced_wasserstein' divergence, subsample the domains, or raise max_pairs."
            )
        ot = require("ot", "ot", "the exact 'wasserstein' divergence")
        mu = np.vstack([S, T]).mean(axis=0)
        S, T = S - mu, T - mu
        if S.shape[1] <= 32:
            from scipy.spatial.distance import cdist

            M = cdist(S, T, metric="sqeuclidean")
        else:
            M = _sq_dists(S, T)
        if p == 1:
            np.sqrt(M, out=M)
        a = np.full(n_s, 1.0 / n_s)
        b = np.full(n_t, 1.0 / n_t)
        cost, log = ot.emd2(a, b, M, numItermax=num_itermax, log=True)
        if log.get("warning"):
            warnings.warn(f"wasserstein: {log['warning']} (raise num_itermax).", RuntimeWarning, stacklevel=2)
        cost = max(0.0, float(cost))
        method = "emd"
    return MetricResult("wasserstein", cost ** (1.0 / p), details={"cost": cost, "p": p, "method": method})


@register("divergence", "sliced_wasserstein")
def sliced_wasserstein(
    Xs,
    Xt,
    *,
    seed: int = 0,
    n_projections: int = 128,
    p: int = 2,
    chunk_size: int = 32,
) -> MetricResult:
    r"""Sliced p-Wasserstein distance, Monte Carlo over random directions.

    .. math::

        SW_p(P, Q) = \Big(\mathbb E_{\theta \sim \mathcal U(S^{d-1})}
        W_p^p(\theta_\# P, \theta_\# Q)\Big)^{1/p}
        \approx \Big(\frac1L \sum_{l=1}^L W_p^p(\theta_l^\top X_s, \theta_l^\top X_t)\Big)^{1/p}

    with ``L = n_projections`` seeded uniform directions. Each 1-D :math:`W_p` is exact:
    both projections are sorted and their quantile functions are paired on the union of the
    breakpoints ``i/n_s`` and ``j/n_t`` (so unequal sizes need no resampling). Directions are
    processed ``chunk_size`` at a time (memory O((n_s + n_t) chunk_size)); float32 inputs are
    projected in float32. Note the scale: for a translation by :math:`\delta`,
    :math:`W_p = \lVert\delta\rVert` but :math:`SW_2 = \lVert\delta\rVert / \sqrt d`.

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
    seed : int, default 0
        Seeds the directions.
    n_projections : int, default 128
    p : {1, 2}, default 2
    chunk_size : int, default 32

    Returns
    -------
    MetricResult
        ``details``: ``n_projections``, ``p``, ``mc_std_error`` (standard error of the mean of
        :math:`W_p^p` over directions).

    References
    ----------
    J. Rabin, G. Peyré, J. Delon and M. Bernot, "Wasserstein barycenter and its application to
    texture mixing", SSVM 2011; N. Bonneel, J. Rabin, G. Peyré and H. Pfister, "Sliced and Radon
    Wasserstein barycenters of measures", JMIV 51, 2015.
    """
    rng = _rng(seed)
    p = _check_p(p)
    n_projections = check_number("n_projections", n_projections, low=1, integer=True)
    chunk_size = check_number("chunk_size", chunk_size, low=1, integer=True)
    S, T = _pair_lowmem(Xs, Xt, min_rows=1)
    d = S.shape[1]
    theta = rng.standard_normal((n_projections, d))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    theta = theta.astype(S.dtype)
    merge = _quantile_merge(len(S), len(T)) if len(S) != len(T) else None
    w_pp = np.empty(n_projections)
    for c0 in range(0, n_projections, chunk_size):
        c1 = min(n_projections, c0 + chunk_size)
        th = theta[c0:c1]
        ps = np.sort((th @ S.T).astype(np.float64, copy=False), axis=1)  # (c, n_s), contiguous rows
        pt = np.sort((th @ T.T).astype(np.float64, copy=False), axis=1)
        w_pp[c0:c1] = _w_pp_sorted(ps, pt, p, merge)
    mean = float(w_pp.mean())
    se = float(w_pp.std(ddof=1) / math.sqrt(n_projections)) if n_projections > 1 else float("nan")
    details = {"n_projections": n_projections, "p": p, "mc_std_error": se}
    return MetricResult("sliced_wasserstein", max(mean, 0.0) ** (1.0 / p), details=details)


@register("divergence", "coral_distance")
def coral_distance(Xs, Xt, *, seed: int = 0) -> MetricResult:
    r"""CORAL distance: squared Frobenius distance between the two covariance matrices.

    .. math:: \ell_{\mathrm{CORAL}} = \frac{1}{4 d^2} \lVert C_s - C_t \rVert_F^2

    with :math:`C_s, C_t` the unbiased sample covariances (d x d).

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
    seed : int, default 0
        Unused (deterministic); accepted for the common signature.

    Returns
    -------
    MetricResult

    References
    ----------
    B. Sun and K. Saenko, "Deep CORAL: Correlation alignment for deep domain adaptation",
    ECCV Workshops 2016.
    """
    _seed(seed)
    S, T = check_pair(Xs, Xt, min_rows=2)
    d = S.shape[1]

    def cov(X):
        Xc = X - X.mean(axis=0)
        return Xc.T @ Xc / (len(X) - 1)

    D = cov(S) - cov(T)
    return MetricResult("coral_distance", float((D * D).sum()) / (4.0 * d * d), details={"n_features": d})


# ----------------------------------------------------------------------------------------------
# per-feature tests
# ----------------------------------------------------------------------------------------------


def benjamini_hochberg(pvals) -> np.ndarray:
    r"""Benjamini-Hochberg adjusted p-values (false discovery rate control).

    With :math:`p_{(1)} \le \dots \le p_{(m)}`,

    .. math:: \tilde p_{(i)} = \min\Big(1, \min_{j \ge i} \frac{m\, p_{(j)}}{j}\Big)

    and rejecting :math:`\tilde p_i \le \alpha` controls the FDR at :math:`\alpha` for
    independent (or positively dependent) tests. Equals
    ``scipy.stats.false_discovery_control(pvals, method="bh")``.

    Parameters
    ----------
    pvals : array-like
        p-values in [0, 1], any shape (adjusted jointly).

    Returns
    -------
    ndarray of the same shape

    References
    ----------
    Y. Benjamini and Y. Hochberg, "Controlling the false discovery rate: a practical and powerful
    approach to multiple testing", JRSS B 57(1), 1995.
    """
    p = np.asarray(pvals, dtype=np.float64)
    shape = p.shape
    p = p.ravel()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise DataError("pvals must be numbers in [0, 1] without NaN.")
    m = p.size
    if m == 0:
        return p.reshape(shape)
    order = np.argsort(p, kind="stable")
    adj = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out.reshape(shape)


def _feature_tests(S, T, test: str, alpha: float, name: str) -> MetricResult:
    from scipy import stats

    with np.errstate(invalid="ignore", divide="ignore"):
        if test == "ks":
            res = stats.ks_2samp(S, T, axis=0)
        else:
            res = stats.mannwhitneyu(S, T, axis=0, alternative="two-sided")
    pv = np.nan_to_num(np.asarray(res.pvalue, dtype=np.float64).reshape(-1), nan=1.0)  # NaN: no evidence
    adj = benjamini_hochberg(np.clip(pv, 0.0, 1.0))
    shifted = adj <= alpha
    d = S.shape[1]
    top = np.argsort(adj, kind="stable")[: min(10, d)]
    details = {
        "n_shifted": int(shifted.sum()),
        "n_features": d,
        "alpha": alpha,
        "min_adjusted_p": float(adj.min()),
        "most_shifted_features": [int(i) for i in top if shifted[i]],
    }
    if test == "ks":
        details["mean_ks_statistic"] = float(np.mean(res.statistic))
    return MetricResult(name, float(shifted.mean()), p_value=float(adj.min()), details=details)


@register("divergence", "ks_features")
def ks_features(Xs, Xt, *, seed: int = 0, alpha: float = 0.05) -> MetricResult:
    r"""Fraction of features shifted, by per-feature Kolmogorov-Smirnov tests with BH correction.

    .. math:: D_j = \sup_x \big|\hat F_{s,j}(x) - \hat F_{t,j}(x)\big|

    tested with ``scipy.stats.ks_2samp`` (vectorized over features, two-sided).

    Each of the d features is tested separately, the d p-values are adjusted with
    :func:`benjamini_hochberg`, and

    * ``value`` = fraction of features with adjusted p <= ``alpha`` (shifted features),
    * ``p_value`` = the smallest BH-adjusted p-value, which is the p-value of the global null
      "no feature is shifted" (the Simes test),
    * ``details``: ``n_shifted``, ``n_features``, ``min_adjusted_p``, ``most_shifted_features``
      (indices of up to 10 shifted features, most significant first).

    Tests on single features ignore changes in the dependence between features; see
    :func:`mmd` for a multivariate test.

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
    seed : int, default 0
        Unused (deterministic); accepted for the common signature.
    alpha : float, default 0.05
        False discovery rate.

    Returns
    -------
    MetricResult

    References
    ----------
    N. Smirnov, "Table for estimating the goodness of fit of empirical distributions",
    Ann. Math. Stat. 19, 1948; Y. Benjamini and Y. Hochberg, JRSS B 57(1), 1995; S. Rabanser,
    S. Günnemann and Z. Lipton, "Failing loudly: an empirical study of methods for detecting
    dataset shift", NeurIPS 2019.
    """
    _seed(seed)
    alpha = check_number("alpha", alpha, low=0, high=1, low_inclusive=False, high_inclusive=False)
    S, T = check_pair(Xs, Xt, min_rows=1)
    return _feature_tests(S, T, "ks", alpha, "ks_features")


@register("divergence", "mannwhitney_features")
def mannwhitney_features(Xs, Xt, *, seed: int = 0, alpha: float = 0.05) -> MetricResult:
    r"""Fraction of features shifted, by per-feature Mann-Whitney U tests with BH correction.

    .. math:: U_j = \sum_{i, l} \mathbf 1[x_{ij} > y_{lj}] + \tfrac12 \mathbf 1[x_{ij} = y_{lj}]

    two-sided, with ``scipy.stats.mannwhitneyu`` (vectorized over features). Sensitive to a shift
    in location (stochastic ordering) rather than to any change of distribution.

    Each of the d features is tested separately, the d p-values are adjusted with
    :func:`benjamini_hochberg`, and

    * ``value`` = fraction of features with adjusted p <= ``alpha`` (shifted features),
    * ``p_value`` = the smallest BH-adjusted p-value, which is the p-value of the global null
      "no feature is shifted" (the Simes test),
    * ``details``: ``n_shifted``, ``n_features``, ``min_adjusted_p``, ``most_shifted_features``
      (indices of up to 10 shifted features, most significant first).

    Tests on single features ignore changes in the dependence between features; see
    :func:`mmd` for a multivariate test.

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
    seed : int, default 0
        Unused (deterministic); accepted for the common signature.
    alpha : float, default 0.05
        False discovery rate.

    Returns
    -------
    MetricResult

    References
    ----------
    H. B. Mann and D. R. Whitney, "On a test of whether one of two random variables is
    stochastically larger than the other", Ann. Math. Stat. 18, 1947; Y. Benjamini and
    Y. Hochberg, JRSS B 57(1), 1995.
    """
    _seed(seed)
    alpha = check_number("alpha", alpha, low=0, high=1, low_inclusive=False, high_inclusive=False)
    S, T = check_pair(Xs, Xt, min_rows=1)
    return _feature_tests(S, T, "mw", alpha, "mannwhitney_features")


# ----------------------------------------------------------------------------------------------
# several at once
# ----------------------------------------------------------------------------------------------

#: Divergences computed by :func:`compute_divergences` when ``names`` is None: every registered
#: one except the exact ``wasserstein`` (O(n^3), optional dependency; ask for it by name).
DEFAULT_DIVERGENCES = (
    "mmd",
    "mmd_linear",
    "a_distance",
    "kl_gaussian",
    "js_gaussian",
    "kl_knn",
    "js_knn",
    "sliced_wasserstein",
    "coral_distance",
    "ks_features",
    "mannwhitney_features",
)


def compute_divergences(Xs, Xt, names=None, seed: int = 0, **per_metric_options) -> dict[str, MetricResult]:
    """Compute several registered divergences between the same two samples.

    Parameters
    ----------
    Xs : array-like or tensor of shape (n_s, d)
    Xt : array-like or tensor of shape (n_t, d)
    names : sequence of str, optional
        Registry keys; default :data:`DEFAULT_DIVERGENCES`.
    seed : int, default 0
        Passed to every divergence.
    **per_metric_options
        ``name={option: value}`` for any of ``names``, e.g. ``mmd={"kernel_mults": (0.5, 1, 2)}``.

    Returns
    -------
    dict
        name -> :class:`MetricResult`, in the order of ``names``.
    """
    _seed(seed)
    names = list(DEFAULT_DIVERGENCES if names is None else ([names] if isinstance(names, str) else names))
    valid = available("divergence")
    for n in names:
        get("divergence", n)  # unknown names raise with suggestions
    for key, opts in per_metric_options.items():
        if key not in names:
            hint = suggest(key, names)
            where = "is not among names" if key in valid else "is not a divergence"
            raise ConfigError(f"options given for {key!r}, which {where}.{hint} Options must be keyed by one of: "
                              f"{', '.join(names)}.")
        if not isinstance(opts, dict):
            raise ConfigError(f"options for {key!r} must be a dict of keyword arguments, got {type(opts).__name__}.")
    S, T = check_pair(Xs, Xt, min_rows=1)
    return {n: get("divergence", n)(S, T, seed=seed, **per_metric_options.get(n, {})) for n in names}
