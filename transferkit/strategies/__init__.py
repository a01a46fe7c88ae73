"""Registered strategies: feature_extraction, finetune, scratch; adapt, two_stage; the baselines
source_only, source_only_adabn, target_only; and the method strategies source_only_lr,
self_training, fixmatch (also ``adapt`` methods of the same name); source_free (SHOT, SHOT-IM, AaD:
a trained source model adapted on the unlabeled target, no source data); ensemble (the weighted
mixture of other strategies of the same experiment); multi_source (several labeled sources, one
unlabeled target: M3SDA, relevance weighting, pooled) and domain_generalization (several labeled
sources, no target until test: ERM, IRM, V-REx, GroupDRO, CORAL), both given ``sources: [...]``;
open_set (the target may hold classes the source never saw: OVANet, OSBP, a thresholded
baseline; "unknown" is class K); multitask (one shared encoder, named classification and
regression heads, a loss weighting: equal, uncertainty, dwa, gradnorm, pcgrad, upgrad)."""

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
from .domain_generalization import DomainGeneralization
from .ensemble import Ensemble
from .feature_extraction import FeatureExtraction
from .finetune import FineTune, Scratch
from .multi_source import MultiSource
from .multitask import MultiTask
from .open_set import OpenSet
from .source_free import SourceFree

__all__ = ["Adapt", "DomainGeneralization", "Ensemble", "FeatureExtraction", "FineTune", "FixMatch", "MultiSource",
           "MultiTask", "OpenSet", "Scratch", "SelfTraining", "SourceOnly", "SourceFree", "SourceOnlyAdaBN",
           "SourceOnlyLR", "Strategy", "TargetOnly", "TwoStage"]
