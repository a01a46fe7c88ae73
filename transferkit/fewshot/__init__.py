"""Few-shot learning and meta-learning on the one registry (kind ``fewshot``).

- :mod:`~transferkit.fewshot.episodes`: :class:`EpisodeSampler` (seeded per episode),
  :func:`split_classes` (disjoint meta-train / meta-val / meta-test classes), :func:`mean_ci95`;
- :mod:`~transferkit.fewshot.base`: :class:`FewShotMethod`, :class:`MetaData`, :func:`evaluate`;
- :mod:`~transferkit.fewshot.encoders`: ``conv4``, ``mlp``;
- one module per method, each registering itself;
- :mod:`~transferkit.fewshot.defaults`: the method an experiment without ``methods`` runs.
"""

from __future__ import annotations

import importlib

from .base import FewShotMethod, MetaData, evaluate, snapshot
from .encoders import conv4, mlp
from .episodes import Episode, EpisodeSampler, mean_ci95, split_classes

# One module per method; each registers itself with @register("fewshot", name).
_METHOD_MODULES = ("protonet", "matching", "simpleshot", "baseline", "finetune", "maml", "reptile")
for _m in _METHOD_MODULES:
    importlib.import_module(f"{__name__}.{_m}")

__all__ = [
    "Episode", "EpisodeSampler", "FewShotMethod", "MetaData", "conv4", "evaluate", "mean_ci95", "mlp",
    "snapshot", "split_classes",
]
