r"""Multi-source domain adaptation: several labeled sources, one unlabeled target.

The sources are pooled (:func:`~transferkit.adapt.multi_domain.pool_sources`: every row keeps
the index of its source) and a :class:`~transferkit.adapt.features.BottleneckClassifier` is
trained on the pool with target batches by
:func:`~transferkit.adapt.features.train_feature_adapter`; what makes it multi-source are the
Trainer loss terms below, which read each labeled row's source through ``ctx.indices``:

- :class:`MomentMatchingTerm`: M3SDA's moment distance (Peng et al., ICCV 2019) between every
  source and the target *and* between every pair of sources, on the bottleneck features.
- :class:`SourceWeightedCE`: turns the Trainer's plain mean cross-entropy over the pool into
  the mean weighted by each source's estimated relevance to the target
  (:func:`source_relevance`).

:func:`fit_multi_source` runs ``"m3sda"``, ``"weighted"``, ``"m3sda+weighted"`` or the
``"pooled"`` baseline (all sources concatenated, no domain term). The single-source form of
the moment distance is the deep DA loss ``"moment"`` (:class:`MomentLoss`); with one source,
``fit_multi_source(method="m3sda")`` is exactly ``train_feature_adapter(method="moment")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._registry import register
from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError
from .deep._base import DALoss
from .multi_domain import DomainTerm, pool_sources

__all__ = [
    "MULTI_SOURCE_METHODS",
    "RELEVANCE_METHODS",
    "MomentLoss",
    "MomentMatchingTerm",
    "SourceWeightedCE",
    "fit_multi_source",
    "moment_distance",
    "source_relevance",
]

#: ``fit_multi_source`` methods: moment matching, relevance-weighted CE, both, and the pooled baseline.
MULTI_SOURCE_METHODS = ("m3sda", "weighted", "m3sda+weighted", "pooled")

#: How :func:`source_relevance` measures a source's closeness to the target.
RELEVANCE_METHODS = ("domain_classifier", "mmd")


# ---------------------------------------------------------------------------------- moments
def _moment(x: torch.Tensor, k: int, central: bool) -> torch.Tensor:
    """Element-wise ``k``-th moment of a batch of features, ``(d,)``: ``mean(x**k)`` (raw) or
    ``mean((x - mean x)**k)`` (central, ``k >= 2``; biased, so defined for one row)."""
    if k == 1:
        return x.mean(0)
    if central:
        x = x - x.mean(0, keepdim=True)
    return (x ** k).mean(0)


def moment_distance(sources: Sequence[torch.Tensor], target: torch.Tensor, moments: int = 2,
                    central: bool = False) -> torch.Tensor:
    r"""M3SDA's moment distance between ``N`` source batches and a target batch (Peng et al. 2019, eq. 1):

    .. math::
        MD^2 = \sum_{k=1}^{K}\Big(\frac1N\sum_{i=1}^{N}\big\lVert \mathbb E[X_i^k]-\mathbb E[X_T^k]\big\rVert_2
        + \binom N2^{-1}\sum_{i<j}\big\lVert \mathbb E[X_i^k]-\mathbb E[X_j^k]\big\rVert_2\Big),

    with :math:`\mathbb E[X^k]` the element-wise ``k``-th moment of a batch (the batch mean of
    ``x**k``; with ``central``, of ``(x - mean)**k`` for ``k >= 2``, which is what the
    authors' code and Dassl use for the second moment). The norms are not squared, as in the
    paper. With one source the pair term is absent: ``MD^2 = sum_k ||E[X_S^k] - E[X_T^k]||``.

    Parameters
    ----------
    sources : list of (n_i, d) tensors
        One batch per source (``n_i >= 1``).
    target : (n_t, d) tensor
    moments
        :math:`K`, the highest order (the paper: 2).
    central
        Central instead of raw moments for ``k >= 2``.

    Returns
    -------
    0-dim tensor
        Invariant to the order of the sources; 0 when every batch has the same moments.
    """
    n = len(sources)
    if n < 1:
        raise DataError("moment_distance needs at least one source batch.")
    total = None
    for k in range(1, int(moments) + 1):
        ms = [_moment(s, k, central) for s in sources]
        mt = _moment(target, k, central)
        st = sum(torch.linalg.vector_norm(m - mt) for m in ms) / n
        term = st
        if n > 1:
            pairs = list(combinations(range(n), 2))
            term = term + sum(torch.linalg.vector_norm(ms[i] - ms[j]) for i, j in pairs) / len(pairs)
        total = term if total is None else total + term
    return total


def _check_moments(moments) -> int:
    return int(check_number("moments", moments, low=1, high=8, integer=True))


@register("da_loss", "moment")
class MomentLoss(DALoss):
    r"""Moment matching between one source and the target: M3SDA's distance with :math:`N = 1`.

    .. math::
        \mathcal L = \sum_{k=1}^{K}\big\lVert \mathbb E[f_s^k] - \mathbb E[f_t^k]\big\rVert_2

    (:func:`moment_distance`; element-wise moments of the feature batches, norms not squared).
    ``K = 1`` matches the means only; ``K = 2`` also the second moments (CORAL-like, but on
    the diagonal only and unnormalised). The multi-source form, which also aligns the sources
    with each other, is :class:`MomentMatchingTerm`; with one source the two are the same
    computation.

    Parameters
    ----------
    weight
        :math:`\lambda`.
    moments
        :math:`K` (default 2, the paper's).
    central
        Central moments for ``k >= 2`` (see :func:`moment_distance`).

    References
    ----------
    .. [1] X. Peng, Q. Bai, X. Xia, Z. Huang, K. Saenko and B. Wang. "Moment Matching for
       Multi-Source Domain Adaptation." ICCV 2019.
    """

    name = "moment"
    min_batch = 1

    def __init__(self, weight: float = 1.0, moments: int = 2, central: bool = False):
        super().__init__(weight)
        self.moments = _check_moments(moments)
        self.central = bool(central)

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        return moment_distance([f_s], f_t, self.moments, self.central), {}

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, moments={self.moments}, central={self.central}"


class MomentMatchingTerm(DomainTerm):
    r"""M3SDA's moment matching as a Trainer loss term over pooled sources.

    At each step the labeled batch's bottleneck features (``ctx.features``) are split by the
    source of each row (``ctx.indices`` into ``domains``) and
    ``weight * moment_distance(per-source features, ctx.target_features)`` is returned
    (:func:`moment_distance`: every source against the target, averaged over the ``N``
    sources, plus every pair of sources, averaged over the :math:`\binom N2` pairs; summed
    over the orders ``1..moments``).

    Deviations from Peng et al. (2019):

    - ``N`` is the number of sources *present in the batch*: the Trainer draws batches from the
      pool, so a small source may miss a batch (the paper draws one batch per source); a
      batch with one source has no pair term.
    - One shared classifier on the pooled sources instead of one classifier per source whose
      predictions are combined with weights from the source-target discrepancies (and the
      M3SDA-beta classifier-pair step of Saito et al.'s MCD); :class:`SourceWeightedCE` is the
      weighting we keep, on the loss instead of on the predictions.

    Parameters
    ----------
    domains
        ``(n_train,)`` source index of each pooled training row.
    weight
        :math:`\lambda` of the moment distance.
    moments
        Highest order :math:`K` (default 2).
    central
        Central moments for ``k >= 2``.
    """

    name = "m3sda"

    def __init__(self, domains, weight: float = 1.0, moments: int = 2, central: bool = False):
        super().__init__(domains, weight)
        check_number("weight", weight, low=0)
        self.moments = _check_moments(moments)
        self.central = bool(central)

    def forward(self, ctx) -> dict:
        if ctx.features is None or ctx.target_features is None:
            raise DataError("MomentMatchingTerm needs the bottleneck features of the labeled and target batches; "
                            "train through train_feature_adapter(..., terms=[term]) with an unlabeled target.")
        d = self.batch_domains(ctx)
        f = ctx.features
        present = torch.unique(d).tolist()  # sorted: the sources' order, whatever the batch's
        groups = [f[d == k] for k in present] if len(present) > 1 else [f]
        md = moment_distance(groups, ctx.target_features, self.moments, self.central)
        return {"loss": self.weight * md, "m3sda": md.detach(),
                "m3sda_sources": torch.tensor(float(len(present)))}


# ---------------------------------------------------------------------------------- weighting
class SourceWeightedCE(DomainTerm):
    r"""The correction that makes the Trainer's pooled cross-entropy a relevance-weighted one.

    The Trainer's classification loss is the plain batch mean :math:`\bar\ell = \frac1n\sum_i
    \ell_i`. Source :math:`k` has relevance weight :math:`\alpha_k` (summing to 1) and makes
    up the share :math:`\pi_k = n_k / n_{\text{pool}}` of the pooled rows, so row :math:`i`
    gets :math:`v_i = \alpha_{d_i} / \pi_{d_i}` and this term returns

    .. math::
        \Delta = \frac{\sum_i v_i \ell_i}{\sum_i v_i} - \bar\ell, \qquad
        \bar\ell + \Delta = \frac{\sum_i v_i \ell_i}{\sum_i v_i},

    the self-normalised weighted mean, whose expectation over batches drawn from the pool is
    :math:`\approx\sum_k \alpha_k R_k` (each source's risk counted with its relevance, whatever
    its size). With :math:`\alpha_k = \pi_k` the correction is exactly 0 (the pooled baseline).
    The term is differentiable (the gradient of the total is the weighted mean's), and
    ``ctx.labels`` must be the hard labels the Trainer used (no label smoothing).

    Parameters
    ----------
    domains
        ``(n_train,)`` source index of each pooled training row.
    source_weights
        :math:`\alpha`, one non-negative number per source (normalised to sum 1).
    """

    def __init__(self, domains, source_weights):
        super().__init__(domains, 1.0)
        a = np.asarray(source_weights, dtype=np.float64)
        if a.ndim != 1 or len(a) != self.n_domains or not np.isfinite(a).all() or (a < 0).any() or a.sum() <= 0:
            raise DataError(f"source_weights must be {self.n_domains} finite non-negative numbers (one per source) "
                            f"with a positive sum, got {np.asarray(source_weights).tolist()!r}.")
        a = a / a.sum()
        share = np.bincount(self.domains.numpy(), minlength=self.n_domains) / len(self.domains)
        if (share == 0).any():
            empty = int(np.flatnonzero(share == 0)[0])
            raise DataError(f"source {empty} has no training row; drop it from the sources.")
        self.register_buffer("row_weight", torch.as_tensor(a / share, dtype=torch.float32), persistent=False)
        self.source_weights = a

    def forward(self, ctx) -> dict:
        d = self.batch_domains(ctx)
        ce = F.cross_entropy(ctx.logits, ctx.labels, reduction="none")
        v = self.row_weight.to(ce.device, ce.dtype)[d]
        weighted = (v * ce).sum() / v.sum()
        delta = weighted - ce.mean()
        return {"loss": delta, "weighted_ce": weighted.detach(), "weight_correction": delta.detach()}


def _balanced_rows(rng, n: int, m: int) -> np.ndarray:
    return np.sort(rng.choice(n, m, replace=False)) if n > m else np.arange(n)


def source_relevance(Xs_list: Sequence[np.ndarray], Xt: np.ndarray, method: str = "domain_classifier", *,
                     seed: int = 0, cv: int = 5, max_rows: int = 1000) -> np.ndarray:
    r"""Weights of the sources by their estimated closeness to the target, summing to 1.

    ``"domain_classifier"``: for each source, a logistic regression (standardised features,
    ``C = 0.1``) tells its rows from the target's, on equal numbers of rows of each (at most
    ``max_rows``, drawn with ``seed``), with ``cv``-fold stratified cross-validation; its
    accuracy :math:`a_k` (0.5 = chance) gives the relevance
    :math:`r_k = 1 - \lvert 2a_k - 1\rvert` (1 when the source cannot be told from the target,
    0 when it always can; :math:`1 - \text{proxy A-distance}/2`) and :math:`w_k = r_k / \sum_j
    r_j`. When every source is perfectly separable (all :math:`r_k = 0`) the weights are
    uniform: the classifier no longer ranks them (use ``"mmd"``).

    ``"mmd"``: the biased squared MMD :math:`\widehat{\mathrm{MMD}}^2_k` (V-statistic, so
    :math:`\ge 0`) between each source and the target with one Gaussian kernel for all
    sources (bandwidth: the median squared distance of the pooled sample of every source and
    the target, so the values are comparable), and :math:`w_k \propto 1 /
    (\widehat{\mathrm{MMD}}^2_k + \varepsilon)`, :math:`\varepsilon = 10^{-3}\,\max_j
    \widehat{\mathrm{MMD}}^2_j` (a source identical to the target does not take all the
    weight from a rounding error; scale-free: scaling every MMD leaves the weights).

    Parameters
    ----------
    Xs_list : list of (n_k, d) arrays
        Each source's features (no labels needed).
    Xt : (n_t, d) array
        Target features.
    method
        ``"domain_classifier"`` or ``"mmd"``.
    seed, cv, max_rows
        Subsampling and folds (seeded: the same inputs give the same weights).

    Returns
    -------
    (n_sources,) float array
        Non-negative, summing to 1.
    """
    check_choice("method", method, RELEVANCE_METHODS)
    check_number("cv", cv, low=2, integer=True)
    check_number("max_rows", max_rows, low=4, integer=True)
    Xt = np.asarray(Xt, dtype=np.float64)
    Xs_list = [np.asarray(x, dtype=np.float64) for x in Xs_list]
    if not Xs_list:
        raise ConfigError("source_relevance needs at least one source feature matrix.")
    for k, x in enumerate(Xs_list):
        if x.ndim != 2 or x.shape[1] != Xt.shape[1] or len(x) < 2:
            raise DataError(f"Xs_list[{k}] has shape {x.shape} but the target features have {Xt.shape[1]} columns; "
                            "every source needs >= 2 rows of the target's width.")
    if len(Xs_list) == 1:
        return np.ones(1)
    rng = np.random.default_rng(seed)
    if method == "domain_classifier":
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from .._compat import one_blas_thread

        r = []
        for x in Xs_list:
            m = min(len(x), len(Xt), max_rows)
            a, b = x[_balanced_rows(rng, len(x), m)], Xt[_balanced_rows(rng, len(Xt), m)]
            X = np.vstack([a, b])
            y = np.r_[np.zeros(m), np.ones(m)]
            folds = StratifiedKFold(n_splits=min(cv, m), shuffle=True, random_state=seed)
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed))
            with one_blas_thread():
                acc = float(np.mean(cross_val_score(clf, X, y, cv=folds, scoring="accuracy")))
            r.append(1.0 - abs(2.0 * acc - 1.0))
        r = np.asarray(r)
        return np.full(len(r), 1.0 / len(r)) if r.sum() <= 0 else r / r.sum()
    from ..nn.kernels import bandwidth_heuristic, gaussian_kernel_matrix, sq_dists

    subs = [torch.as_tensor(x[_balanced_rows(rng, len(x), max_rows)]) for x in Xs_list]
    t = torch.as_tensor(Xt[_balanced_rows(rng, len(Xt), max_rows)])
    pooled = torch.cat([*subs, t])
    pick = torch.as_tensor(_balanced_rows(rng, len(pooled), max_rows))
    s2 = float(bandwidth_heuristic(sq_dists(pooled[pick]), "median", square=True))
    s2 = s2 if s2 > 0 else 1.0
    k_tt = gaussian_kernel_matrix(t, multipliers=(1.0,), sigma2=s2).mean()
    mmd = []
    for s in subs:
        k_ss = gaussian_kernel_matrix(s, multipliers=(1.0,), sigma2=s2).mean()
        k_st = gaussian_kernel_matrix(s, t, multipliers=(1.0,), sigma2=s2).mean()
        mmd.append(max(float(k_ss + k_tt - 2.0 * k_st), 0.0))
    mmd = np.asarray(mmd)
    eps = 1e-3 * mmd.max() if mmd.max() > 0 else 1.0
    w = 1.0 / (mmd + eps)
    return w / w.sum()


# ---------------------------------------------------------------------------------- fit
def fit_multi_source(
    Xs_list: Sequence[np.ndarray], ys_list: Sequence[np.ndarray], Xt: np.ndarray, *, method: str = "m3sda",
    weight: float = 1.0, moments: int = 2, central: bool = False, relevance: str = "domain_classifier",
    source_weights: Sequence[float] | None = None, Xs_val_list: Sequence[np.ndarray] | None = None,
    ys_val_list: Sequence[np.ndarray] | None = None, weights_val: np.ndarray | None = None,
    selection: str = "dev", num_classes: int | None = None, seed: int = 0, **train_options,
) -> dict:
    r"""Multi-source adaptation on features: pool the sources, train with the method's terms.

    Parameters
    ----------
    Xs_list, ys_list
        Each source's features ``(n_k, d)`` and labels (rows labeled -1 are dropped). A single
        source is the single-source problem: ``method="m3sda"`` is then exactly
        ``train_feature_adapter(..., method="moment")``.
    Xt
        Unlabeled target features (its inputs only: no target label exists here).
    method
        ``"m3sda"`` (:class:`MomentMatchingTerm`), ``"weighted"`` (:class:`SourceWeightedCE`
        with :func:`source_relevance` weights), ``"m3sda+weighted"`` (both) or ``"pooled"``
        (all sources concatenated, no domain term: source-only training on the pool, with
        ``domain_bn`` AdaBN as in ``train_feature_adapter``).
    weight, moments, central
        The moment term's :math:`\lambda`, highest order and moment kind.
    relevance, source_weights
        How the weighting methods weigh the sources (:func:`source_relevance`), or the weights
        themselves. ``source_weights`` in the result are the weights used (uniform for the
        methods that do not weigh).
    Xs_val_list, ys_val_list, weights_val
        Held-out labeled rows of each source (pooled) for ``selection`` ``"dev"``, ``"iwcv"``
        or ``"source_val"``; ``weights_val`` (the pooled validation rows' importance weights
        ``p_T/p_S``) is estimated from the inputs when ``None`` (DEV/IWCV).
    selection
        As in :func:`~transferkit.adapt.features.train_feature_adapter` (never target labels).
    num_classes
        Default: the largest source label + 1.
    train_options
        Passed on: ``bottleneck``, ``dropout``, ``epochs``, ``batch_size``, ``lr``,
        ``weight_decay``, ``steps_per_epoch``, ``domain_bn``, ``device``, ...

    Returns
    -------
    dict
        ``train_feature_adapter``'s dict plus ``source_weights`` (``(n_sources,)``, sum 1),
        ``domains`` (the pooled rows' source indices) and ``method``.
    """
    from ..train.selection import importance_weights
    from .features import train_feature_adapter

    check_choice("method", method, MULTI_SOURCE_METHODS)
    for bad in ("method", "terms", "yt"):
        if bad in train_options:
            raise ConfigError(f"fit_multi_source sets {bad!r} itself; drop it from the options.")
    Xs_list, ys_list = list(Xs_list), list(ys_list)
    if len(Xs_list) != len(ys_list):
        raise ConfigError(f"Xs_list has {len(Xs_list)} sources but ys_list has {len(ys_list)}; give one label "
                          "array per source.")
    X, y, dom = pool_sources(Xs_list, ys_list)
    n_src = len(Xs_list)
    if int(dom.max()) + 1 != n_src:
        raise DataError("every source needs at least one labeled row.")
    Xt = np.asarray(Xt, dtype=np.float32)
    if Xt.ndim != 2 or Xt.shape[1] != X.shape[1]:
        raise DataError(f"the target features have shape {Xt.shape} but the sources have {X.shape[1]} columns.")
    Xv = yv = None
    if selection in ("dev", "iwcv", "source_val") and Xs_val_list is None:
        raise ConfigError(f"selection={selection!r} needs held-out labeled rows of each source (Xs_val_list, "
                          "ys_val_list); pass them, or use selection='snd', 'entropy' or 'last'.")
    if Xs_val_list is not None:
        if ys_val_list is None or len(Xs_val_list) != n_src or len(ys_val_list) != n_src:
            raise ConfigError(f"Xs_val_list and ys_val_list must hold one array per source ({n_src}).")
        Xv, yv, _ = pool_sources(list(Xs_val_list), list(ys_val_list))
        if Xv.shape[1] != X.shape[1]:
            raise DataError(f"the source validation features have {Xv.shape[1]} columns, the sources {X.shape[1]}.")
    if weights_val is None and selection in ("dev", "iwcv") and Xv is not None:
        weights_val = importance_weights(Xv, X, Xt, seed=seed)
    weighs = "weighted" in method
    if source_weights is not None:
        alpha = np.asarray(source_weights, dtype=np.float64)
        if alpha.shape != (n_src,) or not np.isfinite(alpha).all() or (alpha < 0).any() or alpha.sum() <= 0:
            raise DataError(f"source_weights must be {n_src} non-negative numbers with a positive sum, got "
                            f"{np.asarray(source_weights).tolist()!r}.")
        alpha = alpha / alpha.sum()
    elif weighs:
        alpha = source_relevance([X[dom == k] for k in range(n_src)], Xt, relevance, seed=seed)
    else:
        alpha = np.full(n_src, 1.0 / n_src)
    terms: list[nn.Module] = []
    if method.startswith("m3sda"):
        terms.append(MomentMatchingTerm(dom, weight, moments, central))
    if weighs:
        terms.append(SourceWeightedCE(dom, alpha))
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    res = train_feature_adapter(X, y, Xt, Xs_val=Xv, ys_val=yv, weights_val=weights_val, num_classes=k,
                                method=None, selection=selection, seed=seed, terms=terms, **train_options)
    res.update(source_weights=alpha, domains=dom, method=method)
    return res
