"""Domain adaptation: ``deep/`` loss modules run by one trainer, ``shallow/`` scikit-learn
estimators on features, and :class:`FeatureAdapter`, which adapts a bottleneck and head on
top of a frozen, cached backbone. Beyond one source and one label space: ``multi_source``
(M3SDA, relevance weighting), ``dg`` (IRM, V-REx, GroupDRO, CORAL, MixStyle), ``open_set``
(OSBP, OVANet), ``zero_shot`` (ESZSL, DeViSE, ConSE) and the partial losses ``pada`` and
``ba3us`` in ``deep/``."""

# Lazy exports, so importing ``transferkit.adapt`` stays light (no torch until used).
_API = {
    "train_backbone_adapter": "transferkit.adapt.backbone",
    "DALossTerm": "transferkit.adapt.features",
    "SelectionCallback": "transferkit.train.selection",
    # label shift: target priors without target labels (BBSE, MLLS), prior correction, sampling
    **{name: "transferkit.adapt.label_shift" for name in (
        "LabelShiftEstimate", "estimate_target_priors", "correct_probs", "class_weights_for_priors",
        "prior_matched_counts")},
    # several sources: shared pieces, multi-source adaptation, domain generalisation
    **{name: "transferkit.adapt.multi_domain" for name in ("check_sources", "pool_sources", "DomainTerm")},
    **{name: "transferkit.adapt.multi_source" for name in (
        "fit_multi_source", "source_relevance", "moment_distance", "MomentMatchingTerm", "SourceWeightedCE")},
    **{name: "transferkit.adapt.dg" for name in (
        "fit_domain_generalization", "leave_one_domain_out", "IRMTerm", "VRExTerm", "GroupDROTerm", "CORALTerm",
        "MixStyle", "insert_mixstyle")},
    # other label spaces: zero-shot transfer through class embeddings
    **{name: "transferkit.adapt.zero_shot" for name in ("ESZSL", "DeViSE", "ConSE")},
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'transferkit.adapt' has no attribute {name!r}")
