"""Trainer checkpoints: atomic writes, safe loads, every random stream, and the callback that
writes them (every N epochs, in a background thread, by the main process only)."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .. import _dist
from .._faults import active as faults_active
from ..errors import ConfigError

#: File name of the per-epoch checkpoint in a run directory.
CHECKPOINT = "checkpoint.pt"

#: The checkpoint format this Trainer writes and reads.
FORMAT = "transferkit.trainer/2"

#: ``checkpoint_every="auto"``: a checkpoint after the first epoch that ends at least this many
#: seconds after the fit started or after the previous checkpoint (a kill loses at most about
#: this much training, plus the epoch in progress).
AUTO_CHECKPOINT_SECONDS = 30.0


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
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        if isinstance(ckpt, dict) and str(ckpt.get("format", "")).startswith("transferkit.trainer/"):
            raise ConfigError(f"checkpoint {str(p)!r} was written by another version of transferkit's Trainer "
                              f"({ckpt.get('format')}, this one reads {FORMAT}); delete it to restart that run.")
        raise ConfigError(f"{str(p)!r} is not a transferkit Trainer checkpoint; delete it or start a new run.")
    return ckpt


def _truncate(path: Path, size: int) -> None:
    """Drop rows logged after the checkpoint (an epoch that was logged but not checkpointed)."""
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)


def _snapshot(obj):
    """A deep copy of a checkpoint's tensors (on the CPU) so training can go on while it is written."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


class Checkpointer:
    """Trainer callback: write ``run_dir/checkpoint.pt`` every ``every`` epochs (and after the
    last one), atomically, from the main process only.

    ``every="auto"``: after an epoch that ends at least :data:`AUTO_CHECKPOINT_SECONDS` after
    the start (or the previous checkpoint), so fits with epochs of a second write a few
    checkpoints, not one per epoch, and fits with long epochs write one after every epoch;
    no extra write after the last epoch (``fit`` deletes the checkpoint when it returns).
    Every kill point still resumes exactly: a checkpoint is a complete state, whichever epoch
    it holds. While faults are injected (the kill-point tests) ``"auto"`` writes every epoch.

    With ``asynchronous=True`` the state is copied to the CPU at the end of the epoch and
    written by a background thread while the next epoch trains; the next write (and the end of
    ``fit``) first waits for the previous one. A process killed while a write is in flight
    leaves the previous complete checkpoint, whose ``metrics_bytes`` tells the resumed fit how
    much of ``metrics.jsonl`` to keep, so a resume is exact from any kill point. While the kill-
    point tests inject faults (``TRANSFERKIT_FAULT``/``_TRACE``) writes are synchronous, so that
    the point ``train.epoch`` means "this epoch's checkpoint is on disk".
    """

    def __init__(self, path: str | os.PathLike, every: int | str = 1, asynchronous: bool = True,
                 interval: float | None = None):
        self.path, self.asynchronous = Path(path), bool(asynchronous)
        self.every = every if every == "auto" else int(every)
        self.interval = float(AUTO_CHECKPOINT_SECONDS if interval is None else interval)
        self._since = time.monotonic()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def due(self, epoch: int, last: bool) -> bool:
        """Whether the epoch that just ended is checkpointed (the main process decides; the
        Trainer shares the decision with the others)."""
        if self.every == "auto":
            return faults_active() or time.monotonic() - self._since >= self.interval
        return last or (epoch + 1) % self.every == 0

    def save(self, state: dict) -> None:
        self._since = time.monotonic()
        if not _dist.is_main_process():
            return
        self.wait()
        if not self.asynchronous or faults_active():
            save_checkpoint(state, self.path)
            return
        snap = _snapshot(state)

        def write():
            try:
                save_checkpoint(snap, self.path)
            except BaseException as exc:  # surfaced by the next wait()
                self._error = exc

        self._thread = threading.Thread(target=write, name="transferkit-checkpoint", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the write in flight is on disk; re-raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def remove(self) -> None:
        """The fit finished: the caller saves the final model, the checkpoint is not needed."""
        self.wait()
        if _dist.is_main_process():
            self.path.unlink(missing_ok=True)
