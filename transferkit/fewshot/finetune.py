"""Fine-tuning per episode: a new linear head and the top layer groups of the encoder, trained on
the support set, the shared encoder left as it was.

For each episode the encoder's parameters are copied functionally: the top ``groups`` layer groups
(:func:`~transferkit.fewshot._episodic.layer_groups`; 0 = the head only) become fresh leaf tensors,
the rest are used detached, and ``torch.func.functional_call`` runs the encoder with them, so
neither the encoder's parameters nor their ``.grad`` nor its buffers change. Training is LP-FT
(Kumar et al. 2022): first a linear probe, a head ``h(z) = W z + b`` fitted on the frozen support
features exactly as :class:`~transferkit.fewshot.baseline.Baseline` fits it (seeded start, L-BFGS,
``probe_steps`` iterations); then the head and the unfrozen groups train jointly for ``steps``
full-batch Adam steps on

.. math:: \\frac1n \\sum_{i \\in S} \\mathrm{CE}(h(f_{\\theta'}(x_i)), y_i) + \\frac{\\lambda}{2}\\lVert W\\rVert_F^2,

the head at ``lr``, the encoder groups at ``lr * backbone_lr_mult``; the query rows get
:math:`h(f_{\\theta'}(x))`. Starting from the probe keeps a random head's large early gradients
from distorting the pretrained features. With ``groups=0`` only the probe is fitted: this is
:class:`~transferkit.fewshot.baseline.Baseline` with ``steps=probe_steps``.

BatchNorm stays in eval mode throughout the episode: running statistics from (pre-)training
normalise both support and query rows and are never updated (a support set of 5 to 25 rows gives
too noisy batch statistics); the affine parameters of BatchNorm layers in unfrozen groups train.

References
----------
Chen, Liu, Kira, Wang and Huang, "A closer look at few-shot classification", ICLR 2019.
Kumar, Raghunathan, Jones, Ma and Liang, "Fine-tuning can distort pretrained features and
underperform out-of-distribution", ICLR 2022 (LP-FT).
Dhillon, Chaudhari, Ravichandran and Soatto, "A baseline for few-shot image classification",
ICLR 2020 (transductive fine-tuning; here the plain, inductive support-set fine-tuning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .._registry import register
from .._validation import check_number
from ..errors import ConfigError
from ._episodic import Pretrained, embed, eval_mode, fit_head, layer_groups, to_encoder


@register("fewshot", "finetune")
class FineTune(Pretrained):
    """Fine-tuning per episode: a new linear head plus the top encoder layer groups trained on the support set.

    Parameters
    ----------
    groups
        How many layer groups to unfreeze, counted from the output (0: the head only). An encoder
        without parameters (cached features) has no groups and always gets the head only; an
        encoder with fewer groups than asked is refused at :meth:`setup`.
    probe_steps
        L-BFGS iterations of the linear probe that starts the head.
    steps, lr, weight_decay
        Full-batch Adam steps of the joint fine-tuning, head learning rate and L2 coefficient on
        ``W`` (probe and fine-tuning) per episode.
    backbone_lr_mult
        Learning rate of the unfrozen encoder groups relative to ``lr``.
    pretrain_lr, batch_size
        The optional supervised pre-training (:meth:`meta_train`, linear classifier over the
        meta-train classes). Its checkpoint is selected on meta-val episodes with the head-only
        rule (a linear head on frozen features), which costs no per-episode fine-tuning.
    """

    def __init__(self, groups: int = 1, probe_steps: int = 100, steps: int = 50, lr: float = 1e-3,
                 backbone_lr_mult: float = 1.0, weight_decay: float = 1e-3, pretrain_lr: float = 1e-3,
                 batch_size: int = 64):
        self.groups = groups
        self.probe_steps = probe_steps
        self.steps = steps
        self.lr = lr
        self.backbone_lr_mult = backbone_lr_mult
        self.weight_decay = weight_decay
        self.pretrain_lr = pretrain_lr
        self.batch_size = batch_size

    def _check_params(self) -> None:
        check_number("groups", self.groups, low=0, integer=True)
        check_number("probe_steps", self.probe_steps, low=1, integer=True)
        check_number("steps", self.steps, low=1, integer=True)
        check_number("lr", self.lr, low=0, low_inclusive=False)
        check_number("backbone_lr_mult", self.backbone_lr_mult, low=0)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("pretrain_lr", self.pretrain_lr, low=0, low_inclusive=False)
        check_number("batch_size", self.batch_size, low=2, integer=True)

    def setup(self, encoder, feature_dim, seed=0):
        super().setup(encoder, feature_dim, seed)
        self.layer_groups_ = layer_groups(encoder)
        n = len(self.layer_groups_)
        if 0 < n < int(self.groups):
            raise ConfigError(f"groups={self.groups} is more than the encoder's {n} layer groups; use groups <= {n} "
                              "(0 = the head only).")
        self.n_unfrozen_ = min(int(self.groups), n)
        return self

    def unfrozen_names(self) -> list[str]:
        """Names of the encoder parameters fine-tuned per episode (the top ``groups`` groups)."""
        k = self.n_unfrozen_
        return [n for g in self.layer_groups_[len(self.layer_groups_) - k:] for n in g] if k else []

    def _probe(self, zs, ys, n_way):
        return fit_head(zs, ys, n_way, steps=int(self.probe_steps), lr=float(self.lr),
                        weight_decay=float(self.weight_decay), generator=self._generator(), optimizer="lbfgs")

    def fit_episode(self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int):
        """Fine-tune on one support set; return ``(params, features, head)``: the episode's encoder
        parameters (a dict: the tuned copies and the detached rest; empty with no group unfrozen),
        ``features(x)`` under them, and the fitted ``head(z) -> logits``. The shared encoder is not
        changed."""
        enc = self.encoder_
        ys = torch.as_tensor(support_y).long()
        names = set(self.unfrozen_names())
        if not names:
            def features(x):
                return embed(enc, x)

            return {}, features, self._probe(features(support_x), ys, n_way)
        params = {n: (p.detach().clone().requires_grad_() if n in names else p.detach())
                  for n, p in enc.named_parameters()}
        state = {**params, **dict(enc.named_buffers())}
        tuned = [params[n] for n in sorted(names)]

        def features(x):
            with eval_mode(enc):
                return functional_call(enc, state, (to_encoder(enc, x),))

        with torch.no_grad():
            probe = self._probe(features(support_x), ys, n_way)
        W, b = probe.weight.clone().requires_grad_(), probe.bias.clone().requires_grad_()
        with torch.enable_grad():
            ys = ys.to(W.device)
            opt = torch.optim.Adam([{"params": [W, b], "lr": float(self.lr)},
                                    {"params": tuned, "lr": float(self.lr) * float(self.backbone_lr_mult)}])
            for _ in range(int(self.steps)):
                loss = F.cross_entropy(features(support_x) @ W.T + b, ys)
                if self.weight_decay:
                    loss = loss + 0.5 * float(self.weight_decay) * (W * W).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        W, b = W.detach(), b.detach()
        for t in tuned:
            t.requires_grad_(False)
            t.grad = None

        def head(z):
            return z @ W.T + b

        return params, features, head

    def _predict(self, support_x, support_y, query_x, n_way):
        _, features, head = self.fit_episode(support_x, support_y, n_way)
        with torch.no_grad():
            return head(features(query_x))

    def _select_predict(self, support_x, support_y, query_x, n_way):
        z = embed(self.encoder_, torch.cat([support_x, query_x]))
        ns = len(support_x)
        return self._probe(z[:ns], support_y, n_way)(z[ns:])
