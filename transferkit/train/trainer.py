"""The one Trainer: supervised training of a TransferModel with callbacks.

Device placement goes through Hugging Face ``accelerate`` so the same loop runs on the CPU, one
GPU or several. Metrics go to ``metrics.jsonl`` in the run directory, one JSON object per epoch.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._faults import fault_point
from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError
from .augment import make_augment

# Above this many bytes a dataset is preprocessed batch by batch instead of once up front.
_PREPARE_LIMIT = 2 * 1024**3


#: File name of the per-epoch checkpoint in a run directory.
CHECKPOINT = "checkpoint.pt"


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
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return name
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """The global RNG states (torch, CUDA, NumPy, Python) as tensors and plain types, so a
    checkpoint holding them loads with ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, inner, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(inner, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` with ``torch.save`` atomically: a temporary file in the same folder,
    flushed and fsynced, then renamed over ``path``. A process killed at any moment leaves
    either the previous checkpoint or the new one, never a half-written file."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, RuntimeError) and "writ" in str(exc).lower():
            # torch's zip writer reports a failed write (a full disk) as RuntimeError: keep it an OSError
            raise OSError(f"cannot write checkpoint {str(p)!r} ({' '.join(str(exc).split())[:160]}); free disk "
                          "space or choose another --out.") from None
        raise
    _fsync_dir(p.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :class:`Trainer` (``torch.load(weights_only=True)``: no
    code is unpickled)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint {str(p)!r} does not exist; resume from a run directory that has one, "
                          "or start a new run.")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"checkpoint {str(p)!r} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "delete it to restart that run from scratch.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "transferkit.trainer/1":
        raise ConfigError(f"{str(p)!r} is not a transferkit Trainer checkpoint; delete it or start a new run.")
    return ckpt


def _truncate(path: Path, size: int) -> None:
    """Drop rows logged after the checkpoint (an epoch that was logged but not checkpointed)."""
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)


class _Prepared:
    """Inputs ready for the model: preprocessed once when small, else per batch."""

    def __init__(self, model, dataset, batch: int = 256):
        self.model, self.ds = model, dataset
        self.tensor = None
        inp = dataset.inputs
        if isinstance(inp, np.ndarray) and dataset.modality in ("image", "tabular"):
            spec = model.spec
            per = 4 * (int(np.prod(spec.input_size)) if spec.input_size else inp[0].size)
            if per * len(inp) <= _PREPARE_LIMIT:
                parts = [model.preprocess(inp[s : s + batch]) for s in range(0, len(inp), batch)]
                self.tensor = torch.cat(parts) if parts else None

    def batch(self, idx: np.ndarray):
        if self.tensor is not None:
            return self.tensor[torch.as_tensor(idx)]
        inp = self.ds.inputs
        raw = inp[idx] if isinstance(inp, np.ndarray) else [inp[int(i)] for i in idx]
        return self.model.preprocess(raw)


def to_channels_last(x):
    """NHWC memory layout for image batches: about 2x faster convolution training on CPU."""
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


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
    target_inputs, target_features, target_logits
        An unlabeled target batch drawn each step when ``fit(..., target=...)`` is given (its
        inputs are preprocessed but *not* augmented; ``augment`` is there for losses that build
        their own views), else ``None``.
    augment, generator
        The trainer's augmentation (``None`` when off) and its seeded generator.
    epoch, step, progress
        Position in training; ``progress`` runs from 0 to 1 over the whole budget.
    """

    __slots__ = ("model", "inputs", "labels", "features", "logits", "target_inputs", "target_features",
                 "target_logits", "augment", "generator", "epoch", "step", "progress", "device")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


class Trainer:
    """Train a model with labeled data; validate each epoch; stop early; keep the best weights.

    Parameters
    ----------
    model
        A :class:`transferkit.nn.TransferModel` (or anything with ``preprocess``,
        ``move_inputs``, ``layer_groups`` and ``forward``).
    param_groups
        Optimizer parameter groups (see :func:`transferkit.finetune.build_param_groups`).
    epochs, batch_size
        The training budget.
    optimizer
        ``"adamw"`` or ``"sgd"`` (momentum 0.9, Nesterov).
    schedule, warmup_epochs
        Learning-rate schedule (see :func:`transferkit.finetune.make_schedule`).
    grad_clip
        Max global gradient norm (``None``: no clipping).
    label_smoothing
        Cross-entropy label smoothing.
    augment
        ``"none"``, ``"light"``, ``"strong"`` or a dict; images only.
    early_stopping
        Patience in epochs on the validation metric (``None``: train the full budget). The
        best epoch's weights are restored at the end whenever validation data is given.
    monitor
        ``"val_accuracy"`` (higher is better) or ``"val_loss"``.
    callbacks
        Objects with optional ``on_epoch_start(trainer, epoch)`` / ``on_epoch_end(trainer,
        epoch, logs)``.
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
        Where ``metrics.jsonl`` is appended and ``checkpoint.pt`` is written (``None``: nowhere).
    checkpoint
        With a ``run_dir``, write ``run_dir/checkpoint.pt`` at the end of every epoch,
        atomically (temporary file, fsync, rename): model, optimizer, schedule, every RNG
        stream (torch, NumPy, Python, the trainer's batch and target generators), history,
        the best epoch's weights and score, the early-stopping counter, and the ``state_dict``
        of every ``nn.Module`` loss term and of callbacks that have one. It is deleted when
        ``fit`` returns normally (the caller saves the final model); a killed process leaves
        the last complete epoch's checkpoint for ``fit(..., resume=True)``.

    Notes
    -----
    Resuming restores every random stream, so on the CPU a resumed fit ends with the same
    weights and metrics as an uninterrupted one (up to the non-associativity of multithreaded
    float reductions, which is zero for a fixed thread count in practice).
    """

    def __init__(self, model: nn.Module, param_groups: list[dict], *, epochs: int = 20, batch_size: int = 32,
                 optimizer: str = "adamw", schedule: str = "cosine", warmup_epochs: float = 1.0,
                 grad_clip: float | None = 1.0, label_smoothing: float = 0.0, augment="none",
                 early_stopping: int | None = None, monitor: str = "val_accuracy", callbacks=(),
                 bn_frozen: Callable[[], list[nn.Module]] | None = None, seed: int = 0,
                 device: str | None = None, run_dir: str | Path | None = None, progress: bool = True,
                 eval_batch_size: int = 64, tag: str = "", losses=(), checkpoint: bool = True):
        self.model = model
        self.epochs = check_number("epochs", epochs, low=1, integer=True)
        self.batch_size = check_number("batch_size", batch_size, low=1, integer=True)
        if early_stopping is not None:
            check_number("early_stopping", early_stopping, low=1, integer=True)
        if monitor not in ("val_accuracy", "val_loss"):
            raise ConfigError(f"monitor={monitor!r} must be 'val_accuracy' or 'val_loss'.")
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

        device = check_device(device)  # never a silent fallback to the CPU
        cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
        if device is not None and device.startswith("cuda:"):
            torch.cuda.set_device(torch.device(device))  # accelerate places a single process on the current GPU
        self.accelerator = Accelerator(cpu=cpu)
        self.device = self.accelerator.device
        if device is not None:
            want = torch.device(device)
            got = torch.device(self.device)
            if got.type != want.type or (want.index is not None and got.index not in (None, want.index)):
                raise ConfigError(f"device={device!r} was asked for but accelerate placed the model on {got}; "
                                  "use the device accelerate is configured for, or leave device out.")
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.stopped_early = False

    # ------------------------------------------------------------------ helpers
    def _make_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(self.param_groups)
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.param_groups, momentum=0.9, nesterov=True)
        raise ConfigError(f"optimizer={self.optimizer_name!r} must be 'adamw' or 'sgd'.")

    def _log(self, row: dict) -> None:
        self.history.append(row)
        if self.run_dir is not None:
            p = Path(self.run_dir)
            p.mkdir(parents=True, exist_ok=True)
            with open(p / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    @staticmethod
    def _labels(ds, what: str) -> np.ndarray:
        if ds.labels is None or not (ds.labels >= 0).any():
            raise DataError(f"{what} dataset {ds.name!r} has no labeled samples; training needs labels.")
        return ds.labels

    # ------------------------------------------------------------------ main loop
    def fit(self, train, val=None, *, target=None, resume=None) -> Trainer:
        """Train on the labeled samples of ``train``; validate on ``val`` each epoch.

        ``target``: an unlabeled (or partly labeled) dataset; a random batch of the same size
        is drawn from it at every step and handed to the extra ``losses`` (domain adaptation,
        consistency). Its labels are never used here.

        ``resume``: ``True`` continues from ``run_dir/checkpoint.pt`` when it exists (from the
        epoch after the last completed one; without a checkpoint training starts fresh); a
        path resumes from that checkpoint file; ``False`` always starts fresh; ``None``
        (default) resumes only inside :func:`transferkit.train.rundir.resuming` (what
        ``transferkit run --resume`` uses). The checkpoint must come from the same model,
        data sizes and budget, else :class:`~transferkit.errors.ConfigError`.
        """
        seed_everything(self.seed)
        y_all = self._labels(train, "training")
        keep = np.flatnonzero(y_all >= 0)
        train = train.subset(keep) if len(keep) < len(y_all) else train
        y = torch.as_tensor(train.labels)
        model = self.model
        opt = self._make_optimizer()
        steps_per_epoch = max(1, math.ceil(len(train) / self.batch_size))
        from ..finetune import make_schedule

        sched = make_schedule(opt, self.epochs * steps_per_epoch, schedule=self.schedule,
                              warmup_steps=int(round(self.warmup_epochs * steps_per_epoch)))
        if getattr(self.model.spec, "modality", None) == "image":
            self.model.to(memory_format=torch.channels_last)
        model, opt = self.accelerator.prepare(model, opt)
        base = getattr(model, "module", model)  # the unwrapped model (DDP wraps it on several GPUs)
        data = _Prepared(self.model, train)
        val_data = _Prepared(self.model, val) if val is not None else None
        if target is not None and len(target) == 0:
            raise DataError(f"target dataset {target.name!r} is empty; pass unlabeled target samples or target=None.")
        target_data = _Prepared(self.model, target) if target is not None else None
        for term in self.losses:
            if isinstance(term, nn.Module):
                term.to(self.device)
        split = self.losses and hasattr(self.model, "features") and hasattr(self.model, "head")
        total_steps = self.epochs * steps_per_epoch
        step = 0
        gen = torch.Generator().manual_seed(self.seed)
        # a separate stream for target batches, so adding a target leaves the source order unchanged
        tgen = torch.Generator().manual_seed(self.seed + 1)
        best, best_state, bad = None, None, 0
        ckpt_path = Path(self.run_dir) / CHECKPOINT if self.run_dir is not None and self.checkpoint else None
        fingerprint = self._fingerprint(train, val, target, steps_per_epoch)
        start, done = 0, False
        ckpt = self._resume_from(resume, ckpt_path, fingerprint)
        if ckpt is not None:
            try:
                restored = self._restore(ckpt, opt, sched, gen, tgen)
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                first = " ".join(str(exc).split())[:240] or type(exc).__name__
                raise ConfigError(
                    f"checkpoint {str(resume if resume not in (True, None) else ckpt_path)!r} does not match this "
                    f"model or run ({type(exc).__name__}: {first}); delete the checkpoint, or start a new run "
                    "without --resume.") from None
            best, best_state, bad, step, start, done = restored
        from tqdm.auto import tqdm

        bar = tqdm(range(start, self.epochs if not done else start), desc=self.tag or "train",
                   disable=None if self.progress else True, unit="epoch", leave=False,
                   initial=start, total=self.epochs)
        for epoch in bar:
            for cb in self.callbacks:
                if hasattr(cb, "on_epoch_start"):
                    cb.on_epoch_start(self, epoch)
            model.train()
            for m in self.bn_frozen():
                m.eval()
            t0 = time.perf_counter()
            perm = torch.randperm(len(train), generator=gen).numpy()
            tot_loss, tot_correct, seen = 0.0, 0, 0
            extra: dict[str, float] = {}
            n_steps = 0
            for s in range(0, len(perm), self.batch_size):
                idx = perm[s : s + self.batch_size]
                if len(idx) < 2 and len(perm) > 1:
                    continue  # a batch of one breaks BatchNorm in train mode
                xb = data.batch(idx)
                if self.augment is not None and isinstance(xb, torch.Tensor) and xb.ndim == 4:
                    xb = self.augment(xb, gen)
                xb = to_channels_last(self.model.move_inputs(xb, self.device))
                yb = y[idx].to(self.device)
                if split:  # features and logits from one pass, for the loss terms that need both
                    feats = base.features(xb)
                    logits = base.head(feats)
                else:
                    feats, logits = None, model(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=self.label_smoothing)
                if self.losses:
                    ctx = StepContext(model=model, inputs=xb, labels=yb, features=feats, logits=logits,
                                      augment=self.augment, generator=gen, epoch=epoch, step=step,
                                      progress=step / max(total_steps, 1), device=self.device)
                    if target_data is not None:
                        tidx = torch.randint(len(target), (len(idx),), generator=tgen).numpy()
                        xt = to_channels_last(self.model.move_inputs(target_data.batch(tidx), self.device))
                        ctx.target_inputs = xt
                        if split:
                            ctx.target_features = base.features(xt)
                            ctx.target_logits = base.head(ctx.target_features)
                        else:
                            ctx.target_logits = model(xt)
                    for term in self.losses:
                        out = term(ctx)
                        loss = loss + out["loss"]
                        for k, v in out.items():
                            if k != "loss" and torch.as_tensor(v).numel() == 1:
                                extra[k] = extra.get(k, 0.0) + float(v)
                    n_steps += 1
                step += 1
                if not torch.isfinite(loss):
                    raise self._diverged(f"the training loss became {loss.item()}", epoch, step, total_steps, opt)
                opt.zero_grad(set_to_none=True)
                self.accelerator.backward(loss)
                if self.grad_clip:
                    self.accelerator.clip_grad_norm_(model.parameters(), self.grad_clip)
                opt.step()
                sched.step()
                tot_loss += loss.item() * len(idx)
                tot_correct += (logits.argmax(1) == yb).sum().item()
                seen += len(idx)
                fault_point("train.step")
            bad_param = _first_nonfinite(self.model)
            if bad_param is not None:  # the last step's update: caught before it is validated or saved
                raise self._diverged(f"weight {bad_param!r} became NaN or infinite", epoch, step, total_steps, opt)
            row = {"epoch": epoch, "train_loss": tot_loss / max(seen, 1), "train_accuracy": tot_correct / max(seen, 1),
                   "lr": opt.param_groups[-1]["lr"], "epoch_time": time.perf_counter() - t0}
            row.update({k: v / max(n_steps, 1) for k, v in extra.items()})
            if val_data is not None:
                ev = self._evaluate(val_data, val.labels)
                row.update({"val_loss": ev["loss"], "val_accuracy": ev["accuracy"]})
                score = ev["accuracy"] if self.monitor == "val_accuracy" else -ev["loss"]
                if best is None or score > best:
                    best, bad, self.best_epoch = score, 0, epoch
                    best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                else:
                    bad += 1
            self._log(row)
            fault_point("train.epoch_logged")
            for cb in self.callbacks:
                if hasattr(cb, "on_epoch_end"):
                    cb.on_epoch_end(self, epoch, row)
            bar.set_postfix({k: round(v, 3) for k, v in row.items() if k in ("train_loss", "val_accuracy")})
            stop = self.early_stopping is not None and val_data is not None and bad >= self.early_stopping
            if ckpt_path is not None:
                save_checkpoint({
                    "format": "transferkit.trainer/1", "fingerprint": fingerprint, "epoch": epoch, "step": step,
                    "stopped": stop, "model": self.model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": {"gen": gen.get_state(), "tgen": tgen.get_state(), "global": _rng_state()},
                    "losses": [t.state_dict() if isinstance(t, nn.Module) else None for t in self.losses],
                    "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks],
                    "history": self.history, "best": best, "best_state": best_state, "bad": bad,
                    "best_epoch": self.best_epoch, "metrics_bytes": self._metrics_bytes(),
                }, ckpt_path)
            fault_point("train.epoch")
            if stop:
                self.stopped_early = True
                break
        bar.close()
        if best_state is not None:
            self.model.load_state_dict(best_state)
        if ckpt_path is not None:
            # the run finished: the caller saves the final model, the checkpoint is not needed
            ckpt_path.unlink(missing_ok=True)
        return self

    def _diverged(self, what: str, epoch: int, step: int, total_steps: int, opt) -> TrainingDivergedError:
        lr = max((float(g["lr"]) for g in opt.param_groups), default=float("nan"))
        where = f"{self.tag}: " if self.tag else ""
        return TrainingDivergedError(
            f"{where}training diverged: {what} at epoch {epoch}, step {step} of {total_steps} (lr {lr:g}); "
            "lower lr (e.g. 10 times), keep grad_clip on, and check the inputs for huge or infinite values.")

    def _restore(self, ckpt: dict, opt, sched, gen, tgen) -> tuple:
        """Load a checkpoint's states into this fit; returns ``(best, best_state, bad, step,
        start epoch, stopped)``. Any mismatch raises (the caller turns it into a ConfigError)."""
        self.model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["rng"]["gen"])
        tgen.set_state(ckpt["rng"]["tgen"])
        for term, st in zip(self.losses, ckpt["losses"]):
            if st is not None and isinstance(term, nn.Module):
                term.load_state_dict(st)
        for cb, st in zip(self.callbacks, ckpt["callbacks"]):
            if st is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(st)
        best_state = ckpt["best_state"]
        if best_state is not None:  # checked now, not when the best weights are put back at the end
            missing = sorted(set(self.model.state_dict()) ^ set(best_state))
            if missing:
                raise KeyError(f"best_state has other keys than the model ({missing[0]!r})")
            for k, v in self.model.state_dict().items():
                if tuple(best_state[k].shape) != tuple(v.shape):
                    raise ValueError(f"best_state[{k!r}] has shape {tuple(best_state[k].shape)}, the model "
                                     f"{tuple(v.shape)}")
        self.history = list(ckpt["history"])
        self.best_epoch = ckpt["best_epoch"]
        done = bool(ckpt["stopped"])
        self.stopped_early = done
        out = (ckpt["best"], best_state, ckpt["bad"], int(ckpt["step"]), int(ckpt["epoch"]) + 1, done)
        rng = ckpt["rng"]["global"]
        if self.run_dir is not None and ckpt.get("metrics_bytes") is not None:
            _truncate(Path(self.run_dir) / "metrics.jsonl", ckpt["metrics_bytes"])
        _set_rng_state(rng)
        return out

    # ------------------------------------------------------------------ checkpoints
    def _fingerprint(self, train, val, target, steps_per_epoch: int) -> dict:
        """What must match for a checkpoint to continue this fit."""
        return {
            "tag": self.tag, "epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed,
            "n_train": len(train), "n_val": 0 if val is None else len(val),
            "n_target": 0 if target is None else len(target), "steps_per_epoch": steps_per_epoch,
            "parameters": [f"{k}:{tuple(v.shape)}" for k, v in self.model.state_dict().items()],
            "losses": [type(t).__name__ for t in self.losses],
        }

    def _resume_from(self, resume, ckpt_path: Path | None, fingerprint: dict) -> dict | None:
        from_scope = resume is None
        if resume is None:
            from .rundir import resume_requested

            resume = resume_requested()
        if resume is False or resume is None:
            return None
        if resume is True:
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

    def _metrics_bytes(self) -> int | None:
        if self.run_dir is None:
            return None
        p = Path(self.run_dir) / "metrics.jsonl"
        return p.stat().st_size if p.exists() else 0

    @torch.no_grad()
    def _evaluate(self, data: _Prepared, labels) -> dict:
        logits = self._logits(data, len(labels))
        y = torch.as_tensor(labels)
        mask = y >= 0
        if not mask.any():
            return {"loss": float("nan"), "accuracy": float("nan")}
        loss = F.cross_entropy(logits[mask], y[mask]).item()
        acc = (logits[mask].argmax(1) == y[mask]).float().mean().item()
        return {"loss": loss, "accuracy": acc}

    @torch.no_grad()
    def _logits(self, data: _Prepared, n: int) -> torch.Tensor:
        model = self.model
        was = model.training
        model.eval()
        out = []
        for s in range(0, n, self.eval_batch_size):
            xb = to_channels_last(self.model.move_inputs(data.batch(np.arange(s, min(n, s + self.eval_batch_size))), self.device))
            out.append(model(xb).float().cpu())
        model.train(was)
        return torch.cat(out) if out else torch.zeros(0, getattr(model, "num_classes", 0))

    def predict_logits(self, dataset) -> np.ndarray:
        return self._logits(_Prepared(self.model, dataset), len(dataset)).numpy()

    def evaluate(self, dataset) -> dict:
        """``{"loss", "accuracy"}`` on the labeled samples of ``dataset``."""
        self._labels(dataset, "evaluation")
        return self._evaluate(_Prepared(self.model, dataset), dataset.labels)
