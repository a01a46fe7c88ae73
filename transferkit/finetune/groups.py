"""Layer groups -> which parameters train, at which learning rate.

A model exposes ``layer_groups()``: ``[(name, [param names])]`` from input to output, the head
last. Everything here is derived from that list (DESIGN habit 4).
"""

from __future__ import annotations

from torch import nn

from .._validation import check_number
from ..errors import ConfigError

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def parse_unfreeze(spec, n_backbone_groups: int | None, where: str = "unfreeze") -> int | None:
    """Number of backbone groups (counted from the top) that train: the one parser of
    ``unfreeze`` (the strategies' ``validate`` and their ``fit`` both use it).

    ``"all"`` -> all, ``"none"`` -> 0 (the head alone trains), ``"last:k"`` -> ``k``, an int
    ``k >= 0`` -> itself; ``k`` must not exceed ``n_backbone_groups``. With
    ``n_backbone_groups=None`` (the backbone is not built yet) only the syntax is checked and
    ``"all"`` gives ``None``. ``where`` names the parameter in messages.
    """
    import numpy as np

    fix = "use unfreeze: all, none or last:k (k backbone groups from the top, e.g. last:2)"
    if isinstance(spec, (bool, np.bool_)):
        raise ConfigError(f"{where}={spec!r} is not valid; {fix}.")
    if isinstance(spec, (int, np.integer)):
        k = int(spec)
    elif spec == "all":
        return n_backbone_groups
    elif spec == "none":
        k = 0
    elif isinstance(spec, str) and spec.startswith("last:"):
        try:
            k = int(spec[5:])
        except ValueError:
            raise ConfigError(f"{where}={spec!r}: k in 'last:k' must be a whole number; {fix}.") from None
    else:
        raise ConfigError(f"{where}={spec!r} is not valid; {fix}.")
    if k < 0:
        raise ConfigError(f"{where}={spec!r}: k must be >= 0; {fix}.")
    if n_backbone_groups is not None and k > n_backbone_groups:
        raise ConfigError(f"{where}={spec!r} asks for {k} groups but the backbone has {n_backbone_groups} layer "
                          f"groups; use last:k with k <= {n_backbone_groups}, or unfreeze: all.")
    return k


def apply_freeze(model: nn.Module, n_trainable_backbone_groups: int) -> list[bool]:
    """Set ``requires_grad`` per group: the head and the top ``k`` backbone groups train.

    Returns the per-group trainable flags (head included, last).
    """
    groups = model.layer_groups()
    params = dict(model.named_parameters())
    nb = len(groups) - 1
    flags = [i >= nb - n_trainable_backbone_groups for i in range(nb)] + [True]
    for (_, names), on in zip(groups, flags):
        for n in names:
            params[n].requires_grad_(on)
    return flags


def frozen_bn_modules(model: nn.Module, mode: str = "frozen_groups") -> list[nn.Module]:
    """BatchNorm modules whose running statistics must not update.

    ``mode``: ``"frozen_groups"`` (BN layers whose parameters are all frozen), ``"all"`` (every
    BN layer: the usual choice with small batches, affine parameters still train) or ``"none"``.
    """
    if mode == "none":
        return []
    if mode not in ("frozen_groups", "all"):
        raise ConfigError(f"freeze_bn={mode!r} is not valid; use 'frozen_groups', 'all' or 'none'.")
    out = []
    for m in model.modules():
        if isinstance(m, _BN):
            ps = list(m.parameters(recurse=False))
            if mode == "all" or not ps or not any(p.requires_grad for p in ps):
                out.append(m)
    return out


def set_bn_eval(modules: list[nn.Module]) -> None:
    """Put BN modules in eval mode (call after ``model.train()``) so statistics stay fixed."""
    for m in modules:
        m.eval()


def build_param_groups(
    model: nn.Module,
    lr: float,
    *,
    backbone_lr_mult: float = 1.0,
    layer_decay: float = 1.0,
    weight_decay: float = 0.0,
    include_frozen: bool = True,
) -> list[dict]:
    """Optimizer parameter groups, one per layer group, with discriminative learning rates.

    The head trains at ``lr``. Backbone group ``i`` of ``nb`` (0 = input side) trains at
    ``lr * backbone_lr_mult * layer_decay ** (nb - 1 - i)``: the top backbone group gets
    ``lr * backbone_lr_mult`` and each group below it ``layer_decay`` times less (ULMFiT's
    discriminative fine-tuning, BEiT's layer-wise decay). Biases and normalization weights
    (1-D tensors) get no weight decay. Frozen groups are included (their parameters get no
    gradient and so no update) so that progressive unfreezing needs no new optimizer.

    Each returned dict carries ``name`` and ``initial_lr`` for inspection and schedules.
    """
    check_number("lr", lr, low=0, low_inclusive=False)
    check_number("backbone_lr_mult", backbone_lr_mult, low=0)
    check_number("layer_decay", layer_decay, low=0, high=1, low_inclusive=False)
    check_number("weight_decay", weight_decay, low=0)
    groups = model.layer_groups()
    params = dict(model.named_parameters())
    nb = len(groups) - 1
    out = []
    for i, (name, names) in enumerate(groups):
        scale = 1.0 if i == nb else backbone_lr_mult * layer_decay ** (nb - 1 - i)
        ps = [params[n] for n in names if include_frozen or params[n].requires_grad]
        decay = [p for p in ps if p.ndim > 1]
        no_decay = [p for p in ps if p.ndim <= 1]
        for suffix, plist, wd in (("", decay, weight_decay), (".no_decay", no_decay, 0.0)):
            if plist:
                out.append({"params": plist, "lr": lr * scale, "initial_lr": lr * scale,
                            "weight_decay": wd, "name": name + suffix, "group_index": i})
    return out


class ProgressiveUnfreezer:
    """Unfreeze one more backbone group (top first) every ``every`` epochs (ULMFiT's gradual
    unfreezing). Epoch 0 trains the groups given by ``start``; call :meth:`on_epoch_start`."""

    def __init__(self, model: nn.Module, every: int, start: int = 0):
        self.model = model
        self.every = check_number("progressive_unfreeze", every, low=1, integer=True)
        self.start = start
        self.nb = len(model.layer_groups()) - 1
        self.history: list[tuple[int, int]] = []

    def n_unfrozen(self, epoch: int) -> int:
        return min(self.nb, self.start + epoch // self.every)

    def on_epoch_start(self, epoch: int) -> int:
        k = self.n_unfrozen(epoch)
        apply_freeze(self.model, k)
        self.history.append((epoch, k))
        return k
