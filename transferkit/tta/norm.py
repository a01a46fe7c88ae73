"""Test-time BatchNorm: normalise each test batch with its own statistics.

A network trained on the source normalises with the source's running statistics; under
covariate shift those are wrong for the target. *Prediction-time* BatchNorm (Nado et al., 2020)
recomputes them on each test batch; Schneider et al. (2020) mix them with the source's as a
prior worth ``N`` batches:

.. math::

    \\bar\\mu = \\frac{N}{N+1}\\,\\mu_s + \\frac{1}{N+1}\\,\\mu_t, \\qquad
    \\bar\\sigma^2 = \\frac{N}{N+1}\\,\\sigma^2_s + \\frac{1}{N+1}\\,\\sigma^2_t

(:math:`\\mu_t, \\sigma^2_t` the batch mean and biased variance per channel, over the batch and
spatial dimensions; ``prior=0`` is pure batch statistics, as TENT uses). No parameter and no
running statistic changes: the source statistics stay in the buffers, so the method needs no
reset and a batch's prediction depends on that batch alone.

References: Nado et al. "Evaluating prediction-time batch normalization for robustness under
covariate shift", 2020. Schneider et al. "Improving robustness against common corruptions by
covariate shift adaptation", NeurIPS 2020. Li et al. "Revisiting batch normalization for
practical domain adaptation" (AdaBN), 2016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._registry import register
from ..errors import ConfigError
from .base import TTAMethod, batch_norms, check_value


class TestTimeBatchNorm(nn.Module):
    """A BatchNorm layer (1d/2d/3d) that normalises with the statistics of the batch it is
    given, mixed with its source running statistics at weight ``prior`` (see the module
    docstring). It keeps the replaced layer's parameters and buffers under the same names, so
    ``state_dict`` keys do not change; it never updates the buffers."""

    __test__ = False  # not a pytest class
    is_tta_norm = True  # a normalisation layer for tent.norm_affine_parameters

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, prior: float = 0.0):
        super().__init__()
        self.num_features, self.eps, self.affine = bn.num_features, bn.eps, bn.affine
        self.prior = float(prior)
        self.weight, self.bias = bn.weight, bn.bias  # the same Parameter objects (or None)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(bn, name, None))
        if self.prior > 0 and self.running_mean is None:
            raise ConfigError("prior > 0 needs the BatchNorm layers' running statistics, but a layer was built with "
                              "track_running_stats=False; use prior=0 (batch statistics only).")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prior == 0:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        dims = [0] + list(range(2, x.dim()))
        mu = x.mean(dims)
        var = x.var(dims, unbiased=False)
        a = self.prior / (self.prior + 1.0)
        mean = a * self.running_mean + (1 - a) * mu
        var = a * self.running_var + (1 - a) * var
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, prior={self.prior:g}"


def replace_batch_norms(model: nn.Module, prior: float = 0.0) -> list[str]:
    """Swap every BatchNorm layer of ``model`` (in place) for :class:`TestTimeBatchNorm`;
    returns the replaced layers' names."""
    names = []
    for name, bn in batch_norms(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, TestTimeBatchNorm(bn, prior))
        names.append(name)
    return names


def no_norm_error(method: str, what: str = "BatchNorm") -> ConfigError:
    return ConfigError(f"{method}: the model has no {what} layers, so there is nothing for it to adapt; use "
                       "method='t3a' (backprop-free, adjusts the last linear layer), or source-free SHOT "
                       "(strategy source_free) which adapts the whole feature extractor.")


@register("tta", "bn_adapt")
class BNAdapt(TTAMethod):
    """Test-time BatchNorm: each test batch normalised with its own statistics; no parameter changes.

    The batch statistics may be mixed with the source's at weight ``prior``.

    Parameters
    ----------
    model, mode, batch_size, copy
        See :class:`~transferkit.tta.base.TTAMethod` (the mode makes no difference here: the
        method keeps no state between batches).
    prior
        :math:`N`, the source statistics' weight in batches (0: batch statistics only;
        Schneider et al. found N of 8-32 best for batches of 1-8).
    """

    name = "bn_adapt"

    def __init__(self, model, *, prior: float = 0.0, mode: str = "online", batch_size: int = 64, copy: bool = True):
        self.prior = check_value("prior", prior, low=0, example=16)
        self.needs_batch_statistics = self.prior == 0
        super().__init__(model, mode=mode, batch_size=batch_size, copy=copy)

    def _configure(self) -> None:
        self.model.eval()
        if not batch_norms(self.model):
            raise no_norm_error(self.name)
        self.layers_ = replace_batch_norms(self.model, self.prior)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def statistics(self) -> str:
        if self.prior == 0:
            return f"each test batch's own, in {len(self.layers_)} BatchNorm layers"
        return (f"each test batch's mixed with the source's at prior N={self.prior:g}, in {len(self.layers_)} "
                "BatchNorm layers")

    @torch.no_grad()
    def _adapt(self, x):
        return self.model(x)
