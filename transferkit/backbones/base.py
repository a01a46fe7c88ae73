"""BackboneSpec, the Backbone module and layer groups.

A backbone maps a batch of raw inputs to a feature matrix ``(n, feature_dim)``. Its parameters
are partitioned into *layer groups*, ordered from input to output; freezing, per-group learning
rates, layer-wise decay and progressive unfreezing are all derived from that one list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError


@dataclass
class BackboneSpec:
    """What a backbone is: where it comes from and what it expects.

    Attributes
    ----------
    name
        Registry name or spec (``efficientnet_lite0``, ``timm:resnet18``, ``hf:path``...).
    modality
        ``"image"`` or ``"text"``.
    feature_dim
        Width of the feature vector the backbone returns.
    input_size
        ``(C, H, W)`` for images; ``None`` for text.
    mean, std
        Per-channel normalization applied after scaling pixels to [0, 1].
    pretrained
        Whether real pretrained weights were loaded.
    weights
        Where the weights came from (file, package or hub id).
    license
        Licence of the weights, when known.
    """

    name: str
    modality: str
    feature_dim: int
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    pretrained: bool = False
    weights: str | None = None
    license: str | None = None
    architecture: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _group_name(param_names: Sequence[str], wrapper: str = "") -> str:
    """A readable name for a group: the shared dotted prefix (``blocks.3``), or the joined
    top-level modules (``blocks.6+conv_head+bn2``) when they share none. ``wrapper`` (e.g.
    ``model.``) is stripped first."""
    names = [n[len(wrapper):] if wrapper and n.startswith(wrapper) else n for n in param_names]
    parts = [n.split(".")[:-1] for n in names]
    common: list[str] = []
    for toks in zip(*parts):
        if all(t == toks[0] for t in toks):
            common.append(toks[0])
        else:
            break
    if common:
        return ".".join(common)
    tops: list[str] = []
    for p in parts:
        key = ".".join(p[:2]) if len(p) > 1 and p[1].isdigit() else (p[0] if p else "")
        if key and key not in tops:
            tops.append(key)
    return "+".join(tops) if len(tops) <= 4 else f"{tops[0]}..{tops[-1]}"


class Backbone(nn.Module):
    """A pretrained (or random) trunk returning features.

    Subclasses implement :meth:`forward` on preprocessed tensors, :meth:`preprocess` on raw
    inputs, and :meth:`_raw_groups`.
    """

    spec: BackboneSpec

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.spec = spec

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    # ----------------------------------------------------------------- inputs
    def preprocess(self, inputs) -> Any:
        """Raw inputs (a batch) -> what :meth:`forward` takes."""
        if self.spec.modality == "image":
            return preprocess_images(inputs, self.spec)
        raise NotImplementedError

    def move_inputs(self, batch, device):
        if isinstance(batch, dict):
            return {k: v.to(device) for k, v in batch.items()}
        return batch.to(device)

    #: The classifier of the source task, when the backbone keeps it: ``(weight (K, d), bias (K,))``.
    source_head: tuple[torch.Tensor, torch.Tensor] | None = None

    def source_probs(self, features):
        """Source-task class probabilities ``softmax(f W^T + b)`` from features ``(n, d)``, or
        ``None`` when the backbone carries no source classifier (then LEEP/NCE fall back to N-LEEP)."""
        if self.source_head is None:
            return None
        w, b = self.source_head
        logits = torch.as_tensor(features, dtype=torch.float32) @ w.T + b
        return torch.softmax(logits, dim=1).numpy()

    # ----------------------------------------------------------------- groups
    def _raw_groups(self) -> list[list[str]]:
        """Parameter names per group, input to output. Default: one group."""
        return [[n for n, _ in self.named_parameters()]]

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Ordered ``(group_name, parameter_names)`` from input to output.

        Every parameter of the backbone is in exactly one group (checked here).
        """
        groups = [g for g in self._raw_groups() if g]
        seen: dict[str, int] = {}
        for gi, g in enumerate(groups):
            for n in g:
                if n in seen:
                    raise ConfigError(f"backbone {type(self).__name__}: parameter {n!r} is in layer groups {seen[n]} "
                                      f"and {gi}; each parameter belongs to exactly one group (fix its _raw_groups).")
                seen[n] = gi
        missing = [n for n, _ in self.named_parameters() if n not in seen]
        if missing:
            raise ConfigError(f"backbone {type(self).__name__}: parameters {missing[:5]} are in no layer group; "
                              "every parameter belongs to exactly one group (fix its _raw_groups).")
        wrapper = getattr(self, "_group_wrapper", "")
        return [(_group_name(g, wrapper), g) for g in groups]


def preprocess_images(inputs, spec: BackboneSpec) -> torch.Tensor:
    """Images in [0, 1], ``(n, H, W)`` / ``(n, H, W, C)`` (array or list) -> normalized NCHW.

    Grayscale is repeated to the backbone's channels; the spatial size is resized (bilinear,
    antialiased) to ``spec.input_size``.
    """
    if isinstance(inputs, torch.Tensor):
        x = inputs.float()
    else:
        if isinstance(inputs, (list, tuple)):
            shapes = {np.shape(a) for a in inputs}
            if len(shapes) > 1:
                raise DataError(
                    f"images in one batch have different shapes {sorted(shapes)[:3]}; "
                    "resize them to one size when loading (image folders do this)."
                )
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        x = x.permute(0, 3, 1, 2)
    else:
        raise DataError(f"expected images of shape (n, H, W) or (n, H, W, C), got {tuple(x.shape)}.")
    c, h, w = spec.input_size
    if x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 4 and c == 3:
        x = x[:, :3]
    elif x.shape[1] == 3 and c == 1:
        x = x.mean(1, keepdim=True)
    if x.shape[1] != c:
        raise DataError(f"images have {x.shape[1]} channels, backbone {spec.name!r} expects {c}.")
    if x.shape[-2:] != (h, w):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    if spec.mean is not None:
        mean = torch.tensor(spec.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


def describe_groups(model: nn.Module) -> str:
    """A table of layer groups: index, name, #tensors, #parameters, trainable."""
    groups = model.layer_groups()
    params = dict(model.named_parameters())
    lines = [f"{'#':>3}  {'group':<28} {'tensors':>7} {'params':>10}  trainable"]
    for i, (name, names) in enumerate(groups):
        n = sum(params[p].numel() for p in names)
        tr = sum(params[p].requires_grad for p in names)
        lines.append(f"{i:>3}  {name:<28} {len(names):>7} {n:>10,}  {tr}/{len(names)}")
    return "\n".join(lines)
