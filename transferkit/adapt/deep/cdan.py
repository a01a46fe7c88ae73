r"""CDAN and CDAN+E: conditional domain-adversarial training (Long et al., 2018)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..._registry import register
from ..._validation import check_number
from ...errors import ConfigError, DataError
from ._adversarial import AdversarialLoss, DomainDiscriminator
from ._base import logit_entropy

__all__ = ["CDANELoss", "CDANLoss", "cdan_entropy_weights"]


def cdan_entropy_weights(logits: torch.Tensor) -> torch.Tensor:
    r"""CDAN+E's entropy conditioning :math:`w(x) = 1 + e^{-H(g)}`, :math:`g = \mathrm{softmax}(z)`.

    Confident predictions (:math:`H = 0`) get weight 2, uniform ones (:math:`H = \log K`)
    weight :math:`1 + 1/K`. Computed without gradient, as in Transfer-Learning-Library (the
    authors' code instead sends a reversed gradient into :math:`H`).

    Parameters
    ----------
    logits : (n, K) tensor

    Returns
    -------
    (n,) tensor
        Unnormalised weights in :math:`[1 + 1/K, 2]`.
    """
    with torch.no_grad():
        return 1.0 + torch.exp(-logit_entropy(logits))


@register("da_loss", "cdan")
class CDANLoss(AdversarialLoss):
    r"""Conditional adversarial loss: the discriminator sees the multilinear map :math:`f \otimes g`.

    .. math::
        \mathcal{L}_{\mathrm{CDAN}} = -\tfrac12\,\mathbb{E}_{S}\, w\log D\big(R_{c(p)}(T(f, g))\big)
        - \tfrac12\,\mathbb{E}_{T}\, w\log\big(1 - D(R_{c(p)}(T(f, g)))\big),

    where :math:`g = \mathrm{softmax}(\text{logits})` (detached, as in the authors' code, so
    the discriminator conditions on predictions without pushing them), and

    - :math:`T_\otimes(f, g) = \mathrm{vec}(g f^\top) \in \mathbb{R}^{K d}` (multilinear map), or
    - :math:`T_\odot(f, g) = \frac{1}{\sqrt{m}} (R_f f) \odot (R_g g) \in \mathbb{R}^{m}`
      (randomized multilinear map, fixed Gaussian :math:`R_f, R_g`), used when :math:`K d` is
      too large.

    :math:`w = 1` for CDAN; for CDAN+E (:class:`CDANELoss`) :math:`w = 1 + e^{-H(g)}`
    normalised within each domain, which emphasises confidently classified (easy-to-transfer)
    examples.

    Parameters
    ----------
    in_features
        Feature dimension :math:`d` (required).
    num_classes
        Number of classes :math:`K` (required).
    weight
        :math:`\lambda`.
    randomized
        ``True``, ``False`` or ``"auto"`` (randomized when :math:`K d` > ``max_dim``).
    randomized_dim
        Output dimension :math:`m` of the randomized map (1024 in the paper).
    max_dim
        Largest :math:`K d` for which ``"auto"`` keeps the exact map (4096, the paper's rule).
    entropy_conditioning
        Use the CDAN+E weights.
    hidden, dropout, batch_norm
        Discriminator (see :class:`DomainDiscriminator`).
    schedule, max_coeff, gamma
        Gradient-reversal coefficient schedule (see :class:`AdversarialLoss`).
    seed
        Seed of the random matrices :math:`R_f, R_g` (stored as buffers, so they move with
        ``.to()`` and are checkpointed).

    Notes
    -----
    Deviations from the paper/code: the entropy weights carry no gradient (see
    :func:`cdan_entropy_weights`); ``weight`` also scales the discriminator's gradient (as in
    :class:`~transferkit.adapt.deep.DANNLoss`).

    References
    ----------
    .. [1] M. Long, Z. Cao, J. Wang and M. Jordan. "Conditional Adversarial Domain Adaptation."
       NeurIPS 2018.
    """

    name = "cdan"
    needs_logits = True

    def __init__(self, in_features: int | None = None, num_classes: int | None = None, weight: float = 1.0,
                 randomized: bool | str = "auto", randomized_dim: int = 1024, max_dim: int = 4096,
                 entropy_conditioning: bool = False, hidden: int | Sequence[int] = 1024, dropout: float = 0.5,
                 batch_norm: bool = False, schedule: str = "dann", max_coeff: float = 1.0, gamma: float = 10.0,
                 seed: int = 0):
        super().__init__(weight, schedule=schedule, max_coeff=max_coeff, gamma=gamma)
        if in_features is None or num_classes is None:
            raise ConfigError(f"da_loss {self.name!r} needs in_features and num_classes to build its discriminator.")
        self.in_features = check_number("in_features", in_features, low=1, integer=True)
        self.num_classes = check_number("num_classes", num_classes, low=1, integer=True)
        if randomized not in (True, False, "auto"):
            raise ConfigError(f"randomized={randomized!r} is not valid; use True, False or 'auto'.")
        if randomized == "auto":
            randomized = self.in_features * self.num_classes > check_number("max_dim", max_dim, low=1, integer=True)
        self.randomized = bool(randomized)
        self.entropy_conditioning = bool(entropy_conditioning)
        if self.randomized:
            m = check_number("randomized_dim", randomized_dim, low=1, integer=True)
            gen = torch.Generator().manual_seed(int(seed))
            self.register_buffer("r_f", torch.randn(self.in_features, m, generator=gen))
            self.register_buffer("r_g", torch.randn(self.num_classes, m, generator=gen))
            disc_in = m
        else:
            disc_in = self.in_features * self.num_classes
        self.discriminator = DomainDiscriminator(disc_in, hidden=hidden, dropout=dropout, batch_norm=batch_norm)

    def multilinear_map(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        r""":math:`T(f, g)`: ``(n, K*d)`` outer products, or ``(n, m)`` randomized products."""
        if self.randomized:
            return (f @ self.r_f) * (g @ self.r_g) / math.sqrt(self.r_f.shape[1])
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        if f_s.shape[1] != self.in_features or logits_s.shape[1] != self.num_classes:
            raise DataError(f"da_loss {self.name!r} was built for {self.in_features} features and "
                            f"{self.num_classes} classes, got {f_s.shape[1]} and {logits_s.shape[1]}.")
        ns = f_s.shape[0]
        logits = torch.cat([logits_s, logits_t], 0)
        g = torch.softmax(logits, 1).detach()
        h = self.multilinear_map(torch.cat([f_s, f_t], 0), g)
        d = self.discriminator(self._reverse(h))
        if self.entropy_conditioning:
            w = cdan_entropy_weights(logits)
            loss, acc = self._domain_terms(d[:ns], d[ns:], w[:ns], w[ns:])
        else:
            loss, acc = self._domain_terms(d[:ns], d[ns:])
        return loss, self._extras(acc)

    def extra_repr(self) -> str:
        return (f"weight={self.weight:g}, randomized={self.randomized}, "
                f"entropy_conditioning={self.entropy_conditioning}")


@register("da_loss", "cdan_e")
class CDANELoss(CDANLoss):
    r"""CDAN+E: :class:`CDANLoss` with entropy conditioning :math:`w = 1 + e^{-H(g)}` (Long et al., 2018).

    Same parameters as :class:`CDANLoss` except ``entropy_conditioning``, which is always on.

    References
    ----------
    .. [1] M. Long, Z. Cao, J. Wang and M. Jordan. "Conditional Adversarial Domain Adaptation."
       NeurIPS 2018.
    """

    name = "cdan_e"

    def __init__(self, in_features: int | None = None, num_classes: int | None = None, weight: float = 1.0,
                 randomized: bool | str = "auto", randomized_dim: int = 1024, max_dim: int = 4096,
                 hidden: int | Sequence[int] = 1024, dropout: float = 0.5, batch_norm: bool = False,
                 schedule: str = "dann", max_coeff: float = 1.0, gamma: float = 10.0, seed: int = 0):
        super().__init__(in_features, num_classes, weight=weight, randomized=randomized,
                         randomized_dim=randomized_dim, max_dim=max_dim, entropy_conditioning=True, hidden=hidden,
                         dropout=dropout, batch_norm=batch_norm, schedule=schedule, max_coeff=max_coeff,
                         gamma=gamma, seed=seed)
