"""Learning without forgetting (Li & Hoiem, 2016): distil the old head's outputs."""

from __future__ import annotations

import copy

import torch

from ..._registry import register
from ..._validation import check_number
from ._base import FrozenHead, Penalty, check_strength, unwrap


@register("penalty", "lwf")
class LwFPenalty(Penalty):
    r"""Keep the source head's predictions on the *new* inputs: knowledge distillation.

    .. math::

        \Omega = \lambda_o \, T^2 \, \frac{1}{b} \sum_{j=1}^{b}
            \mathrm{KL}\!\left(\mathrm{softmax}(z^0_j / T) \,\Big\|\, \mathrm{softmax}(z_j / T)\right)

    where :math:`z^0_j = h_{\text{old}}(f^0(x_j))` are the logits of the old (source) head on
    the original, frozen trunk :math:`f^0`, and :math:`z_j = h_{\text{old}}(f(x_j))` the old
    head on the trunk being fine-tuned, both on the current training batch (augmentations
    included, which is why a frozen copy of the trunk is kept instead of recorded responses).
    :math:`T^2` keeps the gradient scale independent of the temperature (Hinton et al., 2015).
    KL differs from the paper's modified cross-entropy by the teacher's entropy, a constant, so
    the gradients are the same and the term is 0 at the start.

    No source data are needed, only the source classifier. Unlike Li & Hoiem, the old head is
    kept fixed (a frozen copy, weights in buffers): it is the head that later scores the
    source task, and only the shared trunk moves.

    Bayesian reading: none as a weight prior; LwF is a *function-space* regularizer that keeps
    the source predictive distribution on the inputs the model now sees.

    Parameters
    ----------
    weight
        :math:`\lambda_o` (paper: 1).
    temperature
        :math:`T` (paper: 2).

    References
    ----------
    Li, Z., Hoiem, D. "Learning without forgetting", ECCV 2016 / TPAMI 2017.
    Hinton, G., Vinyals, O., Dean, J. "Distilling the knowledge in a neural network", 2015.
    """

    name = "lwf"
    needs_source_head = True

    def __init__(self, weight: float = 1.0, temperature: float = 2.0):
        super().__init__()
        self.weight = check_strength("weight", weight)
        self.temperature = float(check_number("temperature", temperature, low=0, low_inclusive=False))

    @property
    def strength(self) -> float:
        return self.weight

    def _attach(self, model, *, source, source_head, seed, batch_size) -> None:
        self.old_head = FrozenHead(source_head).to(next(model.parameters()).device)
        # the original trunk, frozen; copying the model (not only ``backbone``) keeps ``features``
        self.teacher = copy.deepcopy(model).requires_grad_(False).eval()

    def train(self, mode: bool = True):  # the frozen copies stay in eval mode (BN statistics, dropout)
        super().train(mode)
        if hasattr(self, "teacher"):
            self.teacher.eval()
        return self

    def compute(self, ctx):
        T = self.temperature
        feats = ctx.features if ctx.features is not None else unwrap(ctx.model).features(ctx.inputs)
        with torch.no_grad():
            self.teacher.eval()
            z0 = self.old_head(self.teacher.features(ctx.inputs))
            logp0 = torch.log_softmax(z0 / T, 1)
        logp = torch.log_softmax(self.old_head(feats) / T, 1)
        kl = (logp0.exp() * (logp0 - logp)).sum(1).mean() * T * T
        agree = (z0.argmax(1) == logp.argmax(1)).float().mean()
        return kl, {"lwf_agreement": agree}

    def extra_repr(self) -> str:
        return f"weight={self.weight}, temperature={self.temperature}, attached={self.attached_}"
