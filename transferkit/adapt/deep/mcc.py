r"""MCC: minimum class confusion on target predictions (Jin et al., 2020)."""

from __future__ import annotations

import torch

from ..._registry import register
from ..._validation import check_number
from ._base import DALoss, logit_entropy

__all__ = ["MCCLoss"]


@register("da_loss", "mcc")
class MCCLoss(DALoss):
    r"""Minimum Class Confusion: penalise how often target predictions mix two classes.

    With target logits :math:`Z \in \mathbb{R}^{B\times K}` and temperature :math:`T`:

    .. math::
        \hat Y = \mathrm{softmax}(Z / T), \qquad
        W_{ii} = \frac{B\,(1 + e^{-H(\hat y_i)})}{\sum_{i'} (1 + e^{-H(\hat y_{i'})})}, \qquad
        C = \hat Y^\top W \hat Y,

        \tilde C_{jj'} = \frac{C_{jj'}}{\sum_{j''} C_{j''j'}}, \qquad
        \mathcal{L}_{\mathrm{MCC}} = \frac1K \sum_{j=1}^{K}\sum_{j'\ne j} \lvert\tilde C_{jj'}\rvert .

    Temperature rescaling (:math:`T > 1`) softens over-confident predictions so the
    confusion is visible; the entropy weights (computed without gradient, as in the authors'
    code) emphasise confident examples; column normalisation keeps large classes from
    dominating. Only the target logits are used (the source enters through the trainer's
    classification loss), and the loss is in :math:`[0, (K-1)/K]`-ish range: 0 when every
    target prediction is one-hot.

    Parameters
    ----------
    weight
        :math:`\lambda` (1 in the paper).
    temperature
        :math:`T` (2.5 in the paper).

    References
    ----------
    .. [1] Y. Jin, X. Wang, M. Long and J. Wang. "Minimum Class Confusion for Versatile Domain
       Adaptation." ECCV 2020.
    """

    name = "mcc"
    needs_logits = True
    target_logits_only = True

    def __init__(self, weight: float = 1.0, temperature: float = 2.5):
        super().__init__(weight)
        self.temperature = float(check_number("temperature", temperature, low=0, low_inclusive=False))

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        b, k = logits_t.shape
        z = logits_t / self.temperature
        p = torch.softmax(z, 1)
        with torch.no_grad():
            w = 1.0 + torch.exp(-logit_entropy(z))
            w = b * w / w.sum()
        c = (p * w.unsqueeze(1)).T @ p
        c = c / c.sum(0, keepdim=True)
        return (c.sum() - c.trace()) / k, {}

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, temperature={self.temperature:g}"
