"""Representations trained by a loss other than the target's cross-entropy.

- :mod:`.contrastive`: NT-Xent (SimCLR) and symmetric InfoNCE (CLIP / LiT), one module for both;
- :mod:`.pretext`: self-supervised pretext tasks (registry kind ``pretext``: ``rotation``,
  ``simclr``, ``byol``, ``simsiam``, ``mae``), each a :class:`transferkit.train.Objective` that
  trains any registered backbone on unlabeled images through the one Trainer;
- :mod:`.multitask`: a shared encoder with named heads (classification and regression), the
  loss weightings (registry kind ``mtl_weighting``: ``equal``, ``uncertainty``, ``gradnorm``,
  ``dwa``, ``pcgrad``, ``upgrad``) and Delta-m%;
- :mod:`.image_text`: a LiT-style shared image-text embedding (frozen towers, trained
  projections, learnable temperature), zero-shot classification from prompts and retrieval;
- :mod:`.run`: ``transferkit pretrain exp.yaml``, a run directory whose backbone every strategy
  loads as ``file:RUN_DIR``.
"""

from __future__ import annotations

from . import pretext, weighting  # noqa: F401  (register the pretext tasks and the MTL weightings)
from .captions import captions_for, class_prompts
from .contrastive import LearnableTemperature, info_nce, nt_xent
from .image_text import ImageTextModel, LiT, LiTObjective, lit_loss
from .multitask import MultiTaskModel, MultiTaskObjective, delta_m, parse_heads
from .pretext import Pretext, make_pretext
from .views import SSLViews, check_views_possible
from .weighting import make_weighting, pcgrad_combine

__all__ = ["ImageTextModel", "LearnableTemperature", "LiT", "LiTObjective", "MultiTaskModel", "MultiTaskObjective",
           "Pretext", "SSLViews", "captions_for", "check_views_possible", "class_prompts", "delta_m", "info_nce",
           "lit_loss", "make_pretext", "make_weighting", "nt_xent", "parse_heads", "pcgrad_combine"]
