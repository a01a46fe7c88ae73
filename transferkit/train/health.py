"""Signs that a finished fit may not mean what its accuracy suggests, from what every run keeps.

Each check returns a one-sentence description (``None`` when the run looks healthy); the
experiment runner turns them into :class:`~transferkit.errors.TransferKitWarning` lines, stored
in ``results.json`` and shown first in the report. They read only the run's own history, its
predictions and its training labels: never target test labels (the accuracy-based comparison
with the majority-class baseline is made by the runner, after scoring).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: A model that gives one class to at least this share of the samples has (nearly) collapsed.
COLLAPSE_SHARE = 0.95


def collapsed_prediction(pred, n_classes: int, *, true_share: float | None = None,
                         share: float = COLLAPSE_SHARE) -> tuple[int, float] | None:
    """``(class, share)`` when one class takes at least ``share`` of the predictions ``pred``
    of a multi-class problem, unless the data itself is that lopsided (``true_share``, the
    class's share of the labels when they are known, at least ``share`` too); else ``None``."""
    pred = np.asarray(pred)
    if n_classes < 2 or len(pred) < 2:
        return None
    counts = np.bincount(pred.astype(np.int64), minlength=n_classes)
    c = int(counts.argmax())
    frac = float(counts[c] / len(pred))
    if frac < share or (true_share is not None and true_share >= share):
        return None
    return c, frac


def rising_validation_loss(history: Sequence[dict], *, min_epochs: int = 5, rtol: float = 0.05) -> str | None:
    """A description when the validation loss rose for at least ``min_epochs`` validated epochs
    after its minimum and ended more than ``rtol`` above it (overfitting, or a learning rate too
    high for pretrained weights: the selected checkpoint is then the minimum's, but the budget
    past it was spent for nothing); else ``None``."""
    rows = [(r.get("epoch"), r["val_loss"]) for r in history if r.get("val_loss") is not None]
    rows = [(e, v) for e, v in rows if np.isfinite(v)]
    if len(rows) < min_epochs + 1:
        return None
    losses = np.array([v for _, v in rows], dtype=float)
    i = int(losses.argmin())
    after = losses[i:]
    if len(after) - 1 < min_epochs or not losses[-1] > (1 + rtol) * losses[i]:
        return None
    rises = int((np.diff(after) > 0).sum())
    if rises < 0.6 * (len(after) - 1):  # mostly up, not noise around a plateau
        return None
    e_min, e_last = rows[i][0], rows[-1][0]
    return (f"validation loss rose from {losses[i]:.3g} at epoch {e_min} to {losses[-1]:.3g} at epoch {e_last} "
            f"({len(after) - 1} validated epochs past its minimum)")


def first_epoch_selected(history: Sequence[dict], best_epoch) -> str | None:
    """A description when checkpoint selection kept the first epoch of a run that trained for
    several: training never improved the selection score after one epoch."""
    epochs = [r.get("epoch") for r in history if r.get("epoch") is not None]
    if best_epoch is None or len(epochs) < 3 or best_epoch != min(epochs):
        return None
    return f"checkpoint selection kept epoch {best_epoch}, the first of {len(epochs)}"


def idle_adaptation_loss(history: Sequence[dict], method, *, rtol: float = 0.01) -> str | None:
    """A description when every logged part of the DA loss ``method`` (``"jan"``,
    ``"jan+mcc"``) stayed within ``rtol`` of the training loss of zero in every epoch: the
    adaptation term then did (almost) nothing, and the model is a source-only one."""
    if not isinstance(method, str) or not history:
        return None
    parts = [p.strip() for p in method.split("+")]
    logged = [p for p in parts if all(p in r for r in history)]
    if not logged:
        return None
    train = np.array([abs(r.get("train_loss", np.nan)) for r in history], dtype=float)
    scale = float(np.nanmean(train)) if np.isfinite(train).any() else 1.0
    idle = []
    for p in logged:
        v = np.abs(np.array([r[p] for r in history], dtype=float))
        if np.isfinite(v).all() and v.max() <= rtol * scale:
            idle.append((p, float(v.max())))
    if len(idle) != len(logged):
        return None
    text = ", ".join(f"{p} at most {m:.2g}" for p, m in idle)
    return (f"its adaptation loss stayed near zero in every epoch ({text}, against a training loss of about "
            f"{scale:.3g})")
