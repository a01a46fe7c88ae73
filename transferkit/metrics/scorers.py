"""Unsupervised model-selection scorers for domain adaptation (higher is better).

They live in :mod:`transferkit.train.selection`, beside the callback that selects checkpoints
with them (training comes before metrics in the one-way import rule); this module keeps their
public names.
"""

from ..train.selection import (  # noqa: F401
    SelectionContext,
    dev_risk,
    dev_score,
    entropy_score,
    importance_weights,
    iwcv_risk,
    iwcv_score,
    snd_score,
)

__all__ = ["SelectionContext", "dev_risk", "dev_score", "entropy_score", "importance_weights", "iwcv_risk",
           "iwcv_score", "snd_score"]
