"""Batch spectral shrinkage (Chen et al., 2019)."""

from __future__ import annotations

import torch

from ..._registry import register
from ..._validation import check_number
from ...errors import ConfigError
from ._base import Penalty, check_strength, unwrap


@register("penalty", "bss")
class BSSPenalty(Penalty):
    r"""Batch spectral shrinkage: shrink the smallest singular values of the batch features.

    .. math::

        \Omega = \eta \sum_{i=1}^{k} \sigma_{-i}^2(F)

    where :math:`F \in \mathbb R^{b \times d}` is the batch of features and
    :math:`\sigma_{-1} \le \sigma_{-2} \le \dots` its smallest singular values. Chen et al.
    observe that the spectral components with small singular values carry the
    source-specific, untransferable directions that fine-tuning on little data over-fits
    ("negative transfer"), and shrinking them limits that. The term needs no source data and
    keeps no state (it is not a prior on the weights; it acts on the features).

    Parameters
    ----------
    eta
        :math:`\eta` (paper: 0.001).
    k
        Number of smallest singular values shrunk (paper: 1).

    References
    ----------
    Chen, X., Wang, S., Fu, B., Long, M., Wang, J. "Catastrophic forgetting meets negative
    transfer: batch spectral shrinkage for safe transfer learning", NeurIPS 2019.
    """

    name = "bss"

    def __init__(self, eta: float = 0.001, k: int = 1):
        super().__init__()
        self.eta = check_strength("eta", eta)
        self.k = check_number("k", k, low=1, integer=True)
        self.attached_ = True  # nothing to remember from the source

    @property
    def strength(self) -> float:
        return self.eta

    def _attach(self, model, *, source, source_head, seed, batch_size) -> None:
        pass

    def compute(self, ctx):
        f = ctx.features if ctx.features is not None else unwrap(ctx.model).features(ctx.inputs)
        if f.ndim != 2:
            raise ConfigError(f"penalty 'bss' needs (batch, dim) features, got shape {tuple(f.shape)}.")
        s = torch.linalg.svdvals(f.float())  # descending
        k = min(self.k, s.numel())
        return s[-k:].pow(2).sum(), {}

    def extra_repr(self) -> str:
        return f"eta={self.eta}, k={self.k}"
