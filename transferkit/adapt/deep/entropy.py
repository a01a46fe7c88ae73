r"""Entropy minimisation on target predictions (Grandvalet & Bengio, 2005)."""

from __future__ import annotations

from ..._registry import register
from ._base import DALoss, logit_entropy

__all__ = ["EntropyLoss"]


@register("da_loss", "entropy")
class EntropyLoss(DALoss):
    r"""Mean prediction entropy on the unlabeled target batch:

    .. math::
        \mathcal{L}_{\mathrm{ent}} = -\frac{1}{n_t}\sum_{j=1}^{n_t}\sum_{k=1}^{K}
        p_{jk}\log p_{jk}, \qquad p_j = \mathrm{softmax}(z_j),

    0 for one-hot predictions and :math:`\log K` for uniform ones. Pushes the decision
    boundary into low-density regions of the target (the cluster assumption). Used alone it
    can collapse every target sample onto one class; it is usually combined with another
    alignment loss or a small weight.

    Parameters
    ----------
    weight
        :math:`\lambda`.

    References
    ----------
    .. [1] Y. Grandvalet and Y. Bengio. "Semi-supervised Learning by Entropy Minimization."
       NeurIPS 2005.
    """

    name = "entropy"
    needs_logits = True
    target_logits_only = True

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        return logit_entropy(logits_t).mean(), {}
