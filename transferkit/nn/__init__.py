"""Shared building blocks, below every other layer: heads and the backbone + head model
(:mod:`.model`), gradient reversal (:mod:`.grl`), torch kernels (:mod:`.kernels`), NumPy
bandwidth heuristics (:mod:`.bandwidth`) and batch memory layout (:mod:`.layout`).

The names below are imported on first use, so ``transferkit.nn.bandwidth`` (NumPy only, used by
the metrics and the shallow adapters) does not import torch.
"""

from __future__ import annotations

__all__ = ["LinearHead", "MLPHead", "TransferModel"]


def __getattr__(name: str):
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'transferkit.nn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
