r"""DANN: domain-adversarial training through gradient reversal (Ganin et al., 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..._registry import register
from ...errors import ConfigError
from ._adversarial import AdversarialLoss, DomainDiscriminator

__all__ = ["DANNLoss"]


@register("da_loss", "dann")
class DANNLoss(AdversarialLoss):
    r"""Domain-adversarial loss: a discriminator on the features, behind a gradient reversal.

    .. math::
        \mathcal{L}_{\mathrm{DANN}} = -\tfrac12\,\mathbb{E}_{x\sim S}\log D(R_{c(p)}(f(x)))
        - \tfrac12\,\mathbb{E}_{x\sim T}\log\big(1 - D(R_{c(p)}(f(x)))\big),

    with :math:`R_c` the gradient-reversal layer and :math:`c(p) = 2/(1+e^{-10p}) - 1` the
    warm start of Ganin & Lempitsky (2015) driven by :meth:`set_progress`. Adding
    ``out["loss"]`` to the classification loss and minimising both is the saddle-point problem
    :math:`\min_f \max_D` of the paper in one backward pass.

    The discriminator's parameters belong to this module: add ``loss.parameters()`` to the
    optimizer. ``forward`` returns ``"loss"``, ``"dann"`` (the domain BCE), ``"domain_acc"``
    (balanced discriminator accuracy on the batch; 0.5 means it cannot tell the domains apart)
    and ``"grl_coeff"``.

    Parameters
    ----------
    in_features
        Feature dimension :math:`d` (required).
    weight
        :math:`\lambda`, multiplying the domain loss (and hence both the discriminator's and the
        reversed feature gradient).
    hidden
        Discriminator hidden width(s); 1024 (two layers) as in the paper.
    dropout, batch_norm
        Discriminator regularisation (see :class:`DomainDiscriminator`).
    schedule, max_coeff, gamma
        Gradient-reversal coefficient schedule (see :class:`AdversarialLoss`).

    Notes
    -----
    Deviations from the paper: the loss is multiplied by ``weight``, so the discriminator's
    gradient is scaled by :math:`\lambda` too (Ganin et al. scale only the reversed gradient;
    the Transfer-Learning-Library convention followed here is equivalent up to the
    discriminator's learning rate, and irrelevant under Adam). The two domains are weighted
    1/2 each, so unequal batch sizes do not bias the discriminator.

    References
    ----------
    .. [1] Y. Ganin and V. Lempitsky. "Unsupervised Domain Adaptation by Backpropagation."
       ICML 2015.
    .. [2] Y. Ganin et al. "Domain-Adversarial Training of Neural Networks." JMLR 17(59), 2016.
    """

    name = "dann"

    def __init__(self, in_features: int | None = None, weight: float = 1.0,
                 hidden: int | Sequence[int] = 1024, dropout: float = 0.5, batch_norm: bool = False,
                 schedule: str = "dann", max_coeff: float = 1.0, gamma: float = 10.0):
        super().__init__(weight, schedule=schedule, max_coeff=max_coeff, gamma=gamma)
        if in_features is None:
            raise ConfigError("da_loss 'dann' needs in_features (the feature dimension) to build its discriminator.")
        self.in_features = int(in_features)
        self.discriminator = DomainDiscriminator(in_features, hidden=hidden, dropout=dropout, batch_norm=batch_norm)

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        ns = f_s.shape[0]
        d = self.discriminator(self._reverse(torch.cat([f_s, f_t], 0)))
        loss, acc = self._domain_terms(d[:ns], d[ns:])
        return loss, self._extras(acc)
