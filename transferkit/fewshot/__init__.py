"""Few-shot learning and meta-learning on the one registry (kind ``fewshot``).

- :mod:`~transferkit.fewshot.episodes`: :class:`EpisodeSampler` (seeded per episode),
  :func:`split_classes` (disjoint meta-train / meta-val / meta-test classes), :func:`mean_ci95`;
- :mod:`~transferkit.fewshot.base`: :class:`FewShotMethod`, :class:`MetaData`, :func:`evaluate`;
- :mod:`~transferkit.fewshot.encoders`: ``conv4``, ``mlp``;
- one module per method, each registering itself.
"""

from __future__ import annotations

import importlib

from .base import FewShotMethod, MetaData, evaluate, snapshot
from .encoders import conv4, mlp
from .episodes import Episode, EpisodeSampler, mean_ci95, split_classes

# One module per method; each registers itself with @register("fewshot", name). A module not
# written yet is skipped here (the registry lists what exists).
_METHOD_MODULES = ("protonet", "matching", "simpleshot", "baseline", "finetune", "maml", "reptile")
for _m in _METHOD_MODULES:
    try:
        importlib.import_module(f"{__name__}.{_m}")
    except ModuleNotFoundError as exc:  # only the module itself missing, never a broken import inside it
        if exc.name != f"{__name__}.{_m}":
            raise

__all__ = [
    "Episode", "EpisodeSampler", "FewShotMethod", "MetaData", "conv4", "evaluate", "mean_ci95", "mlp",
    "snapshot", "split_classes",
]
