"""The ``distill`` strategy: a small student learns from a finished teacher (Hinton KD, FitNets hint).

In a run config::

    strategies:
      - {name: finetune}                                   # the teacher, trained first
      - {name: distill, teacher: finetune, student: {name: tiny_cnn, image_size: 28, options: {width: 16}}}

``teacher`` is the key of a strategy listed before it in the same run (fitted on the same
seed's splits; a resumed run reads it back from its folder), or a finished run directory
(``transferkit run ... --out DIR`` or one of its ``STRATEGY/seedN`` folders). The teacher's
logits on every training row are computed once, in the teacher's own preprocessing (another
backbone, input size or normalisation than the student's is fine) and matched to the target's
classes by name. Unlabeled training rows (``split.unlabeled_fraction``) learn from the teacher's
soft labels only: distillation on unlabeled target data.

The student is ``student`` (a backbone name or mapping, as the config's ``backbone``), else the
run's backbone; it trains with the fine-tuning recipe's optimizer, schedule, epochs and
validation-split selection (:class:`transferkit.strategies.FineTune`'s parameters), from random
initialization unless ``pretrained: true``. A saved student needs no teacher to predict.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .._registry import register
from .._validation import suggest
from ..errors import ConfigError, DataError
from ..strategies.base import check_flag, seeded
from ..strategies.finetune import FineTune
from .distill import HintTerm, KDObjective, _check_temperature_alpha, _hint_width, teacher_outputs

__all__ = ["Distill", "check_finished_run"]

#: The header key of a distilled model's file: the student backbone as built (JSON).
META_STUDENT = "transferkit.distill.student"


def check_finished_run(ref) -> None:
    """A :class:`transferkit.inference.RunRef` whose seed folder holds a finished run
    (``result.json`` and no incomplete marker), else a one-line :class:`DataError`."""
    from ..train.rundir import INCOMPLETE

    d = ref.seed_dir
    if (d / INCOMPLETE).exists() or not (d / "result.json").is_file():
        raise DataError(f"the run {str(ref.root)!r} (strategy {ref.key!r}, seed {ref.seed}) is not finished (no "
                        f"result.json in {str(d)!r}, or it is marked incomplete); finish it first: "
                        f"transferkit run --resume {ref.root}")


def _student_config(student):
    from ..config import _backbone_config

    try:
        return _backbone_config(student)
    except ConfigError as exc:
        raise ConfigError(f"distill.student: {str(exc).replace('backbone.', 'student.')}") from None


@register("strategy", "distill")
class Distill(FineTune):
    """Knowledge distillation of a finished teacher into a small student (Hinton et al., 2015).

    Parameters
    ----------
    teacher
        The key of a strategy listed before this one in the run, a finished run directory, or
        (from Python) a fitted strategy (anything with ``predict_logits``).
    student
        The student backbone: a name (``"tiny_cnn"``) or a mapping like the config's
        ``backbone`` (``{name: tiny_cnn, image_size: 28, options: {width: 16}}``); ``None``: the
        run's backbone.
    temperature, alpha
        The softening temperature :math:`T > 0` and the weight :math:`\\alpha \\in [0, 1]` of the
        distillation term (:func:`transferkit.compress.kd_loss`; ``alpha = 0`` is the
        cross-entropy on the labeled rows alone).
    hint, beta, hint_layer
        ``hint=True`` adds a FitNets feature hint of weight ``beta`` (:class:`HintTerm`): the
        student's features (or the pooled output of its submodule ``hint_layer``) regress the
        teacher's backbone features through a learned linear adapter. Needs a teacher whose
        model is a network with a backbone (finetune, scratch, distill, adapt at backbone level).
    **kwargs
        :class:`~transferkit.strategies.FineTune`'s recipe (``lr``, ``epochs``, ``batch_size``,
        ``optimizer``, ``schedule``, ``monitor``...). ``augment`` must stay ``none``: the teacher's
        logits belong to the un-augmented rows.

    Notes
    -----
    ``history_`` logs ``kd`` (the :math:`T^2`-scaled KL term), ``ce`` and ``hint`` per epoch;
    ``teacher_`` says which teacher was used. Model selection uses the labeled validation split
    (never the test split); the teacher's logits on the test split are never computed.
    """

    name = "distill"
    accepts_source = False
    uses_members = True  # a teacher named by key arrives as ``members={key: fitted}``
    needs_target_labels = False  # unlabeled rows learn from the teacher alone
    # FineTune's penalties and bottleneck head are not distill parameters (fixed here, not settable)
    penalty = penalty_options = vib_beta = vib_dim = progressive_unfreeze = None
    lp_init = False

    def __init__(self, teacher=None, student=None, temperature=4.0, alpha=0.9, hint=False, beta=1.0,
                 hint_layer=None, backbone="tiny_cnn", pretrained=False, image_size=None, unfreeze="all",
                 lr=1e-3, backbone_lr_mult=1.0, layer_decay=1.0, freeze_bn="none", epochs=30, batch_size=32,
                 optimizer="adamw", schedule="cosine",
                 warmup_epochs=1.0, weight_decay=0.01, dropout=0.0, head="linear", grad_clip=1.0,
                 label_smoothing=0.0, augment="none", early_stopping=None, monitor="val_accuracy",
                 cache_dir=None, seed=0, device=None, progress=False, val_every="auto", val_max_samples=None,
                 mixed_precision="no"):
        self.teacher = teacher
        self.student = student
        self.temperature = temperature
        self.alpha = alpha
        self.hint = hint
        self.beta = beta
        self.hint_layer = hint_layer
        self.backbone = backbone
        self.pretrained = pretrained
        self.image_size = image_size
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
        self.dropout = dropout
        self.head = head
        self.grad_clip = grad_clip
        self.label_smoothing = label_smoothing
        self.augment = augment
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
    def _validate(self, backbone) -> None:
        p = self._p
        usable = isinstance(self.teacher, (str, os.PathLike)) or callable(getattr(self.teacher, "predict_logits", None))
        if self.teacher is not None and not usable:
            raise ConfigError(f"{p('teacher')}={self.teacher!r} must be a strategy key, a run directory or a fitted "
                              "strategy (with predict_logits).")
        if isinstance(self.teacher, str) and not self.teacher.strip():
            raise ConfigError(f"{p('teacher')} is empty; give a strategy key or a run directory.")
        try:
            _check_temperature_alpha(self.temperature, self.alpha)
        except ConfigError as exc:
            raise ConfigError(f"{self.name}.{exc}") from None
        check_flag(p("hint"), self.hint)
        self._num("beta", low=0, low_inclusive=False, example=1.0)
        if self.hint_layer is not None:
            if not self.hint:
                raise ConfigError(f"{p('hint_layer')} is set but {p('hint')} is false; set hint: true or drop it.")
            if not isinstance(self.hint_layer, str) or not self.hint_layer:
                raise ConfigError(f"{p('hint_layer')}={self.hint_layer!r} must be a submodule name of the student, "
                                  "e.g. backbone.features.")
        if self.augment not in (None, False, "none"):
            raise ConfigError(f"{p('augment')}={self.augment!r}: distillation does not augment (the teacher's logits "
                              "belong to the un-augmented rows); set augment: none or leave it out.")
        if self.head == "vib":
            raise ConfigError(f"{p('head')}='vib': the information-bottleneck head is not a distillation student's; "
                              "use head: linear or mlp.")
        if self.student is not None:
            _student_config(self.student)
        super()._validate(backbone)

    def resolve_members(self, keys: list[str], index: int, combiners=()) -> list[str]:
        """``[teacher]`` when ``teacher`` is the key of a strategy listed before this one,
        ``[]`` when it is a run directory; a one-line error otherwise."""
        self.validate()
        t, me = self.teacher, keys[index]
        self._require_teacher()
        if not isinstance(t, str):
            return []
        if t == me:
            raise ConfigError(f"{self._p('teacher')}={t!r} is the distill strategy itself; name the strategy that "
                              "trains the teacher (e.g. finetune), listed before it.")
        if t in keys:
            if t not in keys[:index]:
                raise ConfigError(f"{self._p('teacher')}={t!r} is listed after {me!r} in 'strategies'; the teacher is "
                                  f"fitted first: move {t!r} above {me!r}.")
            return [t]
        if Path(os.path.expanduser(t)).is_dir():
            return []
        raise ConfigError(f"{self._p('teacher')}={t!r} is neither a strategy of this experiment nor a run directory."
                          + suggest(t, keys[:index]) + " Give the key of a strategy listed before it or the --out "
                          "folder of a finished 'transferkit run'.")

    def _require_teacher(self) -> None:
        if self.teacher is None:
            raise ConfigError(f"{self._p('teacher')} is required: the key of a strategy listed before it (e.g. "
                              "teacher: finetune) or a finished run directory (transferkit run ... --out DIR).")

    @staticmethod
    def saved_members(metadata=None, where: str = "model.safetensors") -> list[str]:
        """A saved student predicts alone: no teacher is loaded with it."""
        return []

    def check_target(self, backbone, target) -> None:
        """Before anything is written: the student takes the target's inputs, and a teacher run
        directory is finished, takes the target's data and knows its classes."""
        from ..experiment import check_backbone_input

        if self.student is not None:
            bb = self._student_backbone(data=target)
            check_backbone_input(bb, "target", target, f"distill.student={_student_config(self.student).name}")
        t = self.teacher
        if isinstance(t, (str, os.PathLike)) and Path(os.path.expanduser(str(t))).is_dir():
            ref = self._teacher_ref()
            from ..inference import check_fits

            check_fits(target, ref.facts, f"the target {target.name!r}")
            self._class_order(self._ref_classes(ref), target)

    # ------------------------------------------------------------------ the teacher
    def _teacher_ref(self):
        from .. import inference

        try:
            ref = inference.locate_run(self.teacher)
        except (ConfigError, DataError) as exc:
            raise type(exc)(f"{self._p('teacher')}: {exc}") from None
        check_finished_run(ref)
        return ref

    @staticmethod
    def _ref_classes(ref) -> list[str] | None:
        from ..inference import class_names

        names = class_names(ref.facts, None)
        return None if names is None or len(names) == 0 else [str(c) for c in names]

    def _class_order(self, teacher_classes, data) -> np.ndarray | None:
        """Column ``j`` of the student's logits is column ``order[j]`` of the teacher's (by class
        name); ``None`` when both are in the same order. A target class the teacher lacks is an error."""
        own = getattr(data, "classes", None)
        if teacher_classes is None or own is None:
            return None
        own, teacher_classes = [str(c) for c in own], [str(c) for c in teacher_classes]
        missing = [c for c in own if c not in teacher_classes]
        if missing:
            raise ConfigError(f"{self._p('teacher')}: the teacher predicts {', '.join(teacher_classes[:8])} but not "
                              f"the target's class(es) {', '.join(missing[:5])}; distil from a teacher trained on the "
                              "same classes.")
        order = np.array([teacher_classes.index(c) for c in own])
        return None if len(own) == len(teacher_classes) and (order == np.arange(len(own))).all() else order

    def _teacher_model(self, members):
        """``(fitted teacher strategy, description, RunRef or None)``: the ref when the teacher was
        loaded from a finished run directory."""
        from .. import inference

        self._require_teacher()
        t = self.teacher
        if isinstance(t, str) and members and t in members:
            return members[t], f"strategy {t!r} of this run", None
        if isinstance(t, (str, os.PathLike)):
            if not Path(os.path.expanduser(str(t))).is_dir():
                raise ConfigError(f"{self._p('teacher')}={str(t)!r} is not a run directory; from Python pass the "
                                  f"fitted teacher (fit(..., members={{{str(t)!r}: fitted}})) or a fitted strategy.")
            ref = self._teacher_ref()
            return inference.load_run(ref), f"{ref.key} (seed {ref.seed}) of {ref.root}", ref
        return t, type(t).__name__, None

    def teacher_logits(self, dataset, members=None) -> tuple[np.ndarray, object, str]:
        """``(logits (n, K), fitted teacher, description)`` on every row of ``dataset``, the columns
        in the order of ``dataset.classes``."""
        from .distill import _as_table

        teacher, what, ref = self._teacher_model(members)
        if ref is not None:  # a run's model preprocesses the data its own way (checked against its facts)
            from .. import inference

            inference.check_fits(dataset, ref.facts, f"dataset {dataset.name!r}")
            logits = inference.apply(teacher, dataset, f"dataset {dataset.name!r}")
        else:
            logits = np.asarray(teacher.predict_logits(dataset))
        logits = _as_table(logits, "teacher logits", len(dataset)).numpy()
        names = getattr(teacher, "classes_", None)
        order = self._class_order(None if names is None else list(names), dataset)
        if order is not None:
            logits = logits[:, order]
        return logits, teacher, what

    # ------------------------------------------------------------------ the student
    def _student_backbone(self, data=None, pretrained: bool | None = None):
        pretrained = bool(self.pretrained) if pretrained is None else pretrained
        if self.student is None:
            from ..strategies.base import resolve_backbone

            return resolve_backbone(self.backbone, pretrained, self.image_size, data=data)
        cfg = getattr(self, "student_config_", None) or _student_config(self.student)
        cfg = cfg.resolved(data) if data is not None else cfg
        self.student_config_ = cfg  # saved with the model: the student as built (auto, widths made concrete)
        return cfg.build(pretrained=pretrained and cfg.pretrained, image_size=self.image_size, seed=self.seed)

    def _build_model(self, n_classes: int, data=None):
        from ..nn import TransferModel

        with seeded(self.seed):
            return TransferModel(self._student_backbone(data), n_classes, head=self.head, dropout=self.dropout)

    def fit(self, train, val=None, *, run_dir=None, members=None, source=None):
        """Distil the teacher into the student on ``train`` (labeled and unlabeled rows); ``val``
        (labeled) picks the epoch. ``members``: ``{teacher key: fitted strategy}`` (the runner's)."""
        from ..finetune import apply_freeze, build_param_groups, parse_unfreeze
        from ..finetune.groups import frozen_bn_modules
        from ..train import Trainer

        self.validate()
        self._reset_fitted()
        t0 = time.perf_counter()
        logits, teacher, what = self.teacher_logits(train, members)
        model = self._build_model(logits.shape[1], data=train)
        nb = len(model.layer_groups()) - 1
        apply_freeze(model, parse_unfreeze(self.unfreeze, nb))
        groups = build_param_groups(model, self.lr, backbone_lr_mult=self.backbone_lr_mult,
                                    layer_decay=self.layer_decay, weight_decay=self.weight_decay)
        losses = []
        if self.hint:
            feats = self._teacher_features(teacher, train)
            dim = _hint_width(model, train, self.hint_layer)
            hint = HintTerm(feats, dim, self.beta, student=model, layer=self.hint_layer)
            losses.append(hint)
            groups.append({"params": list(hint.parameters()), "lr": self.lr, "name": "hint_adapter",
                           "weight_decay": self.weight_decay})
        objective = KDObjective(logits, self.temperature, self.alpha)
        self.trainable_params_ = sum(p.numel() for p in model.parameters() if p.requires_grad)
        trainer = Trainer(
            model, groups, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
            schedule=self.schedule, warmup_epochs=self.warmup_epochs, grad_clip=self.grad_clip,
            label_smoothing=self.label_smoothing, augment="none", early_stopping=self.early_stopping,
            monitor=self.monitor, bn_frozen=lambda: frozen_bn_modules(model, self.freeze_bn), seed=self.seed,
            device=self.device, run_dir=run_dir, progress=self.progress, tag=self.name, losses=losses,
            objective=objective, val_every=self.val_every, val_max_samples=self.val_max_samples,
            mixed_precision=self.mixed_precision)
        trainer.fit(train, val)
        self.model_, self.trainer_, self.history_ = model, trainer, trainer.history
        self.penalties_ = []
        self.best_epoch_ = trainer.best_epoch
        self.teacher_ = what
        self.param_groups_ = [{"name": g["name"], "lr": g["initial_lr"], "weight_decay": g["weight_decay"]}
                              for g in groups]
        self.train_time_ = time.perf_counter() - t0
        return self

    def _teacher_features(self, teacher, train) -> np.ndarray:
        net = getattr(teacher, "model_", None)
        if net is None or not (hasattr(net, "features") and hasattr(net, "head")):
            raise ConfigError(f"{self._p('hint')}=true needs a teacher network with a backbone (finetune, scratch, "
                              f"distill, adapt at level backbone); {type(teacher).__name__} has none: set hint: false.")
        _, feats = teacher_outputs(net, train, features=True)
        return feats

    def state_metadata(self) -> dict[str, str]:
        import dataclasses
        import json

        cfg = getattr(self, "student_config_", None)
        return {} if cfg is None else {META_STUDENT: json.dumps(dataclasses.asdict(cfg), sort_keys=True)}

    def load_state(self, state: dict, metadata: dict | None = None, where: str = "model.safetensors", members=None):
        """The student from :meth:`state_dict`; the teacher is not needed to predict."""
        from ..strategies._state import transfer_model_from_state

        import dataclasses
        import json

        from ..config import BackboneConfig

        self.validate()
        self._reset_fitted()
        raw = (metadata or {}).get(META_STUDENT)
        if raw is not None:
            try:
                fields = {f.name for f in dataclasses.fields(BackboneConfig)}
                spec = json.loads(raw)
                self.student_config_ = BackboneConfig(**{k: v for k, v in spec.items() if k in fields})
            except (ValueError, TypeError, AttributeError):
                raise DataError(f"{where} has a damaged student description ({META_STUDENT}) in its header; train "
                                "the run again.") from None
        last = state.get("head.net.4.weight" if self.head == "mlp" else "head.fc.weight")
        if last is None:
            raise ConfigError(f"{where} holds no {self.head!r} head (head.* tensors); the file and config.yaml "
                              "must come from the same run.")
        with seeded(self.seed):  # no pretrained weights: every tensor comes from the file
            bb = self._student_backbone(pretrained=False)
        self.model_, self.trainer_ = transfer_model_from_state(self, state, int(last.shape[0]), self.head,
                                                               self.dropout, where, backbone=bb)
        self.history_, self.penalties_ = [], []
        return self
