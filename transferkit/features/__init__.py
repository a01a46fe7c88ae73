"""Frozen-backbone feature extraction with an on-disk cache."""

from .extractor import FeatureCache, FeatureExtractor, check_cache_dir, extract_features

__all__ = ["FeatureCache", "FeatureExtractor", "check_cache_dir", "extract_features"]
