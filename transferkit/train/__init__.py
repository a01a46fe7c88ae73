"""The one Trainer, augmentation and run directories."""

from .augment import RandomAffine, make_augment
from .trainer import Trainer, seed_everything

__all__ = ["RandomAffine", "Trainer", "make_augment", "seed_everything"]
