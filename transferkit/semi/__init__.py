"""Semi-supervised learning on the target: pseudo-labels, self-training, consistency."""

from .consistency import FixMatchLoss
from .pseudo_label import SelfTrainingClassifier, select_pseudo_labels

__all__ = ["FixMatchLoss", "SelfTrainingClassifier", "select_pseudo_labels"]
