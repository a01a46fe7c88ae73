"""Shared pieces of the adversarial losses (DANN, CDAN): the domain discriminator, and a base
class that owns the gradient-reversal layer and its warm-start schedule."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..._validation import check_number
from ...nn.grl import GradientReversal, WarmStartSchedule
from ._base import DALoss

__all__ = ["AdversarialLoss", "DomainDiscriminator"]


class DomainDiscriminator(nn.Module):
    r"""MLP domain classifier :math:`D: \mathbb{R}^{d} \to \mathbb{R}` (a logit; source = 1).

    ``[Linear -> (BatchNorm) -> ReLU -> Dropout] x len(hidden) -> Linear(., 1)``; with the
    default ``hidden=1024`` it is the ``d -> 1024 -> 1024 -> 1`` network of Ganin et al.
    (2016, Sec. 5.2.2) for the Office experiments.

    Parameters
    ----------
    in_features
        Input width :math:`d`.
    hidden
        Width of each hidden layer; an int means two hidden layers of that width, a sequence
        gives the widths (``()`` for a linear discriminator).
    dropout
        Dropout after each hidden layer (0.5 in the paper).
    batch_norm
        BatchNorm after each hidden linear layer (Transfer-Learning-Library's default variant).
    """

    def __init__(self, in_features: int, hidden: int | Sequence[int] = 1024, dropout: float = 0.5,
                 batch_norm: bool = False):
        super().__init__()
        in_features = check_number("in_features", in_features, low=1, integer=True)
        widths = (hidden, hidden) if isinstance(hidden, int) else tuple(hidden)
        widths = tuple(check_number("hidden", w, low=1, integer=True) for w in widths)
        check_number("dropout", dropout, low=0, high=1, high_inclusive=False)
        layers: list[nn.Module] = []
        prev = in_features
        for w in widths:
            layers.append(nn.Linear(prev, w))
            if batch_norm:
                layers.append(nn.BatchNorm1d(w))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            prev = w
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Domain logits, shape ``(n,)``."""
        return self.net(x).squeeze(1)


class AdversarialLoss(DALoss):
    r"""Base of the losses that train a discriminator through gradient reversal.

    The forward value is the discriminator's domain cross-entropy, balanced over domains
    (each domain counts 1/2 whatever its batch size):

    .. math::
        \mathcal{L}_d = -\tfrac12\,\mathbb{E}_{s}\big[w\log D(h_s)\big]
                        -\tfrac12\,\mathbb{E}_{t}\big[w\log(1 - D(h_t))\big],

    where :math:`h` passes through a gradient-reversal layer with coefficient
    :math:`c(p)` from :class:`~transferkit.nn.grl.WarmStartSchedule`. Minimising
    ``weight * L_d`` trains the discriminator to separate the domains (gradient
    ``weight * dL_d/dD``) and the features to confuse it (gradient ``-weight * c(p) * dL_d/dh``).

    Parameters
    ----------
    weight
        :math:`\lambda`.
    schedule
        ``"dann"`` (coefficient :math:`c(p) = c_{\max}(2/(1+e^{-\gamma p}) - 1)`, Ganin et al.)
        or ``"constant"`` (:math:`c = c_{\max}`).
    max_coeff
        :math:`c_{\max}`.
    gamma
        Steepness of the warm start.
    """

    def __init__(self, weight: float = 1.0, schedule: str = "dann", max_coeff: float = 1.0, gamma: float = 10.0):
        super().__init__(weight)
        self.schedule = WarmStartSchedule(hi=max_coeff, lo=0.0, gamma=gamma, kind=schedule)
        self.grl = GradientReversal(0.0)

    def grl_coeff(self) -> float:
        """The current reversal coefficient :math:`c(p)`."""
        return self.schedule(float(self.progress))

    def _reverse(self, h: torch.Tensor) -> torch.Tensor:
        if (self.training and torch.is_grad_enabled() and not self._progress_set
                and self.schedule.kind != "constant" and not getattr(self, "_warned", False)):
            warnings.warn(
                f"da_loss {self.name!r}: set_progress() was never called, so the gradient-reversal "
                "coefficient stays at c(0) = 0 and the features are not adapted. Call "
                "loss.set_progress(step / total_steps) every step, or use schedule='constant'.",
                UserWarning, stacklevel=4)
            self._warned = True
        self.grl.coeff = self.grl_coeff()
        return self.grl(h)

    def _extras(self, acc: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"domain_acc": acc, "grl_coeff": torch.tensor(self.grl.coeff, dtype=acc.dtype, device=acc.device)}

    @staticmethod
    def _domain_terms(d_s: torch.Tensor, d_t: torch.Tensor, w_s: torch.Tensor | None = None,
                      w_t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced (weighted) domain BCE and balanced accuracy from logits (source = 1)."""
        l_s = F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s), reduction="none")
        l_t = F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t), reduction="none")
        if w_s is None:
            loss = 0.5 * (l_s.mean() + l_t.mean())
        else:
            loss = 0.5 * ((w_s / w_s.sum()) * l_s).sum() + 0.5 * ((w_t / w_t.sum()) * l_t).sum()
        with torch.no_grad():
            acc = 0.5 * ((d_s > 0).to(d_s.dtype).mean() + (d_t <= 0).to(d_t.dtype).mean())
        return loss, acc
