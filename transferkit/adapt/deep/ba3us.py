r"""BA3US: balanced adversarial alignment and adaptive uncertainty suppression for partial
domain adaptation (Liang, Wang, Hu, He and Feng, 2020)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..._registry import register
from ..._validation import check_number
from ...errors import DataError
from ._base import logit_entropy
from .cdan import cdan_entropy_weights
from .pada import _TINY, PADALoss

__all__ = ["BA3USLoss", "ba3us_augment_size", "ba3us_domain_loss", "complement_entropy",
           "complement_entropy_loss"]


def ba3us_augment_size(n_s: int, mu: int, progress: float) -> int:
    r"""How many source rows of a batch join the target side of the discriminator (BAA).

    .. math::
        m(p) = \big\lfloor \lfloor n_s / \mu \rfloor\,(1 - p) \big\rfloor \quad (\mu > 0),

    the authors' schedule: a quarter of the batch (:math:`\mu = 4`) at the start, shrinking
    linearly to none at the end of training, as the class weights (and so the target's own
    predictions) become reliable. :math:`\mu = 0`: no augmentation; :math:`\mu < 0`: a fixed
    :math:`\lfloor n_s / |\mu| \rfloor`. At most :math:`n_s - 1`, so a source row always
    stays on the source side.

    Parameters
    ----------
    n_s
        Source batch size.
    mu
        The authors' ``mu`` (initial augmentation = ``n_s // mu``).
    progress
        Training progress :math:`p \in [0, 1]`.
    """
    n_s, mu = int(n_s), int(mu)
    if mu == 0 or n_s < 2:
        return 0
    if mu < 0:
        m = n_s // -mu
    else:
        m = int(max(0.0, (n_s // mu) * (1.0 - float(progress))))
    return min(m, n_s - 1)


def ba3us_domain_loss(d_src: torch.Tensor, d_t: torch.Tensor, d_aug: torch.Tensor, w_src: torch.Tensor,
                      w_t: torch.Tensor, w_aug: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The balanced domain cross-entropy of BAA from discriminator logits.

    Source rows :math:`S'` are labeled 1; target rows :math:`T` and the augmenting source rows
    :math:`A` are labeled 0. The source-labeled group :math:`S' \cup A` is normalised jointly
    to total weight :math:`1 + |A|/|S'|`, the target rows to total weight 1, and the weighted
    sum is divided by the total weight :math:`2 + |A|/|S'|`:

    .. math::
        \mathcal{L} = \frac{1}{2 + r}\Big[(1 + r)\,\frac{\sum_{i \in S' \cup A} w_i\,\ell_i}
        {\sum_{i \in S' \cup A} w_i} + \frac{\sum_{j \in T} w_j\,\ell_j}{\sum_{j \in T} w_j}\Big],
        \qquad r = |A| / |S'|,

    (``my_loss.DANN`` of the authors' code, where :math:`\ell` is the binary cross-entropy with
    each row's domain label). With :math:`A = \emptyset` it is the balanced weighted BCE of
    PADA (:func:`~transferkit.adapt.deep.pada.weighted_domain_bce`). Weights carry no
    gradient. Returns ``(loss, balanced accuracy)`` (source side vs target side ``T ∪ A``).
    """
    l_src = F.binary_cross_entropy_with_logits(d_src, torch.ones_like(d_src), reduction="none")
    l_t = F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t), reduction="none")
    l_aug = F.binary_cross_entropy_with_logits(d_aug, torch.zeros_like(d_aug), reduction="none")
    w_src, w_t, w_aug = (w.detach().to(l_src.dtype) for w in (w_src, w_t, w_aug))
    r = d_aug.shape[0] / max(d_src.shape[0], 1)
    group = ((w_src * l_src).sum() + (w_aug * l_aug).sum()) / (w_src.sum() + w_aug.sum()).clamp_min(_TINY)
    tgt = (w_t * l_t).sum() / w_t.sum().clamp_min(_TINY)
    loss = ((1.0 + r) * group + tgt) / (2.0 + r)
    with torch.no_grad():
        neg = torch.cat([d_t, d_aug])
        acc = 0.5 * ((d_src > 0).to(d_src.dtype).mean() + (neg <= 0).to(neg.dtype).mean())
    return loss, acc


def complement_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Per-sample entropy of the prediction over the *incorrect* classes.

    .. math::
        H_c(x) = -\sum_{k \ne y} q_k \log q_k, \qquad q_k = \frac{p_k}{1 - p_y},

    the complement entropy of Chen et al. (2019): :math:`\log(K-1)` when the wrong classes
    share the remaining mass evenly, 0 when one wrong class takes all of it. Computed in log
    space (:math:`\log(1 - p_y) = \mathrm{logsumexp}_{k \ne y} \log p_k`), so it is finite for
    confident predictions; differentiable.

    Parameters
    ----------
    logits : (n, K) tensor, K >= 2
    y : (n,) int tensor

    Returns
    -------
    (n,) tensor
        In ``[0, log(K-1)]``.
    """
    logp = torch.log_softmax(logits, 1)
    is_y = F.one_hot(y, logits.shape[1]).bool()
    log_rest = torch.logsumexp(logp.masked_fill(is_y, float("-inf")), 1, keepdim=True)
    logq = (logp - log_rest).masked_fill(is_y, 0.0)
    return -(logq.exp() * logq).masked_fill(is_y, 0.0).sum(1)


def complement_entropy_loss(logits: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None = None,
                            alpha: float = 1.0) -> torch.Tensor:
    r"""AUS's source term: the adaptively weighted, negated, normalised complement entropy.

    .. math::
        \mathcal{L}_{\mathrm{cot}} = -\frac{\sum_i v_i\,H_c(x_i)/\log(K-1)}{\sum_i v_i},
        \qquad v_i = \gamma_{y_i}\,(1 - p_{y_i}(x_i))^{\alpha},

    in :math:`[-1, 0]`. Minimising it flattens the incorrect classes' scores, most for
    *uncertain* source samples (small :math:`p_y`, large :math:`v`), so that no wrong class
    stands out near the decision boundary where target samples are aligned. :math:`v` carries
    no gradient (BA3US, Eq. 6; the authors' ``marginloss``). 0 for :math:`K = 2` (one
    incorrect class has no entropy).

    Parameters
    ----------
    logits : (n, K) tensor
    y : (n,) int tensor
    class_weights : (K,) tensor, optional
        :math:`\gamma` (default: all ones).
    alpha
        Exponent of the uncertainty weight (1 in the paper).
    """
    k = logits.shape[1]
    if k < 3:
        return logits.sum() * 0.0
    hc = complement_entropy(logits, y) / math.log(k - 1)
    with torch.no_grad():
        v = (1.0 - torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)).clamp_min(0) ** alpha
        if class_weights is not None:
            v = v * class_weights.to(v.dtype)[y]
    return -(v * hc).sum() / v.sum().clamp_min(_TINY)


@register("da_loss", "ba3us")
class BA3USLoss(PADALoss):
    r"""BA3US: PADA's class weights plus balanced alignment and uncertainty suppression.

    .. math::
        \mathcal{L}_{\mathrm{BA^3US}} = \mathcal{L}_{\mathrm{BAA}}
        + \lambda_{\mathrm{cot}}\,\mathcal{L}_{\mathrm{cot}}
        + \lambda_{\mathrm{ent}}\,\mathbb{E}_{x \sim T} H(p(x)),

    (plus, with ``reweight_classifier``, the class-weighted source cross-entropy correction of
    :class:`~transferkit.adapt.deep.PADALoss`), all multiplied by ``weight``:

    - **Balanced adversarial alignment** (:func:`ba3us_domain_loss`): a domain discriminator
      behind gradient reversal, where :math:`m(p)` rows of the source batch
      (:func:`ba3us_augment_size`; drawn uniformly and weighted by :math:`\gamma_y`, which in
      expectation is drawing them by the class weights) are moved to the *target* side, so
      that the target side's label distribution covers the source classes and alignment does
      not push target samples onto source-only classes. Source and augmenting rows are
      weighted by :math:`\gamma_y`, every row by the entropy conditioning
      :math:`1 + e^{-H}` of CDAN+E (:func:`~transferkit.adapt.deep.cdan_entropy_weights`).
    - **Adaptive uncertainty suppression**: the weighted complement entropy on source
      predictions (:func:`complement_entropy_loss`) and entropy minimisation on target
      predictions.

    The class weights :math:`\gamma` are PADA's (moving average of the target softmax,
    normalised by its max; or fixed by :meth:`set_class_weights`). The authors normalise by
    the sum instead; every use is a normalised weighted mean, so the two are equivalent.

    ``forward`` returns ``"loss"``, ``"ba3us"`` (the term before ``weight``),
    ``"domain_bce"``, ``"complement_entropy"`` (:math:`\mathcal{L}_{\mathrm{cot}}`),
    ``"target_entropy"``, ``"augmented"`` (:math:`m`), ``"domain_acc"``, ``"grl_coeff"``,
    ``"class_weight_min"`` and ``"cls_correction"``.

    Parameters
    ----------
    in_features, num_classes
        Feature dimension and number of source classes (required).
    weight
        Factor on the whole term (the authors' code adds it with weight 1).
    mu
        Initial augmentation ``n_s // mu`` (authors' default 4); 0 turns BAA off, negative
        values fix it at ``n_s // |mu|``.
    cot_weight
        :math:`\lambda_{\mathrm{cot}}`: 1.0 (the authors' Office-Home and ImageNet-Caltech
        setting; they use 5.0 on Office-31).
    ent_weight
        :math:`\lambda_{\mathrm{ent}}` (0.1).
    alpha
        Exponent of the uncertainty weight (1).
    entropy_conditioning
        Weight the discriminator's rows by :math:`1 + e^{-H}` (on in the authors' code).
    weight_augmented
        Weight the augmenting rows by :math:`\gamma_y` (the authors' ``weight_aug``, on).
    momentum, reweight_classifier, label_smoothing
        Class-weight estimate and classifier reweighting, as in :class:`PADALoss` (the
        authors' ``weight_cls``, on; it also applies :math:`\gamma` in
        :math:`\mathcal{L}_{\mathrm{cot}}`).
    hidden, dropout, batch_norm, schedule, max_coeff, gamma
        Discriminator and gradient-reversal schedule, as in :class:`PADALoss`.

    Notes
    -----
    Deviations from the authors' code: the augmenting rows come from the current source
    batch (a loss module sees one batch; the authors draw a separate batch of ``n_s // mu``
    source images), so the source side keeps :math:`n_s - m` rows; :math:`m` shrinks with
    the continuous progress :math:`p` rather than in ten steps; the entropy weights carry no
    gradient (the authors reverse a gradient into them); the class weights are a moving
    average over batches (see :class:`PADALoss`) where the authors recompute them over the
    whole target set every ``test_interval`` iterations and use none before the first time.

    References
    ----------
    .. [1] J. Liang, Y. Wang, D. Hu, R. He and J. Feng. "A Balanced and Uncertainty-aware
       Approach for Partial Domain Adaptation." ECCV 2020. Code: github.com/tim-learn/BA3US.
    .. [2] H.-Y. Chen et al. "Complement Objective Training." ICLR 2019.
    """

    name = "ba3us"

    def __init__(self, in_features: int | None = None, num_classes: int | None = None, weight: float = 1.0,
                 mu: int = 4, cot_weight: float = 1.0, ent_weight: float = 0.1, alpha: float = 1.0,
                 entropy_conditioning: bool = True, weight_augmented: bool = True, momentum: float = 0.99,
                 reweight_classifier: bool = True, label_smoothing: float = 0.0,
                 hidden: int | Sequence[int] = 1024, dropout: float = 0.5, batch_norm: bool = False,
                 schedule: str = "dann", max_coeff: float = 1.0, gamma: float = 10.0):
        super().__init__(in_features, num_classes, weight=weight, momentum=momentum,
                         reweight_classifier=reweight_classifier, label_smoothing=label_smoothing, hidden=hidden,
                         dropout=dropout, batch_norm=batch_norm, schedule=schedule, max_coeff=max_coeff,
                         gamma=gamma)
        self.mu = int(check_number("mu", mu, integer=True))
        self.cot_weight = float(check_number("cot_weight", cot_weight, low=0))
        self.ent_weight = float(check_number("ent_weight", ent_weight, low=0))
        self.alpha = float(check_number("alpha", alpha, low=0))
        self.entropy_conditioning = bool(entropy_conditioning)
        self.weight_augmented = bool(weight_augmented)

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        if f_s.shape[1] != self.in_features:
            raise DataError(f"da_loss {self.name!r} was built for {self.in_features} features, "
                            f"got {f_s.shape[1]}.")
        w_all = self._source_weights(logits_t, y_s)  # after this batch's moving-average step
        gam = self.class_weights
        ns, nt = f_s.shape[0], f_t.shape[0]
        m = ba3us_augment_size(ns, self.mu, float(self.progress))
        if m:
            perm = torch.randperm(ns, device=f_s.device)
            aug = perm[:m]
            keep = torch.ones(ns, dtype=torch.bool, device=f_s.device)
            keep[aug] = False
            src = torch.arange(ns, device=f_s.device)[keep]
        else:
            src = torch.arange(ns, device=f_s.device)
            aug = src[:0]
        n1 = src.shape[0]
        h = torch.cat([f_s[src], f_t, f_s[aug]], 0)
        d = self.discriminator(self._reverse(h))
        if self.entropy_conditioning:
            e = cdan_entropy_weights(torch.cat([logits_s[src], logits_t, logits_s[aug]], 0))
        else:
            e = torch.ones_like(d)
        e = e.to(d.dtype)
        w_aug = e[n1 + nt:] * (w_all[aug] if self.weight_augmented else 1.0)
        adv, acc = ba3us_domain_loss(d[:n1], d[n1:n1 + nt], d[n1 + nt:], e[:n1] * w_all[src], e[n1:n1 + nt],
                                     w_aug)
        cot = complement_entropy_loss(logits_s, y_s, gam if self.reweight_classifier else None, self.alpha)
        ent = logit_entropy(logits_t).mean()
        term = adv + self.cot_weight * cot + self.ent_weight * ent
        extras = {"domain_bce": adv, "complement_entropy": cot, "target_entropy": ent,
                  "augmented": torch.tensor(float(m), dtype=adv.dtype, device=adv.device),
                  **self._extras(acc), **self._weight_extras(adv)}
        return term, extras

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", mu={self.mu}, cot_weight={self.cot_weight:g}, "
                f"ent_weight={self.ent_weight:g}, alpha={self.alpha:g}")
