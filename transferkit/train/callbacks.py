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


class ProgressLogger:
    """One line per epoch on the ``transferkit.train`` logger (what a log file keeps), and a
    tqdm bar on a terminal when ``bar`` is on."""

    def __init__(self, tag: str, epochs: int, bar: bool = True):
        self.tag, self.epochs, self.bar_on = tag, epochs, bar
        self._bar = None

    def on_fit_start(self, trainer) -> None:
        if self.bar_on and _dist.is_main_process():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.epochs, initial=trainer.start_epoch, desc=self.tag or "train", unit="epoch",
                             leave=False, disable=None)

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> None:
        if not _dist.is_main_process():
            return
        shown = {k: round(v, 4) for k, v in row.items()
                 if k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "score")
                 and isinstance(v, (int, float))}
        log.info("%s epoch %d/%d %s (%.2f s)", self.tag or "train", epoch + 1, self.epochs,
                 " ".join(f"{k}={v}" for k, v in shown.items()), row.get("epoch_time", 0.0))
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: v for k, v in shown.items() if k in ("train_loss", "val_accuracy", "score")})

    def on_fit_end(self, trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
