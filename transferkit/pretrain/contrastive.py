"""Contrastive losses shared by self-supervised pretraining and the image-text embedding.

:func:`nt_xent` is SimCLR's normalized temperature-scaled cross-entropy over two views of one
batch; :func:`info_nce` is the symmetric InfoNCE of CLIP / LiT over two *paired* modalities;
:class:`LearnableTemperature` is CLIP's learnable logit scale. Both losses are the same
computation, a cross-entropy over cosine similarities divided by a temperature, so there is one
module for both (DESIGN habit 13).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_number
from ..errors import ConfigError


def _pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ConfigError(f"{what}: the two embeddings must both be (n, d) with the same shape, got "
                          f"{tuple(a.shape)} and {tuple(b.shape)}.")
    if a.shape[0] < 2:
        raise ConfigError(f"{what}: needs a batch of at least 2 pairs (the other pairs are the negatives), got "
                          f"{a.shape[0]}; use a larger batch_size.")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020, eq. 1) of two views ``(n, d)`` of one batch.

    With ``z = normalize([z1; z2])`` (``2n`` rows) and ``s_ij = z_i . z_j / tau``, each row ``i``
    has one positive, its other view ``p(i)``, and ``2n - 2`` negatives (every other row but
    itself)::

        loss = -1/(2n) sum_i log( exp(s_i,p(i)) / sum_{k != i} exp(s_ik) )

    Returns a scalar; symmetric in ``z1, z2``.
    """
    _pair(z1, z2, "nt_xent")
    tau = check_number("temperature", temperature, low=1e-4, high=100.0)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T) / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float = 1 / 0.07,
             targets: torch.Tensor | None = None) -> torch.Tensor:
    """The symmetric InfoNCE of CLIP (Radford et al. 2021) / LiT (Zhai et al. 2022).

    Row ``i`` of ``a`` and row ``i`` of ``b`` are a pair (an image and its caption). With
    ``L = logit_scale * normalize(a) @ normalize(b).T``::

        loss = ( CE(L, diag) + CE(L.T, diag) ) / 2

    ``targets``: a soft ``(n, n)`` matrix whose rows sum to 1, for batches where several rows
    share a caption (each row's positives spread over the rows with the same caption); its
    transpose, row-normalised, is the other direction's. Returns a scalar; swapping ``a`` and
    ``b`` (and transposing ``targets``) gives the same value.
    """
    _pair(a, b, "info_nce")
    logits = torch.as_tensor(logit_scale, dtype=a.dtype, device=a.device) * (F.normalize(a, dim=1)
                                                                            @ F.normalize(b, dim=1).T)
    if targets is None:
        y = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))
    t = targets.to(logits.dtype)
    tt = t.T / t.T.sum(1, keepdim=True).clamp_min(1e-12)
    return 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, tt))


class LearnableTemperature(nn.Module):
    """CLIP's learnable logit scale ``exp(t)``, initialised to ``1 / init`` (0.07 in CLIP) and
    clamped at ``max_scale`` (100) so that training cannot blow it up."""

    def __init__(self, init: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        init = check_number("temperature", init, low=1e-3, high=10.0)
        self.max_scale = check_number("max_scale", max_scale, low=1.0, high=1e4)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_scale)

    @property
    def temperature(self) -> float:
        return float(1.0 / self().detach())
