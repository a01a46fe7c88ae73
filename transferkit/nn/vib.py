r"""A variational information bottleneck head (Alemi et al., 2017) and its loss term.

The head encodes the backbone's features :math:`f` into a Gaussian code and classifies a code:

.. math::

    q(z \mid f) = \mathcal N\big(\mu(f), \operatorname{diag} \sigma^2(f)\big), \qquad
    [\mu, \log \sigma^2] = W_e\, \mathrm{dropout}(f) + b_e, \qquad
    \mathrm{logits} = W_d\, z + b_d,

with :math:`z \in \mathbb R^{\text{dim}}`. Training minimises the variational bound of the
information bottleneck objective :math:`I(Z; Y) - \beta I(Z; X)`,

.. math::

    \mathcal L = \frac1n \sum_i \Big[ \mathrm{CE}\big(y_i, W_d z_i + b_d\big)
        + \beta\, \mathrm{KL}\big(q(z \mid f_i) \,\|\, \mathcal N(0, I)\big) \Big],
    \qquad z_i = \mu_i + \sigma_i \odot \varepsilon_i,\ \varepsilon_i \sim \mathcal N(0, I),

a single reparameterised sample per example (Kingma & Welling, 2014), and the closed form

.. math::

    \mathrm{KL}\big(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, I)\big)
        = \tfrac12 \sum_{j=1}^{\text{dim}} \big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big).

:math:`\beta` trades fit against compression: 0 is a plain two-layer linear head trained with
noise in its code, larger values squeeze out what the features say beyond the label (on MNIST,
Alemi et al. find the lowest test error near :math:`\beta = 10^{-3}`). At evaluation the head
uses the mean code, :math:`z = \mu`, so predictions are deterministic (Alemi et al. average
several samples of :math:`z` instead).

The cross-entropy is the Trainer's own; :class:`VIBLoss` is the extra loss term
(``Trainer(..., losses=[VIBLoss(beta)])``, the mechanism the fine-tuning penalties use) that adds
:math:`\beta\,\mathrm{KL}` and logs the unweighted KL as ``vib_kl``. It reads the
:math:`(\mu, \log\sigma^2)` of the very pass that gave the logits (the head keeps them for the
step), so head dropout is not drawn twice.

References
----------
Alemi, Fischer, Dillon, Murphy. "Deep variational information bottleneck", ICLR 2017.
Kingma, Welling. "Auto-encoding variational Bayes", ICLR 2014.
Tishby, Pereira, Bialek. "The information bottleneck method", 1999.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_number
from ..errors import ConfigError

__all__ = ["VIBHead", "VIBLoss", "gaussian_kl"]

#: The log-variance is clamped here: outside it ``exp`` would overflow in half precision (and the
#: code would be pure noise or a point anyway).
LOGVAR_RANGE = (-20.0, 20.0)
#: Initial bias of the log-variance outputs: a small starting noise (sigma = exp(-3) ~ 0.05), as
#: Alemi et al.'s ``softplus(x - 5)`` starts it small, so an untrained mean is not swamped by noise.
LOGVAR_INIT = -6.0


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""Per-row :math:`\mathrm{KL}(\mathcal N(\mu, \operatorname{diag} e^{\text{logvar}}) \,\|\,
    \mathcal N(0, I)) = \frac12 \sum_j (\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)`, in nats,
    computed in float32 (at least) whatever the autocast dtype.

    Parameters
    ----------
    mu, logvar : (n, dim) tensors

    Returns
    -------
    (n,) tensor
    """
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


class VIBHead(nn.Module):
    """Dropout, a linear encoder to the mean and log-variance of a Gaussian code of width
    ``dim``, and a linear classifier of the code (see the module docstring for the math).

    In training mode ``forward`` classifies one reparameterised sample and keeps the pass's
    ``(mu, logvar)`` for :class:`VIBLoss`; in eval mode it classifies the mean and keeps nothing.
    The output is always the ``(n, num_classes)`` logits.

    Parameters
    ----------
    in_features, num_classes
        Feature width and number of classes.
    dropout
        Dropout on the features before the encoder.
    dim
        Width of the code ``z``.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0, dim: int = 64):
        super().__init__()
        self.dim = int(check_number("vib_dim", dim, low=1, integer=True))
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.Linear(in_features, 2 * self.dim)
        self.fc = nn.Linear(self.dim, num_classes)
        with torch.no_grad():
            self.encoder.bias[self.dim:].fill_(LOGVAR_INIT)
        self._stats = None  # (features, mu, logvar) of the last training pass, taken by VIBLoss

    def encode(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(n, dim)``, of the code of features ``f`` (dropout applies
        in training mode)."""
        h = self.encoder(self.dropout(f))
        mu, logvar = h[:, :self.dim], h[:, self.dim:]
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encode(f)
        if self.training:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            self._stats = (f, mu, logvar)
        else:
            z = mu
        return self.fc(z)

    def take_stats(self, f: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(mu, logvar)`` of the last training pass, forgotten once taken; when ``f`` is
        given and is not that pass's input, encoded from ``f`` afresh."""
        stats, self._stats = self._stats, None
        if stats is not None and (f is None or stats[0] is f):
            return stats[1], stats[2]
        if f is None:
            raise RuntimeError("VIBHead.take_stats: no training pass to take (mu, logvar) from")
        return self.encode(f)

    def train(self, mode: bool = True):
        if not mode:
            self._stats = None  # nothing of a training graph outlives training (copies, memory)
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class VIBLoss(nn.Module):
    r"""The Trainer loss term :math:`\beta\,\overline{\mathrm{KL}}` of a model whose head is a
    :class:`VIBHead` (the mean over the batch of the per-example KL to :math:`\mathcal N(0, I)`).

    ``forward(ctx)`` takes a :class:`transferkit.train.trainer.StepContext` and returns
    ``{"loss": beta * kl, "vib_kl": kl}`` (``vib_kl`` detached, unweighted, logged per epoch).

    Parameters
    ----------
    beta
        Weight of the KL term, >= 0 (0: the cross-entropy alone; the KL is still logged).
    """

    def __init__(self, beta: float = 1e-3):
        super().__init__()
        self.beta = float(check_number("vib_beta", beta, low=0))

    def forward(self, ctx) -> dict:
        model = getattr(ctx.model, "module", ctx.model)  # under a DDP/accelerate wrapper
        head = getattr(model, "head", None)
        if not isinstance(head, VIBHead):
            raise ConfigError(f"VIBLoss needs a model whose head is a VIBHead, got {type(head).__name__}; "
                              "build it with head='vib'.")
        mu, logvar = head.take_stats(ctx.features)
        kl = gaussian_kl(mu, logvar).mean()
        return {"loss": self.beta * kl, "vib_kl": kl.detach()}

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
