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
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist; check the path.")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            with open(p, "rb") as fh:
                pickled = fh.read(1) == b"\x80"  # pickle protocol >= 2, e.g. a renamed torch.save file
            why = "it is a pickle, which transferkit never unpickles" if pickled else str(exc)
            raise WeightsError(
                f"{p}: not a valid safetensors file ({why}); the file is damaged, truncated or of another "
                "format: download it again, or re-save the weights with safetensors.torch.save_file."
            ) from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError ...
        raise WeightsError(
            f"{p}: refused to load: not a safetensors file and not a plain tensor checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). transferkit never "
            "unpickles untrusted code; convert the weights with safetensors.torch.save_file."
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p}: expected a mapping of parameter names to tensors.")
    return obj


def safetensors_metadata(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
