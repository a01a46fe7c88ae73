"""Registered strategies: feature_extraction, finetune, scratch; adapt, two_stage; the baselines
source_only, source_only_adabn, target_only; and the method strategies source_only_lr,
self_training, fixmatch (also ``adapt`` methods of the same name); source_free (SHOT, SHOT-IM, AaD:
a trained source model adapted on the unlabeled target, no source data); ensemble (the weighted
mixture of other strategies of the same experiment)."""

from .adapt import (
    Adapt,
    FixMatch,
    SelfTraining,
    SourceOnly,
    SourceOnlyAdaBN,
    SourceOnlyLR,
    TargetOnly,
    TwoStage,
)
from .base import Strategy
from .ensemble import Ensemble
from .feature_extraction import FeatureExtraction
from .finetune import FineTune, Scratch
from .source_free import SourceFree

__all__ = ["Adapt", "Ensemble", "FeatureExtraction", "FineTune", "FixMatch", "Scratch", "SelfTraining",
           "SourceOnly", "SourceFree", "SourceOnlyAdaBN", "SourceOnlyLR", "Strategy", "TargetOnly", "TwoStage"]
