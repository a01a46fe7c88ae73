"""The one Trainer, its callbacks, checkpoint selection, data loaders and run directories."""

from .augment import RandomAffine, make_augment
from .callbacks import EarlyStopping, MetricsLogger, ProgressLogger
from .checkpoint import Checkpointer
from .selection import SelectionCallback
from .trainer import Objective, StepContext, Trainer, seed_everything

__all__ = ["Checkpointer", "EarlyStopping", "MetricsLogger", "Objective", "ProgressLogger", "RandomAffine", "SelectionCallback",
           "StepContext", "Trainer", "make_augment", "seed_everything"]
