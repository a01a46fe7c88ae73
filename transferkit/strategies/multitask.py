"""Multi-task learning: one shared backbone, several named heads, one weighting of their losses."""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from .._registry import register
from ..errors import ConfigError, DataError
from ..train.selection import SelectionCallback, _capped
from .base import (
    MAX_EPOCHS,
    Strategy,
    check_finite_tree,
    check_flag,
    check_option,
    check_unfreeze,
    n_backbone_groups,
    resolve_backbone,
    seeded,
)
from .finetune import check_training_budget

#: ``heads`` when it is left out: one classification head on the dataset's labels.
DEFAULT_HEADS = {"label": "classification"}
MONITORS = ("val_loss", "val_accuracy")


class MultiTaskSelection(SelectionCallback):
    """The epoch to keep, scored on a labeled validation split for every head.

    Each scored epoch logs ``val_loss_<task>`` (the training loss of the task: cross-entropy, or
    the MSE of standardised targets), ``val_loss`` (their sum: the equal-weighted multi-task
    loss) and, when the primary head is a classification head, ``val_accuracy`` (its accuracy).
    ``monitor="val_loss"`` keeps the epoch with the lowest ``val_loss``; ``"val_accuracy"`` the
    one with the best primary accuracy. The weights kept are the whole :class:`MultiTaskModel`'s.
    """

    def __init__(self, monitor: str, model, val, tasks, n_classes: dict, *, every: int = 1,
                 max_samples: int | None = None, seed: int = 0):
        from ..pretrain.multitask import read_targets

        super().__init__("val_loss", model=model, every=every, max_samples=max_samples, seed=seed)
        self.monitor = monitor
        self.val, _ = _capped(val, max_samples, seed)
        self.targets = read_targets(self.val, tasks, n_classes)

    def on_fit_start(self, trainer) -> None:  # the split is ours, not the Trainer's val
        if self.model is None:
            self.model = trainer.model

    def score(self, trainer, epoch: int, row: dict) -> float:
        from ..pretrain.multitask import task_metrics, validation_losses

        Z = trainer.predict_logits(self.val)
        losses = validation_losses(self.model, Z, self.targets)
        for k, v in losses.items():
            row[f"val_loss_{k}"] = v
        total = float(np.nansum(list(losses.values())))
        row["val_loss"] = total
        primary = self.model.tasks[0]
        if primary.type == "classification":
            row["val_accuracy"] = task_metrics(self.model, Z, self.targets)[primary.name]["accuracy"]
        return row["val_accuracy"] if self.monitor == "val_accuracy" else -total


@register("strategy", "multitask")
class MultiTask(Strategy):
    """A shared backbone with named task heads (classification and regression), trained together.

    Parameters
    ----------
    heads
        ``{name: classification | regression}`` or ``{name: {type, weight, column}}`` (see
        :mod:`transferkit.pretrain.multitask`: a head reads the dataset's labels for column
        ``label``, else the per-row attribute of its column, by default its own name). The
        *first* head is the primary one: :meth:`predict`, :meth:`predict_logits`, :meth:`score`
        and ``transferkit run``'s accuracy are about it. Default: ``{label: classification}``.
    weighting, weighting_options
        How the task losses become one update (registry kind ``mtl_weighting``: ``equal``,
        ``uncertainty``, ``dwa``, ``gradnorm``, ``pcgrad``, ``upgrad``) and its options, e.g.
        ``{alpha: 1.5}`` for gradnorm, ``{temperature: 2}`` for dwa, ``{seed: 0}`` for pcgrad.
        Default ``pcgrad``: in ``transferkit benchmark representation`` (3 seeds) it had a higher
        Delta-m% than ``equal`` on every seed of both multi-task tasks (+0.6 and +1.6 points on
        average), at one extra backward pass per task and step; ``equal`` is the fastest.
    backbone, pretrained, image_size, unfreeze, lr, backbone_lr_mult, layer_decay, freeze_bn, epochs,
    batch_size, optimizer, schedule, warmup_epochs, weight_decay, grad_clip, early_stopping,
    val_every, val_max_samples, mixed_precision
        As for :class:`~transferkit.strategies.FineTune` (the heads train at ``lr``, the backbone
        at ``lr * backbone_lr_mult``; the weighting's own parameters at ``lr``, no weight decay).
        No augmentation: a geometric one would change the targets of a task such as an angle.
    monitor
        With a labeled ``val`` split, the epoch kept: ``"val_loss"`` (the sum of the heads'
        validation losses) or ``"val_accuracy"`` (the primary head's, a classification head).

    Fitted attributes (besides :class:`Strategy`'s)
    ------------------------------------------------
    model_ : MultiTaskModel
        The backbone and heads; ``tasks_`` the parsed task specs; ``n_classes_`` the primary
        head's classes (``None`` for a regression head).
    """

    name = "multitask"

    def __init__(self, backbone="efficientnet_lite0", pretrained=True, image_size=None, heads=None,
                 weighting="pcgrad", weighting_options=None, unfreeze="all", lr=1e-3, backbone_lr_mult=0.1,
                 layer_decay=1.0, freeze_bn="all", epochs=30, batch_size=32, optimizer="adamw", schedule="cosine",
                 warmup_epochs=1.0, weight_decay=0.01, grad_clip=1.0, early_stopping=None, monitor="val_loss",
                 cache_dir=None, seed=0, device=None, progress=False, val_every="auto", val_max_samples=None,
                 mixed_precision="no"):
        self.backbone = backbone
        self.pretrained = pretrained
        self.image_size = image_size
        self.heads = heads
        self.weighting = weighting
        self.weighting_options = weighting_options
        self.unfreeze = unfreeze
        self.lr = lr
        self.backbone_lr_mult = backbone_lr_mult
        self.layer_decay = layer_decay
        self.freeze_bn = freeze_bn
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.schedule = schedule
        self.warmup_epochs = warmup_epochs
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.early_stopping = early_stopping
        self.monitor = monitor
        self.cache_dir = cache_dir
        self.seed = seed
        self.device = device
        self.progress = progress
        self.val_every = val_every
        self.val_max_samples = val_max_samples
        self.mixed_precision = mixed_precision

    # ------------------------------------------------------------------ validation
    def _tasks(self):
        from ..pretrain.multitask import parse_heads

        return parse_heads(DEFAULT_HEADS if self.heads is None else self.heads, where=self._p("heads"))

    def _validate(self, backbone) -> None:
        from ..pretrain.weighting import make_weighting

        p = self._p
        self._check_common(backbone)
        tasks = self._tasks()
        if self.weighting_options is not None and not isinstance(self.weighting_options, dict):
            raise ConfigError(f"{p('weighting_options')}={self.weighting_options!r} must be a mapping, e.g. "
                              "weighting_options: {alpha: 1.5}.")
        check_finite_tree(p("weighting_options"), self.weighting_options or {})
        make_weighting(self.weighting, self.weighting_options, where=p("weighting"))  # names, options, the extra
        nb = n_backbone_groups(backbone if backbone is not None else self.backbone)
        check_unfreeze(p("unfreeze"), self.unfreeze, nb)
        check_training_budget(self)
        self._num("grad_clip", low=0, none_ok=True, example=1.0)
        self._num("early_stopping", low=1, high=MAX_EPOCHS, integer=True, none_ok=True, example=5)
        check_option(p("monitor"), self.monitor, MONITORS)
        if self.monitor == "val_accuracy" and tasks[0].type != "classification":
            raise ConfigError(f"{p('monitor')}='val_accuracy' but the primary (first) head {tasks[0].name!r} is "
                              "regression; use monitor: val_loss, or put a classification head first.")
        check_flag(p("progress"), self.progress)

    def check_target(self, backbone, target) -> None:
        """Every head's column exists in ``target`` and holds values of the head's type: checked by
        ``transferkit run`` before anything is written (the message names the head and the columns)."""
        from ..pretrain.multitask import read_targets

        try:
            read_targets(target, self._tasks())
        except DataError as exc:
            raise ConfigError(f"{self._p('heads')}: {exc}") from None

    # ------------------------------------------------------------------ fit
    def _build(self, train):
        from ..pretrain.multitask import MultiTaskObjective

        with seeded(self.seed):  # the backbone's (when not pretrained) and the heads' initialization
            bb = resolve_backbone(self.backbone, self.pretrained, self.image_size, data=train)
            obj = MultiTaskObjective(self._tasks(), train, bb.feature_dim, weighting=self.weighting,
                                     weighting_options=self.weighting_options)
        return obj.model(bb), obj

    def fit(self, train, val=None, *, run_dir=None):
        """Train the backbone and every head on ``train`` (its labels and attributes); ``val``
        (labeled for the heads' columns) picks the epoch kept (:class:`MultiTaskSelection`)."""
        from ..finetune import apply_freeze, build_param_groups, frozen_bn_modules, parse_unfreeze
        from ..train import Trainer
        from ..train.trainer import auto_val_every

        self.validate()
        self._reset_fitted()
        if len(train) == 0:
            raise DataError(f"training dataset {train.name!r} is empty; give it some rows.")
        t0 = time.perf_counter()
        model, obj = self._build(train)
        nb = len(model.layer_groups()) - 1
        apply_freeze(model, parse_unfreeze(self.unfreeze, nb))
        groups = build_param_groups(model, self.lr, backbone_lr_mult=self.backbone_lr_mult,
                                    layer_decay=self.layer_decay, weight_decay=self.weight_decay)
        own = {id(q) for q in model.parameters()}
        extra = [q for q in obj.parameters() if id(q) not in own]  # the weighting's (log-variances, GradNorm's)
        if extra:
            groups.append({"params": extra, "lr": self.lr, "initial_lr": self.lr, "weight_decay": 0.0,
                           "name": "weighting", "group_index": nb + 1})
        selection = None
        if val is not None:
            n_val = min(len(val), self.val_max_samples or len(val))
            every = self.val_every
            if every == "auto":
                every = 1 if self.early_stopping is not None else auto_val_every(n_val, len(train), self.epochs)
            selection = MultiTaskSelection(self.monitor, model, val, obj.tasks, obj.n_classes(), every=int(every),
                                           max_samples=self.val_max_samples, seed=self.seed)
        trainer = Trainer(
            model, groups, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
            schedule=self.schedule, warmup_epochs=self.warmup_epochs, grad_clip=self.grad_clip, augment="none",
            early_stopping=self.early_stopping, bn_frozen=lambda: frozen_bn_modules(model, self.freeze_bn),
            seed=self.seed, device=self.device, run_dir=run_dir, progress=self.progress, tag=self.name,
            selection=selection, mixed_precision=self.mixed_precision, objective=obj)
        trainer.fit(train, val)
        self.model_, self.trainer_, self.history_ = model, trainer, trainer.history
        self.tasks_ = list(obj.tasks)
        self.weighting_ = obj.weighting
        self.best_epoch_ = trainer.best_epoch
        self.n_classes_ = obj.n_classes().get(self.tasks_[0].name)
        self.trainable_params_ = sum(q.numel() for q in [*model.parameters(), *extra] if q.requires_grad)
        self.train_time_ = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ prediction
    def _fitted(self):
        if not hasattr(self, "model_"):
            raise ConfigError(f"{self.name}: fit (or load_state) before predicting.")
        return self.model_

    def predict_tasks(self, dataset) -> dict[str, np.ndarray]:
        """Every head's output on ``dataset``: ``(n, K)`` logits or ``(n,)`` values in the target's units."""
        model = self._fitted()
        return model.unpack(self.trainer_.predict_logits(dataset))

    def predict_logits(self, dataset) -> np.ndarray:
        """The primary head's logits ``(n, K)`` (a classification head)."""
        p = self._fitted().tasks[0]
        if p.type != "classification":
            raise ConfigError(f"{self.name}: the primary head {p.name!r} is regression and has no logits; use "
                              "predict (its values) or predict_tasks.")
        return self.predict_tasks(dataset)[p.name]

    def predict(self, dataset) -> np.ndarray:
        """The primary head's classes (or, for a regression head, its values)."""
        p = self._fitted().tasks[0]
        out = self.predict_tasks(dataset)[p.name]
        return out.argmax(1) if p.type == "classification" else out

    def _targets(self, dataset, tasks):
        from ..pretrain.multitask import read_targets

        widths = self.model_.widths()
        return read_targets(dataset, tasks, {t.name: widths[t.name] for t in tasks if t.type == "classification"})

    def score(self, dataset, y_pred=None) -> float:
        """The primary head's accuracy on the rows with a value in its column (R^2 for a
        regression head)."""
        from ..metrics.regression import r2

        p = self._fitted().tasks[0]
        y = self._targets(dataset, [p])[p.name]
        pred = self.predict(dataset) if y_pred is None else np.asarray(y_pred)
        if p.type == "classification":
            m = y >= 0
            if not m.any():
                raise DataError(f"cannot score on {dataset.name!r}: column {p.column!r} of head {p.name!r} has no "
                                "labels.")
            return float((pred[m] == y[m]).mean())
        m = ~np.isnan(y)
        return r2(y[m], pred[m])

    def task_metrics(self, dataset) -> dict[str, dict]:
        """Per task on ``dataset``: ``{"accuracy", "n"}`` (classification) or ``{"mse", "rmse",
        "mae", "r2", "n"}`` in the target's units (regression); see
        :func:`transferkit.pretrain.multitask.task_metrics`."""
        from ..pretrain.multitask import task_metrics

        model = self._fitted()
        return task_metrics(model, self.trainer_.predict_logits(dataset), self._targets(dataset, model.tasks))

    # ------------------------------------------------------------------ saved state
    def state_dict(self) -> dict:
        return self._fitted().state_dict()

    def state_metadata(self) -> dict[str, str]:
        model = self._fitted()
        meta = {"transferkit.tasks": model.tasks_json()}
        if self.n_classes_ is not None:
            meta["transferkit.n_classes"] = str(self.n_classes_)
        return meta

    def load_state(self, state: dict, metadata: dict | None = None, where: str = "model.safetensors"):
        """The fitted backbone and heads from :meth:`state_dict` and the task specs saved in the
        header (``transferkit.tasks``); returns ``self``."""
        from ..pretrain.multitask import ClassificationHead, MultiTaskModel, RegressionHead, TaskSpec
        from ..train import Trainer
        from ._state import load_module_state

        self.validate()
        self._reset_fitted()
        try:
            saved = json.loads((metadata or {})["transferkit.tasks"])
            tasks = [TaskSpec(d["name"], d["type"], float(d["weight"]), d["column"]) for d in saved]
            widths = {d["name"]: int(d["width"]) for d in saved}
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where} holds no readable task list (transferkit.tasks); the file was not written by "
                            "the multitask strategy, or is damaged: train the run again.") from None
        if [t.name for t in tasks] != [t.name for t in self._tasks()]:
            raise DataError(f"{where} has the heads {[t.name for t in tasks]} but the config "
                            f"{[t.name for t in self._tasks()]}; the file and config.yaml must come from the same run.")
        with seeded(self.seed):
            bb = resolve_backbone(self.backbone, False, self.image_size)
        heads = torch.nn.ModuleDict({t.name: ClassificationHead(bb.feature_dim, widths[t.name])
                                     if t.type == "classification" else RegressionHead(bb.feature_dim)
                                     for t in tasks})
        model = MultiTaskModel(bb, heads, tasks)
        load_module_state(model, state, where)
        trainer = Trainer(model, [], epochs=1, device=self.device, progress=False, tag=self.name, checkpoint=False)
        if getattr(model.spec, "modality", None) == "image":
            model.to(memory_format=torch.channels_last)  # as the Trainer trains (and predicts) image models
        model.to(trainer.device).eval()
        self.model_, self.trainer_, self.history_, self.tasks_ = model, trainer, [], tasks
        self.n_classes_ = widths[tasks[0].name] if tasks[0].type == "classification" else None
        return self
