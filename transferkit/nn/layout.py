"""Memory layout of input batches, shared by the Trainer and the penalties that run their own
forward passes (``finetune.penalties.replay``)."""

from __future__ import annotations

import torch

__all__ = ["to_channels_last"]


def to_channels_last(x):
    """NHWC memory layout for image batches: about 2x faster convolution training on CPU."""
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
