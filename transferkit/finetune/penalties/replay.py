"""Memory replay: a fraction of stored source samples mixed into each batch."""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from ..._registry import register
from ..._validation import check_number
from ...nn.layout import to_channels_last
from ._base import FrozenHead, Penalty, check_strength, unwrap


@register("penalty", "replay")
class ReplayPenalty(Penalty):
    r"""Rehearsal: cross-entropy of stored source samples through the shared trunk and the source head.

    At every step :math:`m = \mathrm{round}(b\,\rho / (1 - \rho))` samples are drawn (with
    replacement, from a seeded stream of the penalty's own) from a memory of labeled source
    samples, so that a share :math:`\rho` (``fraction``) of the mixed batch is source data:

    .. math::

        \Omega = \lambda \, \frac{1}{m} \sum_{j=1}^{m} -\log \mathrm{softmax}\big(h_{\text{old}}(f(x^s_j))\big)_{y^s_j}

    The memory (a class-stratified random subset of ``memory_size`` source samples, preprocessed)
    and the frozen source head are buffers, so they move with ``.to()`` and are checkpointed.
    When the trainer augments images, replayed images get the same augmentation.

    Bayesian reading: none as a prior; replay approximates training on the union of source and
    target data (the joint likelihood), the upper bound the other penalties try to match.

    Parameters
    ----------
    fraction
        :math:`\rho \in (0, 1)`: the share of each mixed batch that is replayed source data.
    weight
        :math:`\lambda`.
    memory_size
        Source samples kept (``None``: all labeled ones).

    References
    ----------
    Robins, A. "Catastrophic forgetting, rehearsal and pseudorehearsal", Connection Science 1995;
    Chaudhry, A. et al. "On tiny episodic memories in continual learning", 2019.
    """

    name = "replay"
    needs_source_data = True
    needs_source_head = True

    def __init__(self, fraction: float = 0.25, weight: float = 1.0, memory_size: int | None = 500):
        super().__init__()
        self.fraction = float(check_number("fraction", fraction, low=0, high=1, low_inclusive=False,
                                           high_inclusive=False))
        self.weight = check_strength("weight", weight)
        self.memory_size = memory_size if memory_size is None else check_number("memory_size", memory_size, low=2,
                                                                                 integer=True)

    @property
    def strength(self) -> float:
        return self.weight

    def _attach(self, model, *, source, source_head, seed, batch_size) -> None:
        from ...data import stratified_split

        dev = next(model.parameters()).device
        keep = np.flatnonzero(source.labels >= 0)
        if self.memory_size is not None and len(keep) > self.memory_size:
            share = self.memory_size / len(keep)
            part = stratified_split(source.labels[keep], [share, 1 - share], seed=seed)[0]
            keep = np.sort(keep[part])
        inp = source.inputs
        parts = []
        for s in range(0, len(keep), batch_size):
            idx = keep[s : s + batch_size]
            raw = inp[idx] if isinstance(inp, np.ndarray) else [inp[int(i)] for i in idx]
            x = model.preprocess(raw)
            if not isinstance(x, torch.Tensor):
                from ...errors import ConfigError

                raise ConfigError("penalty 'replay' needs a model whose preprocess returns a tensor (image/tabular); "
                                  "use 'lwf' or 'ewc' for text models.")
            parts.append(x)
        self.register_buffer("memory_x", torch.cat(parts).to(dev))
        self.register_buffer("memory_y", torch.as_tensor(source.labels[keep], device=dev))
        self.old_head = FrozenHead(source_head).to(dev)
        self._gen = torch.Generator().manual_seed(int(seed) + 7919)

    # the draw generator's position is part of the state, so a resumed run replays the same samples
    def get_extra_state(self):
        return {"generator": self._gen.get_state()} if hasattr(self, "_gen") else {}

    def set_extra_state(self, state) -> None:
        if state and "generator" in state:
            if not hasattr(self, "_gen"):
                self._gen = torch.Generator()
            self._gen.set_state(state["generator"])

    def compute(self, ctx):
        b = len(ctx.labels) if ctx.labels is not None else len(ctx.inputs)
        m = max(2, int(round(b * self.fraction / (1 - self.fraction))))
        idx = torch.randint(len(self.memory_y), (m,), generator=self._gen)
        dev = self.memory_y.device
        x = self.memory_x[idx.to(dev)]
        if ctx.augment is not None and x.ndim == 4:
            x = ctx.augment(x.cpu(), self._gen).to(dev)
        x = to_channels_last(x)
        y = self.memory_y[idx.to(dev)]
        logits = self.old_head(unwrap(ctx.model).features(x))
        ce = F.cross_entropy(logits, y)
        return ce, {"replay_accuracy": (logits.argmax(1) == y).float().mean()}

    def extra_repr(self) -> str:
        return (f"fraction={self.fraction}, weight={self.weight}, memory_size={self.memory_size}, "
                f"attached={self.attached_}")


