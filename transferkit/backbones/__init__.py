"""Backbones: ``create_backbone(name)`` over one registry.

Names
-----
- registered names: ``efficientnet_lite0`` (packaged ImageNet weights), ``minilm`` (packaged
  all-MiniLM-L6-v2), ``tiny_cnn``, ``tiny_mlp``, ``tiny_text`` (test nets);
- ``timm:<model>``: any timm model (hub weights online, ``weights=`` a local file offline);
- ``hf:<repo-or-local-path>``: a Hugging Face transformers encoder with its tokenizer/processor;
- ``file:<path.safetensors>``: a checkpoint saved by transferkit (architecture in its metadata)
  or any safetensors file with ``arch=`` naming the architecture.
"""

from __future__ import annotations

from .._registry import available, describe, get
from ..errors import ConfigError, WeightsError
from .base import Backbone, BackboneSpec, describe_groups, preprocess_images
from .vision import TimmBackbone, TinyCNN, TinyMLP, efficientnet_lite0, timm_backbone, tiny_cnn, tiny_mlp
from . import text as _text  # noqa: F401  registers minilm, tiny_text

PREFIXES = {
    "timm:": "any timm model; hub weights online, weights=<file> offline",
    "hf:": "a Hugging Face encoder (repo id or local folder), pooled output",
    "file:": "a safetensors checkpoint (architecture from its metadata or arch=)",
}


def create_backbone(
    name: str,
    num_classes: int | None = None,
    *,
    pretrained: bool = True,
    weights: str | None = None,
    image_size: int | None = None,
    arch: str | None = None,
    head: str = "linear",
    dropout: float = 0.0,
    **kwargs,
):
    """Create a backbone by name; with ``num_classes``, a :class:`TransferModel` with a new head.

    Parameters
    ----------
    name
        A registered name, or ``timm:<model>``, ``hf:<repo-or-path>``, ``file:<path>``.
    num_classes
        When given, return ``TransferModel(backbone, head)`` with a freshly initialized head.
    pretrained
        Load pretrained weights (``False``: same architecture, random initialization).
    weights
        A local weights file (safetensors, or a plain-tensor torch file).
    image_size
        Override the input side for image backbones (e.g. 64 for fast experiments).
    arch
        For ``file:``: the architecture to load the weights into, when not in the metadata.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone name must be a non-empty string, got {name!r}.")
    if name.startswith("timm:"):
        bb = timm_backbone(name[5:], pretrained=pretrained, image_size=image_size, weights=weights)
    elif name.startswith("hf:"):
        bb = _text.hf_backbone(name[3:], pretrained=pretrained, weights=weights, image_size=image_size, **kwargs)
    elif name.startswith("file:"):
        bb = _from_file(name[5:], arch=arch, image_size=image_size)
    else:
        factory = get("backbone", name)
        bb = factory(pretrained=pretrained, image_size=image_size, weights=weights, **kwargs)
    if num_classes is None:
        return bb
    from ..nn.model import TransferModel

    return TransferModel(bb, num_classes, head=head, dropout=dropout)


def resolve_backbone(backbone, pretrained: bool = True, image_size: int | None = None):
    """A backbone from a name, an instance, or a factory ``f(pretrained=...)``."""
    from torch import nn

    if isinstance(backbone, str):
        return create_backbone(backbone, pretrained=pretrained, image_size=image_size)
    if isinstance(backbone, nn.Module):
        return backbone
    if callable(backbone):
        return backbone(pretrained=pretrained)
    raise ConfigError(f"backbone={backbone!r} must be a name, a Backbone, or a factory f(pretrained=...).")


def _from_file(path: str, arch: str | None, image_size: int | None):
    from pathlib import Path

    from .weights import safetensors_metadata

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"file backbone {path!r} does not exist; check the path.")
    meta = safetensors_metadata(p) if p.suffix == ".safetensors" else {}
    arch = arch or meta.get("transferkit.backbone")
    if not arch:
        raise WeightsError(
            f"{path}: cannot tell the architecture; pass arch=<backbone name> (e.g. "
            "arch='timm:resnet18'), or save with transferkit.backbones.save_backbone which records it."
        )
    if image_size is None and meta.get("transferkit.image_size"):
        image_size = int(meta["transferkit.image_size"])
    bb = create_backbone(arch, pretrained=False, weights=str(p), image_size=image_size)
    bb.spec.name = f"file:{path}"
    return bb


def save_backbone(backbone: Backbone, path) -> None:
    """Save a backbone's weights as safetensors with its architecture in the metadata."""
    from safetensors.torch import save_file

    meta = {"transferkit.backbone": _arch_name(backbone)}
    if backbone.spec.input_size:
        meta["transferkit.image_size"] = str(backbone.spec.input_size[-1])
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    if isinstance(backbone, TimmBackbone):
        state = {k[len("model."):]: v for k, v in state.items()}
    save_file(state, str(path), metadata=meta)


def _arch_name(bb: Backbone) -> str:
    n = bb.spec.name
    if n.startswith("file:"):
        return bb.spec.extra.get("arch", n)
    return n


def list_backbones() -> dict[str, str]:
    """Registered backbone names and prefixes with one-line descriptions."""
    out = dict(describe("backbone"))
    out.update({p + "<...>": d for p, d in PREFIXES.items()})
    return out


__all__ = [
    "Backbone", "BackboneSpec", "TimmBackbone", "TinyCNN", "TinyMLP", "create_backbone",
    "describe_groups", "list_backbones", "preprocess_images", "save_backbone", "available",
    "efficientnet_lite0", "timm_backbone", "tiny_cnn", "tiny_mlp",
]
