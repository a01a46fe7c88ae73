"""Registered strategies: feature_extraction, finetune, scratch."""

from .base import Strategy
from .feature_extraction import FeatureExtraction
from .finetune import FineTune, Scratch

__all__ = ["FeatureExtraction", "FineTune", "Scratch", "Strategy"]
