"""Information measures: entropy, cross-entropy, prediction entropy and mutual information.

All quantities are in nats (natural log) unless ``base`` is given; ``base=2`` gives bits.
Inputs may be NumPy arrays, lists or torch tensors.

References
----------
.. [1] T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., Wiley, 2006.
.. [2] G. A. Miller, "Note on the bias of information estimates", *Information Theory in
   Psychology*, 1955 (the Miller-Madow correction).
.. [3] B. C. Ross, "Mutual information between discrete and continuous data sets",
   PLoS ONE 9(2), 2014 (the estimator behind ``sklearn.feature_selection.mutual_info_classif``).
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError
from ._base import MetricResult, as_2d, check_labels

__all__ = [
    "as_probability",
    "cross_entropy",
    "entropy",
    "mutual_information",
    "prediction_entropy",
]


def _log_base(base) -> float:
    """Divisor turning nats into units of ``base`` (1.0 for nats)."""
    if base is None:
        return 1.0
    base = check_number("base", base, low=0, low_inclusive=False)
    if base == 1:
        raise ConfigError("base=1 is not a valid logarithm base; use None (nats), 2 (bits) or 10.")
    return math.log(base)


def _to_numpy(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return x


def as_probability(p, name: str = "p", *, smoothing: float = 0.0) -> np.ndarray:
    """A 1-D non-negative vector (probabilities or counts) normalized to sum to one.

    Parameters
    ----------
    p : array-like of shape (K,)
        Probabilities or counts; a vector that does not sum to one is normalized.
    name : str
        Parameter name used in error messages.
    smoothing : float, default 0.0
        Additive (Laplace/Lidstone) smoothing applied to the normalized vector:
        ``p' = (p + smoothing) / (1 + K * smoothing)``.

    Returns
    -------
    ndarray of shape (K,)
    """
    smoothing = check_number("smoothing", smoothing, low=0)
    try:
        a = np.asarray(_to_numpy(p), dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a numeric vector of probabilities or counts.") from None
    if a.ndim != 1 or a.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D vector, got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise DataError(f"{name} contains NaN or infinite values; pass finite probabilities or counts.")
    if (a < 0).any():
        raise DataError(f"{name} contains negative entries; probabilities and counts must be >= 0.")
    total = a.sum()
    if total <= 0:
        raise DataError(f"{name} sums to 0; it needs at least one positive entry.")
    a = a / total
    if smoothing:
        a = (a + smoothing) / (1.0 + a.size * smoothing)
    return a


def _xlogy_sum(p: np.ndarray, q: np.ndarray) -> float:
    """sum p log q with the convention 0 log 0 = 0 (and p log 0 = -inf for p > 0)."""
    from scipy.special import xlogy

    return float(np.sum(xlogy(p, q)))


def entropy(p, *, base: float | None = None) -> float:
    r"""Shannon entropy of a discrete distribution.

    .. math:: H(p) = -\sum_k p_k \log p_k, \qquad 0 \log 0 = 0.

    Parameters
    ----------
    p : array-like of shape (K,)
        Probabilities or counts (normalized to sum to one).
    base : float, optional
        Logarithm base; ``None`` means natural log (nats).

    Returns
    -------
    float
        In ``[0, log K]``.

    References
    ----------
    Cover & Thomas (2006), Ch. 2.
    """
    p = as_probability(p, "p")
    return max(0.0, -_xlogy_sum(p, p)) / _log_base(base)


def cross_entropy(p, q, *, base: float | None = None, smoothing: float = 0.0) -> float:
    r"""Cross-entropy of ``q`` relative to ``p``.

    .. math:: H(p, q) = -\sum_k p_k \log q_k = H(p) + \mathrm{KL}(p \,\|\, q).

    Parameters
    ----------
    p, q : array-like of shape (K,)
        Probabilities or counts (each normalized to sum to one).
    base : float, optional
        Logarithm base; ``None`` means natural log.
    smoothing : float, default 0.0
        Additive smoothing applied to ``q`` (see :func:`as_probability`); with 0, a class with
        ``p_k > 0`` and ``q_k = 0`` gives ``inf``.

    Returns
    -------
    float
    """
    p = as_probability(p, "p")
    q = as_probability(q, "q", smoothing=smoothing)
    if p.shape != q.shape:
        raise DataError(f"p and q must have the same length, got {p.size} and {q.size}.")
    return -_xlogy_sum(p, q) / _log_base(base)


def prediction_entropy(probs, *, base: float | None = None, normalize: bool = False, atol: float = 1e-3) -> float:
    r"""Mean entropy of the rows of a matrix of predicted class probabilities.

    .. math:: \bar H = \frac{1}{n} \sum_{i=1}^n \Big(-\sum_{k=1}^K P_{ik} \log P_{ik}\Big)

    Low values mean confident predictions (used by entropy minimization and as an
    unsupervised model-selection score).

    Parameters
    ----------
    probs : array-like or tensor of shape (n_samples, n_classes)
        Rows are probability vectors (softmax outputs), each summing to one within ``atol``.
    base : float, optional
        Logarithm base; ``None`` means natural log.
    normalize : bool, default False
        Divide by ``log K`` so the result lies in ``[0, 1]``.
    atol : float, default 1e-3
        Tolerance on the row sums.

    Returns
    -------
    float
    """
    P = as_2d(probs, "probs", min_rows=1)
    if (P < 0).any():
        raise DataError("probs contains negative entries; pass softmax probabilities, not logits.")
    sums = P.sum(axis=1)
    if np.abs(sums - 1.0).max() > atol:
        raise DataError(
            f"rows of probs must sum to 1 (row sums range from {sums.min():.4g} to {sums.max():.4g}); "
            "apply softmax to logits first."
        )
    from scipy.special import entr

    h = float(entr(P).sum(axis=1).mean())
    if normalize:
        k = P.shape[1]
        return h / math.log(k) if k > 1 else 0.0
    return h / _log_base(base)


def _plugin_mi(a: np.ndarray, b: np.ndarray, miller_madow: bool) -> float:
    """Plug-in mutual information (nats) of two integer label vectors."""
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb).astype(np.float64)
    n = joint.sum()
    pj = joint / n
    pa, pb = pj.sum(axis=1), pj.sum(axis=0)
    nz = pj > 0
    mi = float(np.sum(pj[nz] * np.log(pj[nz] / np.outer(pa, pb)[nz])))
    if miller_madow:
        # H_MM = H + (m - 1) / (2n) with m non-empty bins; I = H(a) + H(b) - H(a, b).
        ma, mb, mab = (pa > 0).sum(), (pb > 0).sum(), nz.sum()
        mi += ((ma - 1) + (mb - 1) - (mab - 1)) / (2.0 * n)
    return mi


def mutual_information(
    features,
    labels,
    *,
    seed: int = 0,
    method: str = "kmeans",
    n_clusters: int | None = None,
    miller_madow: bool = False,
    n_neighbors: int = 3,
    reduce: str = "mean",
    base: float | None = None,
) -> MetricResult:
    r"""Mutual information between a feature matrix and class labels.

    Two estimators, chosen with ``method``:

    ``"kmeans"`` (default): joint MI of the representation.
        The rows of ``features`` are clustered with k-means (seeded) into ``n_clusters``
        cells ``C``, and the plug-in MI of the contingency table is returned,

        .. math:: \hat I(C; Y) = \sum_{c, y} \hat p(c, y) \log \frac{\hat p(c, y)}{\hat p(c)\, \hat p(y)}.

        By the data-processing inequality :math:`I(C; Y) \le I(X; Y)`, so (up to the plug-in
        bias, about :math:`(|C|-1)(|Y|-1)/(2n)` nats, removed approximately by
        ``miller_madow=True``) this is a lower bound on the information the features carry about
        the labels, and it is at most :math:`H(Y)`. A feature that determines the label gives
        :math:`H(Y)`; independent labels give about 0.
    ``"knn"``: per-feature MI, averaged.
        ``sklearn.feature_selection.mutual_info_classif`` (the k-NN estimator of Ross, 2014)
        per feature, combined with ``reduce`` (``"mean"``, ``"sum"`` or ``"max"``). The sum
        overcounts redundant features and is *not* the joint MI; the mean is a per-feature
        relevance score.

    Parameters
    ----------
    features : array-like or tensor of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,)
        Integer class indices ``0..K-1``.
    seed : int, default 0
        Seeds k-means (``"kmeans"``) or the jitter of ``mutual_info_classif`` (``"knn"``).
    method : {"kmeans", "knn"}
    n_clusters : int, optional
        Number of k-means cells; default ``min(max(2 K, 10), n_samples // 5)``.
    miller_madow : bool, default False
        Apply the Miller-Madow bias correction to the plug-in estimate (``"kmeans"`` only).
    n_neighbors : int, default 3
        Neighbours for the ``"knn"`` estimator.
    reduce : {"mean", "sum", "max"}
        How per-feature MI values are combined (``"knn"`` only).
    base : float, optional
        Logarithm base; ``None`` means nats.

    Returns
    -------
    MetricResult
        ``value`` = the MI estimate; ``details`` has ``method``, ``label_entropy`` (the plug-in
        :math:`H(Y)`, an upper bound for the ``"kmeans"`` value) and ``n_clusters`` or
        ``reduce``.

    References
    ----------
    Cover & Thomas (2006); Miller (1955); Ross (2014), PLoS ONE 9(2): e87357.
    """
    X = as_2d(features, "features", min_rows=2)
    y = check_labels(labels, X.shape[0], "labels")
    seed = check_number("seed", seed, low=0, integer=True)
    check_choice("method", method, ("kmeans", "knn"))
    div = _log_base(base)
    n = X.shape[0]
    _, y = np.unique(y, return_inverse=True)  # compact labels, absent classes carry no information
    n_classes = int(y.max()) + 1
    h_y = entropy(np.bincount(y))
    details: dict = {"method": method, "label_entropy": h_y / div, "n_samples": n}
    if method == "kmeans":
        if n_clusters is None:
            n_clusters = max(1, min(max(2 * n_classes, 10), n // 5))
        n_clusters = check_number("n_clusters", n_clusters, low=1, high=n, integer=True)
        from sklearn.cluster import KMeans

        from .._compat import one_blas_thread

        n_unique = len(np.unique(X, axis=0))
        k = min(n_clusters, n_unique)  # k-means cannot make more non-empty cells than distinct rows
        # One thread: with 2 cores, multi-threaded BLAS/OpenMP made these small fits 10-40x slower.
        with one_blas_thread():
            cells = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(X) if k > 1 else np.zeros(n, int)
        value = _plugin_mi(cells.astype(np.int64), y, miller_madow)
        details.update(n_clusters=int(k), miller_madow=bool(miller_madow))
    else:
        check_choice("reduce", reduce, ("mean", "sum", "max"))
        n_neighbors = check_number("n_neighbors", n_neighbors, low=1, integer=True)
        if n_neighbors >= n:
            raise DataError(f"n_neighbors={n_neighbors} needs more than {n_neighbors} samples, got {n}.")
        from sklearn.feature_selection import mutual_info_classif

        from .._compat import one_blas_thread

        with one_blas_thread():
            per = mutual_info_classif(X, y, discrete_features=False, n_neighbors=n_neighbors, random_state=seed)
        value = float(getattr(np, reduce)(per))
        details.update(reduce=reduce, n_neighbors=int(n_neighbors), n_features=int(X.shape[1]))
    return MetricResult("mutual_information", value / div, details=details)
