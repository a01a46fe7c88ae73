"""A compressed model (pruned, distilled) to ONNX, checked in onnxruntime against PyTorch.

The file is written only when its outputs on the example batch are within
:data:`transferkit.nn.onnx.ONNX_TOLERANCE` (1e-4, FP32) of the model's; otherwise nothing is
written and the error gives the difference. INT8 models from :mod:`.quantize` are not exported
here: they are saved as ``.pt2`` (``save_quantized``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .._io import atomic_path
from ..errors import DataError
from ..nn.onnx import ONNX_TOLERANCE, check_onnx, require_onnx, write_onnx


def export_onnx(model: torch.nn.Module, example_input: torch.Tensor, path: str | os.PathLike,
                tolerance: float = ONNX_TOLERANCE) -> float:
    """Write ``model`` (preprocessed inputs -> logits, dynamic batch) to ``path`` as ONNX and
    return ``max |onnxruntime - PyTorch|`` on ``example_input``.

    Raises
    ------
    ConfigError
        onnx or onnxruntime is missing (the ``deploy`` or ``compress`` extra).
    DataError
        The difference exceeds ``tolerance``; ``path`` is then left as it was.
    """
    require_onnx()
    if not isinstance(example_input, torch.Tensor) or example_input.ndim < 2:
        got = getattr(example_input, "shape", example_input)
        raise DataError(f"example_input must be a batch tensor (n, ...), got {got!r}; give a few preprocessed rows "
                        "of the data.")
    was = model.training
    model.eval()
    x = example_input.detach().float().cpu()
    try:
        with atomic_path(Path(path)) as tmp:
            write_onnx(model, x, tmp)
            diff = check_onnx(tmp, model, x)
            if not diff <= tolerance:
                raise DataError(f"the ONNX export of the model differs from PyTorch by {diff:.2e} (more than "
                                f"{tolerance:g}) on the example batch; nothing was written to {str(path)!r}.")
    finally:
        model.train(was)
    return diff
