"""Moved to :mod:`transferkit.artifacts`: the experiment runner writes a run's artifacts and the
report reads them, and the runner may not import the report (the report is the top layer).
This module keeps the old import path working."""

from __future__ import annotations

from ..artifacts import (  # noqa: F401
    FEATURES,
    MAX_NPZ_BYTES,
    PCA_COMPONENTS,
    PREDICTIONS,
    load_npz,
    save_domain_features,
    save_features,
    save_predictions,
    save_run_artifacts,
    strategy_features,
)

__all__ = ["FEATURES", "MAX_NPZ_BYTES", "PCA_COMPONENTS", "PREDICTIONS", "load_npz", "save_domain_features",
           "save_features", "save_predictions", "save_run_artifacts", "strategy_features"]
