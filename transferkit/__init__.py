"""transferkit: transfer learning toolkit.

The public API is imported lazily, so ``import transferkit`` is light and has no side effects::

    import transferkit as tk
    target = tk.load_dataset("digits:rotate=30")
    bb = tk.create_backbone("efficientnet_lite0", image_size=64)
    feats = tk.FeatureExtractor(bb).fit().transform(target)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "create_backbone": "transferkit.backbones",
    "describe_groups": "transferkit.backbones",
    "list_backbones": "transferkit.backbones",
    "load_dataset": "transferkit.data.spec",
    "DomainDataset": "transferkit.data",
    "sample_per_class": "transferkit.data",
    "stratified_split": "transferkit.data",
    "FeatureExtractor": "transferkit.features",
    "FeatureExtraction": "transferkit.strategies",
    "FineTune": "transferkit.strategies",
    "Scratch": "transferkit.strategies",
    "Adapt": "transferkit.strategies",
    "SourceOnly": "transferkit.strategies",
    "SourceOnlyLR": "transferkit.strategies",
    "estimate_target_priors": "transferkit.adapt.label_shift",
    "TransferModel": "transferkit.nn",
    "Trainer": "transferkit.train",
    "build_param_groups": "transferkit.finetune",
    "ExperimentConfig": "transferkit.config",
    "load_config": "transferkit.config",
    "config_from_dict": "transferkit.config",
    "run_experiment": "transferkit.experiment",
    "make_splits": "transferkit.experiment",
    "load_run": "transferkit.inference",
    "assess": "transferkit.assess",
    "rank_backbones": "transferkit.assess",
    "ben_david_bound": "transferkit.diagnostics",
    "TransferKitError": "transferkit.errors",
    "available": "transferkit._registry",
}

#: subpackages reached as attributes (``tk.tta.wrap(model, method="tent")``), imported on first use
_SUBPACKAGES = ("tta", "metrics")

__all__ = sorted(_API) + list(_SUBPACKAGES) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"transferkit.{name}")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


def __dir__():
    return __all__
