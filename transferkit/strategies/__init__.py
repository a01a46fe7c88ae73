"""Registered strategies: feature_extraction, finetune, scratch, adapt."""

from .adapt import Adapt
from .base import Strategy
from .feature_extraction import FeatureExtraction
from .finetune import FineTune, Scratch

__all__ = ["Adapt", "FeatureExtraction", "FineTune", "Scratch", "Strategy"]
