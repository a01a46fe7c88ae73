"""Domain adaptation: ``deep/`` loss modules run by one trainer, ``shallow/`` scikit-learn
estimators on features, and :class:`FeatureAdapter`, which adapts a bottleneck and head on
top of a frozen, cached backbone."""

# Lazy exports, so importing ``transferkit.adapt`` stays light (no torch until used).
_API = {
    "train_backbone_adapter": "transferkit.adapt.backbone",
    "DALossTerm": "transferkit.adapt.features",
    "SelectionCallback": "transferkit.train.selection",
    # label shift: target priors without target labels (BBSE, MLLS), prior correction, sampling
    **{name: "transferkit.adapt.label_shift" for name in (
        "LabelShiftEstimate", "estimate_target_priors", "correct_probs", "class_weights_for_priors",
        "prior_matched_counts")},
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'transferkit.adapt' has no attribute {name!r}")
