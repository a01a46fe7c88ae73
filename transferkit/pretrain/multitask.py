"""Multi-task learning: one shared encoder, named heads, regression as a first-class task.

A task is a named head on the encoder's features with a type and a label column::

    heads: {digit: classification, parity: classification, angle: regression}
    heads: {angle: {type: regression, weight: 0.5, column: angle}}

**Where a head's targets come from.** ``column`` defaults to the head's name. The column
``"label"`` is the dataset's ``labels``; any other column is ``dataset.meta["attributes"][column]``
(a per-row array that :meth:`DomainDataset.subset` keeps aligned with the rows). A head whose
column the dataset does not have is an error naming the columns it has (no silent fallback to
the labels: name the head ``label`` or give ``column: label``). Missing values are ``-1`` for a
classification column and NaN for a regression column; those rows do not count in that task's
loss or metrics.

**Training** (:class:`MultiTaskObjective`, a :class:`transferkit.train.Objective`): the
encoder's features ``f = encoder(x)`` go through every head; a classification task's loss is the
cross-entropy of its logits, a regression task's the mean squared error of its output against the
target standardised with the *training* mean and standard deviation (kept in the head's buffers,
so predictions are returned in the target's own units). The per-task losses (each times its
static ``weight``) are logged as ``loss_<task>`` and combined by a weighting
(:mod:`.weighting`, registry kind ``mtl_weighting``; ``equal`` by default).

Gradient aggregators (``pcgrad``, ``upgrad``) need the per-task gradients of the shared
parameters: they are computed inside the objective's forward with
``torch.autograd.grad(L_k, shared, retain_graph=True)``, combined into ``g``, and the objective
returns the surrogate ``sum_p (p * g_p.detach()).sum() + sum_k L_k^head``, where the heads'
losses ``L_k^head`` are computed again on ``f.detach()``: the Trainer's one backward then puts
exactly ``g`` into the shared parameters' ``.grad`` and each head's own loss gradient into its
parameters (a head reaches only its own loss). The value returned is ``sum_k L_k``.

**Prediction** (:class:`MultiTaskModel`): the encoder plus the same heads; ``forward`` returns
every head's output packed side by side (a classification head's ``K`` logits, a regression
head's one un-standardised value), :meth:`MultiTaskModel.unpack` splits them by task.

**Comparison** (:func:`delta_m`): Delta-m% of a multi-task model against single-task models.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import suggest
from ..errors import ConfigError, DataError
from ..train import Objective
from .weighting import TASK_TYPES, Weighting, WeightingInput, make_weighting, surrogate_loss, task_gradients

__all__ = ["ClassificationHead", "MultiTaskModel", "MultiTaskObjective", "RegressionHead", "TaskSpec", "delta_m",
           "parse_heads", "read_targets", "task_columns", "task_metrics"]

#: Head names become module and log keys (``loss_<name>``).
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPEC_KEYS = ("type", "weight", "column")
#: The column that means the dataset's ``labels``.
LABEL_COLUMN = "label"


@dataclass(frozen=True)
class TaskSpec:
    """One head: its ``name``, ``type`` (``"classification"`` or ``"regression"``), static loss
    ``weight`` and the label ``column`` its targets come from (see the module docstring)."""

    name: str
    type: str
    weight: float = 1.0
    column: str = LABEL_COLUMN


def _check_type(where: str, t) -> str:
    if t not in TASK_TYPES:
        raise ConfigError(f"{where}={t!r} is not a head type." + suggest(str(t), TASK_TYPES)
                          + f" Use one of {', '.join(TASK_TYPES)}.")
    return t


def parse_heads(heads, where: str = "heads") -> list[TaskSpec]:
    """The task specs of ``heads``: a mapping ``name -> type`` or ``name -> {type, weight,
    column}``, or a list of :class:`TaskSpec`. Order is kept; the first head is the primary one.

    Raises
    ------
    ConfigError
        Not a mapping, empty, a name that is not an identifier, an unknown type (with the
        nearest), an unknown key, a weight that is not a finite number > 0, a column that is not
        a string.
    """
    if isinstance(heads, (list, tuple)) and heads and all(isinstance(h, TaskSpec) for h in heads):
        names = [h.name for h in heads]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where} names a head twice ({names}); give each head one name.")
        return list(heads)
    example = "e.g. heads: {digit: classification, angle: regression}"
    if not isinstance(heads, dict):
        raise ConfigError(f"{where}={heads!r} must be a mapping of head names to types, {example}.")
    if not heads:
        raise ConfigError(f"{where} is empty; name at least one head, {example}.")
    out = []
    for name, spec in heads.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{where} has a head named {name!r}; a head name is letters, digits and '_' (not "
                              "starting with a digit), e.g. angle.")
        loc = f"{where}.{name}"
        if isinstance(spec, str):
            out.append(TaskSpec(name, _check_type(loc, spec), 1.0, name))
            continue
        if not isinstance(spec, dict):
            raise ConfigError(f"{loc}={spec!r} must be a head type ({' or '.join(TASK_TYPES)}) or a mapping "
                              "{type: ..., weight: ..., column: ...}.")
        for k in spec:
            if k not in _SPEC_KEYS:
                raise ConfigError(f"{loc} has an unknown key {k!r}." + suggest(str(k), _SPEC_KEYS)
                                  + f" Keys: {', '.join(_SPEC_KEYS)}.")
        if "type" not in spec:
            raise ConfigError(f"{loc} has no type; add type: classification or type: regression.")
        t = _check_type(f"{loc}.type", spec["type"])
        w = spec.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ConfigError(f"{loc}.weight={w!r} must be a finite number > 0, e.g. weight: 0.5.")
        col = spec.get("column", name)
        if not isinstance(col, str) or not col:
            raise ConfigError(f"{loc}.column={col!r} must be the name of a label column (label, or an attribute).")
        out.append(TaskSpec(name, t, float(w), col))
    return out


def task_columns(dataset) -> list[str]:
    """The label columns ``dataset`` offers heads: ``"label"`` (when it has labels) and its
    per-row attributes."""
    cols = [LABEL_COLUMN] if dataset.labels is not None else []
    attrs = (dataset.meta or {}).get("attributes")
    if isinstance(attrs, dict):
        cols += [str(k) for k in attrs if str(k) != LABEL_COLUMN]
    return cols


def _column(dataset, task: TaskSpec) -> np.ndarray:
    if task.column == LABEL_COLUMN and dataset.labels is not None:
        return np.asarray(dataset.labels)
    attrs = (dataset.meta or {}).get("attributes")
    if not isinstance(attrs, dict) or task.column not in attrs:
        cols = task_columns(dataset)
        listed = ", ".join(cols) if cols else "none"
        raise DataError(f"head {task.name!r} reads column {task.column!r}, which dataset {dataset.name!r} does not "
                        f"have (its columns: {listed})." + suggest(task.column, cols)
                        + " Give the head a column that exists (column: NAME), or use a dataset with that attribute.")
    v = np.asarray(attrs[task.column])
    if v.ndim != 1 or len(v) != len(dataset):
        raise DataError(f"head {task.name!r}: column {task.column!r} of dataset {dataset.name!r} has shape {v.shape}, "
                        f"not one value per row ({len(dataset)}); give a 1-D per-row attribute.")
    return v


def _first_string(v: np.ndarray):
    for x in v.ravel():
        if isinstance(x, (str, bytes, np.str_, np.bytes_)):
            return x.item() if isinstance(x, np.generic) else x
    return None


def _as_class_indices(task: TaskSpec, v: np.ndarray, dataset) -> np.ndarray:
    s = _first_string(v) if v.dtype.kind in "USO" else None
    if s is not None or v.dtype.kind in "US":
        raise DataError(f"head {task.name!r} is classification but column {task.column!r} holds strings such as "
                        f"{s!r}; give integer class indices 0..K-1 (map the names to indices first).")
    try:
        f = v.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"head {task.name!r} is classification but column {task.column!r} holds values that are not "
                        "numbers; give integer class indices 0..K-1.") from None
    f = np.where(np.isnan(f), -1.0, f)  # a missing class is -1, the unlabeled convention
    bad = (f != np.round(f)) | ~np.isfinite(f) | (f < -1)
    if bad.any():
        shown = np.asarray(v).ravel()[np.flatnonzero(bad)[0]]
        shown = shown.item() if hasattr(shown, "item") else shown
        raise DataError(f"head {task.name!r} is classification but column {task.column!r} holds values that are not "
                        f"class indices, such as {shown!r}; give integers 0..K-1 (-1: missing), or make it a "
                        "regression head.")
    return f.astype(np.int64)


def _as_values(task: TaskSpec, v: np.ndarray) -> np.ndarray:
    s = _first_string(v) if v.dtype.kind in "USO" else None
    if s is not None:
        raise DataError(f"head {task.name!r} is regression but column {task.column!r} holds strings such as {s!r}; "
                        "give numbers or make it a classification head.")
    try:
        f = v.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"head {task.name!r} is regression but column {task.column!r} holds values that are not "
                        "numbers; give numbers or make it a classification head.") from None
    if np.isinf(f).any():
        raise DataError(f"head {task.name!r}: column {task.column!r} holds infinite values; give finite numbers "
                        "(NaN marks a missing value).")
    return f


def read_targets(dataset, tasks: list[TaskSpec], n_classes: dict[str, int] | None = None, *,
                 hide_unlabeled: bool = False) -> dict[str, np.ndarray]:
    """Each task's per-row targets of ``dataset``: int64 class indices (-1: missing) for a
    classification head, float64 values (NaN: missing) for a regression head.

    ``n_classes``: the training classes per classification task; a class index at or above it
    (a validation row of a class the training rows never showed) is an error.
    ``hide_unlabeled``: a row whose label is hidden (``-1`` in ``dataset.labels``) is missing for
    *every* head. Training uses it: a split that hides part of the target's labels (domain
    adaptation's unlabeled rows) keeps their attributes, which must not become training targets.
    """
    hidden = (np.asarray(dataset.labels) < 0) if (hide_unlabeled and dataset.labels is not None) else None
    out = {}
    for t in tasks:
        v = _column(dataset, t)
        if hidden is not None and hidden.any():
            v = np.asarray(v, dtype=object if v.dtype.kind in "USO" else np.float64).copy()
            v[hidden] = -1 if t.type == "classification" else np.nan
        if t.type == "classification":
            y = _as_class_indices(t, v, dataset)
            k = (n_classes or {}).get(t.name)
            if k is not None and (y >= k).any():
                raise DataError(f"head {t.name!r}: column {t.column!r} of dataset {dataset.name!r} holds class "
                                f"{int(y.max())}, but the head was trained on {k} classes (0..{k - 1}).")
            out[t.name] = y
        else:
            out[t.name] = _as_values(t, v)
    return out


def _n_classes(dataset, task: TaskSpec, y: np.ndarray) -> int:
    names = None
    if task.column == LABEL_COLUMN and dataset.classes is not None:
        names = dataset.classes
    else:
        names = ((dataset.meta or {}).get("attribute_classes") or {}).get(task.column)
    k = len(names) if names is not None else int(y.max()) + 1
    if (y >= k).any():
        raise DataError(f"head {task.name!r}: column {task.column!r} holds class {int(y.max())} but names only {k} "
                        "classes; fix the class list or the labels.")
    if k < 2:
        raise DataError(f"head {task.name!r}: column {task.column!r} of dataset {dataset.name!r} shows a single "
                        "class; a classification head needs at least 2.")
    return k


# ------------------------------------------------------------------------------------------ heads
class ClassificationHead(nn.Module):
    """A linear layer to ``n_classes`` logits."""

    def __init__(self, in_features: int, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(int(in_features), int(n_classes))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


class RegressionHead(nn.Module):
    """A linear layer to one standardised value; ``mean`` and ``std`` (buffers, the training
    targets') turn it back into the target's units (:meth:`unstandardize`)."""

    def __init__(self, in_features: int, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.fc = nn.Linear(int(in_features), 1)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """The standardised prediction ``(n,)``."""
        return self.fc(f).squeeze(1)

    def standardize(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mean) / self.std

    def unstandardize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


def _standardization(task: TaskSpec, y: np.ndarray, dataset) -> tuple[float, float]:
    ok = y[~np.isnan(y)]
    if len(ok) == 0:
        raise DataError(f"head {task.name!r}: column {task.column!r} of dataset {dataset.name!r} has no value (all "
                        "NaN); give targets for at least some training rows.")
    mean, std = float(ok.mean()), float(ok.std())
    # a constant target: unit scale (its standardised values are all 0 either way)
    return mean, (std if std > 1e-12 else 1.0)


def build_heads(tasks: list[TaskSpec], feature_dim: int, dataset) -> tuple[nn.ModuleDict, dict[str, np.ndarray]]:
    """The heads of ``tasks`` on ``feature_dim`` features, sized and standardised from the
    training ``dataset``, and the tasks' targets on it (rows with a hidden label count for no head:
    see :func:`read_targets`)."""
    targets = read_targets(dataset, tasks, hide_unlabeled=True)
    heads = nn.ModuleDict()
    for t in tasks:
        y = targets[t.name]
        if t.type == "classification":
            if not (y >= 0).any():
                raise DataError(f"head {t.name!r}: column {t.column!r} of dataset {dataset.name!r} has no class (all "
                                "-1); give targets for at least some training rows.")
            heads[t.name] = ClassificationHead(feature_dim, _n_classes(dataset, t, y))
        else:
            heads[t.name] = RegressionHead(feature_dim, *_standardization(t, y, dataset))
    return heads, targets


def _task_loss(head: nn.Module, task: TaskSpec, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(loss, rows counted)`` of one task on a batch: cross-entropy, or MSE on standardised targets."""
    if task.type == "classification":
        m = y >= 0
        if not bool(m.any()):
            return out.sum() * 0.0, 0  # keeps the graph: every head gets a (zero) gradient
        return F.cross_entropy(out[m], y[m]), int(m.sum())
    m = ~torch.isnan(y)
    if not bool(m.any()):
        return out.sum() * 0.0, 0
    return F.mse_loss(out[m], head.standardize(y[m]).to(out.dtype)), int(m.sum())


# ------------------------------------------------------------------------------------- objective
class MultiTaskObjective(Objective):
    """Several task heads on a shared encoder, trained through the one Trainer.

    Parameters
    ----------
    heads
        The task specs (see :func:`parse_heads`); the first head is the primary one.
    dataset
        The training dataset: the one given to ``Trainer.fit`` (``ctx.indices`` index its rows).
        It sizes the classification heads, gives the regression heads' mean and std, and its
        per-task targets are held as (non-persistent) buffers.
    feature_dim
        Width of the encoder's features.
    weighting, weighting_options
        A registered ``mtl_weighting`` name (or a :class:`~.weighting.Weighting`) and its options.

    ``ctx.model`` is the encoder, or a :class:`MultiTaskModel` (its ``features`` are used); the
    shared parameters are its trainable parameters that are not in these heads. Every row of the
    dataset trains (``needs_labels = False``); a row without a value for a task is left out of
    that task's loss, and a row whose label is hidden (``-1``) trains no head. Logged per step:
    ``loss_<task>`` (unweighted), ``acc_<task>`` for classification tasks, and what the weighting
    logs. ``"logits"`` (the primary head's) are
    returned when the primary head is a classification head on the labels, so the Trainer's
    ``train_accuracy`` means that head's accuracy.
    """

    needs_labels = False

    def __init__(self, heads, dataset, feature_dim: int, *, weighting="equal", weighting_options=None):
        super().__init__()
        self.tasks = parse_heads(heads)
        self.heads, targets = build_heads(self.tasks, int(feature_dim), dataset)
        self.n_rows = len(dataset)
        for t in self.tasks:
            y = targets[t.name]
            tensor = torch.from_numpy(y) if t.type == "classification" else torch.from_numpy(y.astype(np.float32))
            self.register_buffer(f"targets_{t.name}", tensor, persistent=False)
        self.weighting: Weighting = make_weighting(weighting, weighting_options)
        self.weighting.setup([t.name for t in self.tasks], [t.type for t in self.tasks])

    @property
    def primary(self) -> TaskSpec:
        return self.tasks[0]

    def n_classes(self) -> dict[str, int]:
        return {t.name: self.heads[t.name].fc.out_features for t in self.tasks if t.type == "classification"}

    def model(self, encoder: nn.Module) -> MultiTaskModel:
        """The prediction model: ``encoder`` with these heads (the same modules)."""
        return MultiTaskModel(encoder, self.heads, self.tasks)

    def _shared(self, enc: nn.Module) -> list[nn.Parameter]:
        own = {id(p) for p in self.heads.parameters()}
        return [p for p in enc.parameters() if p.requires_grad and id(p) not in own]

    def task_losses(self, feats: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``(L (T,), logs)``: each task's loss on the batch (times its static weight)."""
        out, logs = [], {}
        for t in self.tasks:
            head = self.heads[t.name]
            y = getattr(self, f"targets_{t.name}")[idx.to(getattr(self, f"targets_{t.name}").device)].to(feats.device)
            z = head(feats)
            loss, n = _task_loss(head, t, z, y)
            logs[f"loss_{t.name}"] = loss.detach()
            if t.type == "classification" and n:
                m = y >= 0
                logs[f"acc_{t.name}"] = (z[m].argmax(1) == y[m]).float().mean().detach()
            out.append(loss * t.weight)
        return torch.stack(out), logs

    def forward(self, ctx) -> dict:
        enc = ctx.model
        feats = enc.features(ctx.inputs) if hasattr(enc, "features") else enc(ctx.inputs)
        idx = torch.as_tensor(ctx.indices, dtype=torch.long)
        if len(idx) and int(idx.max()) >= self.n_rows:
            raise DataError(f"the objective was built on a dataset of {self.n_rows} rows but the batch has row "
                            f"{int(idx.max())}; build MultiTaskObjective on the dataset given to Trainer.fit.")
        L, logs = self.task_losses(feats, idx)
        shared = self._shared(enc)
        last = next((p for p in reversed(shared) if p.ndim >= 2), None)
        inp = WeightingInput(L, shared, last, int(ctx.epoch or 0), int(ctx.step or 0))
        if self.weighting.gradient_based and len(self.tasks) == 1:
            loss = L.sum()  # one task: PCGrad and UPGrad return its gradient as it is, so skip the extra pass
        elif self.weighting.gradient_based:
            L_head, _ = self.task_losses(feats.detach(), idx)
            head_loss = L_head.sum()
            if shared:
                G = task_gradients(L, shared)
                g = self.weighting.aggregate(G, inp)
                surr = surrogate_loss(shared, g)
                loss = (surr - surr.detach()) + head_loss  # value sum_k L_k; shared grads exactly g
            else:  # nothing shared trains (a frozen encoder): the heads' losses alone
                loss = head_loss
        else:
            loss, extra = self.weighting.combine(inp)
            logs.update(extra)
        out = {"loss": loss, "features": feats, **logs}
        p = self.primary
        if p.type == "classification" and p.column == LABEL_COLUMN:
            out["logits"] = self.heads[p.name](feats)
        return out

    def after_optimizer_step(self, progress: float) -> None:
        self.weighting.after_optimizer_step()


# ---------------------------------------------------------------------------------- prediction
class MultiTaskModel(nn.Module):
    """The shared ``encoder`` with the task ``heads``, for prediction (and as the Trainer's model).

    ``features(x)`` is the encoder; ``forward(x)`` packs every head's output side by side in task
    order: a classification head's logits, a regression head's prediction in the target's units.
    :meth:`unpack` splits such a ``(n, width)`` array by task. ``layer_groups`` are the encoder's
    (prefixed ``encoder.``) then ``heads`` (the last group, the one fine-tuning calls the head).
    """

    def __init__(self, encoder: nn.Module, heads: nn.ModuleDict, tasks: list[TaskSpec]):
        super().__init__()
        self.encoder = encoder
        self.heads = heads
        self.tasks = list(tasks)

    @property
    def spec(self):
        return self.encoder.spec

    @property
    def feature_dim(self) -> int:
        return self.encoder.feature_dim

    @property
    def backbone(self) -> nn.Module:
        """The encoder (what the run artifacts call a model's backbone)."""
        return self.encoder

    def preprocess(self, inputs):
        return self.encoder.preprocess(inputs)

    def move_inputs(self, batch, device):
        return self.encoder.move_inputs(batch, device)

    def features(self, x) -> torch.Tensor:
        return self.encoder(x)

    def outputs(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each task's output from features: logits ``(n, K)`` or values ``(n,)`` in target units."""
        out = {}
        for t in self.tasks:
            h = self.heads[t.name]
            out[t.name] = h(feats) if t.type == "classification" else h.unstandardize(h(feats))
        return out

    def forward(self, x) -> torch.Tensor:
        out = self.outputs(self.features(x))
        return torch.cat([out[t.name] if t.type == "classification" else out[t.name][:, None] for t in self.tasks],
                         dim=1)

    def widths(self) -> dict[str, int]:
        return {t.name: (self.heads[t.name].fc.out_features if t.type == "classification" else 1) for t in self.tasks}

    def unpack(self, Z) -> dict[str, np.ndarray]:
        """Split packed outputs ``(n, width)`` by task (regression outputs as ``(n,)``)."""
        Z = np.asarray(Z)
        out, i = {}, 0
        for t in self.tasks:
            w = self.widths()[t.name]
            out[t.name] = Z[:, i:i + w] if t.type == "classification" else Z[:, i]
            i += w
        return out

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        groups = [(n, ["encoder." + p for p in ps]) for n, ps in self.encoder.layer_groups()]
        groups.append(("heads", ["heads." + n for n, _ in self.heads.named_parameters()]))
        return groups

    def tasks_json(self) -> str:
        """The task specs with each classification head's width, as JSON (a saved model's header)."""
        w = self.widths()
        return json.dumps([{**asdict(t), "width": w[t.name]} for t in self.tasks])


def validation_losses(model: MultiTaskModel, Z, targets: dict[str, np.ndarray]) -> dict[str, float]:
    """Each task's loss on packed outputs ``Z`` (what training minimises: cross-entropy, MSE of
    standardised targets), NaN for a task with no value in these rows."""
    parts = model.unpack(Z)
    out = {}
    for t in model.tasks:
        y = np.asarray(targets[t.name])
        if t.type == "classification":
            m = y >= 0
            out[t.name] = (float(F.cross_entropy(torch.as_tensor(parts[t.name][m], dtype=torch.float32),
                                                 torch.as_tensor(y[m]))) if m.any() else float("nan"))
        else:
            m = ~np.isnan(y)
            std = float(model.heads[t.name].std)
            out[t.name] = float(np.mean(((parts[t.name][m] - y[m]) / std) ** 2)) if m.any() else float("nan")
    return out


def task_metrics(model: MultiTaskModel, Z, targets: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per-task metrics of packed outputs ``Z`` against ``targets`` (rows without a value left
    out): ``{"accuracy", "n"}`` for a classification task, ``{"mse", "rmse", "mae", "r2", "n"}``
    (in the target's units, :mod:`transferkit.metrics.regression`) for a regression task."""
    from ..metrics.regression import regression_report

    parts = model.unpack(Z)
    out: dict[str, dict] = {}
    for t in model.tasks:
        y = np.asarray(targets[t.name])
        if t.type == "classification":
            m = y >= 0
            acc = float((parts[t.name][m].argmax(1) == y[m]).mean()) if m.any() else float("nan")
            out[t.name] = {"type": t.type, "accuracy": acc, "n": int(m.sum())}
        else:
            m = ~np.isnan(y)
            rep = regression_report(y[m], parts[t.name][m]) if m.any() else {
                "mse": float("nan"), "rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "n": 0}
            out[t.name] = {"type": t.type, **rep}
    return out


# ---------------------------------------------------------------------------------------- delta-m
def delta_m(mtl_metrics, single_metrics, higher_is_better) -> float:
    """Delta-m%: the mean relative change of a multi-task model against single-task models.

    ``Delta_m = 100/T sum_k (-1)^{l_k} (M_mtl,k - M_st,k) / M_st,k``, with ``l_k = 1`` when a
    lower value of metric ``k`` is better (an error, an MSE) and 0 when higher is better (an
    accuracy, R^2) (Maninis, Radosavovic & Kokkinos, CVPR 2019; Vandenhende et al., TPAMI 2021).
    Positive: the multi-task model is better on average.

    Parameters
    ----------
    mtl_metrics, single_metrics
        The ``T`` metrics of the multi-task model and of the single-task baselines: two mappings
        with the same keys, or two sequences of the same length.
    higher_is_better
        One bool for every metric, a sequence of ``T`` bools, or a mapping by key.

    Raises
    ------
    DataError
        Different keys or lengths, a metric that is not a finite number, a baseline of 0.
    """
    if isinstance(mtl_metrics, dict) != isinstance(single_metrics, dict):
        raise DataError("mtl_metrics and single_metrics must both be mappings (task -> metric) or both sequences.")
    if isinstance(mtl_metrics, dict):
        keys = list(single_metrics)
        if set(mtl_metrics) != set(keys):
            raise DataError(f"mtl_metrics has keys {sorted(mtl_metrics)} but single_metrics {sorted(keys)}; give one "
                            "metric per task in both.")
        m = [mtl_metrics[k] for k in keys]
        s = [single_metrics[k] for k in keys]
        if isinstance(higher_is_better, dict):
            if set(higher_is_better) != set(keys):
                raise DataError(f"higher_is_better has keys {sorted(higher_is_better)}, the metrics {sorted(keys)}.")
            hib = [higher_is_better[k] for k in keys]
        else:
            hib = higher_is_better
    else:
        keys = list(range(len(single_metrics)))
        m, s, hib = list(mtl_metrics), list(single_metrics), higher_is_better
    if len(m) != len(s) or not s:
        raise DataError(f"mtl_metrics has {len(m)} values but single_metrics {len(s)}; give one metric per task "
                        "(at least one).")
    if isinstance(hib, (bool, np.bool_)):
        hib = [bool(hib)] * len(s)
    hib = list(hib)
    if len(hib) != len(s) or not all(isinstance(h, (bool, np.bool_)) for h in hib):
        raise DataError(f"higher_is_better must be a bool or {len(s)} bools, got {higher_is_better!r}.")
    total = 0.0
    for k, a, b, h in zip(keys, m, s, hib):
        for v, what in ((a, "mtl_metrics"), (b, "single_metrics")):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise DataError(f"{what}[{k!r}]={v!r} is not a finite number.")
        if b == 0:
            raise DataError(f"single_metrics[{k!r}] is 0; Delta-m% divides by the single-task metric, so it must be "
                            "non-zero.")
        total += (1.0 if h else -1.0) * (float(a) - float(b)) / float(b)
    return 100.0 * total / len(s)
