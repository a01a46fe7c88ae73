"""The Trainer's callbacks: logging, early stopping, progress.

A callback is any object with some of the hooks ``on_fit_start(trainer)``,
``on_epoch_start(trainer, epoch)``, ``on_epoch_end(trainer, epoch, row)`` (``row`` is the
epoch's history row: a callback may add scalars to it before it is logged) and
``on_fit_end(trainer)``; one with state a resumed fit needs also has ``state_dict()`` /
``load_state_dict(state)`` (tensors and plain types only: checkpoints load with
``weights_only=True``). Checkpoint selection is :class:`~transferkit.train.selection.SelectionCallback`,
checkpoint writing :class:`~transferkit.train.checkpoint.Checkpointer`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from .. import _dist

log = logging.getLogger("transferkit.train")


def call(callbacks, hook: str, *args) -> None:
    """Run ``hook`` on every callback that has it, in order."""
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)


class MetricsLogger:
    """Append each epoch's row to ``run_dir/metrics.jsonl`` (main process only)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "metrics.jsonl"

    def write(self, row: dict) -> None:
        if not _dist.is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


class EarlyStopping:
    """Stop when the selection score has not improved for ``patience`` epochs.

    Reads the Trainer's :class:`~transferkit.train.selection.SelectionCallback` (its
    ``best_epoch``), so the epochs it counts are those since the best scored one; with
    ``val_every > 1`` the decision is taken on scored epochs only.
    """

    def __init__(self, patience: int, selection):
        self.patience, self.selection = int(patience), selection

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> None:
        sel = self.selection
        if sel.scored_epoch == epoch and sel.best_epoch is not None and epoch - sel.best_epoch >= self.patience:
            trainer.should_stop = True


#: Seconds between two plain progress lines (stderr not a terminal: a log file or a pipe).
PLAIN_INTERVAL = 30.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


class ProgressLogger:
    """Progress of a fit, on the main process.

    Every epoch's row goes to the ``transferkit.train`` logger (INFO). With ``bar`` on: on a
    terminal, a tqdm bar over the epochs (the step inside the epoch in its postfix); when
    stderr is not a terminal (a log file, a pipe), plain lines on stderr instead: what the fit
    will do, the first and the last epoch, and then a line whenever :data:`PLAIN_INTERVAL`
    seconds have passed since the last one, at an epoch's end (with the time left) or inside
    a long epoch (``finetune epoch 3/30 step 40/120``, ``finetune epoch 3/30 scoring batch
    5/8``). ``bar`` off (``--no-progress``): nothing on stderr.
    """

    def __init__(self, tag: str, epochs: int, bar: bool = True):
        self.tag, self.epochs, self.bar_on = tag, epochs, bar
        self._bar = None
        self._plain = False
        self._epoch = 0
        self._last = self._start = 0.0

    def _say(self, text: str) -> None:
        print(f"{self.tag or 'train'} {text}", file=sys.stderr, flush=True)
        self._last = time.monotonic()

    def on_fit_start(self, trainer) -> None:
        self._plain, self._bar = False, None
        if not (self.bar_on and _dist.is_main_process()):
            return
        self._start = self._last = time.monotonic()
        if _is_terminal(sys.stderr):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.epochs, initial=trainer.start_epoch, desc=self.tag or "train", unit="epoch",
                             leave=False, disable=None)
            return
        self._plain = True
        n_train = len(getattr(trainer, "train_data", ()) or ())
        steps = len(trainer.sampler) if getattr(trainer, "sampler", None) is not None else "?"
        val = getattr(trainer, "val", None)
        every = getattr(trainer, "val_every_", None)
        scored = ""
        if val is not None and every:
            n_val = min(len(val), trainer.val_max_samples or len(val))
            scored = f", scoring {n_val} validation samples " + ("every epoch" if every == 1 else f"every {every} epochs")
        self._say(f"training: {self.epochs} epochs of {steps} steps ({n_train} samples){scored}")

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._epoch = epoch

    def tick(self, trainer, phase: str, i: int, n: int) -> None:
        """Inside an epoch: step ``i`` of ``n`` (``phase`` ``"train"``) or evaluation batch ``i``
        of ``n`` (``"eval"``)."""
        if not (self._plain or self._bar is not None):
            return
        now = time.monotonic()
        what = f"step {i}/{n}" if phase == "train" else f"scoring batch {i}/{n}"
        if self._plain and now - self._last >= PLAIN_INTERVAL:
            self._say(f"epoch {self._epoch + 1}/{self.epochs} {what} ({_duration(now - self._start)} so far)")
        elif self._bar is not None and now - self._last >= 1.0:
            self._bar.set_postfix_str(what)
            self._last = now

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> None:
        if not _dist.is_main_process():
            return
        shown = {k: round(v, 4) for k, v in row.items()
                 if k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "score")
                 and isinstance(v, (int, float))}
        log.info("%s epoch %d/%d %s (%.2f s)", self.tag or "train", epoch + 1, self.epochs,
                 " ".join(f"{k}={v}" for k, v in shown.items()), row.get("epoch_time", 0.0))
        if self._plain:
            now = time.monotonic()
            first, last = epoch == trainer.start_epoch, epoch == self.epochs - 1 or trainer.should_stop
            if first or last or now - self._last >= PLAIN_INTERVAL:
                done = epoch + 1 - trainer.start_epoch
                left = "" if last else f", about {_duration((now - self._start) / done * (self.epochs - epoch - 1))} left"
                self._say(f"epoch {epoch + 1}/{self.epochs} " + " ".join(f"{k}={v}" for k, v in shown.items())
                          + f" ({_duration(now - self._start)} so far{left})")
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: v for k, v in shown.items() if k in ("train_loss", "val_accuracy", "score")})

    def on_fit_end(self, trainer) -> None:
        self._plain = False  # evaluation after the fit (predict) is not part of its progress
        if self._bar is not None:
            self._bar.close()
            self._bar = None
