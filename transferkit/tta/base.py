"""What every test-time adaptation method shares: the stream, the modes, ``reset()``, and the
statement of what changes.

A method wraps a trained classifier (any ``nn.Module`` from model-ready inputs to logits) and
sees the test data as a stream of unlabeled batches, in the order given. For each batch it
returns the logits of the model *as adapted so far* and then (for the gradient methods) updates
the few parameters it owns. ``mode="online"`` carries the adapted state from batch to batch
(the continual setting); ``mode="episodic"`` restores the initial state before every batch, so
each batch is adapted independently and the prediction of a batch does not depend on the
batches before it. ``reset()`` restores the exact initial state (parameters, buffers, optimizer
moments, the method's memory) at any time.

The wrapped model is a deep copy by default: the caller's model is never modified (pass
``copy=False`` to adapt it in place, as the reference implementations do).
"""

from __future__ import annotations

import copy as _copy

import numpy as np
import torch
from torch import nn

from .._validation import suggest
from ..errors import ConfigError, DataError

MODES = ("online", "episodic")

#: Normalisation layers whose affine parameters TENT-style methods adapt.
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def batch_norms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Normalisation layers, the test-time BatchNorm that replaces BatchNorm included."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, NORM_TYPES) or getattr(m, "is_tta_norm", False)]


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row entropy :math:`-\\sum_k p_k \\log p_k` of ``softmax(logits)`` (nats)."""
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1)


def check_value(where: str, value, *, low=None, high=None, integer: bool = False, low_inclusive: bool = True,
                example=None):
    """A finite number in range, one-line ``ConfigError`` otherwise (``where=value ...; use ...``)."""
    import math

    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (not integer or v == int(v))
        ok = ok and (low is None or (v >= low if low_inclusive else v > low)) and (high is None or v <= high)
    if not ok:
        rng = []
        if low is not None:
            rng.append(f"{'>=' if low_inclusive else '>'} {low:g}")
        if high is not None:
            rng.append(f"<= {high:g}")
        kind = "a whole number" if integer else "a finite number"
        raise ConfigError(f"{where}={value!r} is not valid; use {kind}{' ' + ' and '.join(rng) if rng else ''}"
                          + (f", e.g. {where.rsplit('.', 1)[-1]}={example}" if example is not None else "") + ".")
    return int(value) if integer else float(value)


def as_module(model, where: str = "model") -> nn.Module:
    """The ``nn.Module`` of ``model``: a module itself, or a fitted strategy whose predictor is
    one network (``finetune``, ``scratch``, ``source_free``, adaptation through the backbone:
    its ``model_``). Any other fitted strategy: pass ``transferkit.export.export_module(s)[0]``."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model_", None)
    if isinstance(inner, nn.Module) and hasattr(inner, "backbone"):
        return inner
    raise ConfigError(f"{where} must be a torch.nn.Module returning logits (or a fitted strategy with one network, "
                      f"e.g. finetune), got {type(model).__name__}; for other fitted strategies pass "
                      "transferkit.export.export_module(strategy)[0].")


class TTAMethod(nn.Module):
    """Base of the registered test-time adaptation methods (registry kind ``tta``).

    Parameters
    ----------
    model
        A trained classifier: ``model(x)`` gives logits ``(n, K)``.
    mode
        ``"online"`` (state carried across batches) or ``"episodic"`` (reset before every batch).
    batch_size
        Batch size of :meth:`predict_logits` (the stream of a dataset or array); a call of the
        module itself adapts on the batch it is given.
    copy
        Adapt a deep copy (default) so the caller's model is never modified.

    Attributes
    ----------
    model : nn.Module
        The adapted network.
    n_batches_ : int
        Batches seen since the last reset.
    """

    name = "tta"
    #: whether the method needs at least two samples per batch (batch statistics, entropy gradients)
    needs_batch_statistics = False

    def __init__(self, model, *, mode: str = "online", batch_size: int = 64, copy: bool = True):
        super().__init__()
        model = as_module(model)
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} is not valid; use 'online' (adapt across batches) or 'episodic' "
                              "(reset before every batch)." + suggest(str(mode), MODES))
        if not isinstance(copy, bool):
            raise ConfigError(f"copy={copy!r} is not a boolean; use copy=True (adapt a copy) or copy=False (in place).")
        self.mode = mode
        self.batch_size = check_value("batch_size", batch_size, low=1, integer=True, example=64)
        self.model = _copy.deepcopy(model) if copy else model
        self.n_batches_ = 0
        self._configure()
        self._initial = self._snapshot()

    # ----------------------------------------------------------------- per method
    def _configure(self) -> None:
        """Set requires_grad, modes and optimizers (called once, before the initial snapshot)."""

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every method overrides it
        raise NotImplementedError

    def changed_parameters(self) -> list[str]:
        """Names (in ``model.named_parameters()``) of the parameters this method updates."""
        return []

    def changed_buffers(self) -> list[str]:
        """Names of the buffers it changes (BatchNorm running statistics), empty when none."""
        return []

    def statistics(self) -> str:
        """Which normalisation statistics the adapted model uses."""
        return "the model's own (eval mode)"

    def describe(self) -> str:
        """One paragraph: what the method updates and what stays frozen."""
        params = dict(self.model.named_parameters())
        changed = self.changed_parameters()
        n_val = sum(params[n].numel() for n in changed)
        total = sum(p.numel() for p in params.values())
        what = (f"updates {len(changed)} parameter tensors ({n_val:,} of {total:,} values: "
                + ", ".join(changed[:6]) + (", ..." if len(changed) > 6 else "") + ")") if changed else \
            "updates no parameter (backprop-free)"
        return (f"{self.name} ({self.mode}): {what}; normalisation statistics: {self.statistics()}; "
                f"everything else is frozen{self._extra_description()}.")

    def _extra_description(self) -> str:
        return ""

    # ----------------------------------------------------------------- state
    def _method_state(self) -> dict:
        """Extra state of the method (optimizer moments, memories) for :meth:`reset`."""
        return {}

    def _load_method_state(self, state: dict) -> None:
        pass

    def _snapshot(self) -> dict:
        return {"model": _copy.deepcopy(self.model.state_dict()), "method": _copy.deepcopy(self._method_state())}

    def reset(self) -> TTAMethod:
        """Restore the exact initial state: the model's parameters and buffers, the optimizer
        and the method's memory (as right after construction). Returns ``self``."""
        self.model.load_state_dict(self._initial["model"])
        self._load_method_state(_copy.deepcopy(self._initial["method"]))
        self.n_batches_ = 0
        return self

    def close(self) -> None:
        """Detach what the method attached to the network (T3A's forward hook), so a model
        adapted in place (``copy=False``) behaves as a plain module again; the adapted weights
        stay. The wrapper cannot adapt after this."""
        self._closed = True

    # ----------------------------------------------------------------- the stream
    def _check_batch(self, x) -> None:
        n = len(x) if not isinstance(x, dict) else len(next(iter(x.values())))
        if n < 1:
            raise DataError(f"{self.name}: the test batch is empty; give at least one sample.")
        if n == 1 and self.needs_batch_statistics:
            raise DataError(f"{self.name} got a test batch of 1 sample: its batch statistics and entropy gradient "
                            "are those of a single image; use batches of at least 16 samples (batch_size), or "
                            "method='t3a' (works per sample) or 'bn_adapt' with prior > 0.")

    def forward(self, x) -> torch.Tensor:
        """Logits of ``x`` (one test batch) from the model adapted so far; adapts on it."""
        if getattr(self, "_closed", False):
            raise ConfigError(f"{self.name}: this wrapper was closed; wrap the model again to adapt it.")
        self._check_batch(x)
        if self.mode == "episodic":
            self.reset()
        out = self._adapt(x)
        self.n_batches_ += 1
        return out

    def _device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def predict_logits(self, inputs, batch_size: int | None = None, prepare=None) -> np.ndarray:
        """Logits ``(n, K)`` of a stream: a tensor/array of model-ready inputs, or a
        :class:`~transferkit.data.DomainDataset` (prepared with ``prepare.preprocess``, by
        default the model's: a backbone or a ``TransferModel``), cut into consecutive batches
        of ``batch_size`` (default: the method's) in the order given."""
        bs = self.batch_size if batch_size is None else check_value("batch_size", batch_size, low=1, integer=True)
        dev = self._device()
        prep = self.model if prepare is None else prepare
        if hasattr(inputs, "inputs") and hasattr(inputs, "modality"):  # a DomainDataset
            if not hasattr(prep, "preprocess"):
                raise ConfigError(f"{self.name}: the model has no preprocess(); pass model-ready tensors instead of "
                                  "a dataset, or prepare=<its backbone>.")
            ds = inputs
            n = len(ds)

            def batch(s, e):
                raw = ds.inputs[s:e] if isinstance(ds.inputs, np.ndarray) else [ds.inputs[i] for i in range(s, e)]
                return prep.preprocess(raw)
        else:
            X = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs, dtype=np.float32))
            n = len(X)

            def batch(s, e):
                return X[s:e]
        if n == 0:
            raise DataError(f"{self.name}: the inputs are empty; give at least one sample.")
        out = []
        starts = list(range(0, n, bs))
        if self.needs_batch_statistics and len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()  # a last batch of one sample joins the one before it
        for i, s in enumerate(starts):
            e = starts[i + 1] if i + 1 < len(starts) else n
            xb = batch(s, e)
            xb = xb.to(dev) if isinstance(xb, torch.Tensor) else prep.move_inputs(xb, dev)
            out.append(self(xb).detach().float().cpu())
        return torch.cat(out).numpy()

    def predict(self, inputs, batch_size: int | None = None, prepare=None) -> np.ndarray:
        return self.predict_logits(inputs, batch_size, prepare).argmax(1)

    def predict_proba(self, inputs, batch_size: int | None = None, prepare=None) -> np.ndarray:
        z = self.predict_logits(inputs, batch_size, prepare).astype(np.float64)
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)
