"""ONNX files of a module (preprocessed inputs -> outputs), checked in onnxruntime.

One writer and one check for every exporter: ``transferkit export`` (a finished run's model) and
:mod:`transferkit.compress` (a pruned or distilled model). The legacy TorchScript-based exporter
(``dynamo=False``, opset 17) with a dynamic batch axis; the check runs the file in onnxruntime
on a batch and returns the largest absolute difference from PyTorch's outputs.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import ConfigError

#: Largest |difference| between the ONNX file's and PyTorch's outputs an export may have (FP32).
ONNX_TOLERANCE = 1e-4


def require_onnx() -> None:
    """A one-line :class:`ConfigError` naming the extra when onnx or onnxruntime is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install \"transferkit[deploy]\".") from None


def write_onnx(module: torch.nn.Module, x: torch.Tensor, path) -> None:
    """Write ``module`` (in eval mode, no gradients) traced on the batch ``x`` to ``path``; input
    ``"input"``, output ``"logits"``, the batch axis dynamic."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)


def check_onnx(path, module: torch.nn.Module, x: torch.Tensor) -> float:
    """``max |onnxruntime(path)(x) - module(x)|`` on the batch ``x`` (CPU execution provider)."""
    require_onnx()
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = module(x).float().numpy()
    return float(np.abs(got - ref).max())
