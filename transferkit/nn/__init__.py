"""Shared building blocks: heads and the backbone + head model."""

from .model import LinearHead, MLPHead, TransferModel

__all__ = ["LinearHead", "MLPHead", "TransferModel"]
