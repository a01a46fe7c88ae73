"""Regularizers that keep source knowledge while fine-tuning (registry kind ``penalty``).

Each is a Trainer loss term (:class:`Penalty`): ``attach(model, source=..., source_head=...)``
once, then called with the step context; state lives in buffers.

==========  =====================  =====================================================
key         class                  idea
==========  =====================  =====================================================
``l2sp``    :class:`L2SPPenalty`   Gaussian prior centred on the pretrained weights
``ewc``     :class:`EWCPenalty`    the same prior, Fisher diagonal as precision
``lwf``     :class:`LwFPenalty`    distil the old head's outputs on the new inputs
``replay``  :class:`ReplayPenalty` rehearse stored source samples through the old head
``bss``     :class:`BSSPenalty`    shrink the smallest singular values of the features
==========  =====================  =====================================================
"""

from ._base import FrozenHead, Penalty, backbone_and_head_names
from .bss import BSSPenalty
from .ewc import EWCPenalty, diagonal_fisher
from .l2sp import L2SPPenalty
from .lwf import LwFPenalty
from .replay import ReplayPenalty

__all__ = [
    "BSSPenalty", "EWCPenalty", "FrozenHead", "L2SPPenalty", "LwFPenalty", "Penalty", "ReplayPenalty",
    "backbone_and_head_names", "diagonal_fisher",
]
