"""TENT: test-time entropy minimisation of the normalisation layers' affine parameters.

Wang et al. (ICLR 2021): normalise with the test batch's statistics (test-time BatchNorm,
``prior=0``) and take ``steps`` gradient steps per batch on the mean prediction entropy

.. math::

    \\mathcal{L}(x) = \\frac{1}{n} \\sum_i H\\bigl(\\mathrm{softmax}(f_\\theta(x_i))\\bigr),

with respect to the scale and shift (:math:`\\gamma, \\beta`) of every normalisation layer
(BatchNorm, LayerNorm, GroupNorm); every other parameter is frozen. The logits returned for a
batch are those of the forward pass the (last) update is computed from, as in the reference
implementation, so adapting costs one forward and one backward pass per step. Defaults are the
paper's CIFAR settings: Adam, learning rate 1e-3, one step per batch, online.

Reference: Wang, Shelhamer, Liu, Olshausen, Darrell. "Tent: fully test-time adaptation by
entropy minimization", ICLR 2021.
"""

from __future__ import annotations

import torch
from torch import nn

from .._registry import register
from ..errors import ConfigError
from .base import TTAMethod, check_value, norm_layers, softmax_entropy
from .norm import batch_norms, no_norm_error, replace_batch_norms

OPTIMIZERS = ("adam", "sgd")


def norm_affine_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the scale and shift of every normalisation layer."""
    out = []
    for mname, m in norm_layers(model):
        for pname in ("weight", "bias"):
            p = getattr(m, pname, None)
            if isinstance(p, nn.Parameter):
                out.append((f"{mname}.{pname}" if mname else pname, p))
    return out


class _GradientTTA(TTAMethod):
    """Shared by the gradient methods: the normalisation affine parameters trained by an
    optimizer on an unsupervised loss, BatchNorm on batch statistics."""

    needs_batch_statistics = True

    def __init__(self, model, *, lr: float = 1e-3, steps: int = 1, optimizer: str = "adam", momentum: float = 0.9,
                 mode: str = "online", batch_size: int = 64, copy: bool = True):
        self.lr = check_value("lr", lr, low=0, low_inclusive=False, example=1e-3)
        self.steps = check_value("steps", steps, low=1, high=1000, integer=True, example=1)
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={optimizer!r} is not valid; use 'adam' (TENT's CIFAR setting) or 'sgd' "
                              "(its ImageNet setting, lr 0.00025).")
        self.optimizer_name = optimizer
        self.momentum = check_value("momentum", momentum, low=0, high=1)
        super().__init__(model, mode=mode, batch_size=batch_size, copy=copy)

    def _configure(self) -> None:
        self.model.eval()  # dropout off; BatchNorm below always uses the batch statistics
        if not norm_layers(self.model):
            raise no_norm_error(self.name, "normalisation (BatchNorm, LayerNorm, GroupNorm)")
        self.bn_layers_ = [n for n, _ in batch_norms(self.model)]
        named = norm_affine_parameters(self.model)  # the same Parameter objects after the swap below
        replace_batch_norms(self.model, 0.0)
        if not named:
            raise ConfigError(f"{self.name}: the model's normalisation layers have no affine parameters "
                              "(affine=False), so there is nothing to train; use method='bn_adapt' or 't3a'.")
        for p in self.model.parameters():
            p.requires_grad_(False)
        for _, p in named:
            p.requires_grad_(True)
        self._names = [n for n, _ in named]
        self._params = [p for _, p in named]
        if self.optimizer_name == "adam":
            self.optimizer = torch.optim.Adam(self._params, lr=self.lr, betas=(self.momentum, 0.999))
        else:
            self.optimizer = torch.optim.SGD(self._params, lr=self.lr, momentum=self.momentum)

    def changed_parameters(self) -> list[str]:
        return list(self._names)

    def statistics(self) -> str:
        return (f"each test batch's own, in {len(self.bn_layers_)} BatchNorm layers" if self.bn_layers_
                else "none to change (no BatchNorm)")

    def _method_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def _load_method_state(self, state: dict) -> None:
        self.optimizer.state.clear()
        self.optimizer.load_state_dict(state["optimizer"])

    def _loss(self, logits: torch.Tensor) -> torch.Tensor | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _adapt(self, x):
        with torch.enable_grad():
            for _ in range(self.steps):
                logits = self.model(x)
                loss = self._loss(logits)
                if loss is not None:
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
        return logits.detach()


@register("tta", "tent")
class Tent(_GradientTTA):
    """TENT: entropy minimisation of the normalisation layers' affine parameters per test batch.

    BatchNorm uses the batch statistics; Adam lr 1e-3, one step per batch by default.

    Parameters
    ----------
    lr, steps, optimizer, momentum
        The optimizer of the affine parameters (``momentum``: Adam's beta1 or SGD's momentum).
    mode, batch_size, copy
        See :class:`~transferkit.tta.base.TTAMethod`.
    """

    name = "tent"

    def _loss(self, logits):
        return softmax_entropy(logits).mean()
