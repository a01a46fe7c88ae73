"""INT8 quantization: post-training static (PT2E, x86) for CNNs, dynamic (torchao) for Linear layers.

Static INT8 (:func:`quantize_static_int8`) follows the PT2E flow that replaces eager/FX
quantization in PyTorch 2.x: ``torch.export`` the FP32 model, ``prepare_pt2e`` with torchao's
``X86InductorQuantizer`` (observers on activations, per-channel symmetric int8 weights), run a
few calibration batches so the observers see the activation ranges, then ``convert_pt2e``.
Each activation ``a`` becomes ``q = clamp(round(a / s) + z, 0, 255)`` (uint8, per tensor; ``s``,
``z`` from a histogram observer) and each weight row ``W_c`` becomes
``clamp(round(W_c / s_c), -128, 127)`` with ``s_c = max|W_c| / 127.5`` (per output channel).

The converted graph is a *reference* graph: quantize/dequantize ops around FP32 convolutions.
Run eagerly it is **slower** than FP32 (the trap users of PyTorch quantization report; measured
here about 2x slower on a small CNN). :func:`lower_to_x86` (or ``lower=True``) rewrites the
q/dq patterns into oneDNN int8 kernels (``onednn.qconv_pointwise``, ``onednn.qlinear_pointwise``):
that graph is the one to time.

Dynamic INT8 (:func:`quantize_dynamic_int8`) quantizes Linear weights per row ahead of time and
activations per token at run time (torchao's ``Int8DynamicActivationInt8WeightConfig``); it needs
no calibration and suits Linear-heavy models (text encoders, heads).

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018; the PyTorch tutorial "PyTorch 2 Export Post
Training Quantization" and "PyTorch 2 Export Quantization with X86 Backend through Inductor".
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .._validation import check_number, require
from ..errors import ConfigError, DataError

#: Engines under which the x86 quantizer's int8 kernels (oneDNN / FBGEMM) exist.
X86_ENGINES = ("x86", "onednn", "fbgemm")


def _supported_engines() -> list[str]:
    # one seam for tests: torch.backends.quantized.supported_engines is a read-only property
    return list(torch.backends.quantized.supported_engines)


def check_backend() -> str:
    """The quantized engine static INT8 will use on this CPU, or a one-line :class:`ConfigError`.

    The x86 quantizer targets the ``x86`` engine (oneDNN and FBGEMM underneath); an ARM or a
    build without them has none of ``x86``, ``onednn``, ``fbgemm`` in
    ``torch.backends.quantized.supported_engines``.
    """
    engines = _supported_engines()
    for e in X86_ENGINES:
        if e in engines:
            return e
    raise ConfigError(f"static INT8 needs a quantized engine among {', '.join(X86_ENGINES)}, but this CPU/torch "
                      f"build offers {engines}; use quantize_dynamic_int8, or run on an x86 CPU.")


def _args(example_input) -> tuple:
    args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise ConfigError("example_input must be a tensor (or a tuple of tensors) the model takes, got "
                          f"{type(example_input).__name__}.")
    return args


def _dynamic_batch(args: tuple) -> tuple:
    # the batch dimension stays symbolic so one exported graph serves batch 1 and batch 64
    return tuple({0: torch.export.Dim.AUTO} if a.ndim > 0 else None for a in args)


def _export(model: nn.Module, args: tuple, **kw):
    return torch.export.export(model, args, dynamic_shapes=_dynamic_batch(args), **kw)


def _batch_inputs(batch) -> tuple:
    """A calibration batch is the model's input, or ``(inputs, labels, ...)`` (labels ignored)."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return (batch[0],)
    raise DataError(f"a calibration batch must be a tensor or (inputs, labels), got {type(batch).__name__}.")


def quantize_static_int8(model: nn.Module, calibration_batches: Iterable, example_input, *,
                         lower: bool = False) -> torch.fx.GraphModule:
    """Post-training static INT8 through ``torch.export`` + PT2E with the x86 quantizer.

    Parameters
    ----------
    model
        An FP32 model; exported in eval mode (its mode is restored; it is not modified).
    calibration_batches
        Preprocessed batches (tensors, or ``(inputs, labels)``) run through the observed model to
        set the activation ranges: a few hundred target samples are enough (PyTorch's tutorials
        use ~100-1000). At least one batch.
    example_input
        A batch the model takes (its batch dimension is exported as dynamic).
    lower
        ``True``: return :func:`lower_to_x86` of the result (oneDNN int8 kernels, the fast form).

    Returns
    -------
    torch.fx.GraphModule
        The quantized graph (q/dq reference form, or lowered). Call it like the model.

    Raises
    ------
    ConfigError
        No x86 quantized engine on this CPU (see :func:`check_backend`), or a bad example input.
    DataError
        No calibration batch.
    """
    check_backend()
    require("torchao", "compress", "static INT8 quantization")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    args = _args(example_input)
    was_training = model.training
    try:
        graph = _export(model.eval(), args).module()
    finally:
        model.train(was_training)
    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    seen = 0
    with torch.no_grad():
        for batch in calibration_batches:
            prepared(*_batch_inputs(batch))
            seen += 1
    if not seen:
        # uncalibrated observers give scale 1 / zero point 0: a model that runs and outputs noise
        raise DataError("calibration_batches is empty; pass a few batches of target inputs (a few hundred samples) "
                        "so the activation ranges can be observed.")
    quantized = convert_pt2e(prepared)
    _drop_unused_tensors(quantized)
    return lower_to_x86(quantized, args) if lower else quantized


def quantize_qat_int8(model: nn.Module, train_batches, example_input, *, epochs: int = 3, lr: float = 1e-4,
                      weight_decay: float = 0.0, seed: int = 0, lower: bool = False) -> torch.fx.GraphModule:
    """Quantization-aware fine-tuning to static INT8 (PT2E ``prepare_qat_pt2e``, x86 quantizer).

    The FP32 model is exported in training form, fake-quantize modules are inserted where
    :func:`quantize_static_int8` would put observers (``is_qat=True``: BatchNorm stays a training
    BatchNorm folded into the fake-quantized convolution's weights), and the graph is fine-tuned
    with the cross-entropy of its fake-quantized logits (AdamW; straight-through gradients of the
    rounding, Jacob et al., 2018) for ``epochs`` passes over ``train_batches``, then converted.

    Parameters
    ----------
    model
        The FP32 model (not modified: a copy is exported).
    train_batches
        ``[(inputs, labels), ...]`` of preprocessed, *labeled* rows (labels ``>= 0``); visited in a
        seeded random order each epoch.
    example_input
        A batch the model takes (the batch dimension is exported as dynamic).
    epochs, lr, weight_decay, seed
        The fine-tuning budget; ``lr`` is small (the weights are already trained).
    lower
        ``True``: return :func:`lower_to_x86` of the result.

    Returns
    -------
    torch.fx.GraphModule
        The converted INT8 graph; ``qat_losses_`` holds the mean training loss of each epoch.

    Notes
    -----
    A plain loop over preprocessed tensors rather than :class:`~transferkit.train.Trainer`: the
    exported graph is neither a dataset-aware model nor checkpointable by the Trainer; the budget
    is a few epochs.
    """
    check_backend()
    require("torchao", "compress", "quantization-aware training")
    import torch.nn.functional as F
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    epochs = check_number("epochs", epochs, low=1, integer=True)
    lr = float(check_number("lr", lr, low=0))
    batches = [(x, y) for x, y in train_batches]
    if not batches:
        raise DataError("quantize_qat_int8: train_batches is empty; pass (inputs, labels) batches of labeled rows.")
    if any((y < 0).any() for _, y in batches):
        raise DataError("quantize_qat_int8: a batch holds unlabeled rows (label -1); pass labeled rows only.")
    args = _args(example_input)
    graph = _export(copy.deepcopy(model).train(), args).module()
    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(graph, quantizer)
    params = [p for p in prepared.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(int(seed))
    losses = []
    move_exported_model_to_train(prepared)
    for _ in range(epochs):
        total = 0.0
        for i in torch.randperm(len(batches), generator=g).tolist():
            x, y = batches[i]
            loss = F.cross_entropy(prepared(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total / len(batches))
    move_exported_model_to_eval(prepared)
    with torch.no_grad():
        quantized = convert_pt2e(prepared)
    _drop_unused_tensors(quantized)
    out = lower_to_x86(quantized, args) if lower else quantized
    out.qat_losses_ = losses
    return out


def _drop_unused_tensors(gm: torch.fx.GraphModule) -> None:
    """Remove the parameters and buffers no graph node reads.

    ``convert_pt2e`` folds each weight into a new int8 constant but keeps the FP32 original
    registered; left there, it is exported and saved too, and the INT8 file is larger than the
    FP32 one.
    """
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    names = [n for n, _ in gm.named_parameters(remove_duplicate=False)]
    names += [n for n, _ in gm.named_buffers(remove_duplicate=False)]
    for name in names:
        if name in used:
            continue
        owner, _, attr = name.rpartition(".")
        mod = gm.get_submodule(owner) if owner else gm
        mod._parameters.pop(attr, None)
        mod._buffers.pop(attr, None)
    gm.delete_all_unused_submodules()


def lower_to_x86(qmodel: torch.fx.GraphModule, example_input) -> torch.fx.GraphModule:
    """Replace the q/dq patterns of a converted PT2E graph by oneDNN int8 kernels.

    This mirrors torchao's ``lower_pt2e_quantized_to_x86`` (re-export with the composite ops
    decomposed, ``aten.t`` as ``permute``, inductor's freezing passes that match the
    quantized patterns, constant folding) but keeps the batch dimension dynamic: torchao's
    version fixes it to the example's batch size.
    """
    check_backend()
    if not torch.backends.mkldnn.is_available():
        raise ConfigError("lower_to_x86 needs oneDNN (torch.backends.mkldnn), which this torch build lacks; "
                          "use the unlowered model (lower=False).")
    from torch._export.utils import _is_cia_op
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    args = _args(example_input)
    table = torch.export.default_decompositions()
    for op in list(table):
        if not _is_cia_op(op):  # after autograd only the composite ops are decomposed
            del table[op]
    lowered = _export(qmodel, args, strict=True).run_decompositions(table).module()
    g = lowered.graph
    for node in list(g.nodes):
        if node.target == torch.ops.aten.t.default:  # the qlinear pattern matches a permute, not aten.t
            with g.inserting_before(node):
                perm = g.call_function(torch.ops.aten.permute.default, args=(node.args[0], [1, 0]))
            node.replace_all_uses_with(perm)
            g.erase_node(node)
    g.lint()
    lowered.recompile()
    freezing_passes(lowered, args)
    constant_fold(lowered)
    return lowered


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """Dynamic INT8 of every ``nn.Linear`` (torchao ``quantize_`` with
    ``Int8DynamicActivationInt8WeightConfig``), on a copy; the original is left as it was.

    Weights become ``Int8Tensor`` (int8 ``qdata`` per output row ``W_c ~ s_c q_c``); activations are
    quantized per row at run time, ``x ~ s_x q_x``, so ``y ~ s_x s_c (q_x . q_c) + b``. Other
    layers stay FP32.

    Returns
    -------
    nn.Module
        The quantized copy, in eval mode.
    """
    require("torchao", "compress", "dynamic INT8 quantization")
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise ConfigError(f"quantize_dynamic_int8: {type(model).__name__} has no nn.Linear layer; "
                          "use quantize_static_int8 for convolutional models.")
    q = copy.deepcopy(model).eval()
    # set_inductor_config=False: quantize_ must not change torch._inductor's global settings for the process
    quantize_(q, Int8DynamicActivationInt8WeightConfig(set_inductor_config=False),
              filter_fn=lambda m, _: isinstance(m, nn.Linear))
    return q


def save_quantized(qmodel: nn.Module, example_input, path: str | os.PathLike) -> Path:
    """Export a quantized model (static or dynamic) and write it with ``torch.export.save``.

    The file (``.pt2``) holds the graph and its int8 constants; :func:`load_quantized` reads it
    back without the Python class of the model. A graph lowered by :func:`lower_to_x86` cannot be
    saved (torch 2.13: ``NotImplementedError: Cannot access storage of OpaqueTensorImpl`` on the
    prepacked oneDNN weights): save the q/dq graph and lower after loading.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise ConfigError(f"save_quantized path {str(path)!r} must end in .pt2 (a torch.export archive).")
    if not path.parent.is_dir():
        raise ConfigError(f"save_quantized: folder {str(path.parent)!r} does not exist; create it first.")
    # a view would be saved with its whole storage (e.g. a full batch) as the sample input
    ep = _export(qmodel, tuple(a.detach().clone() for a in _args(example_input)))
    try:
        torch.export.save(ep, path)
    except NotImplementedError as exc:  # oneDNN's prepacked weights are opaque tensors with no storage
        raise ConfigError(f"save_quantized cannot serialize this model ({exc}): a model lowered by lower_to_x86 holds "
                          "prepacked oneDNN weights; save the model before lowering and lower it after "
                          "load_quantized.") from None
    return path


def load_quantized(path: str | os.PathLike) -> nn.Module:
    """The module of a ``.pt2`` written by :func:`save_quantized` (``torch.export.load(path).module()``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"quantized model file {str(path)!r} does not exist; write it with save_quantized.")
    # importing torchao registers the quantized_decomposed and Int8Tensor ops the graph calls
    require("torchao.quantization", "compress", "loading a quantized model")
    import torchao.quantization.pt2e  # noqa: F401

    return _safe_export_load(path).module()


def _safe_export_load(path: Path):
    """``torch.export.load`` without its pickle fallback: torch 2.13 retries a failed
    ``weights_only=True`` read with ``weights_only=False`` (arbitrary code from the file); here
    every read is ``weights_only=True``, and a file that needs more is refused."""
    from unittest import mock

    real = torch.load

    def weights_only(*a, **k):
        k["weights_only"] = True
        return real(*a, **k)

    import pickle
    import zipfile

    try:
        with mock.patch.object(torch, "load", weights_only):
            return torch.export.load(path)
    except (RuntimeError, ValueError, KeyError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        if isinstance(exc, (zipfile.BadZipFile, pickle.UnpicklingError)) or "weights_only" in str(exc) \
                or "Weights only" in str(exc):
            first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise DataError(f"{str(path)!r} is not a safe torch.export archive (it needs pickle to load, or it is "
                            f"damaged: {first}); write it again with save_quantized.") from None
        raise DataError(f"{str(path)!r} cannot be read as a torch.export archive ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]}); write it again with save_quantized.") from None


def latency(model, x, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of one forward ``model(x)`` under ``no_grad``, after ``warmup`` calls.

    The median (not the mean) resists the outliers of a shared machine; time with a fixed
    ``torch.set_num_threads`` and compare models measured in the same process.
    """
    repeats = check_number("repeats", repeats, low=1, integer=True)
    warmup = check_number("warmup", warmup, low=0, integer=True)
    args = x if isinstance(x, tuple) else (x,)
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            model(*args)
        for _ in range(repeats):
            t = time.perf_counter()
            model(*args)
            times.append(time.perf_counter() - t)
    return statistics.median(times)
