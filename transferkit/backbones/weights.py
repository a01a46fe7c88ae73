"""Loading weight files safely: safetensors, or torch files without unpickling code."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import WeightsError


def load_state_dict_file(path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file with ``weights_only=True``.

    Never unpickles arbitrary objects: a pickle that holds code (or anything but tensors and
    plain containers) is refused with :class:`WeightsError`.
    """
    p = Path(os.fspath(path))
    if p.is_dir():
        raise WeightsError(f"weights file {str(p)!r} is a directory; give the path of a .safetensors file.")
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist; check the path.")
    return _check_tensors(p, _read_state(p))


def _read_state(p: Path) -> dict[str, torch.Tensor]:
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
            raise _not_safetensors(p, exc) from None
    try:
        import warnings

        with warnings.catch_warnings():  # torch's notes on the pickle protocol of a file we may refuse anyway
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError ...
        raise WeightsError(
            f"{p}: refused to load: not a safetensors file and not a plain tensor checkpoint "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}). transferkit never "
            "unpickles untrusted code; convert the weights with safetensors.torch.save_file."
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p}: expected a mapping of parameter names to tensors, got "
                           f"{type(obj).__name__}; save model.state_dict() with safetensors.torch.save_file.")
    return obj


def _not_safetensors(p: Path, exc: BaseException) -> WeightsError:
    with open(p, "rb") as fh:
        pickled = fh.read(1) == b"\x80"  # pickle protocol >= 2, e.g. a renamed torch.save file
    why = "it is a pickle, which transferkit never unpickles" if pickled else " ".join(str(exc).split())[:200]
    return WeightsError(
        f"{p}: not a valid safetensors file ({why}); the file is damaged, truncated or of another "
        "format: download it again, or re-save the weights with safetensors.torch.save_file."
    )


def _check_tensors(p: Path, state: dict) -> dict[str, torch.Tensor]:
    """Weights with NaN or infinity would give NaN features and a meaningless result."""
    for k, v in state.items():
        if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all()):
            raise WeightsError(f"{p}: tensor {k!r} holds NaN or infinite values; the weights are damaged "
                               "(or were saved from a diverged run): use another file.")
    return state


def safetensors_metadata(path) -> dict[str, str]:
    """The string metadata of a safetensors file (a damaged file is a :class:`WeightsError`)."""
    from safetensors import SafetensorError, safe_open

    p = Path(os.fspath(path))
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise _not_safetensors(p, exc) from None
    return {str(k): str(v) for k, v in dict(meta).items()}


def load_into(module: torch.nn.Module, state: dict, src, arch: str, *, strict: bool = True,
              ignore: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module``; a mismatch is one :class:`WeightsError` that names the file,
    the missing, unexpected and wrongly shaped tensors, and the fix.

    ``ignore``: key prefixes of ``state`` that may be absent from the module (e.g. a dropped
    pooler)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(k for k in set(state) - set(own) if not (ignore and k.startswith(ignore)))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if (strict and (missing or unexpected)) or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} of the wrong shape (file vs model, e.g. {'; '.join(shapes[:2])})")
        raise WeightsError(
            f"{os.fspath(src)}: does not load into {arch}: {', '.join(parts)}; is it the right architecture "
            "(and the same options, e.g. width or in_features)? Give weights saved from this backbone.")
    try:
        module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)
    except RuntimeError as exc:  # dtype or other mismatches the checks above do not see
        raise WeightsError(f"{os.fspath(src)}: does not load into {arch}: {' '.join(str(exc).split())[:200]}; "
                           "is it the right architecture?") from None
