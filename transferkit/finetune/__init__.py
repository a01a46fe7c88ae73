"""Fine-tuning from layer groups: freezing, per-group learning rates, layer-wise decay,
progressive unfreezing, BatchNorm freezing and learning-rate schedules; ``penalties``: the
regularizers that keep source knowledge (L2-SP, EWC, LwF, replay, BSS)."""

from .groups import (
    ProgressiveUnfreezer,
    apply_freeze,
    build_param_groups,
    frozen_bn_modules,
    parse_unfreeze,
    set_bn_eval,
)
from .schedule import make_schedule
from . import penalties  # noqa: F401,E402  (registers the ``penalty`` kind)

__all__ = [
    "ProgressiveUnfreezer", "apply_freeze", "build_param_groups", "frozen_bn_modules", "make_schedule",
    "parse_unfreeze", "set_bn_eval",
]
