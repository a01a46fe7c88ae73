"""Diagnostics: negative transfer (paired test over seeds), sample efficiency and labels saved,
convergence speed, sharpness (top Hessian eigenvalue), forgetting per regularizer, the
Ben-David bound estimate; and ``run_diagnose``, behind ``transferkit diagnose``."""

from .bound import ben_david_bound
from .diagnose import run_diagnose
from .forgetting import format_forgetting_table, run_forgetting
from .negative_transfer import compare_scores, rising_val_loss, run_negative_transfer
from .sample_efficiency import (
    convergence_speed,
    labels_saved,
    run_sample_efficiency,
    scratch_equivalent,
    steps_to_accuracy,
)
from .sharpness import hessian_vector_product, model_sharpness, top_hessian_eigenvalue

__all__ = ["ben_david_bound", "compare_scores", "convergence_speed", "format_forgetting_table",
           "hessian_vector_product", "labels_saved", "run_forgetting",
           "model_sharpness", "rising_val_loss", "run_diagnose", "run_negative_transfer", "run_sample_efficiency",
           "scratch_equivalent", "steps_to_accuracy", "top_hessian_eigenvalue"]
