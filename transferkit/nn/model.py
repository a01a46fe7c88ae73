"""Heads and :class:`TransferModel`, a backbone with a new head."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_choice, check_number
from .vib import VIBHead


class LinearHead(nn.Module):
    """Dropout then a linear layer: ``logits = W dropout(f) + b``."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(f))


class MLPHead(nn.Module):
    """A bottleneck head: ``Linear -> BatchNorm -> ReLU -> Dropout -> Linear``."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


#: Head kinds by name; each is ``cls(in_features, num_classes, dropout=...)``. ``"vib"``: the
#: variational information bottleneck head (:mod:`transferkit.nn.vib`), trained with its
#: ``VIBLoss`` term.
HEADS = {"linear": LinearHead, "mlp": MLPHead, "vib": VIBHead}


class TransferModel(nn.Module):
    """``head(backbone(x))``; the head is the last layer group.

    Parameters
    ----------
    backbone
        A :class:`transferkit.backbones.Backbone`.
    num_classes
        Output width of the new head.
    head
        ``"linear"``, ``"mlp"`` or ``"vib"`` (see :data:`HEADS`), or a factory
        ``head(in_features, num_classes, dropout=...)`` for a head with other options, e.g.
        ``functools.partial(VIBHead, dim=32)``.
    dropout
        Dropout on the features before the head.
    """

    def __init__(self, backbone, num_classes: int, head: str = "linear", dropout: float = 0.0):
        super().__init__()
        if not callable(head):
            check_choice("head", head, HEADS)
        check_number("num_classes", num_classes, low=1, integer=True)
        check_number("dropout", dropout, low=0, high=1, high_inclusive=False)
        self.backbone = backbone
        make = head if callable(head) else HEADS[head]
        self.head = make(backbone.feature_dim, int(num_classes), dropout=dropout)
        self.num_classes = int(num_classes)

    @property
    def spec(self):
        return self.backbone.spec

    def preprocess(self, inputs):
        return self.backbone.preprocess(inputs)

    def move_inputs(self, batch, device):
        return self.backbone.move_inputs(batch, device)

    def features(self, x) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x) -> torch.Tensor:
        return self.head(self.backbone(x))

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Backbone groups (prefixed ``backbone.``), then ``head``: input to output."""
        groups = [(n, ["backbone." + p for p in ps]) for n, ps in self.backbone.layer_groups()]
        groups.append(("head", ["head." + n for n, _ in self.head.named_parameters()]))
        return groups
