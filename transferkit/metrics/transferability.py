"""Transferability scores: how well a backbone should transfer to a labeled target, without training.

Every score is a pure function returning a :class:`~transferkit.metrics._base.MetricResult`;
**higher always means better expected transfer**. They are registered under the registry kind
``transferability``:

=====================  ===============================================  ==========================
key                    what it needs                                    reference
=====================  ===============================================  ==========================
``logme``              target features + labels                         You et al., ICML 2021
``leep``               source-model class probabilities + labels        Nguyen et al., ICML 2020
``nleep``              target features + labels (GMM replaces the head) Li et al., CVPR 2021
``nce``                source-model hard predictions + labels           Tran et al., ICCV 2019
``hscore``             target features + labels                         Bao et al., ICIP 2019
``hscore_shrinkage``   target features + labels                         Ibrahim et al., ICLR 2023
=====================  ===============================================  ==========================

Calling convention
------------------
The functions have natural signatures (``logme(features, labels)``, ``leep(source_probs, labels)``,
``nce(source_labels, labels)``...), and **every registered function also accepts the uniform
keyword call** ::

    fn(features=F, labels=y, source_probs=P, seed=0)

so callers such as :func:`score_all` can treat them alike. Keywords a score does not use are
ignored (``logme`` ignores ``source_probs``; ``leep`` ignores ``features``); scores that need
``source_probs`` (``leep``, ``nce``) raise :class:`~transferkit.errors.ConfigError` naming it when
it is missing. Deterministic scores accept ``seed`` and ignore it.

Labels are integer class indices ``>= 0``; only the classes present matter (they are re-indexed
``0..K-1`` internally) and at least two are needed. All arithmetic is in float64.

:func:`rank_correlation` compares a ranking of backbones by a score with the accuracy they
actually reach after fine-tuning (Kendall's tau, weighted tau and Spearman's rho).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from .._registry import get, register
from .._validation import check_number
from ..errors import ConfigError, DataError
from ._base import MetricResult, as_2d, check_labels

__all__ = [
    "logme",
    "leep",
    "nleep",
    "nce",
    "hscore",
    "hscore_shrinkage",
    "score_all",
    "rank_correlation",
]

# Row sums of probabilities may drift from 1 by float32 rounding over many classes; anything
# further off is almost certainly logits or unnormalised scores.
_PROB_ATOL = 1e-3


# --------------------------------------------------------------------------------------------
# input checks shared by the scores
# --------------------------------------------------------------------------------------------


def _labels(labels, n: int, *, rows_of: str = "features") -> tuple[np.ndarray, int]:
    """Labels re-indexed to ``0..K-1`` over the classes present, and ``K`` (>= 2)."""
    if labels is None:
        raise ConfigError("labels is required: pass labels=<integer class index per sample>.")
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if y.ndim == 1 and len(y) != n:
        raise DataError(
            f"labels has {len(y)} entries but {rows_of} has {n} rows; pass exactly one label per sample."
        )
    y = check_labels(y, n, "labels")
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"labels contains a single class ({int(classes[0])}); transferability needs at least two "
            "target classes."
        )
    return y.astype(np.int64), len(classes)


def _features(features) -> np.ndarray:
    if features is None:
        raise ConfigError("features is required: pass features=<(n_samples, n_features) array>.")
    return as_2d(features, "features")


def _probs(source_probs, n: int | None, *, from_logits: bool, name: str = "source_probs") -> np.ndarray:
    """Rows of a probability matrix, checked (non-negative, summing to 1) and renormalised."""
    if hasattr(source_probs, "detach"):
        source_probs = source_probs.detach().cpu().numpy()
    arr = np.asarray(source_probs)
    if arr.ndim != 2:
        raise DataError(
            f"{name} must have shape (n_samples, n_source_classes), got {arr.shape}; "
            "for hard source predictions use nce(source_labels, labels)."
        )
    P = as_2d(arr, name)
    if n is not None and P.shape[0] != n:
        raise DataError(f"{name} has {P.shape[0]} rows but labels has {n} entries; pass one row per sample.")
    if from_logits:
        P = P - P.max(axis=1, keepdims=True)
        np.exp(P, out=P)
        P /= P.sum(axis=1, keepdims=True)
        return P
    if (P < -1e-12).any():
        row = int(np.nonzero((P < -1e-12).any(axis=1))[0][0])
        raise DataError(
            f"{name} has negative entries (row {row}); pass probabilities, or logits with from_logits=True."
        )
    sums = P.sum(axis=1)
    bad = np.nonzero(np.abs(sums - 1.0) > _PROB_ATOL)[0]
    if len(bad):
        raise DataError(
            f"{name} rows must sum to 1 (row {int(bad[0])} sums to {sums[bad[0]]:.4g}, {len(bad)} rows off); "
            "pass softmax probabilities, or logits with from_logits=True."
        )
    P = np.clip(P, 0.0, None)
    return P / P.sum(axis=1, keepdims=True)


def _require_source_probs(source_probs, score: str) -> None:
    if source_probs is None:
        raise ConfigError(
            f"{score} needs source_probs: the source model's predicted class probabilities on the target "
            "samples, shape (n_samples, n_source_classes). Pass source_probs=..., or use 'nleep', "
            "'logme' or 'hscore', which need only features."
        )


# --------------------------------------------------------------------------------------------
# LogME
# --------------------------------------------------------------------------------------------


def _logme_evidence(F: np.ndarray, Y: np.ndarray, *, tol: float, max_iter: int) -> dict:
    """Maximised log evidence of Bayesian linear regression for each column of ``Y``.

    One eigendecomposition (of the smaller Gram matrix, ``F^T F`` or ``F F^T``) is shared by all
    targets; each fixed-point step then costs ``O(k)`` per target, ``k = rank(F)``.
    """
    n, d = F.shape
    if n > d:
        sigma, V = np.linalg.eigh(F.T @ F)
    else:
        sigma, V = np.linalg.eigh(F @ F.T)
    smax = float(sigma[-1])
    if smax <= 0.0:
        raise DataError("features are all zero; LogME needs features with some variation.")
    # Eigenvalues below the Gram matrix's rounding level are zero singular values: their
    # directions belong to the residual, which is the exact limit of the formulas below.
    keep = sigma > smax * max(n, d) * np.finfo(np.float64).eps * 10
    sigma, V = sigma[keep], V[:, keep]
    k = len(sigma)
    if n > d:  # x = U^T y with U = F V / s, without forming the (n, k) matrix U
        X = (V.T @ (F.T @ Y)) / np.sqrt(sigma)[:, None]
    else:
        X = V.T @ Y
    x2 = X**2  # (k, K): squared coordinates of each target in the left singular basis
    y2 = (Y**2).sum(axis=0)
    res_perp = np.clip(y2 - x2.sum(axis=0), 0.0, None)  # part of y outside the column space of F
    s = sigma[:, None]

    def stats(alpha, beta, cols):
        t = alpha / beta
        denom = s + t
        gamma = (s / denom).sum(axis=0)
        m2 = (s * x2[:, cols] / denom**2).sum(axis=0)  # ||m||^2
        res2 = (x2[:, cols] * (t / denom) ** 2).sum(axis=0) + res_perp[cols]  # ||y - F m||^2
        return gamma, m2, res2

    n_targets = Y.shape[1]
    alpha = np.ones(n_targets)
    beta = np.ones(n_targets)
    iters = np.zeros(n_targets, dtype=np.int64)
    active = np.arange(n_targets)
    boundary = np.zeros(n_targets, dtype=bool)
    # The maximum can lie at alpha/beta -> inf (features carry no linear evidence for y) or -> 0
    # (y is fit exactly, possible when n <= d); the iteration then moves t geometrically without
    # end while the evidence converges. Past these bounds the features' contribution to the
    # evidence differs from its limit by O(1e-10): stop there.
    t_hi, t_lo = 1e10 * smax, 1e-10 * float(sigma[0])
    tiny = np.finfo(np.float64).tiny
    for it in range(1, max_iter + 1):
        a, b = alpha[active], beta[active]
        gamma, m2, res2 = stats(a, b, active)
        # MacKay's updates = the stationarity conditions of the evidence in alpha and beta.
        a_new = gamma / np.maximum(m2, tiny)
        b_new = (n - gamma) / np.maximum(res2, tiny)
        t, t_new = a / b, a_new / b_new
        at_bound = (t_new > t_hi) | (t_new < t_lo)
        done = (np.abs(t_new - t) <= tol * t) | at_bound
        alpha[active], beta[active] = a_new, b_new
        boundary[active] = at_bound
        iters[active] = it
        active = active[~done]
        if len(active) == 0:
            break

    cols = np.arange(n_targets)
    _, m2, res2 = stats(alpha, beta, cols)
    log_det_A = np.log(alpha + beta * s).sum(axis=0) + (d - k) * np.log(alpha)
    evidence = (
        0.5 * d * np.log(alpha)
        + 0.5 * n * np.log(beta)
        - 0.5 * n * np.log(2 * np.pi)
        - 0.5 * beta * res2
        - 0.5 * alpha * m2
        - 0.5 * log_det_A
    )
    return {
        "evidence": evidence,
        "alpha": alpha,
        "beta": beta,
        "n_iter": int(iters.max()),
        "converged": len(active) == 0,
        "at_boundary": int(boundary.sum()),
        "rank": k,
    }


@register("transferability", "logme")
def logme(
    features,
    labels,
    *,
    source_probs=None,
    seed: int = 0,
    tol: float = 1e-7,
    max_iter: int = 1000,
) -> MetricResult:
    r"""LogME: log of the maximum evidence of a Bayesian linear model on the features.

    For each class :math:`k` the one-hot column :math:`y_k \in \{0,1\}^n` is regressed on the
    features :math:`F \in \mathbb{R}^{n \times d}` with prior :math:`w \sim N(0, \alpha^{-1} I_d)` and
    noise :math:`y_k \mid F, w \sim N(F w, \beta^{-1} I_n)`. The log evidence is

    .. math::

        \mathcal{L}_k(\alpha, \beta) = \tfrac{d}{2}\log\alpha + \tfrac{n}{2}\log\beta
            - \tfrac{n}{2}\log 2\pi - \tfrac{\beta}{2}\lVert F m - y_k\rVert^2
            - \tfrac{\alpha}{2}\lVert m\rVert^2 - \tfrac12 \log\lvert A\rvert,

    with :math:`A = \alpha I + \beta F^\top F` and :math:`m = \beta A^{-1} F^\top y_k`. It is
    maximised over :math:`(\alpha, \beta)` by MacKay's fixed-point iteration
    :math:`\gamma = \sum_i \beta\sigma_i / (\alpha + \beta\sigma_i)`,
    :math:`\alpha \leftarrow \gamma / m^\top m`,
    :math:`\beta \leftarrow (n - \gamma) / \lVert F m - y_k\rVert^2` (:math:`\sigma_i` the
    eigenvalues of :math:`F^\top F`), evaluated in the singular basis of :math:`F` (Algorithm 2
    of the paper), and the score is

    .. math:: \mathrm{LogME} = \frac{1}{K} \sum_{k=1}^{K} \frac{\mathcal{L}_k(\alpha_k^*, \beta_k^*)}{n}.

    Parameters
    ----------
    features : array-like, shape (n_samples, n_features)
        Target samples embedded by the backbone being scored. Used as given (no centring,
        no bias column), as in the paper.
    labels : array-like of int, shape (n_samples,)
        Target class indices (at least two classes).
    source_probs, seed
        Ignored; accepted for the uniform calling convention (LogME is deterministic).
    tol : float
        Stop when :math:`\alpha/\beta` changes by less than this relative amount for every class.
    max_iter : int
        Cap on fixed-point iterations; ``details["converged"]`` says whether ``tol`` was reached.

    Returns
    -------
    MetricResult
        ``value`` is the average per-sample log evidence (higher is better). ``details`` holds
        ``evidence_per_class`` (per-sample), ``alpha``, ``beta``, ``n_iter``, ``converged``,
        ``at_boundary`` (classes whose maximum lies at :math:`\alpha/\beta \to \infty`, i.e. the
        features carry no linear evidence for them, or :math:`\to 0`, an exact fit; the
        iteration stops once :math:`\alpha/\beta` leaves :math:`[10^{-10}\sigma_{\min},
        10^{10}\sigma_{\max}]`, where the evidence is within about 1e-10 of its limit) and
        ``rank`` (numerical rank of ``features``).

    Notes
    -----
    One eigendecomposition of the smaller Gram matrix is shared by all classes, so the cost is
    :math:`O(n d \min(n, d) + \min(n,d)^3)` plus :math:`O(\min(n,d) K)` per iteration, for both
    :math:`n > d` and :math:`n \le d`. Unlike the reference code, the
    :math:`\log\lvert A\rvert` term keeps the :math:`(d - \operatorname{rank} F)\log\alpha` of the
    zero singular values, so the value is the exact log evidence also when :math:`n < d`; and the
    iteration runs to ``tol`` rather than for at most 11 steps with a 1e-3 tolerance and 1e-5
    added to the denominators. At the fixed point the result equals a direct numerical
    maximisation of the Gaussian marginal likelihood
    :math:`\log N(y_k; 0, \beta^{-1} I + \alpha^{-1} F F^\top)`.

    References
    ----------
    K. You, Y. Liu, J. Wang, M. Long. "LogME: Practical Assessment of Pre-trained Models for
    Transfer Learning." ICML 2021.
    """
    F = _features(features)
    y, K = _labels(labels, F.shape[0])
    tol = check_number("tol", tol, low=0, low_inclusive=False)
    max_iter = check_number("max_iter", max_iter, low=1, integer=True)
    Y = np.zeros((F.shape[0], K))
    Y[np.arange(F.shape[0]), y] = 1.0
    out = _logme_evidence(F, Y, tol=tol, max_iter=max_iter)
    per_class = out["evidence"] / F.shape[0]
    return MetricResult(
        "logme",
        float(per_class.mean()),
        details={
            "evidence_per_class": per_class.tolist(),
            "alpha": out["alpha"].tolist(),
            "beta": out["beta"].tolist(),
            "n_iter": out["n_iter"],
            "converged": out["converged"],
            "at_boundary": out["at_boundary"],
            "rank": out["rank"],
        },
    )


# --------------------------------------------------------------------------------------------
# LEEP, N-LEEP, NCE
# --------------------------------------------------------------------------------------------


def _leep_from_probs(P: np.ndarray, y: np.ndarray, K: int) -> tuple[float, np.ndarray]:
    n = P.shape[0]
    joint = np.zeros((K, P.shape[1]))
    np.add.at(joint, y, P)
    joint /= n  # empirical P(y, z)
    pz = joint.sum(axis=0)
    # A source class that never receives mass has theta_z = 0 for every sample, so P(y|z) is
    # never used; 0 avoids the 0/0.
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = np.einsum("iz,iz->i", P, cond[y])  # sum_z P(y_i | z) theta(x_i)_z
    return float(np.mean(np.log(np.maximum(eep, np.finfo(np.float64).tiny)))), cond


@register("transferability", "leep")
def leep(
    source_probs=None,
    labels=None,
    *,
    features=None,
    seed: int = 0,
    from_logits: bool = False,
) -> MetricResult:
    r"""LEEP: log expected empirical prediction of the source classifier re-used for the target.

    With :math:`\theta(x_i) \in \Delta^{Z}` the source model's predicted distribution over its
    :math:`Z` classes for target sample :math:`x_i`:

    .. math::

        \hat P(y, z) = \frac1n \sum_{i: y_i = y} \theta(x_i)_z, \qquad
        \hat P(y \mid z) = \frac{\hat P(y, z)}{\sum_{y'} \hat P(y', z)}, \qquad
        \mathrm{LEEP} = \frac1n \sum_{i=1}^n \log \sum_{z} \hat P(y_i \mid z)\, \theta(x_i)_z .

    LEEP is :math:`\le 0`; it is 0 when the source predictions determine the target label
    (e.g. one-hot predictions in a one-to-one correspondence with target classes), and equals
    :math:`-\hat H(Y) = \frac1n\sum_i \log \hat P(y_i)` (:math:`\log(1/K)` for balanced classes)
    when every sample gets the same prediction.

    Parameters
    ----------
    source_probs : array-like, shape (n_samples, n_source_classes)
        Source-model probabilities on the target samples; rows must be non-negative and sum to 1
        (within 1e-3, then renormalised). Required.
    labels : array-like of int, shape (n_samples,)
        Target class indices (at least two classes).
    features, seed
        Ignored; accepted for the uniform calling convention.
    from_logits : bool
        ``source_probs`` holds logits; a softmax over each row is applied first.

    Returns
    -------
    MetricResult
        ``value`` is LEEP (higher is better, at most 0); ``details`` has the numbers of source and
        target classes.

    References
    ----------
    C. V. Nguyen, T. Hassner, M. Seeger, C. Archambeau. "LEEP: A New Measure to Evaluate
    Transferability of Learned Representations." ICML 2020.
    """
    _require_source_probs(source_probs, "leep")
    n_rows = np.shape(source_probs)[0] if np.ndim(source_probs) >= 1 else 0
    y, K = _labels(labels, n_rows, rows_of="source_probs")
    P = _probs(source_probs, len(y), from_logits=from_logits)
    value, _ = _leep_from_probs(P, y, K)
    return MetricResult("leep", value, details={"n_source_classes": P.shape[1], "n_classes": K})


def _default_components(n: int, K: int) -> int:
    return max(min(K, n), min(5 * K, n // 5))


@register("transferability", "nleep")
def nleep(
    features,
    labels,
    n_components: int | None = None,
    seed: int = 0,
    *,
    source_probs=None,
    variance: float = 0.8,
) -> MetricResult:
    r"""N-LEEP: LEEP with a Gaussian mixture on the features standing in for the source head.

    The features are reduced by PCA to the fewest components explaining ``variance`` (80%) of
    their variance, a Gaussian mixture with diagonal covariances and :math:`C` components is fit
    to them, and its posteriors :math:`\theta(x_i)_c = p(c \mid x_i)` are used as the "source
    class" probabilities of :func:`leep`:

    .. math::

        \text{N-LEEP} = \frac1n \sum_{i=1}^n \log \sum_{c=1}^{C} \hat P(y_i \mid c)\, p(c \mid x_i).

    Use it for backbones without a source classifier (self-supervised, text encoders...).

    Parameters
    ----------
    features : array-like, shape (n_samples, n_features)
        Target samples embedded by the backbone being scored.
    labels : array-like of int, shape (n_samples,)
        Target class indices (at least two classes).
    n_components : int, optional
        Mixture components :math:`C`. Default ``5 * n_classes``, reduced to ``n_samples // 5``
        when that is smaller (so each component has about five samples), but never below
        ``n_classes``.
    seed : int
        Seeds PCA and the mixture's k-means initialisation; the score is deterministic given it.
    source_probs
        Ignored; accepted for the uniform calling convention.
    variance : float in (0, 1]
        Fraction of variance the PCA keeps.

    Returns
    -------
    MetricResult
        ``value`` is N-LEEP (higher is better, at most 0); ``details`` has ``n_components``,
        ``pca_dim``, ``converged`` (the mixture's EM) and ``seed``.

    Notes
    -----
    The default of :math:`5K` components follows common reference implementations (e.g. SFDA's);
    Li et al. treat the number of components and the PCA dimension as free parameters. The
    mixture's ``reg_covar`` is ``1e-6`` times the mean PCA variance rather than an absolute
    ``1e-6``, so rescaling the features does not change the score.

    References
    ----------
    Y. Li, X. Jia, R. Sang, Y. Zhu, B. Green, L. Wang, B. Gong. "Ranking Neural Checkpoints."
    CVPR 2021.
    """
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    F = _features(features)
    n = F.shape[0]
    y, K = _labels(labels, n)
    seed = check_number("seed", seed, low=0, integer=True)
    variance = check_number("variance", variance, low=0, high=1, low_inclusive=False)
    if n_components is None:
        n_components = _default_components(n, K)
    n_components = check_number("n_components", n_components, low=1, high=n, integer=True)
    if not (F.std(axis=0) > 0).any():
        raise DataError("features are constant across samples; N-LEEP needs features with some variation.")

    if variance < 1:
        Z = PCA(n_components=variance, svd_solver="full", random_state=seed).fit_transform(F)
    else:
        Z = F - F.mean(axis=0)
    reg = 1e-6 * float(Z.var(axis=0).mean())
    gmm = GaussianMixture(
        n_components=n_components, covariance_type="diag", reg_covar=reg, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(Z)
    value, _ = _leep_from_probs(gmm.predict_proba(Z), y, K)
    return MetricResult(
        "nleep",
        value,
        details={
            "n_components": n_components,
            "pca_dim": int(Z.shape[1]),
            "converged": bool(gmm.converged_),
            "seed": seed,
        },
    )


@register("transferability", "nce")
def nce(
    source_labels=None,
    labels=None,
    *,
    features=None,
    source_probs=None,
    seed: int = 0,
) -> MetricResult:
    r"""NCE: negative conditional entropy of the target labels given the source model's predictions.

    With :math:`z_i` the source model's hard prediction for target sample :math:`i` and
    :math:`\hat P(y, z)` the empirical joint distribution of (target label, source prediction):

    .. math::

        \mathrm{NCE} = -\hat H(Y \mid Z) = \sum_{y, z} \hat P(y, z) \log \frac{\hat P(y, z)}{\hat P(z)}.

    It is 0 when the target label is a function of the source prediction and
    :math:`-\hat H(Y)` when they are independent (natural logarithm, nats).

    Parameters
    ----------
    source_labels : array-like, shape (n_samples,) or (n_samples, n_source_classes)
        Hard source predictions (integer indices), or source probabilities/logits from which the
        argmax is taken.
    labels : array-like of int, shape (n_samples,)
        Target class indices (at least two classes).
    source_probs : array-like, shape (n_samples, n_source_classes), optional
        Used (via argmax) when ``source_labels`` is not given; this is how the uniform calling
        convention ``nce(features=..., labels=..., source_probs=...)`` reaches it.
    features, seed
        Ignored; accepted for the uniform calling convention.

    Returns
    -------
    MetricResult
        ``value`` is NCE (higher is better, at most 0); ``details`` has ``entropy_y``
        (:math:`\hat H(Y)`) and the number of distinct source predictions.

    References
    ----------
    A. T. Tran, C. V. Nguyen, T. Hassner. "Transferability and Hardness of Supervised
    Classification Tasks." ICCV 2019.
    """
    if source_labels is not None and source_probs is not None:
        raise ConfigError("nce got both source_labels and source_probs; pass only one of them.")
    if source_labels is None:
        _require_source_probs(source_probs, "nce")
        source_labels, name = source_probs, "source_probs"
    else:
        name = "source_labels"
    if hasattr(source_labels, "detach"):
        source_labels = source_labels.detach().cpu().numpy()
    S = np.asarray(source_labels)
    if S.ndim == 2:
        z = as_2d(S, name).argmax(axis=1)
    elif S.ndim == 1:
        z = S
    else:
        raise DataError(f"{name} must have shape (n_samples,) or (n_samples, n_source_classes), got {S.shape}.")
    y, K = _labels(labels, len(z), rows_of=name)
    z = check_labels(z, len(y), name)
    _, z = np.unique(z, return_inverse=True)
    joint = np.zeros((K, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    pz = joint.sum(axis=0)
    nz = joint > 0
    value = float((joint[nz] * np.log(joint[nz] / np.broadcast_to(pz, joint.shape)[nz])).sum())
    py = joint.sum(axis=1)
    entropy_y = float(-(py * np.log(py)).sum())
    return MetricResult(
        "nce", min(value, 0.0), details={"entropy_y": entropy_y, "n_source_classes": int(joint.shape[1])}
    )


# --------------------------------------------------------------------------------------------
# H-score
# --------------------------------------------------------------------------------------------


def _class_means(Fc: np.ndarray, y: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means of centred features (K, d) and class counts (K,)."""
    counts = np.bincount(y, minlength=K).astype(np.float64)
    sums = np.zeros((K, Fc.shape[1]))
    np.add.at(sums, y, Fc)
    return sums / counts[:, None], counts


@register("transferability", "hscore")
def hscore(features, labels, *, source_probs=None, seed: int = 0) -> MetricResult:
    r"""H-score: how much of the feature covariance the class-conditional means explain.

    .. math::

        \mathcal{H}(f) = \operatorname{tr}\!\left(\operatorname{cov}(f)^{+}\,
            \operatorname{cov}(\mathbb{E}[f \mid y])\right),

    with :math:`\operatorname{cov}(f)` the sample covariance of the features,
    :math:`\operatorname{cov}(\mathbb{E}[f \mid y]) = \frac{1}{n-1}\sum_c n_c (\mu_c - \mu)(\mu_c - \mu)^\top`
    the covariance of the matrix whose row :math:`i` is the mean feature of class :math:`y_i`,
    and :math:`^{+}` the Moore-Penrose pseudo-inverse (eigenvalues below
    :math:`d\,\varepsilon\,\lambda_{\max}` treated as zero, NumPy's default for ``pinv``).

    Parameters
    ----------
    features : array-like, shape (n_samples, n_features)
        Target samples embedded by the backbone being scored.
    labels : array-like of int, shape (n_samples,)
        Target class indices (at least two classes).
    source_probs, seed
        Ignored; accepted for the uniform calling convention.

    Returns
    -------
    MetricResult
        ``value`` is the H-score, in :math:`[0, K-1]` (higher is better); ``details`` has the
        numerical ``rank`` of the feature covariance and ``saturated`` (``n_samples <= n_features``:
        the value is meaningless).

    Warns
    -----
    RuntimeWarning
        When ``n_samples <= n_features``: the sample covariance is then singular and the H-score
        saturates at :math:`K-1` whatever the features; use :func:`hscore_shrinkage`.

    References
    ----------
    Y. Bao, Y. Li, S.-L. Huang, L. Zhang, L. Zheng, A. Zamir, L. Guibas. "An
    Information-Theoretic Approach to Transferability in Task Transfer Learning." ICIP 2019.
    """
    F = _features(features)
    n, d = F.shape
    y, K = _labels(labels, n)
    if n <= d:
        warnings.warn(
            f"hscore with n_samples={n} <= n_features={d}: the feature covariance is singular and the "
            "score saturates near n_classes - 1; use hscore_shrinkage or reduce the dimension.",
            RuntimeWarning,
            stacklevel=2,
        )
    Fc = F - F.mean(axis=0)
    cov_f = Fc.T @ Fc / (n - 1)
    M, counts = _class_means(Fc, y, K)
    # One eigendecomposition gives both the pseudo-inverse and the rank, with NumPy's default
    # cut-off for pinv/matrix_rank (d * eps * largest eigenvalue).
    w, V = np.linalg.eigh(cov_f)
    keep = w > max(w[-1], 0.0) * d * np.finfo(np.float64).eps
    proj = M @ V[:, keep]  # class means in the eigenbasis, (K, rank)
    # tr(cov_f^+ cov_g) with cov_g = sum_c n_c/(n-1) mu_c mu_c^T, without the (n, d) matrix g
    value = float(((counts / (n - 1))[:, None] * proj**2 / w[keep]).sum())
    rank = int(keep.sum())
    # saturated: the singular covariance "explains" any labels, so the value says nothing
    return MetricResult("hscore", value, details={"rank": rank, "saturated": bool(n <= d)})


@register("transferability", "hscore_shrinkage")
def hscore_shrinkage(features, labels, *, source_probs=None, seed: int = 0) -> MetricResult:
    r"""Shrinkage-based H-score: the H-score with a Ledoit-Wolf covariance, stable when n < d.

    The features are centred, :math:`f \leftarrow f - \bar f`. With
    :math:`S = \frac1n \sum_i f_i f_i^\top` and the Ledoit-Wolf shrinkage coefficient
    :math:`\alpha \in [0, 1]` (``sklearn.covariance.LedoitWolf``), the shrunk covariance is
    :math:`\Sigma_\alpha = (1-\alpha) S + \alpha \frac{\operatorname{tr} S}{d} I`, and

    .. math::

        \mathcal{H}_\alpha(f) = \operatorname{tr}\!\left(\Sigma_\alpha^{-1}\,(1-\alpha)\,
            \Sigma_z\right), \qquad
        \Sigma_z = \operatorname{cov}(\mathbb{E}[f \mid y]) = \sum_c \frac{n_c}{n}\, \mu_c \mu_c^\top,

    where :math:`\mu_c` is the mean of the centred features of class :math:`c` (the between-class
    covariance, normalised by :math:`n` like :math:`S`). It is computed as
    :math:`(1-\alpha)\sum_c \frac{n_c}{n} \mu_c^\top \Sigma_\alpha^{-1} \mu_c` with one solve.

    Parameters
    ----------
    features : array-like, shape (n_samples, n_features)
        Target samples embedded by the backbone being scored.
    labels : array-like of int, shape (n_samples,)
        Target class indices (at least two classes).
    source_probs, seed
        Ignored; accepted for the uniform calling convention (the estimator is deterministic).

    Returns
    -------
    MetricResult
        ``value`` is :math:`\mathcal{H}_\alpha` (higher is better); ``details["shrinkage"]`` is
        :math:`\alpha`.

    Notes
    -----
    When :math:`n \gg d`, :math:`\alpha \to 0` and the score approaches :func:`hscore`. When
    :math:`n \le d` the plain H-score saturates at :math:`K - 1`, while :math:`\Sigma_\alpha` stays
    positive definite and the score still separates informative from uninformative features.
    The authors' released code normalises :math:`\Sigma_z` by :math:`n - 1` (``np.cov``) and
    :math:`\Sigma_\alpha` by :math:`n` (Ledoit-Wolf), which scales the score by :math:`n/(n-1)`;
    here both use :math:`n`.

    References
    ----------
    S. Ibrahim, N. Ponomareva, R. Mazumder. "Newer is not always better: Rethinking
    transferability metrics, their peculiarities, stability and performance." ICLR 2023
    (ECML-PKDD 2022 version). O. Ledoit, M. Wolf. "A well-conditioned estimator for
    large-dimensional covariance matrices." J. Multivariate Analysis, 2004.
    """
    from scipy.linalg import LinAlgError, solve
    from sklearn.covariance import LedoitWolf

    F = _features(features)
    n, d = F.shape
    y, K = _labels(labels, n)
    Fc = F - F.mean(axis=0)
    lw = LedoitWolf(assume_centered=True).fit(Fc)
    alpha = float(lw.shrinkage_)
    cov = lw.covariance_
    M, counts = _class_means(Fc, y, K)
    try:
        W = solve(cov, M.T, assume_a="pos")  # (d, K)
    except LinAlgError:  # alpha = 0 (d = 1) and a degenerate covariance
        W = np.linalg.pinv(cov, hermitian=True) @ M.T
    value = (1.0 - alpha) * float(np.einsum("c,cj,jc->", counts / n, M, W))
    return MetricResult("hscore_shrinkage", value, details={"shrinkage": alpha})


# --------------------------------------------------------------------------------------------
# all scores at once, and how well a ranking matches reality
# --------------------------------------------------------------------------------------------

_WITH_SOURCE = ("logme", "hscore", "hscore_shrinkage", "leep", "nce")
_WITHOUT_SOURCE = ("logme", "hscore", "hscore_shrinkage", "nleep")


def score_all(
    features,
    labels,
    source_probs=None,
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, MetricResult]:
    """Every transferability score that applies to one backbone on one target.

    Parameters
    ----------
    features : array-like, shape (n_samples, n_features)
        Target samples embedded by the backbone.
    labels : array-like of int, shape (n_samples,)
        Target class indices.
    source_probs : array-like, shape (n_samples, n_source_classes), optional
        The backbone's source-classifier probabilities on the target samples, when it has one.
    names : sequence of str, optional
        Registry keys to compute. Default: ``logme``, ``hscore``, ``hscore_shrinkage`` plus
        ``leep`` and ``nce`` when ``source_probs`` is given, else ``nleep``.
    seed : int
        Passed to every score (only ``nleep`` is random).

    Returns
    -------
    dict
        Registry key -> :class:`MetricResult`, in the order computed.

    Notes
    -----
    Every score is called with the uniform convention
    ``fn(features=..., labels=..., source_probs=..., seed=...)``; asking for ``leep`` or ``nce``
    without ``source_probs`` raises :class:`~transferkit.errors.ConfigError`.
    """
    if names is None:
        names = _WITH_SOURCE if source_probs is not None else _WITHOUT_SOURCE
    elif isinstance(names, str):
        names = [names]
    fns = {name: get("transferability", name) for name in names}  # unknown names fail here, early
    with warnings.catch_warnings():
        # hscore's n <= d warning is a per-backbone nuisance here; its saturation is documented.
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            name: fn(features=features, labels=labels, source_probs=source_probs, seed=seed)
            for name, fn in fns.items()
        }


def rank_correlation(scores: Mapping[str, float], truth: Mapping[str, float]) -> dict:
    r"""Agreement between a ranking of candidates by a score and their actual transfer results.

    Parameters
    ----------
    scores : mapping of str to float (or MetricResult)
        Candidate (e.g. backbone) name -> transferability score.
    truth : mapping of str to float
        The same candidate names -> what actually happened (e.g. fine-tuned target accuracy).

    Returns
    -------
    dict
        ``kendall_tau``, ``kendall_p`` (Kendall's :math:`\tau_b` and its p-value),
        ``weighted_tau`` (Kendall's weighted :math:`\tau_w` with hyperbolic weights, which
        stresses agreement among the best candidates; used by the LogME paper),
        ``spearman_rho``, ``spearman_p``, ``n`` and ``names`` (the order used). Correlations are
        NaN when either side is constant.

    References
    ----------
    S. Vigna. "A weighted correlation index for rankings with ties." WWW 2015.
    """
    from scipy import stats

    if not isinstance(scores, Mapping) or not isinstance(truth, Mapping):
        raise DataError("scores and truth must be dicts mapping candidate names to numbers.")
    missing_truth = sorted(set(scores) - set(truth))
    missing_scores = sorted(set(truth) - set(scores))
    if missing_truth or missing_scores:
        parts = []
        if missing_truth:
            parts.append(f"in scores but not truth: {missing_truth}")
        if missing_scores:
            parts.append(f"in truth but not scores: {missing_scores}")
        raise DataError(
            "scores and truth must name the same candidates (" + "; ".join(parts) + "); "
            "drop the extra names or add the missing results."
        )
    names = sorted(scores)
    if len(names) < 2:
        raise DataError(f"rank_correlation needs at least 2 candidates, got {len(names)}.")
    s = np.array([float(scores[k]) for k in names])
    t = np.array([float(truth[k]) for k in names])
    for what, v in (("scores", s), ("truth", t)):
        if not np.isfinite(v).all():
            bad = [k for k, x in zip(names, v) if not np.isfinite(x)]
            raise DataError(f"{what} has non-finite values for {bad}; remove those candidates.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input -> NaN, documented above
        kt = stats.kendalltau(s, t)
        sr = stats.spearmanr(s, t)
        wt = stats.weightedtau(s, t)
    return {
        "kendall_tau": float(kt.statistic),
        "kendall_p": float(kt.pvalue),
        "weighted_tau": float(wt.statistic),
        "spearman_rho": float(sr.statistic),
        "spearman_p": float(sr.pvalue),
        "n": len(names),
        "names": names,
    }
