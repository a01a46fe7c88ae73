"""The one Trainer, augmentation and run directories."""

from .augment import RandomAffine, make_augment
from .trainer import StepContext, Trainer, seed_everything

__all__ = ["RandomAffine", "StepContext", "Trainer", "make_augment", "seed_everything"]
