"""T3A: test-time template adjuster (backprop-free prototype adjustment of the classifier).

Iwasawa & Matsuo (NeurIPS 2021) replace the last linear layer's class weights by prototypes
built from the test stream itself. Each class starts with one *support*, its weight row
:math:`w_k`; every test sample's feature :math:`z` (the last layer's input) joins the supports
of the class the current classifier predicts, with its prediction entropy. Per class only the
``filter_k`` lowest-entropy supports are kept (``-1``: all), and the classifier is

.. math::

    s_k(z) = z^\\top \\frac{c_k}{\\lVert c_k \\rVert}, \\qquad
    c_k = \\sum_{j \\in S_k} \\frac{z_j}{\\lVert z_j \\rVert}

(the reference's normalisations; the bias is not used). Nothing in the network changes and no
gradient is computed: the cost is one forward pass and a ``(n, d) x (d, K)`` product. A class
the stream never predicts keeps its initial support, so a stream of a single class works.

The initial supports are labeled with their own class (the reference labels them by the
classifier's argmax of :math:`w_k`, which can leave a class without support).

Reference: Iwasawa, Matsuo. "Test-time classifier adjustment module for model-agnostic domain
generalization", NeurIPS 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._registry import register
from ..errors import ConfigError
from .base import TTAMethod, check_value, softmax_entropy


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier: ``model.head`` when it is (or ends in) an ``nn.Linear``, else the last
    ``nn.Linear`` registered in the model."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return "head", head
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
        return f"head.{len(head) - 1}", head[-1]
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ConfigError("t3a: the model has no nn.Linear layer; T3A adjusts a linear classifier on the last layer's "
                          "features. Use method='tent' or 'bn_adapt' for models with normalisation layers.")
    return found[-1]


@register("tta", "t3a")
class T3A(TTAMethod):
    """T3A: prototypes of confident test features replace the last linear layer (backprop-free).

    No network parameter changes.

    Parameters
    ----------
    filter_k
        Supports kept per class, the lowest-entropy ones (100; ``-1`` keeps all).
    mode, batch_size, copy
        See :class:`~transferkit.tta.base.TTAMethod`.
    """

    name = "t3a"

    def __init__(self, model, *, filter_k: int = 100, mode: str = "online", batch_size: int = 64, copy: bool = True):
        if filter_k != -1:
            filter_k = check_value("filter_k", filter_k, low=1, integer=True, example=100)
        self.filter_k = int(filter_k)
        super().__init__(model, mode=mode, batch_size=batch_size, copy=copy)

    def _configure(self) -> None:
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layer_name_, lin = last_linear(self.model)
        self._z = None

        def grab(_m, inp, _out):
            self._z = inp[0]

        self._hook = lin.register_forward_hook(grab)
        self._linear = lin
        self._init_memory()

    def close(self) -> None:
        self._hook.remove()
        super().close()

    def _init_memory(self) -> None:
        w = self._linear.weight.detach()
        k = w.shape[0]
        self.supports_ = w.clone()
        self.labels_ = torch.arange(k, device=w.device)
        self.entropies_ = softmax_entropy(self._linear(w)).detach()

    def _method_state(self) -> dict:
        return {"supports": self.supports_, "labels": self.labels_, "entropies": self.entropies_}

    def _load_method_state(self, state: dict) -> None:
        self.supports_, self.labels_, self.entropies_ = state["supports"], state["labels"], state["entropies"]

    def statistics(self) -> str:
        return "the model's own (eval mode)"

    def _extra_description(self) -> str:
        return (f"; the classifier {self.layer_name_} is replaced by per-class prototypes of the "
                f"{'all' if self.filter_k == -1 else self.filter_k} lowest-entropy test features seen so far "
                f"({len(self.supports_)} supports in memory)")

    def _select(self) -> None:
        if self.filter_k == -1:
            return
        keep = []
        for c in range(self._linear.out_features):
            idx = torch.nonzero(self.labels_ == c).flatten()
            if len(idx) > self.filter_k:
                idx = idx[torch.argsort(self.entropies_[idx], stable=True)[: self.filter_k]]
            keep.append(idx)
        keep = torch.cat(keep).sort().values
        self.supports_, self.labels_, self.entropies_ = self.supports_[keep], self.labels_[keep], self.entropies_[keep]

    @torch.no_grad()
    def _adapt(self, x):
        logits = self.model(x)
        z = self._z
        if z is None or z.dim() != 2 or z.shape[0] != logits.shape[0]:
            raise ConfigError(f"t3a: the input of {self.layer_name_!r} is not a (batch, features) matrix; T3A needs "
                              "a model whose last layer is a linear classifier on a feature vector.")
        if logits.shape[1] != self._linear.out_features:
            raise ConfigError(f"t3a: the model's output ({logits.shape[1]} columns) is not {self.layer_name_!r}'s "
                              f"({self._linear.out_features}); T3A needs the linear classifier to be the last layer.")
        z = z.detach()
        self.supports_ = torch.cat([self.supports_, z])
        self.labels_ = torch.cat([self.labels_, logits.argmax(1)])
        self.entropies_ = torch.cat([self.entropies_, softmax_entropy(logits)])
        self._select()
        k = self._linear.out_features
        onehot = F.one_hot(self.labels_, k).to(z.dtype)
        weights = F.normalize(self.supports_, dim=1).T @ onehot  # (d, K)
        return z @ F.normalize(weights, dim=0)
