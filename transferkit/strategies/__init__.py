"""Registered strategies: feature_extraction, finetune, scratch, adapt, two_stage."""

from .adapt import Adapt, TwoStage
from .base import Strategy
from .feature_extraction import FeatureExtraction
from .finetune import FineTune, Scratch

__all__ = ["Adapt", "FeatureExtraction", "FineTune", "Scratch", "Strategy", "TwoStage"]
