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

import importlib

from .contrastive import LearnableTemperature, info_nce, nt_xent

# modules that register entries (pretext tasks, MTL weightings); each imported when present
for _m in ("pretext", "weighting"):
    try:
        importlib.import_module(f"{__name__}.{_m}")
    except ModuleNotFoundError as _exc:  # pragma: no cover - a module not written yet
        if _exc.name != f"{__name__}.{_m}":
            raise

__all__ = ["LearnableTemperature", "info_nce", "nt_xent"]
