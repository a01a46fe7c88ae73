"""Narrow shims for broken environments.

The only shim today: PyPI's ``torchvision`` wheels are CUDA builds. Next to a CPU-only
``torch`` their compiled extension ``torchvision/_C.so`` cannot load, and ``import
torchvision`` then dies with ``operator torchvision::nms does not exist`` because
``torchvision._meta_registrations`` registers fake kernels for ops that were never defined.
timm and transformers import torchvision, so they die too.

The cure defines the schemas of the two ops that torchvision registers at import time
(``torchvision::nms`` and ``torchvision::qnms``) with :mod:`torch.library`, *only* when the
compiled ops cannot be loaded. Models and transforms then work; the detection ops themselves
and ``torchvision.io`` image decoding do not (use PIL).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import logging

_log = logging.getLogger(__name__)
_LIB = None  # keeps the torch.library.Library alive for the life of the process
_STATE: str | None = None


def ensure_torchvision() -> str:
    """Make ``import torchvision`` work on CPU-only torch, if torchvision is installed.

    Returns
    -------
    str
        One of ``"absent"`` (torchvision not installed), ``"imported"`` (already imported,
        nothing to do), ``"native"`` (compiled ops load; nothing done) or ``"patched"``
        (compiled ops failed to load; op schemas were defined).
    """
    global _LIB, _STATE
    if _STATE is not None:
        return _STATE
    if "torchvision" in sys.modules:
        _STATE = "imported"
        return _STATE
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        _STATE = "absent"
        return _STATE

    import torch

    pkg_dir = os.path.dirname(spec.origin)
    libs = [f for f in os.listdir(pkg_dir) if f.startswith("_C") and f.endswith((".so", ".pyd"))]
    if libs:
        try:
            torch.ops.load_library(os.path.join(pkg_dir, libs[0]))
            _STATE = "native"
            return _STATE
        except (OSError, RuntimeError):
            pass
    if _op_exists(torch, "nms"):
        _STATE = "native"
        return _STATE
    lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - deliberate
    for name in ("nms", "qnms"):
        if not _op_exists(torch, name):
            lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB = lib
    _log.info(
        "torchvision's compiled ops could not be loaded (a CUDA torchvision wheel beside a "
        "CPU-only torch?); transferkit defined placeholder schemas for torchvision::nms/qnms "
        "so models and transforms work. Detection ops and torchvision.io decoding will not."
    )
    _STATE = "patched"
    return _STATE


def _op_exists(torch, name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def one_blas_thread():
    """Context manager running BLAS/LAPACK on one thread.

    For small dense work (linear-classifier fits, Cholesky, covariance shrinkage): on our
    2-core machines multi-threaded OpenBLAS ran these 10-20x slower than one thread (a
    1280 x 1280 Cholesky 0.68 s vs 0.04 s; the bound estimate's 10 logistic fits 14 s vs
    0.7 s). Large GEMMs should keep all threads and are not wrapped.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
