"""Pruning: structured channel pruning by a dependency graph, unstructured magnitude pruning,
and counted MACs/parameters.

- :func:`count_macs_params` counts multiply-accumulates of every ``Conv*d`` and ``Linear`` by
  forward hooks on a real forward pass (so the count follows what the model actually runs);
- :func:`prune_structured` removes whole channels with torch-pruning's dependency graph
  (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023) until the counted MACs
  (or parameters) fall to a target ratio; the pruned model is smaller and, unlike masking,
  actually cheaper to run;
- :func:`prune_unstructured` zeroes the globally smallest-magnitude weights (Han et al.,
  "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015). The
  tensors keep their dense shapes, so **no speed-up is claimed** for it: dense kernels do the same
  work on zeros. It is here to compare accuracy at a given sparsity.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._validation import check_choice, check_number, require
from ..errors import ConfigError

#: Counted ratios may miss the target by this much (absolute) and still count as reached; the
#: search below stops at the first step at or under the target, so in practice the ratio is
#: <= target, and this only absorbs float rounding.
MACS_TOLERANCE = 1e-6

_IMPORTANCES = ("magnitude", "taylor")


def _forward(model: nn.Module, example_input) -> Any:
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    if isinstance(example_input, dict):
        return model(**example_input)
    return model(example_input)


def _batch_size(example_input) -> int:
    x = example_input
    while isinstance(x, (tuple, list)):
        x = x[0]
    if isinstance(x, dict):
        x = next(iter(x.values()))
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim > 0 else 1


def count_macs_params(model: nn.Module, example_input) -> tuple[int, int]:
    """Multiply-accumulates per example and parameter count, **counted** on a forward pass.

    For a convolution with output ``(C_out, H_out, W_out)``, kernel ``k_h x k_w`` and ``g`` groups,
    ``MACs = C_out * H_out * W_out * (C_in / g) * k_h * k_w`` (1-d and 3-d alike); for a linear
    layer on an input with ``m`` rows per example, ``MACs = m * in_features * out_features``.
    Biases, normalization, activations and pooling are not counted (they are a small, memory-bound
    part of the cost, and counting them differently is what makes published MAC counts disagree).

    Parameters
    ----------
    model
        Any module; it is run once in eval mode under ``no_grad`` (its mode is restored).
    example_input
        A batch (a tensor, a tuple of positional arguments, or a dict of keyword arguments).
        MACs are divided by its batch size.

    Returns
    -------
    macs, params
        MACs per example (int) and the number of parameter elements (int; shared tensors once).
    """
    total = [0]

    def conv_hook(mod, inp, out):
        k = 1
        for s in mod.kernel_size:
            k *= int(s)
        total[0] += out.numel() * (mod.in_channels // mod.groups) * k

    def linear_hook(mod, inp, out):
        total[0] += out.numel() * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            _forward(model, example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return total[0] // _batch_size(example_input), int(params)


def _classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The layer(s) whose output width is the number of classes: the last Linear of the head."""
    head = getattr(model, "head", None)
    scope = head if isinstance(head, nn.Module) else model
    linears = [m for m in scope.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def _calibration_loss(model: nn.Module, calibration) -> torch.Tensor:
    if callable(calibration):
        return calibration(model)
    if isinstance(calibration, (tuple, list)) and len(calibration) == 2:
        x, y = calibration
        return nn.functional.cross_entropy(_forward(model, x), torch.as_tensor(y))
    raise ConfigError("calibration must be a batch (inputs, labels) or a callable loss_fn(model) -> scalar loss "
                      f"for importance='taylor', got {type(calibration).__name__}.")


def prune_structured(
    model: nn.Module,
    example_input,
    target_macs_ratio: float | None = None,
    target_params_ratio: float | None = None,
    importance: str = "magnitude",
    ignored_layers: Sequence[nn.Module] | None = None,
    iterative_steps: int = 20,
    max_channel_ratio: float = 0.9,
    calibration: tuple | Callable[[nn.Module], torch.Tensor] | None = None,
    global_pruning: bool = False,
) -> tuple[nn.Module, dict]:
    """Remove whole channels until the counted MACs (or parameters) are at most a target ratio.

    torch-pruning builds a dependency graph of the model, so that removing output channel ``c``
    of a convolution also removes channel ``c`` of its BatchNorm and input channel ``c`` of the
    next layer (the "group"). Each step ranks groups by importance and removes the lowest
    channels, following a linear schedule of channel ratios ``max_channel_ratio * i / steps``;
    after each step the MACs are counted with :func:`count_macs_params` and the search stops at
    the first step where ``macs_after / macs_before <= target`` (so the result is within one
    step of the target, from below; more steps, a closer fit).

    Importance of a group's channel ``c`` (summed over the group's tensors ``W``):

    - ``"magnitude"``: ``||W_c||_2`` (``MagnitudeImportance(p=2)``; Li et al., ICLR 2017);
    - ``"taylor"``: ``|sum W_c * dL/dW_c|``, the first-order change of the loss when the channel
      is removed (Molchanov et al., CVPR 2019); it needs a loss on a calibration batch before
      every step, from ``calibration``.

    Parameters
    ----------
    model
        The model to prune; it is **copied** (the original is left as it was). A
        :class:`~transferkit.nn.TransferModel` keeps its classifier's output width; the backbone's
        ``spec.feature_dim`` is updated when the features were pruned.
    example_input
        A preprocessed batch the model accepts (used to trace the graph and count MACs).
    target_macs_ratio, target_params_ratio
        At most one of them, in ``(0, 1]``: the counted MACs (or parameters) after pruning over
        before. Neither: ``target_macs_ratio=0.5``.
    importance
        ``"magnitude"`` or ``"taylor"``.
    ignored_layers
        Modules of the **given** model whose output channels must not be removed. Default: the
        classifier (the last ``Linear`` of ``model.head``, or of the model).
    iterative_steps
        Number of steps of the schedule (the granularity of the search).
    max_channel_ratio
        The channel ratio reached at the last step; the largest fraction of any layer's channels
        that may be removed.
    calibration
        For ``"taylor"``: a batch ``(inputs, labels)`` (cross-entropy) or ``loss_fn(model)``.
    global_pruning
        Rank channels across layers (``True``) or remove the same ratio from every layer.

    Returns
    -------
    pruned, report
        The pruned model (in the original's train/eval mode) and a dict with ``macs_before``,
        ``macs_after``, ``params_before``, ``params_after``, ``macs_ratio``, ``params_ratio``,
        ``target``, ``steps`` (steps taken) and ``importance``.

    Raises
    ------
    ConfigError
        Bad parameters, or the target cannot be reached within ``max_channel_ratio``.
    """
    tp = require("torch_pruning", "compress", "structured pruning")
    if target_macs_ratio is not None and target_params_ratio is not None:
        raise ConfigError(f"give one of target_macs_ratio={target_macs_ratio} or target_params_ratio="
                          f"{target_params_ratio}, not both.")
    if target_macs_ratio is None and target_params_ratio is None:
        target_macs_ratio = 0.5
    kind = "macs" if target_macs_ratio is not None else "params"
    target = check_number(f"target_{kind}_ratio", target_macs_ratio if kind == "macs" else target_params_ratio,
                          low=0, high=1, low_inclusive=False)
    check_choice("importance", importance, _IMPORTANCES)
    steps = check_number("iterative_steps", iterative_steps, low=1, high=10_000, integer=True)
    max_ratio = check_number("max_channel_ratio", max_channel_ratio, low=0, high=1, low_inclusive=False,
                             high_inclusive=False)
    if importance == "taylor" and calibration is None:
        raise ConfigError("importance='taylor' needs calibration=(inputs, labels) or a loss_fn(model); "
                          "pass one, or use importance='magnitude'.")

    was_training = model.training
    ignored = list(_classifier_layers(model) if ignored_layers is None else ignored_layers)
    # Deep-copy model and ignored layers together, so the ignored list points into the copy.
    memo: dict = {}
    pruned = copy.deepcopy(model, memo)
    ignored = [memo.get(id(m), m) for m in ignored]
    macs0, params0 = count_macs_params(pruned, example_input)
    with torch.no_grad():
        out0 = _forward(pruned.eval(), example_input)

    imp = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(
        pruned, example_input, importance=imp, pruning_ratio=max_ratio, iterative_steps=steps,
        ignored_layers=ignored, global_pruning=global_pruning,
    )
    base = macs0 if kind == "macs" else params0
    macs, params, taken = macs0, params0, 0
    for taken in range(1, steps + 1):
        if importance == "taylor":
            pruned.eval()  # BatchNorm statistics must not move while we only rank channels
            pruned.zero_grad()
            _calibration_loss(pruned, calibration).backward()
        pruner.step()
        macs, params = count_macs_params(pruned, example_input)
        if (macs if kind == "macs" else params) / base <= target + MACS_TOLERANCE:
            break
    else:
        raise ConfigError(
            f"target_{kind}_ratio={target} was not reached: at max_channel_ratio={max_ratio} the {kind} ratio is "
            f"{(macs if kind == 'macs' else params) / base:.3f}; raise max_channel_ratio or the target.")
    pruned.zero_grad(set_to_none=True)
    _sync_feature_dim(pruned)
    with torch.no_grad():
        out1 = _forward(pruned.eval(), example_input)
    if out1.shape != out0.shape:
        raise ConfigError(f"pruning changed the output shape from {tuple(out0.shape)} to {tuple(out1.shape)}; "
                          "put the classifier layer in ignored_layers (the default does).")
    pruned.train(was_training)
    report = {
        "macs_before": macs0, "macs_after": macs, "params_before": params0, "params_after": params,
        "macs_ratio": macs / macs0 if macs0 else 1.0, "params_ratio": params / params0 if params0 else 1.0,
        "target": target, "target_kind": kind, "steps": taken, "importance": importance,
    }
    return pruned, report


def _sync_feature_dim(model: nn.Module) -> None:
    """After pruning the backbone's last channels, its spec must say the new feature width
    (heads built later, feature caches and reports read it)."""
    bb, head = getattr(model, "backbone", None), getattr(model, "head", None)
    spec = getattr(bb, "spec", None)
    if spec is None or head is None:
        return
    first = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
    if first is not None:
        spec.feature_dim = int(first.in_features)


def prune_unstructured(model: nn.Module, sparsity: float = 0.5) -> float:
    """Zero the globally smallest-magnitude weights of every ``Conv*d`` and ``Linear``, in place.

    With all eligible weights ``w`` pooled, the ``k = round(sparsity * N)`` entries of smallest
    ``|w|`` are set to zero (``torch.nn.utils.prune.global_unstructured`` with L1 magnitude, then
    ``prune.remove`` so the zeros are baked into plain parameters, with no mask or hook left).
    Biases and normalization layers are kept.

    No speed-up is claimed: the tensors stay dense, and dense kernels do the same work on zeros.

    Parameters
    ----------
    model
        Pruned in place (copy it first to keep the dense model).
    sparsity
        Fraction of the eligible weights to zero, in ``[0, 1)``.

    Returns
    -------
    float
        The achieved sparsity: zero entries over all entries of the eligible weights (it counts
        weights that were already zero too).
    """
    from torch.nn.utils import prune

    sparsity = check_number("sparsity", sparsity, low=0, high=1, high_inclusive=False)
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    if not params:
        raise ConfigError(f"prune_unstructured: {type(model).__name__} has no Conv or Linear layer to prune.")
    cl = [m for m, _ in params if m.weight.ndim == 4 and m.weight.is_contiguous(memory_format=torch.channels_last)
          and not m.weight.is_contiguous()]
    with torch.no_grad():  # torch's pruning views the weights as vectors: a channels-last one (as trained) cannot
        for m in cl:
            m.weight.data = m.weight.data.contiguous()
    if sparsity > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(sparsity))
        for m, name in params:
            prune.remove(m, name)
    with torch.no_grad():
        for m in cl:  # back in the layout it came in
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    total = sum(m.weight.numel() for m, _ in params)
    return zeros / total
