"""Registered strategies: feature_extraction, finetune, scratch; adapt, two_stage; the baselines
source_only, source_only_adabn, target_only; and the method strategies source_only_lr,
self_training, fixmatch (also ``adapt`` methods of the same name)."""

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
from .feature_extraction import FeatureExtraction
from .finetune import FineTune, Scratch

__all__ = ["Adapt", "FeatureExtraction", "FineTune", "FixMatch", "Scratch", "SelfTraining", "SourceOnly",
           "SourceOnlyAdaBN", "SourceOnlyLR", "Strategy", "TargetOnly", "TwoStage"]
