"""The contract every source-knowledge penalty keeps (registry kind ``penalty``).

A penalty is an :class:`torch.nn.Module` used as an extra loss term of the Trainer
(``Trainer(..., losses=[penalty])``). It is set up once, before fine-tuning starts, from the
model about to be fine-tuned and, where it needs them, the source data and the source task's
classifier ("old head")::

    pen = EWCPenalty(lam=100.0).attach(model, source=source_ds, source_head=(W, b))
    Trainer(model, groups, losses=[pen]).fit(train, val)

and then called once per step with a :class:`transferkit.train.trainer.StepContext`; it
returns a dict whose ``"loss"`` is the weighted term added to the cross-entropy and whose
other entries are detached 0-dim tensors for logging (the raw, unweighted term under the
penalty's registry name first). Everything the penalty remembers about the source (reference
weights, Fisher diagonals, the old head, stored source samples) lives in **buffers** (or a
frozen submodule), so ``.to()`` moves it and ``state_dict()`` checkpoints it. Return keys never
depend on ``train()``/``eval()``.

Parameter naming: the penalty addresses the model's parameters by their names in
``model.named_parameters()``; a buffer holding a copy of parameter ``backbone.stem.0.weight``
is called ``<prefix>__backbone__stem__0__weight`` (dots are not allowed in buffer names).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from ..._validation import check_number
from ...errors import ConfigError, DataError

__all__ = ["FrozenHead", "Penalty", "backbone_and_head_names", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The model under a DDP/accelerate wrapper (``.module``), else the model itself."""
    return getattr(model, "module", model)


def backbone_and_head_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """Parameter names of the pretrained part and of the new head.

    Uses the model's ``layer_groups()`` (the head is the last group, DESIGN habit 4); models
    without it count parameters whose name starts with ``head.`` as the head.
    """
    model = unwrap(model)
    if hasattr(model, "layer_groups"):
        groups = model.layer_groups()
        head = list(groups[-1][1])
        body = [n for _, names in groups[:-1] for n in names]
    else:
        names = [n for n, _ in model.named_parameters()]
        head = [n for n in names if n.startswith("head.")]
        body = [n for n in names if not n.startswith("head.")]
    return body, head


def _buffer_name(prefix: str, param_name: str) -> str:
    return f"{prefix}__{param_name.replace('.', '__')}"


class FrozenHead(nn.Module):
    r"""The source task's classifier, frozen: ``logits = f W^T + b`` with ``W``, ``b`` in buffers.

    Built from a ``(W, b)`` pair (the convention of ``Backbone.source_head``), an
    :class:`torch.nn.Linear`, or a head with an ``fc`` linear layer (:class:`LinearHead`).
    Any other module is deep-copied and frozen (its parameters stop requiring gradients,
    but gradients still flow *through* it to the features).
    """

    def __init__(self, head):
        super().__init__()
        self.module = None
        lin = head.fc if hasattr(head, "fc") and isinstance(head.fc, nn.Linear) else head
        if isinstance(lin, nn.Linear):
            W = lin.weight.detach().clone()
            b = lin.bias.detach().clone() if lin.bias is not None else torch.zeros(W.shape[0])
        elif isinstance(head, (tuple, list)) and len(head) == 2:
            W = torch.as_tensor(np.asarray(head[0]) if not isinstance(head[0], torch.Tensor) else head[0])
            b = torch.as_tensor(np.asarray(head[1]) if not isinstance(head[1], torch.Tensor) else head[1])
            W, b = W.detach().clone().float(), b.detach().clone().float()
            if W.ndim != 2 or b.shape != (W.shape[0],):
                raise DataError(f"source_head=(W, b) needs W of shape (K, d) and b of shape (K,), got "
                                f"{tuple(W.shape)} and {tuple(b.shape)}.")
        elif isinstance(head, nn.Module):
            self.module = copy.deepcopy(head).requires_grad_(False).eval()
            W = b = None
        else:
            raise ConfigError(f"source_head must be (W, b), an nn.Linear or an nn.Module, got {type(head).__name__}.")
        if W is not None:
            self.register_buffer("weight", W)
            self.register_buffer("bias", b)

    @property
    def num_classes(self) -> int | None:
        return int(self.weight.shape[0]) if self.module is None else getattr(self.module, "num_classes", None)

    def train(self, mode: bool = True):  # the old head never changes mode (dropout/BN stay in eval)
        return super().train(False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.module is not None:
            return self.module(f)
        return nn.functional.linear(f, self.weight.to(f.dtype), self.bias.to(f.dtype))


class Penalty(nn.Module):
    r"""Base class of the source-knowledge penalties.

    Subclasses set the class attributes below, implement :meth:`_attach` (record what the
    penalty remembers into buffers) and :meth:`compute` (the raw, unweighted term and extra
    log entries). :meth:`forward` multiplies by :attr:`strength` and builds the dict.

    Attributes
    ----------
    name : str
        Registry key; the raw term is logged under it.
    needs_source_data : bool
        ``attach`` needs labeled source samples (EWC's Fisher, replay's memory).
    needs_source_head : bool
        ``attach`` needs the source task's classifier (EWC, LwF, replay).
    """

    name = "penalty"
    needs_source_data = False
    needs_source_head = False

    def __init__(self):
        super().__init__()
        self._names: dict[str, list[str]] = {}
        self.attached_ = False

    # ------------------------------------------------------------------ setup
    @property
    def strength(self) -> float:  # pragma: no cover - overridden
        return 1.0

    def attach(self, model: nn.Module, *, source=None, source_head=None, seed: int = 0,
               batch_size: int = 64) -> Penalty:
        """Record the reference state from ``model`` (call before fine-tuning starts).

        Parameters
        ----------
        model
            The model about to be fine-tuned (a :class:`transferkit.nn.TransferModel`).
        source
            Labeled source :class:`transferkit.data.DomainDataset` (EWC, replay), else ``None``.
        source_head
            The source task's classifier over ``model.features``: ``(W, b)``, an ``nn.Linear``
            or a module (EWC, LwF, replay), else ``None``.
        seed
            Seeds any sampling the penalty does (Fisher labels, replay draws).
        batch_size
            Batch size for passes over the source data.
        """
        if self.needs_source_data:
            if source is None:
                raise ConfigError(
                    f"penalty {self.name!r} needs labeled source data; pass fit(..., source=<dataset>) "
                    "(or set 'source' in the experiment config).")
            if source.labels is None or not (source.labels >= 0).any():
                raise DataError(f"penalty {self.name!r}: source {source.name!r} has no labels.")
        if self.needs_source_head and source_head is None:
            raise ConfigError(
                f"penalty {self.name!r} needs the source task's classifier (source_head); give labeled source "
                "data so one can be fitted, or a backbone that carries its source classifier.")
        self._attach(unwrap(model), source=source, source_head=source_head, seed=seed, batch_size=batch_size)
        self.attached_ = True
        return self

    def _attach(self, model, *, source, source_head, seed, batch_size) -> None:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ buffers
    def _store(self, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        """Keep copies of ``tensors`` (parameter name -> tensor) as buffers under ``prefix``."""
        self._names[prefix] = list(tensors)
        for n, t in tensors.items():
            self.register_buffer(_buffer_name(prefix, n), t.detach().clone().contiguous())

    def _stored(self, prefix: str) -> Iterable[tuple[str, torch.Tensor]]:
        for n in self._names.get(prefix, ()):
            yield n, getattr(self, _buffer_name(prefix, n))

    def _require_attached(self) -> None:
        if not self.attached_:
            raise ConfigError(f"penalty {self.name!r} is not attached; call .attach(model, ...) before training.")

    # ------------------------------------------------------------------ step
    def compute(self, ctx) -> tuple[torch.Tensor, dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, ctx) -> dict:
        self._require_attached()
        raw, extra = self.compute(ctx)
        out = {"loss": self.strength * raw, self.name: raw.detach()}
        out.update({k: torch.as_tensor(v).detach() for k, v in extra.items()})
        return out

    def extra_repr(self) -> str:
        return f"strength={self.strength}, attached={self.attached_}"


def check_strength(name: str, value) -> float:
    return float(check_number(name, value, low=0))


def source_batches(model: nn.Module, source, batch_size: int, device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Preprocessed, labeled source batches ``(x, y)`` on ``device`` (unlabeled samples dropped)."""
    keep = np.flatnonzero(source.labels >= 0)
    for s in range(0, len(keep), batch_size):
        idx = keep[s : s + batch_size]
        sub = source.inputs[idx] if isinstance(source.inputs, np.ndarray) else [source.inputs[int(i)] for i in idx]
        x = model.move_inputs(model.preprocess(sub), device)
        yield x, torch.as_tensor(source.labels[idx], device=device)
