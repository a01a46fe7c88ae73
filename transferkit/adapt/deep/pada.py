r"""PADA: partial adversarial domain adaptation, class-weighted DANN (Cao et al., 2018).

In *partial* domain adaptation the target's label set is a subset of the source's. Plain
adversarial alignment then pulls target samples onto the source-only ("outlier") classes,
which is negative transfer. PADA down-weights the source samples of classes the target
does not seem to contain, in the domain discriminator and in the source classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..._registry import register
from ..._validation import check_number
from ...errors import ConfigError, DataError
from ._adversarial import AdversarialLoss, DomainDiscriminator

__all__ = ["ClassWeightRefresh", "PADALoss", "pada_class_weights", "weighted_ce_correction", "weighted_domain_bce"]

#: Floor of a weight sum: a batch whose source rows all have weight 0 contributes 0, not NaN.
_TINY = 1e-12


def pada_class_weights(logits_t: torch.Tensor) -> torch.Tensor:
    r"""PADA's class weights from target predictions, :math:`\gamma = \bar p / \max_k \bar p_k`.

    .. math::
        \bar p = \frac{1}{n_t}\sum_{j=1}^{n_t} \mathrm{softmax}(z_j), \qquad
        \gamma = \bar p / \max_k \bar p_k \in (0, 1]^K,

    Cao et al. (2018), Eq. 4: classes the target predictions rarely pick (absent from the
    target, in the partial setting) get small weights. Computed without gradient.

    Parameters
    ----------
    logits_t : (n_t, K) tensor

    Returns
    -------
    (K,) tensor
        Largest entry 1.
    """
    with torch.no_grad():
        p = torch.softmax(logits_t, 1).mean(0)
        return p / p.max()


def weighted_ce_correction(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    r"""What to add to the plain mean cross-entropy to make it the ``w``-weighted mean.

    .. math::
        \Delta = \frac{\sum_i w_i\,\ell_i}{\sum_i w_i} - \frac{1}{n}\sum_i \ell_i,
        \qquad \ell_i = \mathrm{CE}(z_i, y_i),

    differentiable in ``logits`` (``w`` is treated as a constant). The
    :class:`~transferkit.train.Trainer` always computes the plain mean; a loss term returning
    :math:`\Delta` turns it into the weighted one, exactly (with the Trainer's
    ``label_smoothing`` passed here too). All-zero weights give the weighted mean 0.

    Parameters
    ----------
    logits : (n, K) tensor
    y : (n,) int tensor
    w : (n,) tensor
        Non-negative per-sample weights.
    label_smoothing
        The Trainer's label smoothing (0 for :func:`~transferkit.adapt.features.train_feature_adapter`).

    Returns
    -------
    0-dim tensor
    """
    ell = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)
    w = w.detach().to(ell.dtype)
    return (w * ell).sum() / w.sum().clamp_min(_TINY) - ell.mean()


def weighted_domain_bce(d_s: torch.Tensor, d_t: torch.Tensor, w_s: torch.Tensor, w_t: torch.Tensor,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Balanced, weighted domain cross-entropy from discriminator logits (source = 1).

    .. math::
        \mathcal{L}_d = \tfrac12\,\frac{\sum_i w^s_i\,\ell(d^s_i, 1)}{\sum_i w^s_i}
        + \tfrac12\,\frac{\sum_j w^t_j\,\ell(d^t_j, 0)}{\sum_j w^t_j},

    the weighted form of :meth:`AdversarialLoss._domain_terms` with the sums floored so that a
    side whose weights are all 0 contributes 0 instead of NaN. Returns ``(loss, balanced
    accuracy)``; the accuracy is unweighted and detached.
    """
    l_s = F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s), reduction="none")
    l_t = F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t), reduction="none")
    w_s, w_t = w_s.detach().to(l_s.dtype), w_t.detach().to(l_t.dtype)
    loss = (0.5 * (w_s * l_s).sum() / w_s.sum().clamp_min(_TINY)
            + 0.5 * (w_t * l_t).sum() / w_t.sum().clamp_min(_TINY))
    with torch.no_grad():
        acc = 0.5 * ((d_s > 0).to(d_s.dtype).mean() + (d_t <= 0).to(d_t.dtype).mean())
    return loss, acc


@register("da_loss", "pada")
class PADALoss(AdversarialLoss):
    r"""Partial adversarial loss: DANN with the source side weighted by target class weights.

    .. math::
        \mathcal{L}_{\mathrm{PADA}} = -\tfrac12\,\frac{\sum_i \gamma_{y_i}\log D(R_{c(p)}(f(x^s_i)))}
        {\sum_i \gamma_{y_i}} - \tfrac12\,\mathbb{E}_{x\sim T}\log\big(1 - D(R_{c(p)}(f(x)))\big),

    with :math:`\gamma` the class weights of Cao et al. (2018, Eq. 4): the average target
    softmax normalised by its largest entry (:func:`pada_class_weights`). Classes absent from
    the target get small :math:`\gamma`, so their source samples are neither aligned with the
    target nor (with ``reweight_classifier``) fitted as strongly.

    **Class weights.** Estimated from the target batches the loss sees: a buffer holds an
    exponential moving average of the batch-mean target softmax,
    :math:`\bar p \leftarrow m\,\bar p + (1-m)\,\mathrm{mean}_j\,\mathrm{softmax}(z^t_j)`
    (start: uniform, i.e. :math:`\gamma = 1` and the loss begins as DANN), updated in training
    mode before each use, without gradient; :math:`\gamma = \bar p / \max_k \bar p_k`. Fixed
    weights (e.g. a label-shift estimate :math:`q_y / p_y` of the target priors over the
    source's: ``estimate_target_priors(...).weights`` from :mod:`transferkit.adapt.label_shift`)
    can be set with :meth:`set_class_weights`, which freezes them. The paper's own schedule,
    :math:`\gamma` from eval-mode predictions over the whole target set every few epochs, is
    :class:`ClassWeightRefresh` (a Trainer callback) with ``momentum=1``.

    **Classifier reweighting** (``reweight_classifier=True``, the paper's Eq. 5). The
    :class:`~transferkit.train.Trainer` adds the plain mean source cross-entropy; this loss
    adds the exact correction :func:`weighted_ce_correction` (the :math:`\gamma_{y}`-weighted
    mean cross-entropy minus the plain mean), so that the total's classification part *is* the
    weighted one. The correction is not multiplied by ``weight``. When the loss is used
    outside the Trainer, its ``"loss"`` likewise assumes the caller adds
    ``F.cross_entropy(logits_s, y_s)``.

    ``forward`` returns ``"loss"``, ``"pada"`` (the weighted domain BCE), ``"domain_acc"``,
    ``"grl_coeff"``, ``"class_weight_min"`` (:math:`\min_k \gamma_k`: near 0 once an absent
    class is recognised) and ``"cls_correction"`` (:math:`\Delta`; 0 without reweighting).

    Parameters
    ----------
    in_features, num_classes
        Feature dimension :math:`d` and number of source classes :math:`K` (required).
    weight
        :math:`\lambda`, multiplying the domain loss.
    momentum
        :math:`m` of the moving average of target predictions, in ``[0, 1]``; 0 uses the
        current batch only, 1 never moves it from batches (the weights then change only
        through :meth:`set_target_predictions`, e.g. by :class:`ClassWeightRefresh`).
    reweight_classifier
        Add the weighted-classifier correction.
    label_smoothing
        The Trainer's label smoothing, so that the correction is exact under it too.
    hidden, dropout, batch_norm
        Discriminator (see :class:`DomainDiscriminator`).
    schedule, max_coeff, gamma
        Gradient-reversal coefficient schedule (see :class:`AdversarialLoss`); ``gamma`` here
        is the warm start's steepness, not the class weights.

    Attributes
    ----------
    class_weights : buffer (K,)
        The current :math:`\gamma` (checkpointed).
    target_probs : buffer (K,)
        The moving average :math:`\bar p`.
    weights_fixed : buffer (bool)
        Whether :meth:`set_class_weights` froze the weights.

    Notes
    -----
    Deviations from the paper: Cao et al. recompute :math:`\gamma` over the whole target set
    every few hundred iterations (Transfer-Learning-Library: once per epoch); a loss module
    only sees batches, so by default the average is a moving one over batches (the estimate
    lags the model by about :math:`1/(1-m)` steps, and on several processes each keeps its
    own). Those batch predictions are *training-mode* ones: a network whose BatchNorm
    normalises each domain's batch with its own statistics (the bottleneck of
    :func:`~transferkit.adapt.features.train_feature_adapter`) re-centres a target batch that
    holds only some classes, and its predictions can come out near uniform, hiding the absent
    classes; :class:`ClassWeightRefresh` (eval-mode predictions) avoids that. The
    discriminator's gradient is scaled by ``weight`` as in
    :class:`~transferkit.adapt.deep.DANNLoss`.

    References
    ----------
    .. [1] Z. Cao, L. Ma, M. Long and J. Wang. "Partial Adversarial Domain Adaptation."
       ECCV 2018.
    """

    name = "pada"
    needs_logits = True
    needs_labels = True

    def __init__(self, in_features: int | None = None, num_classes: int | None = None, weight: float = 1.0,
                 momentum: float = 0.99, reweight_classifier: bool = True, label_smoothing: float = 0.0,
                 hidden: int | Sequence[int] = 1024, dropout: float = 0.5, batch_norm: bool = False,
                 schedule: str = "dann", max_coeff: float = 1.0, gamma: float = 10.0):
        super().__init__(weight, schedule=schedule, max_coeff=max_coeff, gamma=gamma)
        if in_features is None or num_classes is None:
            raise ConfigError(f"da_loss {self.name!r} needs in_features and num_classes (its class weights "
                              "have one entry per source class).")
        self.in_features = check_number("in_features", in_features, low=1, integer=True)
        self.num_classes = check_number("num_classes", num_classes, low=2, integer=True)
        self.momentum = float(check_number("momentum", momentum, low=0, high=1))
        self.reweight_classifier = bool(reweight_classifier)
        self.label_smoothing = float(check_number("label_smoothing", label_smoothing, low=0, high=1))
        k = self.num_classes
        self.register_buffer("target_probs", torch.full((k,), 1.0 / k))
        self.register_buffer("class_weights", torch.ones(k))
        self.register_buffer("weights_fixed", torch.zeros((), dtype=torch.bool))
        self.discriminator = DomainDiscriminator(self.in_features, hidden=hidden, dropout=dropout,
                                                 batch_norm=batch_norm)

    # ------------------------------------------------------------------ class weights
    @torch.no_grad()
    def set_class_weights(self, w) -> None:
        r"""Fix the class weights to ``w`` (normalised by its max) and stop estimating them.

        Parameters
        ----------
        w : (K,) array-like or None
            Non-negative weights with a positive entry, e.g. a label-shift estimate
            :math:`q_y / p_y` of the target's class priors over the source's. ``None``
            resumes estimating from target predictions (from the current moving average).
        """
        if w is None:
            self.weights_fixed.fill_(False)
            self.class_weights.copy_(self.target_probs / self.target_probs.max())
            return
        w = torch.as_tensor(w, dtype=self.class_weights.dtype, device=self.class_weights.device).flatten()
        if w.numel() != self.num_classes:
            raise DataError(f"set_class_weights got {w.numel()} weights but the loss has {self.num_classes} "
                            "classes; pass one weight per source class.")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool((w > 0).any()):
            raise DataError("set_class_weights needs finite, non-negative weights with at least one positive "
                            f"entry, got {w.tolist()}.")
        self.class_weights.copy_(w / w.max())
        self.weights_fixed.fill_(True)

    @torch.no_grad()
    def set_target_predictions(self, logits_t) -> None:
        """Replace the moving average by the mean softmax of ``logits_t`` (``(n, K)``, e.g. the
        eval-mode logits of the whole target set) and recompute the weights from it (unless
        :meth:`set_class_weights` fixed them; the average is still replaced)."""
        z = torch.as_tensor(logits_t, device=self.target_probs.device)
        if z.dim() != 2 or z.shape[1] != self.num_classes or z.shape[0] == 0:
            raise DataError(f"set_target_predictions needs logits of shape (n, {self.num_classes}), "
                            f"got {tuple(z.shape)}.")
        if not bool(torch.isfinite(z).all()):
            raise DataError("set_target_predictions got non-finite logits; check the model's predictions.")
        self.target_probs.copy_(torch.softmax(z.to(self.target_probs.dtype), 1).mean(0))
        if not bool(self.weights_fixed):
            self.class_weights.copy_(self.target_probs / self.target_probs.max())

    @torch.no_grad()
    def update_class_weights(self, logits_t: torch.Tensor) -> None:
        """One moving-average step from a target batch (no-op when the weights are fixed)."""
        if bool(self.weights_fixed) or self.momentum == 1.0:
            return
        if logits_t.shape[1] != self.num_classes:
            raise DataError(f"da_loss {self.name!r} was built for {self.num_classes} classes, got logits with "
                            f"{logits_t.shape[1]}.")
        p = torch.softmax(logits_t.detach(), 1).mean(0).to(self.target_probs.dtype)
        self.target_probs.mul_(self.momentum).add_((1.0 - self.momentum) * p)
        self.class_weights.copy_(self.target_probs / self.target_probs.max())

    def _source_weights(self, logits_t, y_s) -> torch.Tensor:
        if self.training:
            self.update_class_weights(logits_t)
        if int(y_s.max()) >= self.num_classes:
            raise DataError(f"y_s holds class {int(y_s.max())} but da_loss {self.name!r} was built for "
                            f"{self.num_classes} classes.")
        return self.class_weights[y_s]

    def _weight_extras(self, ref: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"class_weight_min": self.class_weights.min().to(ref.dtype)}

    # ------------------------------------------------------------------ loss
    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        if f_s.shape[1] != self.in_features:
            raise DataError(f"da_loss {self.name!r} was built for {self.in_features} features, got {f_s.shape[1]}.")
        w_s = self._source_weights(logits_t, y_s)
        ns = f_s.shape[0]
        d = self.discriminator(self._reverse(torch.cat([f_s, f_t], 0)))
        loss, acc = weighted_domain_bce(d[:ns], d[ns:], w_s, torch.ones_like(d[ns:]))
        return loss, {**self._extras(acc), **self._weight_extras(loss)}

    def forward(self, f_s, f_t, logits_s=None, logits_t=None, y_s=None) -> dict[str, torch.Tensor]:
        """As :meth:`DALoss.forward`, plus the classifier correction (not scaled by ``weight``)."""
        f_s, f_t = self._check(f_s, f_t, logits_s, logits_t, y_s)
        term, extras = self.compute(f_s, f_t, logits_s, logits_t, y_s)
        total = self.weight * term
        if self.reweight_classifier:
            corr = weighted_ce_correction(logits_s, y_s, self.class_weights[y_s], self.label_smoothing)
            total = total + corr
        else:
            corr = torch.zeros((), dtype=term.dtype, device=term.device)
        out = {"loss": total, self.name: term.detach()}
        out.update({k: v.detach() for k, v in extras.items()})
        out["cls_correction"] = corr.detach()
        return out

    def extra_repr(self) -> str:
        return (f"weight={self.weight:g}, num_classes={self.num_classes}, momentum={self.momentum:g}, "
                f"reweight_classifier={self.reweight_classifier}")


class ClassWeightRefresh:
    r"""Trainer callback: the paper's class-weight schedule, from eval-mode target predictions.

    At the start of every ``every``-th epoch after the first, predicts the whole ``target``
    dataset with the model in eval mode (:meth:`~transferkit.train.Trainer.predict_logits`)
    and hands the logits to :meth:`PADALoss.set_target_predictions`: :math:`\gamma` is then
    Cao et al.'s average over the target set, free of training-mode BatchNorm statistics.
    Use it with ``momentum=1`` for exactly the paper's schedule, or a smaller momentum to keep
    refining from batches in between. Epoch 0 keeps the initial uniform weights (the paper's
    and the BA3US authors' first update also comes after an interval of training).

    Parameters
    ----------
    loss
        A :class:`PADALoss` or :class:`~transferkit.adapt.deep.BA3USLoss`.
    target
        The unlabeled target training dataset (what ``trainer.fit(..., target=...)`` gets).
    every
        Refresh period in epochs.
    """

    def __init__(self, loss: PADALoss, target, every: int = 1):
        if not hasattr(loss, "set_target_predictions"):
            raise ConfigError(f"ClassWeightRefresh needs a class-weighted loss (pada, ba3us), got "
                              f"{type(loss).__name__}.")
        self.loss, self.target = loss, target
        self.every = check_number("every", every, low=1, integer=True)

    def on_epoch_start(self, trainer, epoch: int) -> None:
        if epoch > 0 and epoch % self.every == 0:
            self.loss.set_target_predictions(trainer.predict_logits(self.target))
