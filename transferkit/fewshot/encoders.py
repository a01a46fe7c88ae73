"""Encoders that few-shot methods train or use: ``conv4`` for raw images, ``mlp`` for table rows
and cached features, ``identity`` for features used as they are.

``conv4`` is the few-shot literature's standard small network (Vinyals et al. 2016; Snell et al.
2017; Finn et al. 2017): four blocks of 3x3 convolution, BatchNorm, ReLU and 2x2 max-pooling,
flattened. On 28x28 inputs with ``hidden=32`` it gives 32 features (1x1 after four poolings);
``pool=True`` averages whatever spatial size is left instead, so any input size gives ``hidden``.

BatchNorm: every encoder keeps standard ``nn.BatchNorm`` layers; what happens to their statistics
inside an episode (batch statistics, running statistics, frozen) is decided and documented by each
method, not here.
"""

from __future__ import annotations

from torch import nn

from .._validation import check_number
from ..errors import ConfigError


def conv4(in_channels: int = 1, hidden: int = 32, pool: bool = False) -> nn.Module:
    """Four conv-BN-ReLU-maxpool blocks, flattened (``pool=True``: global average pooled)."""
    in_channels = check_number("encoder.in_channels", in_channels, low=1, high=64, integer=True)
    hidden = check_number("encoder.hidden", hidden, low=1, high=1024, integer=True)
    layers: list[nn.Module] = []
    c = in_channels
    for _ in range(4):
        layers += [nn.Conv2d(c, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(), nn.MaxPool2d(2)]
        c = hidden
    if pool:
        layers += [nn.AdaptiveAvgPool2d(1)]
    layers += [nn.Flatten()]
    return nn.Sequential(*layers)


def mlp(in_features: int, hidden: int = 256, depth: int = 2, out_features: int | None = None) -> nn.Module:
    """``depth`` Linear-BN-ReLU blocks of width ``hidden`` (the last of width ``out_features``)."""
    in_features = check_number("encoder.in_features", in_features, low=1, integer=True)
    hidden = check_number("encoder.hidden", hidden, low=1, high=65536, integer=True)
    depth = check_number("encoder.depth", depth, low=1, high=16, integer=True)
    out = hidden if out_features is None else check_number("encoder.out_features", out_features, low=1, integer=True)
    layers: list[nn.Module] = []
    c = in_features
    for i in range(depth):
        w = out if i == depth - 1 else hidden
        layers += [nn.Linear(c, w), nn.BatchNorm1d(w), nn.ReLU()]
        c = w
    return nn.Sequential(*layers)


def conv4_dim(image_size: int, hidden: int = 32, pool: bool = False) -> int:
    """Feature width of :func:`conv4` on square ``image_size`` inputs."""
    if pool:
        return hidden
    side = image_size
    for _ in range(4):
        side //= 2
    if side < 1:
        raise ConfigError(f"encoder conv4 needs images of at least 16x16 (four poolings); got {image_size}x{image_size}.")
    return hidden * side * side


ENCODERS = ("identity", "mlp", "conv4")
