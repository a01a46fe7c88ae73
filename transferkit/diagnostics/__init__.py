"""Diagnostics: the Ben-David bound estimate (more in later issues: negative transfer, sample
efficiency, forgetting, sharpness)."""

from .bound import ben_david_bound

__all__ = ["ben_david_bound"]
