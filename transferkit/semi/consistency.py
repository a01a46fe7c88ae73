"""Consistency regularization in the FixMatch style (Sohn et al., NeurIPS 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_number


class FixMatchLoss(nn.Module):
    """``mean_i 1[max p_w(i) >= tau] * CE(argmax p_w(i), z_s(i))``.

    ``p_w`` are the (detached) predictions on a weakly augmented view of each unlabeled
    sample and ``z_s`` the logits on a strongly augmented view: confident weak predictions
    become hard targets for the strong view. Returns ``{"loss", "fixmatch", "mask_rate"}``.

    Parameters
    ----------
    threshold
        Confidence ``tau`` (0.95 in the paper).
    weight
        Multiplier ``lambda_u`` of the unlabeled loss.
    """

    def __init__(self, threshold: float = 0.95, weight: float = 1.0):
        super().__init__()
        self.threshold = check_number("threshold", threshold, low=0, high=1)
        self.weight = check_number("weight", weight, low=0)

    def forward(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor) -> dict:
        with torch.no_grad():
            p = torch.softmax(logits_weak.detach().float(), dim=1)
            conf, target = p.max(1)
            mask = (conf >= self.threshold).float()
        ce = F.cross_entropy(logits_strong, target, reduction="none")
        term = (ce * mask).mean()
        return {"loss": self.weight * term, "fixmatch": term.detach(), "mask_rate": mask.mean()}
