"""Knowledge distillation for the one Trainer: Hinton KD, a FitNets hint, unlabeled target rows.

A large **teacher** (a finished run, a fitted strategy, or any module) labels a batch with its
softened class probabilities and a small **student** (any registered backbone with a new head,
e.g. ``tiny_cnn``) learns to reproduce them:

- :func:`kd_loss`: the Hinton et al. (2015) loss on logits;
- :class:`KDObjective`: a :class:`transferkit.train.Objective` holding a frozen teacher (a
  module, or its logits precomputed once and indexed by ``ctx.indices``); unlabeled rows
  (label ``-1``) train on the teacher's soft labels alone, which is distillation on unlabeled
  target data;
- :class:`HintTerm`: a FitNets-style (Romero et al., 2015) feature hint, a Trainer loss term;
- :func:`teacher_outputs`, :func:`teacher_logits_of`: the teacher's logits (and features) on a
  dataset, from a module, a fitted strategy or a finished run directory;
- :func:`distill`: the whole thing in one call.

References
----------
G. Hinton, O. Vinyals, J. Dean. Distilling the Knowledge in a Neural Network. NIPS Deep
Learning Workshop, 2015 (arXiv:1503.02531).
A. Romero, N. Ballas, S. E. Kahou, A. Chassang, C. Gatta, Y. Bengio. FitNets: Hints for Thin
Deep Nets. ICLR 2015.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_number
from ..errors import ConfigError, DataError
from ..train import Objective, Trainer

__all__ = ["HintTerm", "KDObjective", "distill", "kd_loss", "teacher_logits_of", "teacher_outputs"]


def _check_temperature_alpha(temperature, alpha) -> tuple[float, float]:
    temperature = float(check_number("temperature", temperature, low=0, low_inclusive=False))
    if not math.isfinite(temperature):
        raise ConfigError(f"temperature={temperature!r} must be a finite number > 0; use e.g. 4.0.")
    alpha = float(check_number("alpha", alpha, low=0, high=1))
    return temperature, alpha


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None,
            temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    r"""The knowledge-distillation loss of Hinton et al. (2015).

    .. math::

        L = \alpha \, T^2 \, \frac{1}{n} \sum_{i=1}^n \mathrm{KL}\big(\sigma(t_i / T) \,\|\,
            \sigma(s_i / T)\big) + (1 - \alpha) \, \frac{1}{|L|} \sum_{i \in L}
            -\log \sigma(s_i)_{y_i}

    with :math:`\sigma` the softmax, :math:`s_i, t_i` the student's and teacher's logits of row
    :math:`i`, and :math:`L` the rows with a label :math:`y_i \ge 0`. Rows with label ``-1``
    (unlabeled target rows) contribute the distillation term only; with no labeled row the
    cross-entropy term is 0. The :math:`T^2` factor keeps the soft term's gradient, which scales
    as :math:`1/T^2`, comparable across temperatures. The teacher's logits are constants (no
    gradient reaches them).

    Parameters
    ----------
    student_logits, teacher_logits
        ``(n, K)`` logits.
    labels
        ``(n,)`` int class indices in ``[0, K)`` or ``-1``; ``None``: every row is unlabeled.
    temperature
        :math:`T > 0`; larger values soften both distributions.
    alpha
        Weight in ``[0, 1]`` of the distillation term; ``alpha = 0`` is the plain cross-entropy
        of the labeled rows, ``alpha = 1`` ignores the labels.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    temperature, alpha = _check_temperature_alpha(temperature, alpha)
    s, t = student_logits, teacher_logits
    if not isinstance(s, torch.Tensor) or not isinstance(t, torch.Tensor) or s.ndim != 2 or t.ndim != 2:
        raise ConfigError("kd_loss takes student_logits and teacher_logits as (n, K) tensors; got "
                          f"{tuple(getattr(s, 'shape', ()))} and {tuple(getattr(t, 'shape', ()))}.")
    if s.shape != t.shape:
        raise ConfigError(f"the student has {s.shape[1]} outputs but the teacher {t.shape[1]} classes (logits "
                          f"{tuple(s.shape)} vs {tuple(t.shape)}); give the student num_classes={t.shape[1]}.")
    t = t.detach().to(s.dtype)
    soft = s.new_zeros(())
    if alpha > 0:
        log_ps = F.log_softmax(s / temperature, dim=1)
        log_pt = F.log_softmax(t / temperature, dim=1)
        # KL(p_t || p_s) summed over classes, mean over rows ("batchmean" is the true KL mean)
        soft = F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean") * temperature ** 2
    hard = s.new_zeros(())
    if alpha < 1 and labels is not None:
        y = torch.as_tensor(labels, device=s.device).long()
        if y.shape != (s.shape[0],):
            raise DataError(f"labels have shape {tuple(y.shape)} but the logits {s.shape[0]} rows; give one label "
                            "per row (-1 for an unlabeled row).")
        mask = y >= 0
        if bool(mask.any()):
            if bool((y < -1).any()) or int(y.max()) >= s.shape[1]:
                raise DataError(f"labels must lie in [0, {s.shape[1]}) or be -1 (unlabeled); got values from "
                                f"{int(y.min())} to {int(y.max())}.")
            hard = F.cross_entropy(s[mask], y[mask])
    return alpha * soft + (1 - alpha) * hard


def _as_table(values, name: str, n_rows: int | None = None) -> torch.Tensor:
    """A float32 ``(n, D)`` CPU tensor of per-row teacher outputs, validated."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    try:
        arr = torch.as_tensor(np.asarray(values, dtype=np.float32))
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an (n_rows, D) array of numbers; got {type(values).__name__}.") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConfigError(f"{name} must be a non-empty (n_rows, D) array; got shape {tuple(arr.shape)}.")
    if not bool(torch.isfinite(arr).all()):
        raise DataError(f"{name} holds NaN or infinite values; recompute the teacher's outputs.")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise DataError(f"{name} has {arr.shape[0]} rows but the training dataset {n_rows}; compute them on the "
                        "same dataset, in the same row order (teacher_logits_of(teacher, dataset)).")
    return arr


def _lookup(table: torch.Tensor, idx, name: str) -> torch.Tensor:
    if idx is None:
        raise ConfigError(f"{name} are indexed by the batch's row positions (ctx.indices), which this step lacks; "
                          "train through transferkit.train.Trainer.")
    idx = torch.as_tensor(idx, dtype=torch.long)
    if len(idx) and (int(idx.max()) >= table.shape[0] or int(idx.min()) < 0):
        raise DataError(f"{name} has {table.shape[0]} rows but the batch asks for row {int(idx.max())}; compute them "
                        "on the training dataset itself (every row, same order).")
    return table[idx.to(table.device)]


def _find_layer(model: nn.Module, layer: str, who: str) -> nn.Module:
    from .._validation import suggest

    named = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in named or layer == "":
        names = [n for n in named if n]
        raise ConfigError(f"layer={layer!r} is not a submodule of the {who}." + suggest(str(layer), names)
                          + f" Choose one of {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}.")
    return named[layer]


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """A layer's output as ``(n, D)``: feature maps ``(n, C, H, W)`` averaged over space, token
    sequences ``(n, L, D)`` over tokens (FitNets regresses the map itself; pooling lets one
    linear adapter serve any input size)."""
    if isinstance(x, (tuple, list)):
        x = x[0]
    if x.ndim == 4:
        return x.mean(dim=(2, 3))
    if x.ndim == 3:
        return x.mean(dim=1)
    return x.reshape(x.shape[0], -1)


def _student_pass(model, x):
    """``(features, logits)`` of one pass (features ``None`` for a model without ``features``/``head``)."""
    if hasattr(model, "features") and hasattr(model, "head"):
        f = model.features(x)
        return f, model.head(f)
    return None, model(x)


class KDObjective(Objective):
    r"""Hinton knowledge distillation as the Trainer's training loss (``Trainer(objective=...)``).

    At each step the student's logits ``ctx.model(ctx.inputs)`` are compared with the teacher's
    on the same rows by :func:`kd_loss`. Every row of the training dataset trains
    (``needs_labels = False``): labeled rows with the distillation term and the cross-entropy,
    unlabeled rows (label ``-1``) with the teacher's soft labels only.

    Parameters
    ----------
    teacher
        Either

        - an ``(n_rows, K)`` array/tensor of the teacher's logits on the training dataset, in
          its row order, computed once before training (:func:`teacher_logits_of`); the step
          indexes it by ``ctx.indices``. This is the cheap path (one teacher pass instead of
          one per epoch, preferred on the CPU) and the one to use when the teacher needs
          other preprocessing than the student (another input size or backbone); or
        - an ``nn.Module`` taking the *student's* preprocessed batch and returning ``(n, K)``
          logits. It is frozen: kept in eval mode (also while the Trainer trains),
          ``requires_grad = False``, run under ``torch.no_grad``.
    temperature, alpha
        See :func:`kd_loss`.

    Notes
    -----
    Logged per epoch: ``kd`` (the :math:`T^2`-scaled KL term) and ``ce`` (the labeled rows'
    cross-entropy, 0 on an unlabeled batch). The returned ``logits`` give the Trainer's
    ``train_accuracy`` on the labeled rows.
    """

    needs_labels = False

    def __init__(self, teacher, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        self.temperature, self.alpha = _check_temperature_alpha(temperature, alpha)
        if isinstance(teacher, nn.Module):
            self.teacher = teacher
            for p in teacher.parameters():
                p.requires_grad_(False)
            teacher.eval()
            self.register_buffer("teacher_logits", None)
        else:
            self.teacher = None
            # a buffer: it moves to the device with the objective and is checkpointed with it
            self.register_buffer("teacher_logits", _as_table(teacher, "teacher logits"))

    @property
    def num_classes(self) -> int | None:
        if self.teacher_logits is not None:
            return int(self.teacher_logits.shape[1])
        return getattr(self.teacher, "num_classes", None)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:  # the Trainer calls train() every epoch: the teacher stays frozen
            self.teacher.eval()
        return self

    def teacher_logits_for(self, ctx) -> torch.Tensor:
        if self.teacher is None:
            return _lookup(self.teacher_logits, ctx.indices, "teacher logits")
        with torch.no_grad():
            return self.teacher(ctx.inputs).float()

    def forward(self, ctx) -> dict:
        feats, s = _student_pass(ctx.model, ctx.inputs)
        t = self.teacher_logits_for(ctx).to(s.device)
        if s.ndim != 2 or t.shape != s.shape:
            raise ConfigError(f"the student has {s.shape[-1]} outputs but the teacher {t.shape[-1]} classes; give the "
                              f"student num_classes={t.shape[-1]}.")
        soft = kd_loss(s, t, None, self.temperature, alpha=1.0)
        hard = kd_loss(s, t, ctx.labels, self.temperature, alpha=0.0) if self.alpha < 1 else s.new_zeros(())
        loss = self.alpha * soft + (1 - self.alpha) * hard
        out = {"loss": loss, "logits": s, "kd": soft.detach(), "ce": hard.detach()}
        if feats is not None:
            out["features"] = feats  # what extra loss terms (a HintTerm) see as ctx.features
        return out


class HintTerm(nn.Module):
    r"""A FitNets-style feature hint (Romero et al., 2015), a Trainer loss term.

    .. math::

        L_{hint} = \beta \, \frac{1}{n D_t} \sum_{i=1}^n \lVert W f^s_i + b - f^t_i \rVert_2^2

    with :math:`f^s_i` the student's features of row :math:`i`, :math:`f^t_i \in
    \mathbb{R}^{D_t}` the teacher's features of that row, precomputed and indexed by
    ``ctx.indices``, and :math:`(W, b)` a learned linear adapter (the regressor of FitNets; here
    on pooled features rather than a convolutional regressor on the feature map). The mean over
    rows and dimensions is FitNets' :math:`\tfrac12\lVert\cdot\rVert^2` up to a constant
    factor absorbed by :math:`\beta`.

    Parameters
    ----------
    teacher_features
        ``(n_rows, D_t)`` teacher features on the training dataset, in its row order
        (:func:`teacher_outputs` with ``features=True``, or ``layer=`` for a middle layer).
    student_dim
        :math:`D_s`, the width of the student's features (``backbone.feature_dim``; for a
        ``layer``, its channel count).
    beta
        Weight of the term (> 0).
    student, layer
        The hint layer: ``None`` (default) is the student's backbone output (``ctx.features``,
        else ``ctx.model.features(ctx.inputs)``); a submodule name of ``student`` (e.g.
        ``"backbone.stage1"``) takes that module's output, captured by a forward hook during
        the step's own pass (no second forward) and pooled to ``(n, C)``.

    Notes
    -----
    The adapter's parameters must be in the Trainer's ``param_groups``. Logged: ``hint``
    (the unweighted mean squared error).
    """

    def __init__(self, teacher_features, student_dim: int, beta: float = 1.0, *, student: nn.Module | None = None,
                 layer: str | None = None):
        super().__init__()
        self.beta = float(check_number("beta", beta, low=0, low_inclusive=False))
        student_dim = check_number("student_dim", student_dim, low=1, integer=True)
        self.register_buffer("teacher_features", _as_table(teacher_features, "teacher features"))
        self.adapter = nn.Linear(student_dim, self.teacher_features.shape[1])
        self.layer = layer
        self._captured = None
        if layer is not None:
            if not isinstance(student, nn.Module):
                raise ConfigError(f"HintTerm(layer={layer!r}) needs student=<the student model> to hook the layer.")
            _find_layer(student, layer, "student").register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        if torch.is_grad_enabled():  # a training pass; evaluation passes (no grad) are not hints
            self._captured = output

    def forward(self, ctx) -> dict:
        if self.layer is not None:
            if self._captured is None:
                ctx.model(ctx.inputs)  # only when the step's pass did not run the hooked layer
            f, self._captured = _pooled(self._captured), None
        else:
            f = ctx.features if ctx.features is not None else ctx.model.features(ctx.inputs)
        if f.ndim != 2 or f.shape[1] != self.adapter.in_features:
            raise ConfigError(f"the student's hint features have shape {tuple(f.shape)} but the adapter takes "
                              f"{self.adapter.in_features} features; give student_dim={f.shape[-1]}.")
        ft = _lookup(self.teacher_features, ctx.indices, "teacher features").to(f.device, f.dtype)
        mse = F.mse_loss(self.adapter(f), ft)
        return {"loss": self.beta * mse, "hint": mse.detach()}


# ----------------------------------------------------------------------------- teacher outputs
def teacher_outputs(model: nn.Module, dataset, *, features: bool = False, layer: str | None = None,
                    batch_size: int = 256, device: str | None = None):
    """The logits (and optionally features) of a module teacher on every row of ``dataset``.

    ``model`` preprocesses the dataset itself (``model.preprocess``: its own input size and
    normalisation), runs in eval mode under ``torch.inference_mode`` and is left in the mode it
    was in. Returns ``logits`` ``(n, K)`` float32, or ``(logits, features)`` with ``features``:
    the backbone's output, or with ``layer`` (a submodule name, e.g. ``"backbone.stage1"``) that
    module's output pooled to ``(n, C)`` (see :class:`HintTerm`).
    """
    from ..train.data import make_source

    if not isinstance(model, nn.Module):
        raise ConfigError(f"teacher_outputs takes an nn.Module teacher; got {type(model).__name__}.")
    hooked = _find_layer(model, layer, "teacher") if layer is not None else None
    if features and hooked is None and not (hasattr(model, "features") and hasattr(model, "head")):
        raise ConfigError("features=True needs a teacher with features() and head() (a transferkit TransferModel).")
    batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    dev = torch.device(device) if device is not None else next(iter(model.parameters()), torch.zeros(())).device
    src = make_source(model, dataset, 0)
    batches = [np.arange(s, min(s + batch_size, len(dataset))) for s in range(0, len(dataset), batch_size)]
    was = model.training
    model.eval()
    zs, fs, seen = [], [], []
    handle = hooked.register_forward_hook(lambda m, i, o: seen.append(_pooled(o))) if hooked is not None else None
    try:
        with torch.inference_mode():
            for _, xb in src.batches(batches):
                xb = model.move_inputs(xb, dev) if hasattr(model, "move_inputs") else xb.to(dev)
                if features and hooked is not None:
                    zs.append(model(xb).float().cpu())
                    fs.append(seen.pop().float().cpu())
                    seen.clear()
                elif features:
                    f = model.features(xb)
                    zs.append(model.head(f).float().cpu())
                    fs.append(f.float().cpu())
                else:
                    zs.append(model(xb).float().cpu())
    finally:
        model.train(was)
        if handle is not None:
            handle.remove()
    logits = torch.cat(zs).numpy() if zs else np.zeros((0, getattr(model, "num_classes", 0)), np.float32)
    return (logits, torch.cat(fs).numpy()) if features else logits


def teacher_logits_of(teacher, dataset) -> np.ndarray:
    """The teacher's logits ``(n, K)`` on every row of ``dataset``, in its row order.

    Parameters
    ----------
    teacher
        A finished run directory (``transferkit run ... --out DIR``, or one of its
        ``STRATEGY/seedN`` folders; its best strategy by validation accuracy, see
        :func:`transferkit.inference.load_run`), a fitted strategy (anything with
        ``predict_logits(dataset)``, e.g. what ``load_run`` returns) or an ``nn.Module``
        (:func:`teacher_outputs`). A run's model preprocesses the data its own way, so the
        teacher may take another input size or backbone than the student.
    dataset
        The rows to label (labeled or not): the student's training dataset.
    """
    from .. import inference

    if isinstance(teacher, (str, os.PathLike)):
        ref = inference.locate_run(teacher)
        inference.check_fits(dataset, ref.facts, f"dataset {getattr(dataset, 'name', '?')!r}")
        teacher = inference.load_run(ref)
        logits = inference.apply(teacher, dataset, f"dataset {getattr(dataset, 'name', '?')!r}")
    elif isinstance(teacher, nn.Module):
        logits = teacher_outputs(teacher, dataset)
    elif callable(getattr(teacher, "predict_logits", None)):
        logits = np.asarray(teacher.predict_logits(dataset))
    else:
        raise ConfigError(f"teacher={type(teacher).__name__} is not a run directory, a fitted strategy (with "
                          "predict_logits) or an nn.Module; give one of those.")
    return _as_table(logits, "teacher logits", len(dataset)).numpy()


# ----------------------------------------------------------------------------- one call
def distill(teacher, student: nn.Module, dataset, *, temperature: float = 4.0, alpha: float = 0.9,
            hint_features=None, beta: float = 1.0, hint_layer: str | None = None, epochs: int = 20,
            batch_size: int = 32, lr: float = 1e-3, seed: int = 0, device: str | None = "cpu", val=None,
            progress: bool = False, **trainer_kwargs) -> Trainer:
    """Distil ``teacher`` into ``student`` on ``dataset`` through the one Trainer.

    Parameters
    ----------
    teacher
        Precomputed logits ``(len(dataset), K)``; or a run directory / fitted strategy, whose
        logits on ``dataset`` are computed once (:func:`teacher_logits_of`); or an ``nn.Module``
        taking the student's preprocessed batch, run at every step (frozen).
    student
        A :class:`transferkit.nn.TransferModel` with ``K`` outputs, e.g.
        ``create_backbone("tiny_cnn", num_classes=K, image_size=..., seed=...)``.
    dataset
        The training rows: labeled, unlabeled (labels ``-1``: the student learns from the
        teacher's soft labels only) or both.
    temperature, alpha
        See :func:`kd_loss`.
    hint_features, beta, hint_layer
        Optional ``(len(dataset), D_t)`` teacher features: adds a :class:`HintTerm` of weight
        ``beta`` on the student's features (``hint_layer``: on the output of that submodule of
        the student, e.g. ``"backbone.stage1"``; its width is found by one forward pass).
    epochs, batch_size, lr, seed, device, val, progress, **trainer_kwargs
        For :class:`~transferkit.train.Trainer` (AdamW over the student's and the hint
        adapter's parameters at ``lr``); ``val`` is a labeled split for epoch selection.

    Returns
    -------
    Trainer
        The fitted trainer: ``trainer.model`` is the student (with the selected weights),
        ``trainer.history`` the epochs (``kd``, ``ce``, ``hint`` logged),
        ``trainer.predict_logits(ds)`` its logits.

    Notes
    -----
    The Trainer does not augment the batches of an objective (``augment`` is ignored here):
    precomputed teacher logits belong to the un-augmented rows.
    """
    if not isinstance(student, nn.Module):
        raise ConfigError(f"student must be a transferkit TransferModel (an nn.Module); got {type(student).__name__}.")
    if isinstance(teacher, nn.Module):
        obj = KDObjective(teacher, temperature, alpha)
    else:
        if isinstance(teacher, (str, os.PathLike)) or callable(getattr(teacher, "predict_logits", None)):
            teacher = teacher_logits_of(teacher, dataset)
        obj = KDObjective(_as_table(teacher, "teacher logits", len(dataset)), temperature, alpha)
    k_student = getattr(student, "num_classes", None)
    if obj.num_classes is not None and k_student is not None and k_student != obj.num_classes:
        raise ConfigError(f"the student has {k_student} outputs but the teacher {obj.num_classes} classes; give the "
                          f"student num_classes={obj.num_classes}.")
    losses = list(trainer_kwargs.pop("losses", ()))
    params = [p for p in student.parameters() if p.requires_grad]
    if hint_features is not None:
        dim = _hint_width(student, dataset, hint_layer)
        hint = HintTerm(_as_table(hint_features, "teacher features", len(dataset)), dim, beta, student=student,
                        layer=hint_layer)
        losses.append(hint)
        params += list(hint.parameters())
    trainer = Trainer(student, [{"params": params, "lr": lr, "name": "student"}], epochs=epochs,
                      batch_size=batch_size, seed=seed, device=device, progress=progress, objective=obj,
                      losses=losses, **trainer_kwargs)
    return trainer.fit(dataset, val)


def _hint_width(student: nn.Module, dataset, layer: str | None) -> int:
    """The width of the student's hint features: ``backbone.feature_dim``, or a layer's pooled
    output width measured on two rows (a shape, not a guess from the architecture)."""
    if layer is None:
        dim = getattr(getattr(student, "backbone", None), "feature_dim", None)
        if dim is None:
            raise ConfigError("hint_features needs a student with backbone.feature_dim (a transferkit TransferModel), "
                              "or hint_layer=<a submodule name>.")
        return int(dim)
    part = dataset.subset(np.arange(min(2, len(dataset))))
    was = student.training
    try:
        # eval mode: a BatchNorm's running statistics must not move before training starts
        _, feats = teacher_outputs(student, part, features=True, layer=layer)
    finally:
        student.train(was)
    return int(feats.shape[1])
