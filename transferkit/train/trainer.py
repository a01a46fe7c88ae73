"""The one Trainer: every deep method trains here.

``fit`` is the outline of training (set up, then per epoch: train, select, log, checkpoint);
the parts are a training step (:meth:`Trainer.training_step`), an epoch
(:meth:`Trainer.train_epoch`), evaluation (:meth:`Trainer.predict_logits`) and callbacks
(:mod:`.callbacks`: logging, progress, early stopping; :mod:`.selection`: the best epoch by a
labeled split or an unsupervised scorer; :mod:`.checkpoint`: atomic, resumable checkpoints).
Batches come from :mod:`.data` (an in-memory fast path for small data, data loaders with
workers for the rest). Device placement, DDP, mixed precision and gradient accumulation go
through Hugging Face ``accelerate``, so the same loop runs on the CPU, one GPU or several
processes (each process trains on its shard of every global batch; only the main process
writes).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _dist
from .._faults import fault_point
from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError
from ..nn.layout import to_channels_last
from . import callbacks, data
from .augment import make_augment
from .checkpoint import (  # noqa: F401  (the checkpoint helpers' historical home)
    CHECKPOINT,
    FORMAT,
    Checkpointer,
    _fsync_dir,
    _rng_state,
    _set_rng_state,
    _truncate,
    load_checkpoint,
    save_checkpoint,
)



class TrainingDivergedError(DataError, FloatingPointError):
    """Training produced a non-finite loss or non-finite weights (a learning rate that is too
    high, or inputs with huge values); raised instead of reporting the chance accuracy of a
    broken model."""


def check_device(device, param: str = "device") -> str | None:
    """A device this machine has, as a string (``None`` stays ``None``: the GPU when there is
    one, else the CPU). ``cuda`` without CUDA, ``cuda:N`` out of range or a name torch does not
    know is a :class:`ConfigError`; nothing silently falls back to the CPU."""
    if device is None:
        return None
    if isinstance(device, torch.device):
        device = str(device)
    fix = "use device: cpu, or leave device out to use a GPU when there is one"
    if not isinstance(device, str) or not device.strip():
        raise ConfigError(f"{param}={device!r} is not a device name; {fix}.")
    try:
        d = torch.device(device.strip())
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{param}={device!r} is not a torch device; {fix} (cuda or cuda:N on a machine with "
                          "an NVIDIA GPU).") from None
    if d.type == "cpu":
        return "cpu"
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{param}={device!r} but this machine has no usable CUDA GPU (torch "
                              f"{torch.__version__}); {fix}.")
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            raise ConfigError(f"{param}={device!r} but this machine has {n} CUDA device(s) (cuda:0 to cuda:{n - 1}); "
                              f"use one of them, or device: cpu, or leave device out.")
        return str(d)
    if d.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{param}={device!r} but Apple's MPS is not available here; {fix}.")
        return "mps"
    raise ConfigError(f"{param}={device!r}: transferkit trains on cpu, cuda or mps; {fix}.")


def _finite(v) -> bool:
    if isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError, OverflowError):
        return False


def _first_nonfinite(model: nn.Module) -> str | None:
    """Name of the first parameter or floating-point buffer holding NaN or infinity, else ``None``."""
    with torch.no_grad():
        named = [(n, t) for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_floating_point()]
        by_dtype: dict = {}
        for _, t in named:
            by_dtype.setdefault((t.dtype, t.device), []).append(t.reshape(-1))
        # one check per dtype over every tensor at once (thousands of small checks cost ~10 ms an epoch)
        if all(bool(torch.isfinite(torch.cat(ts)).all()) for ts in by_dtype.values()):
            return None
        for name, t in named:
            if not bool(torch.isfinite(t).all()):
                return name
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StepContext:
    """What an extra loss term sees at one training step (see ``Trainer(losses=...)``).

    Attributes
    ----------
    model
        The model being trained (wrapped by ``accelerate`` when on a device).
    inputs, labels
        The (augmented) labeled batch and its labels.
    features, logits
        ``model.features(inputs)`` and ``model.head(features)`` (the same pass that gives the
        classification loss; ``features`` is ``None`` for models without ``features``/``head``).
    target_inputs, target_features, target_logits, target_labels
        A target batch drawn each step when ``fit(..., target=...)`` is given (its inputs are
        preprocessed but *not* augmented; ``augment`` is there for losses that build their own
        views), else ``None``. ``target_labels`` are the target dataset's labels for the batch
        (-1 where unknown; all -1 for an unlabeled target): only semi-supervised terms read them.
    augment, generator
        The trainer's augmentation (``None`` when off) and its seeded generator.
    epoch, step, progress
        Position in training; ``progress`` runs from 0 to 1 over the whole budget.
    indices
        The labeled batch's row positions in the training dataset (a ``(n,)`` int64 tensor on
        the CPU): terms that need a per-row attribute the model does not see (the domain of each
        row of pooled sources, a sample weight) index their own array with it.
    """

    __slots__ = ("model", "inputs", "labels", "indices", "features", "logits", "target_inputs", "target_features",
                 "target_logits", "target_labels", "augment", "generator", "epoch", "step", "progress", "device")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


class _Step(nn.Module):
    """One training step's forward pass as a module: the model on the labeled batch (and on the
    target batch), and the loss terms. Wrapping this one module in DDP puts every trained
    parameter (the model's and a discriminator's inside a loss term) under one gradient
    all-reduce, with a single forward per backward however many passes a method makes."""

    def __init__(self, model: nn.Module, losses: list, split: bool, objective=None):
        super().__init__()
        self.model = model
        self.terms = nn.ModuleList([t for t in losses if isinstance(t, nn.Module)])
        self.losses, self.split = losses, split
        # the objective's own parameters (a projection head, a predictor, task heads) sit under the
        # one DDP wrapper with the model's
        self.objective = objective

    def forward(self, xb, yb, xt, ctx: StepContext, label_smoothing: float, scale: float):
        model = self.model
        logs: dict[str, torch.Tensor] = {}
        if self.objective is not None:  # a training loss other than cross-entropy (pretext, several tasks)
            out = self.objective(ctx)
            loss, logits, feats = out["loss"], out.get("logits"), out.get("features")
            for k, v in out.items():
                if k not in ("loss", "logits", "features") and torch.as_tensor(v).numel() == 1:
                    logs[k] = v
        elif self.split:  # features and logits from one pass, for the loss terms that need both
            feats = model.features(xb)
            logits = model.head(feats)
            loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
        else:
            feats, logits = None, model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
        if self.losses:
            ctx.features, ctx.logits = feats, logits
            if xt is not None:
                ctx.target_inputs = xt
                if self.split:
                    ctx.target_features = model.features(xt)
                    ctx.target_logits = model.head(ctx.target_features)
                else:
                    ctx.target_logits = model(xt)
            for term in self.losses:
                out = term(ctx)
                loss = loss + out["loss"]
                for k, v in out.items():
                    if k != "loss" and torch.as_tensor(v).numel() == 1:
                        logs[k] = v
        if scale != 1.0:  # this process's share of the global batch mean, or of an accumulated step
            loss = loss * scale
        return loss, logits, logs


class Objective(nn.Module):
    """The training loss of a fit when it is not the cross-entropy of ``model(inputs)`` against
    the labels (``Trainer(objective=...)``): a pretext task, several task heads, a contrastive loss.

    Subclasses implement :meth:`forward`, which takes the :class:`StepContext` (``inputs`` are
    the preprocessed, *not* augmented batch: an objective that needs views builds them with its
    own augmentation and ``ctx.generator``; ``labels`` and ``indices`` as for loss terms) and
    returns a dict with ``"loss"`` (a scalar), optionally ``"logits"`` (``(n, K)``: the
    epoch's ``train_accuracy`` is their argmax against ``ctx.labels``; without them the row
    has no accuracy), optionally ``"features"`` (what extra loss terms see as
    ``ctx.features``), and other scalars, logged as epoch means.

    Its parameters belong in the trainer's ``param_groups`` (they are moved to the device,
    put under the same DDP wrapper as the model and checkpointed with it).

    Attributes
    ----------
    needs_labels
        ``False``: the fit trains on every row of the training dataset, labeled or not
        (self-supervised pretext tasks); ``True`` (default): only on rows with a label >= 0.
    """

    needs_labels: bool = True

    def after_optimizer_step(self, progress: float) -> None:
        """Called after every optimizer step (``progress`` in [0, 1]): a target network's EMA."""


#: Multi-tensor optimizer updates (torch picks them only on CUDA by default; on the CPU they
#: cut EfficientNet-Lite0's AdamW step from ~19 to ~8 ms here).
_FOREACH = True


def _bf16_capable(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probe = getattr(torch._C, "_cpu", None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            fn = getattr(probe, name, None) if probe is not None else None
            if fn is not None and fn():
                return True
        return False
    return False


def auto_val_every(n_val: int, n_train_per_epoch: int, epochs: int, budget: float = 0.1) -> int:
    """Validate every N epochs so that validation costs about ``budget`` of the training work.

    Scoring one row (a forward pass in eval mode) costs about a third of what training on one
    row costs (forward and backward), so one validation of ``n_val`` rows costs about
    ``r = n_val / (3 n_train)`` of an epoch's training, and ``k = floor(budget * epochs / r)``
    validations (at least one: the last epoch is always scored) fit the budget; ``N =
    ceil(epochs / k)`` spreads them over the fit (epochs ``N-1, 2N-1, ...`` and the last; at
    most ``k`` of them). On the demo (100 training images, 401 validation images, 30 epochs)
    that is every 15th epoch (epochs 14 and 29); with as many training rows as validation
    rows, every 4th; with 4x more, every epoch.
    """
    epochs = max(int(epochs), 1)
    r = n_val / (3 * max(n_train_per_epoch, 1))
    k = max(1, math.floor(budget * epochs / r)) if r > 0 else epochs
    return int(min(max(1, math.ceil(epochs / k)), epochs))


class Trainer:
    """Train a model on labeled data (plus optional target batches); keep the selected epoch.

    Parameters
    ----------
    model
        A :class:`transferkit.nn.TransferModel` (or anything with ``preprocess``,
        ``move_inputs``, ``layer_groups`` and ``forward``; ``features`` and ``head`` when loss
        terms need features).
    param_groups
        Optimizer parameter groups (see :func:`transferkit.finetune.build_param_groups`).
    epochs, batch_size
        The training budget. ``batch_size`` is the *global* batch: under several processes
        each one trains on its share of every batch.
    steps_per_epoch
        ``None``: an epoch is one shuffled pass over the labeled training samples (a last
        batch that would give a process fewer than two samples is skipped). An integer: that
        many full batches from consecutive shuffled passes (domain adaptation counts epochs
        in steps over the larger domain).
    optimizer
        ``"adamw"`` or ``"sgd"`` (momentum 0.9, Nesterov).
    schedule, warmup_epochs
        Learning-rate schedule (see :func:`transferkit.finetune.make_schedule`).
    grad_clip
        Max global gradient norm of the model's parameters (``None``: no clipping).
    label_smoothing
        Cross-entropy label smoothing.
    augment
        ``"none"``, ``"light"``, ``"strong"`` or a dict; images only.
    early_stopping
        Patience in epochs on the selection score (``None``: train the full budget).
    monitor
        ``"val_accuracy"`` (higher is better) or ``"val_loss"``: the selection when ``fit``
        gets a labeled ``val`` split and no ``selection`` is given.
    selection
        A :class:`~transferkit.train.selection.SelectionCallback` that picks the returned
        epoch (an unsupervised scorer, a labeled source or target validation split, or the
        last epoch). Default: ``monitor`` on ``val`` when ``fit`` gets one, else the last
        epoch's weights.
    val_every, val_max_samples
        Score the selection every ``val_every`` epochs (and after the last) on at most
        ``val_max_samples`` rows of the validation split (a stratified sample, drawn once);
        defaults: every epoch, every row. ``val_every="auto"``: as rarely as keeps validation
        at about a tenth of the training work (:func:`auto_val_every`), or every epoch when
        ``early_stopping`` is on.
    callbacks
        Objects with optional ``on_fit_start``, ``on_epoch_start``, ``on_epoch_end`` and
        ``on_fit_end`` hooks (see :mod:`transferkit.train.callbacks`).
    bn_frozen
        A callable returning the BatchNorm modules to keep in eval mode while training.
    losses
        Extra loss terms added to the cross-entropy at every step: callables (usually
        ``nn.Module``, moved to the device) taking a :class:`StepContext` and returning a dict
        whose ``"loss"`` is the weighted term and whose other scalar entries are logged as
        epoch means. Their parameters, if any, must be in ``param_groups``. Regularizers that
        keep source knowledge (``finetune/penalties``) and deep DA losses (through
        ``fit(target=...)``) plug in here.
    run_dir
        Where ``metrics.jsonl`` is appended and ``checkpoint.pt`` is written (``None``:
        nowhere). Only the main process writes.
    checkpoint, checkpoint_every, async_checkpoint
        With a ``run_dir``, write ``run_dir/checkpoint.pt`` every ``checkpoint_every`` epochs
        and after the last (``"auto"``, the default: after an epoch that ends 30 s or more
        after the previous checkpoint, see :class:`~transferkit.train.checkpoint.Checkpointer`),
        atomically (temporary file, fsync, rename), in a background thread when
        ``async_checkpoint``: model, optimizer, schedule, every RNG stream (of every
        process), history, the selection's best weights and score, and the ``state_dict`` of
        every ``nn.Module`` loss term and of callbacks that have one. It is deleted when
        ``fit`` returns normally; a killed process leaves the last complete checkpoint for
        ``fit(..., resume=True)``.
    grad_accum_steps
        Accumulate gradients over this many batches per optimizer step.
    mixed_precision
        ``"no"``, ``"bf16"`` or ``"fp16"`` (CUDA only), through accelerate's autocast. On a
        device without native bf16 it is off, with a warning.
    num_workers
        Worker processes that decode and preprocess batches of data that streams (lazy image
        folders, text, large arrays); small in-memory arrays are preprocessed once instead.
    fault_prefix
        Name prefix of the kill points (``train.step``, ``train.epoch_logged``,
        ``train.epoch``) used by the crash-and-resume tests.
    objective
        An :class:`Objective` that replaces the cross-entropy of ``model(inputs)`` as the
        training loss (self-supervised pretext tasks, several task heads, a contrastive
        image-text loss); the extra ``losses`` are still added to it. With
        ``objective.needs_labels = False`` unlabeled rows train too. ``None``: cross-entropy.

    Notes
    -----
    Resuming restores every random stream, so on the CPU a resumed fit ends with the same
    weights and metrics as an uninterrupted one (up to the non-associativity of multithreaded
    float reductions, which is zero for a fixed thread count in practice). Under several
    processes the batches are drawn from the same seeded generator on every rank and split
    among them, so a run with the same global batch gives the single-process result up to
    float summation order (exactly for a model whose forward does not couple samples: with
    BatchNorm in training mode each process normalises with its own shard's statistics).
    """

    def __init__(self, model: nn.Module, param_groups: list[dict], *, epochs: int = 20, batch_size: int = 32,
                 optimizer: str = "adamw", schedule: str = "cosine", warmup_epochs: float = 1.0,
                 grad_clip: float | None = 1.0, label_smoothing: float = 0.0, augment="none",
                 early_stopping: int | None = None, monitor: str = "val_accuracy", callbacks=(),
                 bn_frozen: Callable[[], list[nn.Module]] | None = None, seed: int = 0,
                 device: str | None = None, run_dir: str | Path | None = None, progress: bool = True,
                 eval_batch_size: int = 64, tag: str = "", losses=(), checkpoint: bool = True,
                 selection=None, steps_per_epoch: int | None = None, val_every: int = 1,
                 val_max_samples: int | None = None, checkpoint_every: int | str = "auto", async_checkpoint: bool = True,
                 grad_accum_steps: int = 1, mixed_precision: str = "no", num_workers: int = 0,
                 fault_prefix: str = "train", objective: Objective | None = None):
        self.model = model
        if objective is not None and not callable(objective):
            raise ConfigError(f"objective={objective!r} must be a transferkit.train.Objective (a module taking a "
                              "StepContext and returning {'loss': ...}).")
        self.objective = objective
        self.epochs = check_number("epochs", epochs, low=1, integer=True)
        self.batch_size = check_number("batch_size", batch_size, low=1, integer=True)
        if early_stopping is not None:
            check_number("early_stopping", early_stopping, low=1, integer=True)
        if monitor not in ("val_accuracy", "val_loss"):
            raise ConfigError(f"monitor={monitor!r} must be 'val_accuracy' or 'val_loss'.")
        if steps_per_epoch is not None:
            check_number("steps_per_epoch", steps_per_epoch, low=1, integer=True)
        if val_every != "auto":
            check_number("val_every", val_every, low=1, integer=True)
        if checkpoint_every != "auto":
            check_number("checkpoint_every", checkpoint_every, low=1, integer=True)
        for name, v in (("grad_accum_steps", grad_accum_steps), ("eval_batch_size", eval_batch_size)):
            check_number(name, v, low=1, integer=True)
        check_number("num_workers", num_workers, low=0, integer=True)
        if val_max_samples is not None:
            check_number("val_max_samples", val_max_samples, low=1, integer=True)
        check_choice("mixed_precision", mixed_precision, ("no", "bf16", "fp16"))
        self.param_groups = param_groups
        self.optimizer_name, self.schedule, self.warmup_epochs = optimizer, schedule, warmup_epochs
        self.grad_clip, self.label_smoothing = grad_clip, label_smoothing
        self.augment = make_augment(augment)
        self.early_stopping, self.monitor = early_stopping, monitor
        self.callbacks = list(callbacks)
        self.bn_frozen = bn_frozen or (lambda: [])
        self.losses = list(losses)
        self.seed, self.run_dir, self.progress, self.tag = seed, run_dir, progress, tag
        self.eval_batch_size = eval_batch_size
        self.checkpoint = bool(checkpoint)
        self.selection = selection
        self.steps_per_epoch, self.val_every, self.val_max_samples = steps_per_epoch, val_every, val_max_samples
        self.checkpoint_every, self.async_checkpoint = checkpoint_every, bool(async_checkpoint)
        self.grad_accum_steps, self.num_workers, self.fault_prefix = grad_accum_steps, num_workers, fault_prefix
        if optimizer not in ("adamw", "sgd"):
            check_choice("optimizer", optimizer, ("adamw", "sgd"))
        for name, v in (("warmup_epochs", warmup_epochs), ("label_smoothing", label_smoothing),
                        ("grad_clip", grad_clip)):
            if v is not None and not _finite(v):
                raise ConfigError(f"{name}={v!r} is not a finite number; give a finite value.")
        for g in param_groups:
            lr = g.get("lr", 0.0)
            if not (_finite(lr) and float(lr) >= 0):
                raise ConfigError(f"lr={lr!r} (parameter group {g.get('name', '?')!r}) is not a finite number >= 0; "
                                  "use a learning rate such as 0.001.")
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        device = check_device(device)  # never a silent fallback to the CPU
        cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
        if device is not None and device.startswith("cuda:"):
            torch.cuda.set_device(torch.device(device))  # accelerate places a single process on the current GPU
        if mixed_precision == "fp16" and cpu:
            raise ConfigError("mixed_precision='fp16' needs a CUDA GPU; use 'bf16' or 'no' on the CPU.")
        self.mixed_precision = mixed_precision
        if mixed_precision == "bf16" and not _bf16_capable(torch.device("cpu" if cpu else (device or "cuda"))):
            import warnings

            warnings.warn("mixed_precision='bf16': this device has no native bfloat16, so training stays in "
                          "float32 (the option does nothing here).", stacklevel=2)
            self.mixed_precision = "no"
        # every trained parameter gets a gradient at every step (frozen ones are not trained); DDP
        # names the parameter when one does not
        ddp = DistributedDataParallelKwargs(find_unused_parameters=False)
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=self.mixed_precision, kwargs_handlers=[ddp])
        self.device = self.accelerator.device
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        if self.world > 1:
            _dist.clean_exit()
        if device is not None:
            want = torch.device(device)
            got = torch.device(self.device)
            if got.type != want.type or (want.index is not None and got.index not in (None, want.index)):
                raise ConfigError(f"device={device!r} was asked for but accelerate placed the model on {got}; "
                                  "use the device accelerate is configured for, or leave device out.")
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.should_stop = False
        self.start_epoch = 0
        self.val = None
        self._sources: dict[int, tuple] = {}
        self._trunk_cache: dict[int, tuple] = {}

    # ------------------------------------------------------------------ the outline
    def fit(self, train, val=None, *, target=None, resume=None) -> Trainer:
        """Train on the labeled samples of ``train``; select the epoch to keep.

        ``val``: a labeled validation split, scored each epoch (``monitor``) unless a
        ``selection`` was given. ``target``: a dataset a batch of the same size is drawn from
        at every step (with replacement) and handed to the extra ``losses`` (domain
        adaptation, consistency); only semi-supervised terms read its labels.

        ``resume``: ``True`` continues from ``run_dir/checkpoint.pt`` when it exists (from the
        epoch after the last checkpointed one; without a checkpoint training starts fresh); a
        path resumes from that checkpoint file; ``False`` always starts fresh; ``None``
        (default) resumes only inside :func:`transferkit.train.rundir.resuming` (what
        ``transferkit run --resume`` uses). The checkpoint must come from the same model,
        data sizes and budget, else :class:`~transferkit.errors.ConfigError`.
        """
        self._setup(train, val, target)
        callbacks.call(self._callbacks, "on_fit_start", self)
        self._resume(resume)
        callbacks.call(self._callbacks, "on_resume", self)
        try:
            for epoch in range(self.start_epoch, self.epochs):
                if self.should_stop:
                    break
                callbacks.call(self._callbacks, "on_epoch_start", self, epoch)
                row = self.train_epoch(epoch)
                self._end_epoch(epoch, row)
        except BaseException:
            if self._checkpointer is not None:  # an interrupted fit still leaves its last complete epoch
                try:
                    self._checkpointer.wait()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
            raise
        self._finish()
        return self

    # ------------------------------------------------------------------ set-up
    def _setup(self, train, val, target) -> None:
        from ..finetune import make_schedule

        seed_everything(self.seed)
        if self.objective is not None and not getattr(self.objective, "needs_labels", True):
            if len(train) == 0:
                raise DataError(f"training dataset {train.name!r} is empty; give it some rows.")
            self.train_data = train  # every row trains, labeled or not
            y_all = train.labels if train.labels is not None else np.full(len(train), -1, dtype=np.int64)
        else:
            y_all = self._labels(train, "training")
            keep = np.flatnonzero(y_all >= 0)
            self.train_data = train.subset(keep) if len(keep) < len(y_all) else train
            y_all = self.train_data.labels
        self.val, self.target = val, target
        if target is not None and len(target) == 0:
            raise DataError(f"target dataset {target.name!r} is empty; pass unlabeled target samples or target=None.")
        self._y = torch.as_tensor(np.asarray(y_all, dtype=np.int64))
        self._ty = None if target is None else torch.as_tensor(
            target.labels if target.labels is not None else np.full(len(target), -1), dtype=torch.long)
        self.history, self.best_epoch, self.stopped_early, self.should_stop, self.start_epoch = [], None, False, False, 0
        self._sources, self._trunk_cache = {}, {}
        self.gen = torch.Generator().manual_seed(self.seed)
        # a separate stream for target batches, so adding a target leaves the source order unchanged
        self.tgen = torch.Generator().manual_seed(self.seed + 1)
        # one process: augmentation shares the batch generator (as it always has); several: each
        # process augments from its own stream, and the batch order stays the same on every rank
        self.aug_gen = self.gen if self.world == 1 else torch.Generator().manual_seed(self.seed * 7919 + 104729 * (self.rank + 1))
        self.sampler = data.EpochSampler(len(self.train_data), self.batch_size, self.gen,
                                         steps=self.steps_per_epoch, world=self.world)
        self.optimizer_steps_per_epoch = max(1, math.ceil(len(self.sampler) / self.grad_accum_steps))
        self.total_steps = self.epochs * self.optimizer_steps_per_epoch
        self.opt = self._make_optimizer()
        self.sched = make_schedule(self.opt, self.total_steps, schedule=self.schedule,
                                   warmup_steps=int(round(self.warmup_epochs * self.optimizer_steps_per_epoch)))
        if getattr(getattr(self.model, "spec", None), "modality", None) == "image":
            self.model.to(memory_format=torch.channels_last)
        split = bool(self.losses) and hasattr(self.model, "features") and hasattr(self.model, "head")
        self._step_module = _Step(self.model, self.losses, split, self.objective)
        self._wrapped, self.opt = self.accelerator.prepare(self._step_module, self.opt)
        for term in [*self.losses, self.objective]:
            if isinstance(term, nn.Module):
                term.to(self.device)
        self._train_src = self._source(self.train_data)
        self._target_src = self._source(target) if target is not None else None
        self.step = 0
        # the callbacks, in the order they run at the end of an epoch
        sel = self.selection
        if sel is None and val is not None:
            from .selection import SelectionCallback

            n_val = min(len(val), self.val_max_samples or len(val))
            every = self.val_every
            if every == "auto":  # with early stopping, every epoch: its patience counts epochs of the curve
                every = 1 if self.early_stopping is not None else auto_val_every(
                    n_val, min(len(self.train_data), len(self.sampler) * self.batch_size), self.epochs)
            sel = SelectionCallback(self.monitor, every=every, max_samples=self.val_max_samples, seed=self.seed)
        self.val_every_ = getattr(sel, "every", None)
        self._selection = sel
        cbs = [sel] if sel is not None else []
        if self.early_stopping is not None and sel is not None:
            cbs.append(callbacks.EarlyStopping(self.early_stopping, sel))
        # selection and early stopping run before the row is logged; the user's callbacks and the
        # progress line after it (they see the logged row)
        self._builtin = cbs
        self._progress = callbacks.ProgressLogger(self.tag, self.epochs, self.progress)
        self._user = [*self.callbacks, self._progress]
        self._callbacks = [*self._builtin, *self._user]
        self._logger = callbacks.MetricsLogger(self.run_dir) if self.run_dir is not None else None
        self._checkpointer = (Checkpointer(Path(self.run_dir) / CHECKPOINT, self.checkpoint_every,
                                           self.async_checkpoint)
                              if self.run_dir is not None and self.checkpoint else None)
        self._fingerprint = self._make_fingerprint()

    def _source(self, dataset):
        """The batch source of ``dataset`` for this fit (built once per dataset object)."""
        hit = self._sources.get(id(dataset))
        if hit is not None and hit[0] is dataset:
            return hit[1]
        src = data.make_source(self.model, dataset, self.num_workers)
        self._sources[id(dataset)] = (dataset, src)
        return src

    # ------------------------------------------------------------------ an epoch
    def train_epoch(self, epoch: int) -> dict:
        """One epoch of training steps; returns the epoch's history row (before selection)."""
        model = self._wrapped
        model.train()
        for m in self.bn_frozen():
            m.eval()
        t0 = time.perf_counter()
        sums = torch.zeros(4, dtype=torch.float64)  # loss * n, correct, n, n with a scored label (this rank)
        extra: dict[str, float] = {}
        n_terms = 0
        global_batches = list(self.sampler.epoch())
        local = [data.shard(b, self.rank, self.world) for b in global_batches]
        accum = self.grad_accum_steps
        for i, (idx, xb) in enumerate(self._train_src.batches(local)):
            n_global = len(global_batches[i])
            if self.augment is not None and self.objective is None and isinstance(xb, torch.Tensor) and xb.ndim == 4:
                xb = self.augment(xb, self.aug_gen)  # an objective builds its own views from the plain batch
            xb = to_channels_last(self.model.move_inputs(xb, self.device))
            yb = self._y[idx].to(self.device)
            last_micro = (i + 1) % accum == 0 or i == len(local) - 1
            loss, logits, logs = self.training_step(xb, yb, idx, n_global, epoch, sync=last_micro)
            if logs is not None:
                for k, v in logs.items():
                    extra[k] = extra.get(k, 0.0) + float(v)
                n_terms += 1
            if last_micro:
                self._optimizer_step()
            if logits is not None:
                correct = float((logits.argmax(1) == yb).sum())
                n_scored = float((yb >= 0).sum()) if self.objective is not None else float(len(idx))
            else:
                correct = n_scored = 0.0
            sums += torch.tensor([loss * len(idx), correct, len(idx), n_scored], dtype=torch.float64)
            self._progress.tick(self, "train", i + 1, len(local))
            fault_point(f"{self.fault_prefix}.step")
        bad_param = _first_nonfinite(self.model)
        if bad_param is not None:  # the last step's update: caught before it is validated or saved
            raise self._diverged(f"weight {bad_param!r} became NaN or infinite", epoch)
        if self.world > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
        row = {"epoch": epoch, "train_loss": float(sums[0] / max(sums[2], 1))}
        if sums[3] > 0:  # an objective without logits (or with no labeled row) has no training accuracy
            row["train_accuracy"] = float(sums[1] / sums[3])
        row.update({"lr": self.opt.param_groups[-1]["lr"], "epoch_time": time.perf_counter() - t0})
        row.update({k: v / max(n_terms, 1) for k, v in extra.items()})
        return row

    def training_step(self, xb, yb, idx, n_global: int, epoch: int, sync: bool = True):
        """Forward and backward of one batch: ``(loss, logits, logged terms or None)``.

        ``n_global`` is the size of the global batch this process's ``idx`` belongs to: each
        process's loss is scaled so that the mean of the processes' gradients is the gradient
        of the global batch's mean loss.
        """
        xt = tlab = None
        ctx = None
        if self.losses or self.objective is not None:
            ctx = StepContext(model=self.model, inputs=xb, labels=yb, indices=torch.as_tensor(idx, dtype=torch.int64),
                              augment=self.augment,
                              generator=self.aug_gen, epoch=epoch, step=self.step,
                              progress=self.step / max(self.total_steps, 1), device=self.device)
            if self._target_src is not None:
                tidx = torch.randint(len(self.target), (n_global,), generator=self.tgen).numpy()
                tidx = data.shard(tidx, self.rank, self.world)
                xt = to_channels_last(self.model.move_inputs(self._target_src.batch(tidx), self.device))
                tlab = self._ty[tidx].to(self.device)
                ctx.target_labels = tlab
        scale = len(idx) * self.world / n_global if self.world > 1 else 1.0
        if self.grad_accum_steps > 1:
            scale = scale / self.grad_accum_steps
        with contextlib.ExitStack() as stack:
            if not sync:
                stack.enter_context(self.accelerator.no_sync(self._wrapped))
            with self.accelerator.autocast():
                loss, logits, logs = self._wrapped(xb, yb, xt, ctx, self.label_smoothing, scale)
            self._check_finite_loss(loss, epoch)
            self.accelerator.backward(loss)
        if sync:
            self.step += 1
        value = loss.item() / scale if scale != 1.0 else loss.item()
        logs = logs if (self.losses or self.objective is not None) else None
        return value, (logits.detach() if logits is not None else None), logs

    def _check_finite_loss(self, loss, epoch: int) -> None:
        finite = bool(torch.isfinite(loss))
        if self.world > 1:  # every process stops together (a lone raise would hang the others)
            flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
            finite = float(self.accelerator.reduce(flag, reduction="sum")) == 0.0
        if not finite:
            raise self._diverged(f"the training loss became {loss.item()}", epoch, self.step + 1)

    def _optimizer_step(self) -> None:
        if self.grad_clip:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        hook = getattr(self.objective, "after_optimizer_step", None)
        if hook is not None:  # after the update, before the next forward (a target network's EMA)
            with torch.no_grad():
                hook(min(self.step / max(self.total_steps, 1), 1.0))

    def _end_epoch(self, epoch: int, row: dict) -> None:
        """Selection, logging, callbacks, checkpoint: everything after an epoch's steps."""
        callbacks.call(self._builtin, "on_epoch_end", self, epoch, row)  # selection adds its scores to the row
        self.history.append(row)
        if self._logger is not None:
            self._logger.write(row)
        fault_point(f"{self.fault_prefix}.epoch_logged")
        callbacks.call(self._user, "on_epoch_end", self, epoch, row)
        last = epoch == self.epochs - 1 or self.should_stop
        if self._checkpointer is not None:
            due = self._checkpointer.due(epoch, last)
            # by the clock, the main process decides for all (_state is collective); by epoch count
            # every process already agrees
            if self.world > 1 and self._checkpointer.every == "auto":
                due = bool(_dist.broadcast_object(due))
            if due:
                self._checkpointer.save(self._state(epoch))
        fault_point(f"{self.fault_prefix}.epoch")
        if self.should_stop:
            self.stopped_early = True

    def _finish(self) -> None:
        callbacks.call(self._callbacks, "on_fit_end", self)
        if self._selection is not None:
            self._selection.restore()
            self.best_epoch = self._selection.best_epoch
        if self._checkpointer is not None:
            self._checkpointer.remove()
        self._sources, self._trunk_cache = {}, {}

    # ------------------------------------------------------------------ checkpoints
    def _state(self, epoch: int) -> dict:
        ranks = [{"aug": self.aug_gen.get_state() if self.aug_gen is not self.gen else None, "global": _rng_state()}]
        if self.world > 1:
            import torch.distributed as dist

            gathered = [None] * self.world
            dist.all_gather_object(gathered, ranks[0])
            ranks = gathered
        return {
            "format": FORMAT, "fingerprint": self._fingerprint, "epoch": epoch, "step": self.step,
            "stopped": self.should_stop, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": {"gen": self.gen.get_state(), "tgen": self.tgen.get_state(), "ranks": ranks},
            "sampler": self.sampler.state_dict(),
            "losses": [t.state_dict() if isinstance(t, nn.Module) else None for t in self.losses],
            "objective": self.objective.state_dict() if isinstance(self.objective, nn.Module) else None,
            "selection": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self._builtin],
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self._user],
            "history": self.history, "best_epoch": self.best_epoch,
            "metrics_bytes": self._logger.size() if self._logger is not None else None,
        }

    def _resume(self, resume) -> None:
        ckpt_path = self._checkpointer.path if self._checkpointer is not None else None
        ckpt = self._resume_from(resume, ckpt_path, self._fingerprint)
        if ckpt is None:
            return
        try:
            self._restore(ckpt)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            first = " ".join(str(exc).split())[:240] or type(exc).__name__
            raise ConfigError(
                f"checkpoint {str(resume if resume not in (True, None) else ckpt_path)!r} does not match this "
                f"model or run ({type(exc).__name__}: {first}); delete the checkpoint, or start a new run "
                "without --resume.") from None

    def _restore(self, ckpt: dict) -> None:
        """Load a checkpoint's states into this fit. Any mismatch raises (the caller turns it
        into a ConfigError)."""
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.gen.set_state(ckpt["rng"]["gen"])
        self.tgen.set_state(ckpt["rng"]["tgen"])
        self.sampler.load_state_dict(ckpt["sampler"])
        for term, st in zip(self.losses, ckpt["losses"]):
            if st is not None and isinstance(term, nn.Module):
                term.load_state_dict(st)
        if isinstance(self.objective, nn.Module):
            if ckpt.get("objective") is None:
                raise ValueError("the checkpoint has no objective state, this fit has one")
            self.objective.load_state_dict(ckpt["objective"])
        if len(ckpt["selection"]) != len(self._builtin):
            raise ValueError(f"the checkpoint has {len(ckpt['selection'])} selection states, this fit "
                             f"{len(self._builtin)} (a labeled val split, selection or early_stopping differs)")
        for cb, st in [*zip(self._builtin, ckpt["selection"]), *zip(self._user, ckpt["callbacks"])]:
            if st is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(st)
        ranks = ckpt["rng"]["ranks"]
        if len(ranks) != self.world:
            raise ValueError(f"checkpoint of {len(ranks)} process(es), this run has {self.world}")
        mine = ranks[self.rank]
        self.history = list(ckpt["history"])
        self.best_epoch = ckpt["best_epoch"]
        self.should_stop = self.stopped_early = bool(ckpt["stopped"])
        self.step, self.start_epoch = int(ckpt["step"]), int(ckpt["epoch"]) + 1
        if self._logger is not None and ckpt.get("metrics_bytes") is not None and _dist.is_main_process():
            _truncate(self._logger.path, ckpt["metrics_bytes"])
        if mine["aug"] is not None:
            self.aug_gen.set_state(mine["aug"])
        _set_rng_state(mine["global"])

    def _make_fingerprint(self) -> dict:
        """What must match for a checkpoint to continue this fit."""
        return {
            "tag": self.tag, "epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed,
            "n_train": len(self.train_data), "n_val": 0 if self.val is None else len(self.val),
            "n_target": 0 if self.target is None else len(self.target),
            "steps_per_epoch": len(self.sampler), "grad_accum_steps": self.grad_accum_steps,
            "processes": self.world,
            "parameters": [f"{k}:{tuple(v.shape)}" for k, v in self.model.state_dict().items()],
            "losses": [type(t).__name__ for t in self.losses],
            **({"objective": type(self.objective).__name__} if self.objective is not None else {}),
        }

    def _resume_from(self, resume, ckpt_path: Path | None, fingerprint: dict) -> dict | None:
        from_scope = resume is None
        if resume is None:
            from .rundir import resume_requested

            resume = resume_requested()
        if resume is False or resume is None:
            return None
        if resume is True:
            if ckpt_path is None and from_scope:
                return None  # a fit that keeps no checkpoint (no run_dir) inside a resumed run starts over
            if ckpt_path is None:
                raise ConfigError("resume=True needs a run_dir (where checkpoint.pt is) and checkpoint=True.")
            if not ckpt_path.is_file():
                return None  # killed before the first epoch ended: nothing to continue
            path = ckpt_path
        else:
            path = Path(resume)
        ckpt = load_checkpoint(path)
        saved = ckpt.get("fingerprint") if isinstance(ckpt.get("fingerprint"), dict) else {}
        if saved != fingerprint:
            diff = [k for k in fingerprint if saved.get(k) != fingerprint[k]] or ["fingerprint"]
            if from_scope:
                import warnings

                warnings.warn(f"{path}: checkpoint of another fit ({', '.join(diff)} differ); this fit starts "
                              "from scratch.", stacklevel=3)
                return None
            raise ConfigError(
                f"checkpoint {str(path)!r} was written by a different training run ({', '.join(diff)} differ); "
                "resume with the same model, data and settings, or delete the checkpoint to start over.")
        return ckpt

    # ------------------------------------------------------------------ helpers
    def _make_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(self.param_groups, foreach=_FOREACH)
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.param_groups, momentum=0.9, nesterov=True, foreach=_FOREACH)
        raise ConfigError(f"optimizer={self.optimizer_name!r} must be 'adamw' or 'sgd'.")

    @staticmethod
    def _labels(ds, what: str) -> np.ndarray:
        if ds.labels is None or not (ds.labels >= 0).any():
            raise DataError(f"{what} dataset {ds.name!r} has no labeled samples; training needs labels.")
        return ds.labels

    def _diverged(self, what: str, epoch: int, step: int | None = None) -> TrainingDivergedError:
        lr = max((float(g["lr"]) for g in self.opt.param_groups), default=float("nan"))
        where = f"{self.tag}: " if self.tag else ""
        return TrainingDivergedError(
            f"{where}training diverged: {what} at epoch {epoch}, step {self.step if step is None else step} of "
            f"{self.total_steps} (lr {lr:g}); lower lr (e.g. 10 times), keep grad_clip on, and check the inputs "
            "for huge or infinite values.")

    # ------------------------------------------------------------------ evaluation
    def _frozen_trunk(self):
        """The model's backbone when its output cannot change between epochs (no trained
        parameter, every BatchNorm kept in eval mode): its features are then computed once
        per dataset and only the head runs at each evaluation."""
        from ..nn import TransferModel

        m = self.model
        if type(m) is not TransferModel:
            return None
        bb = m.backbone
        if any(p.requires_grad for p in bb.parameters()):
            return None
        frozen = {id(x) for x in self.bn_frozen()}
        if any(id(x) not in frozen for x in bb.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)):
            return None
        return bb

    @torch.inference_mode()
    def _run(self, fn, dataset) -> torch.Tensor:
        """``fn`` over this process's contiguous share of ``dataset`` in eval mode, the shares
        of every process gathered in order."""
        src = self._source(dataset) if self._sources is not None else data.make_source(self.model, dataset)
        # the processes share the work unless this one evaluates alone (_dist.local_only: the main
        # process writing artifacts after the fit)
        rank, world = (self.rank, self.world) if _dist.world_size() > 1 else (0, 1)
        # text: batches of similar length (little padding), the outputs put back in order below
        batches = data.eval_batches(len(dataset), self.eval_batch_size, rank, world, getattr(src, "lengths", None))
        progress = getattr(self, "_progress", None)
        out = []
        for i, (_, x) in enumerate(src.batches(batches)):
            out.append(fn(to_channels_last(self.model.move_inputs(x, self.device))).float().cpu())
            if progress is not None:
                progress.tick(self, "eval", i + 1, len(batches))
        local = torch.cat(out) if out else None
        order = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        if local is not None and (np.diff(order) < 0).any():
            local = local[torch.from_numpy(np.argsort(order, kind="stable"))]
        if world > 1:
            import torch.distributed as dist

            parts = [None] * self.world
            dist.all_gather_object(parts, local)
            out = [p for p in parts if p is not None]
            return torch.cat(out) if out else torch.zeros(0)
        return local

    def _logits(self, dataset) -> torch.Tensor:
        model = self.model
        was = model.training
        model.eval()
        try:
            bb = self._frozen_trunk()
            if bb is not None:
                hit = self._trunk_cache.get(id(dataset))
                if hit is None or hit[0] is not dataset:
                    hit = (dataset, self._run(bb, dataset))
                    self._trunk_cache[id(dataset)] = hit
                feats = hit[1]
                with torch.inference_mode():
                    z = model.head(feats.to(self.device)).float().cpu() if feats is not None else None
            else:
                self._trunk_cache = {}
                z = self._run(model, dataset)
        finally:
            model.train(was)
        return z if z is not None else torch.zeros(0, getattr(model, "num_classes", 0))

    def predict_logits(self, dataset) -> np.ndarray:
        """Logits ``(n, K)`` of the model (in eval mode) on every sample of ``dataset``."""
        return self._logits(dataset).numpy()

    def evaluate(self, dataset) -> dict:
        """``{"loss", "accuracy"}`` on the labeled samples of ``dataset``."""
        self._labels(dataset, "evaluation")
        logits = self._logits(dataset)
        y = torch.as_tensor(dataset.labels)
        mask = y >= 0
        loss = F.cross_entropy(logits[mask], y[mask]).item()
        acc = (logits[mask].argmax(1) == y[mask]).float().mean().item()
        return {"loss": loss, "accuracy": acc}
