"""Semi-supervised learning on the target: pseudo-labels, self-training, consistency."""

from .consistency import FixMatchLoss, FixMatchTerm
from .pseudo_label import SelfTrainingClassifier, select_pseudo_labels

__all__ = ["FixMatchLoss", "FixMatchTerm", "SelfTrainingClassifier", "select_pseudo_labels"]
