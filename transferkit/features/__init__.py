"""Frozen-backbone feature extraction with an on-disk cache."""

from .extractor import FeatureCache, FeatureExtractor, extract_features

__all__ = ["FeatureCache", "FeatureExtractor", "extract_features"]
