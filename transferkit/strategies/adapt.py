"""Domain adaptation strategies on a frozen, cached backbone, and their honest baselines.

Registered strategies (``transferkit list strategies``):

- ``adapt``: labeled source + unlabeled target; a deep DA loss on a bottleneck + head, a
  shallow estimator + logistic regression, or one of the method strategies below by name.
  Target labels are hidden from training unless ``target_labels=True`` (semi-supervised DA).
- ``source_only``: the same bottleneck + head trained on the labeled source alone: it reads
  no target label and no target input (no AdaBN; checkpoint by the labeled source
  validation loss, ``selection="source_val"``). Its ``fit`` works without the target at all.
- ``source_only_adabn``: ``source_only`` plus the target's BatchNorm statistics (AdaBN): target
  inputs for the statistics, no target labels. Not a source-only model, hence its own name.
- ``target_only``: the same bottleneck + head trained on the labeled target training samples
  alone (no source), checkpoint by labeled target validation accuracy when there is a
  validation split, else the last epoch.
- ``two_stage``: ``adapt`` with the target labels hidden, then fine-tuning on them.
- Method strategies, each also an ``adapt`` method of the same name (``Adapt(method=name)``):
  ``source_only_lr`` (logistic regression on labeled source features, the shallow methods'
  baseline; no target input), ``self_training`` (the same classifier refit with confident
  target pseudo-labels) and ``fixmatch`` (backbone-level FixMatch on weak/strong views of the
  target images).
"""

from __future__ import annotations

import json
import time

import numpy as np

from .._registry import available, register
from ..errors import ConfigError, DataError
from .base import (
    MAX_EPOCHS,
    MAX_LR,
    MAX_WIDTH,
    Strategy,
    build_on_meta,
    check_finite_tree,
    check_flag,
    check_option,
    check_param,
    check_unfreeze,
    n_backbone_groups,
    resolve_backbone,
    softmax,
    seeded,
)

#: Width of the MLP head's hidden layer that a backbone-level DA loss sees (``TransferModel(head="mlp")``).
_BACKBONE_LEVEL_WIDTH = 256


#: ``adapt`` methods that are registered strategies of their own: name -> strategy class (filled by
#: :func:`_method_strategy`; ``transferkit list strategies`` shows them, and the registry-driven
#: strategy contract tests run them).
_METHOD_STRATEGIES: dict[str, type] = {}

#: Checkpoint selections of the source-only baselines: none of them reads a target input.
SOURCE_ONLY_SELECTIONS = ("source_val", "last")

#: ``adapt``'s ``label_shift`` choices: no correction, EM on the target outputs (Saerens et al.
#: 2002), black-box shift estimation (Lipton et al. 2018) with hard or soft confusions.
LABEL_SHIFT_METHODS = (None, "mlls", "bbse", "bbse_soft", "mlls+reweight", "bbse+reweight", "bbse_soft+reweight")


def _shift_estimator(label_shift) -> str | None:
    """``"mlls+reweight"`` -> ``"mlls"``: the estimator part of a ``label_shift`` choice."""
    return None if label_shift is None else str(label_shift).split("+")[0]



def _method_strategy(name: str):
    """Register the decorated class as the strategy ``name`` and as the ``adapt`` method ``name``."""

    def deco(cls):
        register("strategy", name)(cls)
        _METHOD_STRATEGIES[name] = cls
        return cls

    return deco


def _method_class(method):
    """The method strategy behind an ``adapt`` method name, or ``None``."""
    return _METHOD_STRATEGIES.get(method) if isinstance(method, str) else None


def _is_shallow(method) -> bool:
    """Methods that work on fixed feature matrices (closed-form estimators, no checkpoints)."""
    cls = _method_class(method)
    if cls is not None:
        return cls.closed_form
    return isinstance(method, str) and method in available("shallow_da")


def _class_count(source, train, use_target_labels: bool = False) -> int:
    """Output width: the source's classes, widened to the target's class *names* when it has
    them; the target's labels are read only when training uses them (``use_target_labels``)."""
    n = source.n_classes
    if train is not None:
        if train.classes is not None:
            n = max(n, len(train.classes))
        elif use_target_labels and train.labels is not None and (train.labels >= 0).any():
            n = max(n, int(train.labels.max()) + 1)
    return n


def _stack_domains(Fs, ys, Ft, yt):
    """Source and target rows in one matrix, skada's way: ``(X, y, sample_domain)`` with
    ``sample_domain`` 1 for source rows and -1 for target rows."""
    return (np.vstack([Fs, Ft]), np.r_[ys, yt],
            np.r_[np.ones(len(Fs), dtype=int), -np.ones(len(Ft), dtype=int)])


def _check_source(strategy, source) -> None:
    if source is None:
        raise ConfigError(f"strategy {strategy.name!r} needs a labeled source dataset (set 'source' in the config).")
    if source.labels is None or not (source.labels >= 0).any():
        raise DataError(f"source {source.name!r} has no labels; {strategy.name} needs a labeled source.")


@register("strategy", "adapt")
class Adapt(Strategy):
    """Adapt from a labeled source to an unlabeled target on cached backbone features.

    Parameters
    ----------
    method
        A deep DA loss (``transferkit list da_losses``: ``jan`` (the default, chosen on
        development tasks: ``benchmarks/da_dev.py``), ``dan``, ``dann``, ``cdan``, ...) or a sum
        of them (``"jan+mcc"``) trained with a bottleneck + head; a shallow estimator (``coral``, ``sa``, ``tca``, ``ot_mapping``,
        ``kmm``, ``kliep``) followed by logistic regression; a method strategy by name
        (``"self_training"``, ``"source_only_lr"``, ``"fixmatch"``: see the module docstring);
        or ``None``: no DA loss, the bottleneck + head trained on the labeled source, still
        using target inputs for AdaBN (``domain_bn``) and for ``selection``'s scorer. That is
        *not* a source-only model: the true one is the strategy ``source_only``.
    weight
        The DA loss weight (lambda), or a list of candidates: each is trained and the one whose
        best checkpoint has the highest ``selection`` score is kept (no target labels involved).
    selection
        Checkpoint selection: ``"dev"`` (default), ``"iwcv"``, ``"snd"``, ``"entropy"``
        (unsupervised scorers on target predictions); ``"source_val"`` (the labeled source
        validation loss: no target input); ``"last"``; or ``"target_val"`` to use labeled target
        validation data when the user has it. Target test labels are never used. The scorer is
        recorded in ``selection_``.
    source_val_fraction
        Held-out labeled source fraction for IWCV/DEV/``source_val`` (the rest trains).
    domain_bn
        Feature level: normalize each domain with its own BatchNorm statistics when predicting
        (AdaBN); the fitted model carries the target's.
    target_labels
        ``False`` (default): unsupervised adaptation; the labels of the target training split
        are never read, whatever it holds (labeled target samples belong to ``two_stage`` or
        ``finetune``). ``True``: semi-supervised adaptation at the feature level: labeled
        target training rows join the classification loss (deep methods), the logistic
        regression (shallow estimators) or the labeled set that ``self_training`` starts from.
        The number used is recorded in ``n_target_labels_``.
    level
        ``"features"`` (default): adapt a bottleneck + head on cached features of the frozen
        backbone (fast on a CPU). ``"backbone"``: train the backbone too (its ``unfreeze``
        groups at ``backbone_lr_mult`` times ``lr``) with the DA loss on the bottleneck of an
        MLP head, through the one Trainer (:func:`transferkit.adapt.backbone.train_backbone_adapter`;
        meant for GPUs); also allows ``method="fixmatch"`` (weak/strong image augmentation).
    label_shift
        ``None`` (default), ``"mlls"``, ``"bbse"`` or ``"bbse_soft"``: after fitting, estimate
        the target's class priors from the model's outputs on the unlabeled target training
        rows (:func:`transferkit.adapt.estimate_target_priors`; no target label is read) and
        correct every prediction by the ratio of target to source priors (Saerens et al. 2002).
        The estimate, with its bootstrap interval, is ``label_shift_``. ``bbse`` needs held-out
        source rows (``source_val_fraction``), also for closed-form methods. ``"mlls+reweight"``
        (or ``bbse+reweight``, ``bbse_soft+reweight``; deep methods): the estimate reweights the
        source classes instead, each source row by :math:`q_y / p_y`
        (:func:`~transferkit.adapt.label_shift.class_weights_for_priors`), and the model is trained
        again from the same seed with that weighted classification loss; its predictions are not
        corrected afterwards (``prior_log_ratio_`` is ``None``). For a partial target (some source
        classes absent) the absent classes' weights go to about 0, so they stop pulling the
        shared features: the prior-based counterpart of PADA's class weights.
    bottleneck, dropout, epochs, batch_size, lr, weight_decay
        The adapter network and its training.
    loss_options
        Options of the method: the deep loss's (keyed by part for a sum, ``{jan: {...}}``) or
        the shallow estimator's constructor arguments (``{n_components: 10}`` for ``sa``);
        an unknown one is an error.
    """

    name = "adapt"
    needs_source = True
    needs_target_labels = False
    #: the target's classes must all be among the labeled source's (``experiment.check_label_spaces``)
    label_space = "closed"

    def __init__(self, backbone="efficientnet_lite0", method="jan", weight=1.0, selection="dev",
                 pretrained=True, image_size=None, bottleneck=256, dropout=0.5, epochs=30, batch_size=64,
                 lr=1e-3, weight_decay=5e-4, loss_options=None, source_val_fraction=0.2, cache_dir=None,
                 seed=0, device=None, progress=False, domain_bn=True, level="features", backbone_lr_mult=0.1,
                 unfreeze="all", target_labels=False, label_shift=None):
        self.backbone = backbone
        self.method = method
        self.weight = weight
        self.selection = selection
        self.pretrained = pretrained
        self.image_size = image_size
        self.bottleneck = bottleneck
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss_options = loss_options
        self.source_val_fraction = source_val_fraction
        self.cache_dir = cache_dir
        self.seed = seed
        self.device = device
        self.progress = progress
        self.domain_bn = domain_bn
        self.level = level
        self.backbone_lr_mult = backbone_lr_mult
        self.unfreeze = unfreeze
        self.target_labels = target_labels
        self.label_shift = label_shift
        self._fix_class_parameters()

    def _fix_class_parameters(self) -> None:
        """The ``adapt`` parameters a subclass fixes (``source_only``'s ``method=None``, ...) are
        class attributes, not instance ones: ``get_params()`` is then the whole configuration,
        nothing settable hides outside it (scikit-learn's ``check_no_attributes_set_in_init``)."""
        own = set(type(self)._param_names())
        mro = type(self).__mro__
        below_adapt = mro[:mro.index(Adapt)]  # the subclass and its bases up to Adapt
        for k in Adapt._param_names():
            if k in own:
                continue
            value = self.__dict__.pop(k)
            if not any(k in vars(c) for c in below_adapt):
                raise TypeError(f"{type(self).__name__} fixes adapt's parameter {k!r}; declare it as a class "
                                f"attribute ({k} = {value!r}).")
            if getattr(type(self), k) != value:
                raise TypeError(f"{type(self).__name__}.{k} is {getattr(type(self), k)!r} but its constructor "
                                f"passes {value!r}; make them agree.")

    # ------------------------------------------------------------------ validation
    def _method_choices(self) -> list[str]:
        return [*available("da_loss"), *available("shallow_da"), *_METHOD_STRATEGIES]

    def _validate(self, backbone) -> None:
        p = self._p
        self._check_common(backbone)
        level = check_option(p("level"), self.level, ("features", "backbone"))
        grid = self._check_weights()
        check_option(p("selection"), self.selection, [*available("scorer"), "source_val", "target_val", "last"])
        self._check_network()
        check_flag(p("domain_bn"), self.domain_bn)
        if check_flag(p("target_labels"), self.target_labels) and level == "backbone":
            raise ConfigError(f"{p('target_labels')}=true needs {p('level')}: features (the backbone-level adapter "
                              "never reads target labels); use two_stage or finetune for labeled target samples.")
        self._num("backbone_lr_mult", low=0, high=10, example=0.1)
        nb = n_backbone_groups(backbone if backbone is not None else self.backbone)
        check_unfreeze(p("unfreeze"), self.unfreeze, nb if level == "backbone" else None)
        self._check_method(level, grid[0])
        if check_option(p("label_shift"), self.label_shift, LABEL_SHIFT_METHODS) is not None and level == "backbone":
            raise ConfigError(f"{p('label_shift')}={self.label_shift!r} needs {p('level')}: features (the prior "
                              "correction is estimated on cached features); drop label_shift or use level: features.")
        if (self.label_shift is not None and self.label_shift.endswith("+reweight")
                and (_is_shallow(self.method) or _method_class(self.method) is not None)):
            raise ConfigError(f"{p('label_shift')}={self.label_shift!r} retrains a deep method with reweighted source "
                              f"classes, but {p('method')}={self.method!r} is not one; use "
                              f"label_shift={_shift_estimator(self.label_shift)!r} (a prior correction of the "
                              "predictions) or a deep DA loss.")

    def _check_network(self) -> None:
        """The bottleneck + head and its training budget (shared by every strategy built on it)."""
        self._num("bottleneck", low=1, high=MAX_WIDTH, integer=True, example=256)
        self._num("dropout", low=0, high=1, high_inclusive=False, example=0.5)
        self._num("epochs", low=1, high=MAX_EPOCHS, integer=True, example=30)
        self._num("lr", low=0, high=MAX_LR, low_inclusive=False, example=0.001)
        self._num("weight_decay", low=0, high=10, example=0.0005)
        self._num("source_val_fraction", low=0, high=1, low_inclusive=False, high_inclusive=False, example=0.2)

    def _check_weights(self) -> list:
        where, w = self._p("weight"), self.weight
        grid = list(w) if isinstance(w, (list, tuple)) else [w]
        if not grid:
            raise ConfigError(f"{where}=[] is empty; give a number (e.g. weight: 1.0) or a list of candidates.")
        grid = [check_param(where, v, low=0, high=1e4, example=1.0) for v in grid]
        dup = sorted({v for v in grid if grid.count(v) > 1})
        if dup:
            raise ConfigError(f"{where}={w!r} lists {dup[0]!r} twice; give each candidate weight once.")
        self.weight = grid if isinstance(w, (list, tuple)) else grid[0]
        return grid

    def _check_method(self, level: str, weight: float) -> None:
        where, m, opts = self._p("method"), self.method, self.loss_options
        lo = self._p("loss_options")
        if opts is not None and not isinstance(opts, dict):
            raise ConfigError(f"{lo}={opts!r} must be a mapping of option names to values, e.g. {{hidden: 256}}.")
        opts = opts or {}
        check_finite_tree(lo, opts)
        if m is None:
            if opts:
                raise ConfigError(f"{lo} is set but {where} is null (source-only training has no DA loss); "
                                  "name a method or drop loss_options.")
            return
        if not isinstance(m, str):
            raise ConfigError(f"{where}={m!r} must be a method name (e.g. jan, dann, coral) or null.")
        cls = _method_class(m)
        if cls is not None and not cls.closed_form:  # a backbone-level method strategy (fixmatch)
            if level != cls.method_level:
                raise ConfigError(f"{where}={m!r} {cls.level_reason}; set {self._p('level')}: {cls.method_level}, "
                                  "or pick a feature-level method such as jan.")
            cls._check_method_options(self, opts, weight)
            return
        if cls is not None:
            cls._check_method_options(self, opts, weight)
        if _is_shallow(m):
            if level == "backbone":
                raise ConfigError(f"{where}={m!r} works on fixed features; use {self._p('level')}: features for it, "
                                  "or a deep loss / 'fixmatch' with level: backbone.")
            if cls is not None:  # a closed-form method strategy (source_only_lr, self_training)
                if opts:
                    raise ConfigError(f"{lo} is set but {where}={m!r} takes no options; drop loss_options.")
                return
            from ..adapt.shallow import make_shallow

            make_shallow(m, opts, where=lo)  # unknown options and bad values fail here, before any data is read
            return
        parts = [x.strip() for x in m.split("+")]
        for part in parts:
            check_option(where, part, self._method_choices() if len(parts) == 1 else available("da_loss"))
        dup = sorted({x for x in parts if parts.count(x) > 1})
        if dup:
            raise ConfigError(f"{where}={m!r} names {dup[0]!r} twice; combine different losses, e.g. jan+mcc.")
        from ..adapt.features import build_method_loss

        width = self.bottleneck if level == "features" else _BACKBONE_LEVEL_WIDTH
        build_on_meta(lo, lambda: build_method_loss(m, width, 2, weight, opts), opts)

    # ------------------------------------------------------------------ features
    def _features(self, dataset) -> np.ndarray:
        from ..features import FeatureExtractor

        if not hasattr(self, "extractor_"):
            # a randomly initialized backbone is part of the seeded run, whatever ran before
            with seeded(self.seed):
                bb = resolve_backbone(self.backbone, self.pretrained, self.image_size, data=dataset)
            self.extractor_ = FeatureExtractor(bb, cache_dir=self.cache_dir, progress=self.progress).fit()
        return self.extractor_.transform(dataset)

    def _source_split(self, source, hold_out: bool = True):
        """Labeled source features split (stratified, seeded) into training and validation rows:
        ``(Fs, ys, Fs_val, ys_val)``; the validation rows serve DEV/IWCV/``source_val``. Without
        ``hold_out`` (closed-form methods: nothing to select) every row trains and the
        validation part is ``None``."""
        from ..data import stratified_split

        Fs_all = self._features(source)
        ls = np.flatnonzero(source.labels >= 0)
        ys_all = source.labels[ls]
        Fs_all = Fs_all[ls]
        if not hold_out:
            return Fs_all, ys_all, None, None
        tr, va = stratified_split(ys_all, [1 - self.source_val_fraction, self.source_val_fraction], seed=self.seed)
        return Fs_all[tr], ys_all[tr], Fs_all[va], ys_all[va]

    def _require_target(self, train) -> None:
        if train is None:
            raise DataError(f"{self.name} needs the target training split (its inputs); got None.")

    def _target_features(self, train, d: int) -> np.ndarray:
        self._require_target(train)
        Ft = self._features(train)
        if Ft.shape[1] != d:
            raise DataError(f"source and target features differ in dimension ({d} vs {Ft.shape[1]}).")
        return Ft

    def _target_labels(self, train) -> np.ndarray:
        """The target training labels training may use: all -1 unless ``target_labels`` (then the
        labels are read; otherwise they are not even looked at)."""
        if not self.target_labels or train.labels is None:
            return np.full(len(train), -1)
        return np.asarray(train.labels)

    def fit(self, train, val=None, *, source=None, run_dir=None):
        """Adapt from ``source`` (labeled) to ``train``, the target training split.

        The labels of ``train`` are never read unless ``target_labels=True``; ``val`` is read
        only by ``selection="target_val"``. Methods that need no target input
        (``source_only_lr``) do not touch ``train`` at all.
        """
        from ..train.selection import importance_weights

        self.validate()
        self._reset_fitted()  # a refit never reuses an earlier fit's state
        _check_source(self, source)
        t0 = time.perf_counter()
        if self.level == "backbone":
            return self._fit_backbone(train, val, source, run_dir, t0)
        method = self.method
        closed = _method_class(method)
        # the source hold-out serves checkpoint selection only: a closed-form method has none, so it
        # fits on every labeled source row (the same numbers as the estimator called from Python)
        selects = not (_is_shallow(method) or closed is not None)
        estimator = _shift_estimator(self.label_shift)
        reweight = self.label_shift is not None and self.label_shift.endswith("+reweight")
        Fs, ys, Fsv, ysv = self._source_split(source, hold_out=selects or estimator in ("bbse", "bbse_soft"))
        Ft = yt = None
        if closed is None or closed.needs_target_features or self.label_shift is not None:
            Ft = self._target_features(train, Fs.shape[1])
            yt = self._target_labels(train)
        self.n_target_labels_ = 0 if yt is None else int((yt >= 0).sum())
        n_classes = _class_count(source, train, use_target_labels=self.n_target_labels_ > 0)
        Ftv = ytv = None
        if self.selection == "target_val":
            if val is None or val.labels is None or not (val.labels >= 0).any():
                raise DataError("selection='target_val' needs a labeled target validation split.")
            Ftv, ytv = self._features(val), val.labels
        self.selection_ = self.selection
        if _is_shallow(method):
            self._fit_shallow(method, Fs, ys, Ft, yt)
            self.history_, self.best_epoch_ = [], None
            self.selection_ = "none (closed-form estimator, no checkpoints to select)"
        else:
            from ..adapt.features import train_feature_adapter

            w = importance_weights(Fsv, Fs, Ft, seed=self.seed) if self.selection in ("dev", "iwcv") else None

            def train_one(wt, n_candidates, terms=()):
                res = train_feature_adapter(
                    Fs, ys, Ft, yt=yt if self.n_target_labels_ else None, Xs_val=Fsv, ys_val=ysv, weights_val=w,
                    Xt_val=Ftv, yt_val=ytv, num_classes=n_classes, method=method, weight=wt,
                    loss_options=self.loss_options, bottleneck=self.bottleneck, dropout=self.dropout,
                    epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                    selection=self.selection, seed=self.seed, device=self.device or "cpu", domain_bn=self.domain_bn,
                    terms=terms,
                )
                return res["history"][res["best_epoch"]]["score"], res

            grid, res = self._fit_weight_grid(train_one)
            if len(grid) > 1:
                self.selection_ = f"{self.selection} (epoch and weight from {grid})"
            self.model_, self.history_, self.best_epoch_ = res["model"], res["history"], res["best_epoch"]
            self.trainable_params_ = int(sum(p.numel() for p in self.model_.parameters()))
        self.n_classes_ = n_classes
        if self.label_shift is not None:
            self._fit_label_shift(Fs, ys, Fsv, ysv, Ft)
        if reweight:  # the estimate reweights the source classes; the model is trained again with it
            from ..adapt.features import RowWeightedCETerm
            from ..adapt.label_shift import class_weights_for_priors

            rows = class_weights_for_priors(ys, self.label_shift_.priors, n_classes)
            self.source_class_weights_ = np.array([float(rows[ys == c][0]) if (ys == c).any() else 0.0
                                                   for c in range(n_classes)])
            grid, res = self._fit_weight_grid(lambda wt, n: train_one(wt, n, terms=[RowWeightedCETerm(rows)]))
            self.model_, self.history_, self.best_epoch_ = res["model"], res["history"], res["best_epoch"]
            self.prior_log_ratio_ = None
            self.selection_ = f"{self.selection_}; retrained with source classes reweighted by {estimator} priors"
        self.train_time_ = time.perf_counter() - t0
        return self

    def _fit_label_shift(self, Fs, ys, Fsv, ysv, Ft) -> None:
        """Estimate the target's class priors from the fitted model's outputs on the unlabeled
        target training rows (MLLS: EM on them, with the classifier's training priors; BBSE:
        the confusion matrix on the held-out source rows, predicted with the source's own
        BatchNorm statistics), then correct every prediction by the prior ratio
        (``label_shift_``: the estimate; ``prior_log_ratio_``: what is added to the logits)."""
        import copy

        import torch

        from ..adapt.label_shift import estimate_target_priors

        k = self.n_classes_
        ps = np.bincount(ys, minlength=k) / len(ys)  # the classifier's training priors
        Pt = softmax(self._feature_logits(Ft))
        Ps = None
        if _shift_estimator(self.label_shift) != "mlls":
            if hasattr(self, "model_") and self.domain_bn:  # source rows normalized as the source
                model = copy.deepcopy(self.model_)
                model.set_bn_statistics(torch.as_tensor(Fs, dtype=torch.float32))
                with torch.no_grad():
                    Ps = softmax(model.eval()(torch.as_tensor(Fsv, dtype=torch.float32)).numpy())
            else:
                Ps = softmax(self._feature_logits(Fsv, target=False))
        method = _shift_estimator(self.label_shift)
        est = estimate_target_priors(Ps, ysv if Ps is not None else None, Pt, method=method, n_classes=k,
                                     source_priors=ps if method == "mlls" else None, seed=self.seed)
        self.label_shift_ = est
        ratio = np.asarray(est.priors, dtype=np.float64) / np.clip(np.asarray(est.source_priors), 1e-12, None)
        self.prior_log_ratio_ = np.log(np.clip(ratio, 1e-12, None)).astype(np.float32)

    def _fit_weight_grid(self, train_one):
        """Train once per candidate ``weight`` and keep the best run: the same unsupervised score
        that picked each run's checkpoint picks the weight (no target labels involved).

        ``train_one(weight, n_candidates)`` returns ``(score, result)``; sets ``weight_``,
        ``weight_scores_`` and returns ``(grid, best result)``.
        """
        grid = list(self.weight) if isinstance(self.weight, (list, tuple)) else [self.weight]
        if not grid:
            raise ConfigError("weight=[] is empty; give a number or a list of candidate weights.")
        best = None
        self.weight_scores_ = {}
        for wt in grid:
            score, res = train_one(wt, len(grid))
            self.weight_scores_[wt] = score
            if best is None or score > best[0]:
                best = (score, wt, res)
        _, self.weight_, res = best
        return grid, res

    def _fit_backbone(self, train, val, source, run_dir, t0):
        from ..adapt.backbone import train_backbone_adapter

        if _is_shallow(self.method):
            raise ConfigError(f"method {self.method!r} works on fixed features; use level='features' for it, or a "
                              "deep loss / 'fixmatch' with level='backbone'.")
        self._require_target(train)
        n_classes = _class_count(source, train)
        self.n_target_labels_ = 0  # the backbone-level adapter hides the target labels itself

        def train_one(wt, n_candidates):
            res = train_backbone_adapter(
                source, train, backbone=self.backbone, pretrained=self.pretrained, image_size=self.image_size,
                num_classes=n_classes, method=self.method, weight=wt, loss_options=self.loss_options,
                selection=self.selection, source_val_fraction=self.source_val_fraction,
                target_val_ds=val if self.selection == "target_val" else None, epochs=self.epochs,
                batch_size=self.batch_size, lr=self.lr, backbone_lr_mult=self.backbone_lr_mult,
                unfreeze=self.unfreeze, seed=self.seed, device=self.device,
                run_dir=run_dir if n_candidates == 1 else None, progress=self.progress)
            return res["score"], res

        grid, res = self._fit_weight_grid(train_one)
        self.model_, self.trainer_, self.history_ = res["model"], res["trainer"], res["history"]
        self.best_epoch_ = res["best_epoch"]
        self.selection_ = res["selection"] + (f" (weight from {grid})" if len(grid) > 1 else "")
        self.n_classes_ = n_classes
        self.trainable_params_ = int(sum(p.numel() for p in self.model_.parameters() if p.requires_grad))
        self.train_time_ = time.perf_counter() - t0
        return self

    def _fit_shallow(self, method, Fs, ys, Ft, yt):
        from sklearn.linear_model import LogisticRegression

        closed = _method_class(method)
        if closed is not None:  # a method strategy: source_only_lr, self_training
            self.clf_, self.trainable_params_ = closed._fit_closed_form(self, Fs, ys, Ft, yt)
            self._adapter = None
            return
        from .._registry import get

        X, y, dom = _stack_domains(Fs, ys, Ft, yt)
        import inspect

        cls = get("shallow_da", method)
        # seeded: a default random_state=None would draw from the global NumPy state (kliep, tca)
        seeded_kw = {"random_state": self.seed} if "random_state" in inspect.signature(cls.__init__).parameters else {}
        from ..adapt.shallow import make_shallow

        adapter = make_shallow(method, {**seeded_kw, **(self.loss_options or {})}, where=self._p("loss_options"))
        y_masked = np.where(dom > 0, y, -1)
        adapter.fit(X, y_masked, sample_domain=dom)
        # what the fit did (convergence, effective sample size, subsampling): into results.json
        self.estimator_diagnostics_ = dict(getattr(adapter, "diagnostics_", None) or {})
        weights = getattr(adapter, "weights_", None)
        lab = y >= 0  # source rows, and labeled target rows only with target_labels=True
        if weights is not None:  # reweighting: train on source rows with weights
            Xtr, ytr = Fs, ys
            sw = np.asarray(weights)[: len(Fs)] if len(weights) == len(X) else np.asarray(weights)
            self._adapter = None
        else:
            Xa = adapter.transform(X, sample_domain=dom)
            Xtr, ytr, sw = Xa[lab], y[lab], None
            self._adapter = adapter
        self.clf_ = LogisticRegression(max_iter=3000).fit(Xtr, ytr, sample_weight=sw)
        self.trainable_params_ = int(self.clf_.coef_.size + self.clf_.intercept_.size)

    def predict_logits(self, dataset) -> np.ndarray:
        import torch

        if hasattr(self, "trainer_"):  # backbone level
            return self.trainer_.predict_logits(dataset)
        z = self._feature_logits(self._features(dataset))
        ratio = getattr(self, "prior_log_ratio_", None)
        return z if ratio is None else z + ratio  # the label-shift (prior) correction, when fitted

    def _feature_logits(self, F, target: bool = True) -> np.ndarray:
        """Logits of the fitted feature-level predictor on features ``F`` (of the target domain,
        or with ``target=False`` of the source: the mapping adapter's source side), before any
        prior correction."""
        import torch

        if hasattr(self, "model_"):
            with torch.no_grad():
                return self.model_(torch.as_tensor(F, dtype=torch.float32)).numpy()
        if getattr(self, "_adapter", None) is not None:
            F = self._adapter.transform(F, sample_domain=(-1 if target else 1) * np.ones(len(F), dtype=int))
        P = np.full((len(F), self.n_classes_), -1e4)
        P[:, self.clf_.classes_] = np.log(np.clip(self.clf_.predict_proba(F), 1e-12, None))
        return P

    def state_dict(self) -> dict:
        if hasattr(self, "model_"):
            return self.model_.state_dict()
        est = getattr(self.clf_, "estimator_", self.clf_)
        return {"head.weight": est.coef_.astype(np.float32), "head.bias": est.intercept_.astype(np.float32),
                **self._closed_form_state()[0]}

    def _closed_form_state(self) -> tuple[dict, dict]:
        """The closed-form classifier (and mapping adapter) as tensors + JSON headers."""
        from ._state import estimator_state

        tensors, meta = {}, {}
        for prefix, est in (("clf", getattr(self.clf_, "estimator_", self.clf_)),
                            ("adapter", getattr(self, "_adapter", None))):
            if est is not None:
                t, meta[f"transferkit.{prefix}"] = estimator_state(est, prefix)
                tensors.update(t)
        return tensors, meta

    def state_metadata(self) -> dict[str, str]:
        meta = {"transferkit.n_classes": str(self.n_classes_)}
        if getattr(self, "prior_log_ratio_", None) is not None:
            meta["transferkit.prior_log_ratio"] = json.dumps([float(v) for v in self.prior_log_ratio_])
        if not hasattr(self, "model_"):
            meta.update(self._closed_form_state()[1])
        return meta

    def load_state(self, state: dict, metadata: dict | None = None, where: str = "model.safetensors"):
        """The fitted predictor from :meth:`state_dict` and :meth:`state_metadata`: the bottleneck
        + head (feature level, its BatchNorm statistics included: AdaBN's are the target's), the
        backbone-level model, or the closed-form classifier and adapter; returns ``self``."""
        from ._state import load_module_state, rebuild_estimator, transfer_model_from_state

        self.validate()
        self._reset_fitted()
        meta = metadata or {}
        self.history_, self.best_epoch_ = [], None
        if self.level == "backbone":
            n = int(state["head.net.4.weight"].shape[0])
            self.model_, self.trainer_ = transfer_model_from_state(self, state, n, "mlp", 0.0, where)
        elif "bottleneck.0.weight" in state:
            from ..adapt.features import BottleneckClassifier

            w = state["bottleneck.0.weight"]
            n = int(state["head.weight"].shape[0])
            model = BottleneckClassifier(int(w.shape[1]), n, int(w.shape[0]), self.dropout)
            load_module_state(model, state, where)
            self.model_ = model.eval()
        else:
            from sklearn.linear_model import LogisticRegression

            from .._registry import get

            self.clf_ = rebuild_estimator(state, meta.get("transferkit.clf"), "clf", LogisticRegression, where)
            self._adapter = None
            if "transferkit.adapter" in meta:
                self._adapter = rebuild_estimator(state, meta["transferkit.adapter"], "adapter",
                                                  get("shallow_da", self.method), where)
            n = int(meta.get("transferkit.n_classes", max(self.clf_.classes_) + 1))
        self.n_classes_ = int(meta.get("transferkit.n_classes", n))
        if "transferkit.prior_log_ratio" in meta:
            ratio = np.asarray(json.loads(meta["transferkit.prior_log_ratio"]), dtype=np.float32)
            if ratio.shape != (self.n_classes_,) or not np.isfinite(ratio).all():
                raise DataError(f"{where}: its prior correction (transferkit.prior_log_ratio) does not fit its "
                                f"{self.n_classes_} classes; the file is damaged, train the run again.")
            self.prior_log_ratio_ = ratio
        return self


@register("strategy", "two_stage")
class TwoStage(Adapt):
    """The classic two-stage recipe: adapt, then fine-tune on the few labeled target samples.

    Stage 1 trains the bottleneck + head with the source classification loss plus
    ``weight * MMD`` (DAN, ``weight=0.5`` by default) on the unlabeled target, its checkpoint
    chosen by ``selection``. Stage 2 starts from that model and trains on the labeled target
    training samples only (``stage2_epochs`` at ``stage2_lr``), keeping the checkpoint with the
    best labeled target *validation* accuracy when a validation split is given, else the last.
    Without labeled target training samples, stage 2 is skipped.
    """

    name = "two_stage"
    label_shift = None  # adapt's prior correction is not part of this strategy
    # adapt parameters this strategy fixes (not constructor parameters; see Adapt._fix_class_parameters)
    level = 'features'
    backbone_lr_mult = 0.1
    unfreeze = 'all'
    target_labels = False

    def _validate(self, backbone) -> None:
        super()._validate(backbone)
        if isinstance(self.method, str) and _is_shallow(self.method):
            raise ConfigError(f"{self._p('method')}={self.method!r} is a closed-form estimator with no network for "
                              "stage 2 to fine-tune; use a deep loss (e.g. method: dan) or null.")
        self._num("stage2_epochs", low=1, high=MAX_EPOCHS, integer=True, example=30)
        self._num("stage2_lr", low=0, high=MAX_LR, low_inclusive=False, example=0.0003)

    def __init__(self, backbone="efficientnet_lite0", method="dan", weight=0.5, selection="dev",
                 pretrained=True, image_size=None, bottleneck=256, dropout=0.5, epochs=30, batch_size=64,
                 lr=1e-3, weight_decay=5e-4, loss_options=None, source_val_fraction=0.2, cache_dir=None,
                 seed=0, device="cpu", progress=False, domain_bn=True, stage2_epochs=30, stage2_lr=3e-4):
        super().__init__(backbone, method, weight, selection, pretrained, image_size, bottleneck, dropout, epochs,
                         batch_size, lr, weight_decay, loss_options, source_val_fraction, cache_dir, seed, device,
                         progress, domain_bn)
        self.stage2_epochs = stage2_epochs
        self.stage2_lr = stage2_lr

    def fit(self, train, val=None, *, source=None, run_dir=None):
        import time as _time

        from ..adapt.features import train_feature_adapter

        t0 = _time.perf_counter()
        labels = train.labels if train.labels is not None else np.full(len(train), -1)
        hidden = train.without_labels()
        super().fit(hidden, None, source=source, run_dir=run_dir)  # stage 1: target labels hidden
        self.stage1_history_ = self.history_
        lab = np.flatnonzero(labels >= 0)
        if len(lab) == 0 or not hasattr(self, "model_"):
            if len(lab) == 0:
                import warnings

                from ..errors import TransferKitWarning

                warnings.warn(f"{self.name}: the target training split has no labeled samples, so stage 2 (fine-tuning "
                              "on target labels) was skipped and the result is stage 1 alone, the same as "
                              "'adapt'; give labeled target samples (split.labels_per_class) or use adapt.",
                              TransferKitWarning, stacklevel=2)
            self.train_time_ = _time.perf_counter() - t0
            return self
        Ft = self._features(train)
        has_val = val is not None and val.labels is not None and (val.labels >= 0).any()
        Fv = self._features(val) if has_val else None
        res = train_feature_adapter(
            Ft[lab], labels[lab], Ft, Xt_val=Fv, yt_val=val.labels if has_val else None,
            num_classes=self.n_classes_, method=None, bottleneck=self.bottleneck, dropout=self.dropout,
            epochs=self.stage2_epochs, batch_size=min(self.batch_size, len(lab)), lr=self.stage2_lr,
            weight_decay=self.weight_decay, selection="target_val" if has_val else "last", seed=self.seed,
            device=self.device, init_state=self.model_.state_dict(), domain_bn=self.domain_bn,
        )
        self.model_, self.history_, self.best_epoch_ = res["model"], res["history"], res["best_epoch"]
        self.selection_ = f"stage 1: {self.selection}; stage 2: " + (
            "labeled target validation accuracy" if has_val else "last epoch")
        self.train_time_ = _time.perf_counter() - t0
        return self


# ---------------------------------------------------------------------------------- baselines
@register("strategy", "source_only")
class SourceOnly(Adapt):
    """Source-only baseline: bottleneck + head on labeled source only; no target label or input.

    The same network and recipe as ``adapt`` (a bottleneck ``Linear -> BatchNorm -> ReLU ->
    Dropout`` and a linear head on cached features of the frozen backbone; with
    ``level="backbone"`` the backbone-level model of ``adapt``), trained with the source
    classification loss alone. Nothing of the target is used: ``fit`` reads neither the labels
    nor the inputs of the target training split (it may be ``None``; only its class *names*,
    when it has them, widen the output), the BatchNorm statistics are the source training
    batches' (no AdaBN), and the checkpoint is chosen on the held-out labeled source
    (``selection="source_val"``: the negative mean cross-entropy on ``source_val_fraction`` of
    the source; no importance weights, which would need target inputs) or is the last epoch
    (``"last"``). Its accuracy is what the source alone buys on the target; every adaptation
    method is measured against it. The AdaBN variant is ``source_only_adabn``.

    Parameters
    ----------
    selection
        ``"source_val"`` (default) or ``"last"``.
    level, backbone_lr_mult, unfreeze
        ``"features"`` (default) or ``"backbone"`` (the backbone trains too, its ``unfreeze``
        groups at ``backbone_lr_mult`` times ``lr``, as in ``adapt``).
    bottleneck, dropout, epochs, batch_size, lr, weight_decay, source_val_fraction
        As in ``adapt``.
    """

    name = "source_only"
    label_shift = None  # adapt's prior correction is not part of this strategy
    # adapt parameters this strategy fixes (not constructor parameters; see Adapt._fix_class_parameters)
    method = None
    weight = 1.0
    loss_options = None
    domain_bn = False
    target_labels = False
    needs_source = True
    #: Whether the target's training inputs set the bottleneck's BatchNorm statistics (AdaBN).
    uses_target_inputs = False

    def __init__(self, backbone="efficientnet_lite0", selection="source_val", pretrained=True, image_size=None,
                 bottleneck=256, dropout=0.5, epochs=30, batch_size=64, lr=1e-3, weight_decay=5e-4,
                 source_val_fraction=0.2, cache_dir=None, seed=0, device=None, progress=False, level="features",
                 backbone_lr_mult=0.1, unfreeze="all"):
        super().__init__(backbone=backbone, method=None, selection=selection, pretrained=pretrained,
                         image_size=image_size, bottleneck=bottleneck, dropout=dropout, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         source_val_fraction=source_val_fraction, cache_dir=cache_dir, seed=seed, device=device,
                         progress=progress, domain_bn=self.uses_target_inputs, level=level,
                         backbone_lr_mult=backbone_lr_mult, unfreeze=unfreeze)

    def _validate(self, backbone) -> None:
        p = self._p
        self._check_common(backbone)
        level = check_option(p("level"), self.level, ("features", "backbone"))
        check_option(p("selection"), self.selection, SOURCE_ONLY_SELECTIONS)
        self._check_network()
        self._num("backbone_lr_mult", low=0, high=10, example=0.1)
        nb = n_backbone_groups(backbone if backbone is not None else self.backbone)
        check_unfreeze(p("unfreeze"), self.unfreeze, nb if level == "backbone" else None)

    def _selection_text(self) -> str:
        target = ("target inputs set only the BatchNorm statistics" if self.uses_target_inputs
                  else "no target input")
        if self.selection == "last":
            return f"last epoch ({target})"
        return f"source_val (labeled source validation loss; {target})"

    def fit(self, train=None, val=None, *, source=None, run_dir=None):
        """Train on ``source`` (labeled) alone.

        ``train`` (the target training split) is not read: neither its labels nor its inputs
        (``source_only_adabn`` reads its inputs, for the BatchNorm statistics); ``val`` is
        unused. Both may be ``None``.
        """
        self.validate()
        self._reset_fitted()
        _check_source(self, source)
        t0 = time.perf_counter()
        n_classes = _class_count(source, train)
        self.n_target_labels_ = 0
        if self.level == "backbone":
            from ..adapt.backbone import train_backbone_adapter

            res = train_backbone_adapter(
                source, None, backbone=self.backbone, pretrained=self.pretrained, image_size=self.image_size,
                num_classes=n_classes, method=None, selection=self.selection,
                source_val_fraction=self.source_val_fraction, epochs=self.epochs, batch_size=self.batch_size,
                lr=self.lr, backbone_lr_mult=self.backbone_lr_mult, unfreeze=self.unfreeze, seed=self.seed,
                device=self.device, run_dir=run_dir, progress=self.progress)
            self.model_, self.trainer_, self.history_ = res["model"], res["trainer"], res["history"]
            self.trainable_params_ = int(sum(p.numel() for p in self.model_.parameters() if p.requires_grad))
        else:
            from ..adapt.features import train_feature_adapter

            import torch

            Fs, ys, Fsv, ysv = self._source_split(source)
            Ft = self._target_features(train, Fs.shape[1]) if self.uses_target_inputs else None
            # trained without any target input, whatever the variant: source_only_adabn is exactly
            # this model with the target's BatchNorm statistics set afterwards
            res = train_feature_adapter(
                Fs, ys, None, Xs_val=Fsv, ys_val=ysv, num_classes=n_classes, method=None, bottleneck=self.bottleneck,
                dropout=self.dropout, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                weight_decay=self.weight_decay, selection=self.selection, seed=self.seed,
                device=self.device or "cpu", domain_bn=False)
            self.model_, self.history_ = res["model"], res["history"]
            if Ft is not None:  # AdaBN: the selected weights, normalized with the target's statistics
                dev = next(self.model_.parameters()).device
                self.model_.set_bn_statistics(torch.as_tensor(Ft, dtype=torch.float32, device=dev))
            self.trainable_params_ = int(sum(p.numel() for p in self.model_.parameters()))
        self.best_epoch_ = res["best_epoch"]
        self.selection_ = self._selection_text()
        self.n_classes_ = n_classes
        self.train_time_ = time.perf_counter() - t0
        return self


@register("strategy", "source_only_adabn")
class SourceOnlyAdaBN(SourceOnly):
    """AdaBN: the source-only bottleneck + head with the target's BatchNorm statistics.

    Trained exactly as ``source_only`` (labeled source alone, the same weights and the same
    checkpoint, chosen on the labeled source validation loss); then the bottleneck's
    BatchNorm statistics are set to those of the target *training* inputs (Li et al., 2016,
    "Revisiting Batch Normalization for Practical Domain Adaptation"), so the fitted model
    normalizes every target sample with them. It reads the target's inputs, never its labels;
    being adapted to the target's statistics, it is not a source-only model. Feature level only.
    """

    name = "source_only_adabn"
    # adapt parameters this strategy fixes (not constructor parameters; see Adapt._fix_class_parameters)
    domain_bn = True
    level = 'features'
    backbone_lr_mult = 0.1
    unfreeze = 'all'
    uses_target_inputs = True

    def __init__(self, backbone="efficientnet_lite0", selection="source_val", pretrained=True, image_size=None,
                 bottleneck=256, dropout=0.5, epochs=30, batch_size=64, lr=1e-3, weight_decay=5e-4,
                 source_val_fraction=0.2, cache_dir=None, seed=0, device=None, progress=False):
        super().__init__(backbone=backbone, selection=selection, pretrained=pretrained, image_size=image_size,
                         bottleneck=bottleneck, dropout=dropout, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, source_val_fraction=source_val_fraction, cache_dir=cache_dir,
                         seed=seed, device=device, progress=progress)


@register("strategy", "target_only")
class TargetOnly(Adapt):
    """Target-only baseline: the same bottleneck + head trained on the labeled target samples alone.

    The network and recipe of ``adapt`` (cached features of the frozen backbone), trained on
    the labeled rows of the target training split with no source data. The checkpoint is the
    one with the best labeled target *validation* accuracy when a labeled validation split is
    given, else the last epoch (recorded in ``selection_``). With the target's own labels it
    is the reference that adaptation from the source tries to approach, or that transfer has
    to beat.
    """

    name = "target_only"
    label_space = None  # trains on the target's own labels
    label_shift = None  # adapt's prior correction is not part of this strategy
    # adapt parameters this strategy fixes (not constructor parameters; see Adapt._fix_class_parameters)
    method = None
    weight = 1.0
    selection = 'last'
    loss_options = None
    source_val_fraction = 0.2
    domain_bn = False
    level = 'features'
    backbone_lr_mult = 0.1
    unfreeze = 'all'
    target_labels = False
    needs_source = False
    needs_target_labels = True

    def __init__(self, backbone="efficientnet_lite0", pretrained=True, image_size=None, bottleneck=256, dropout=0.5,
                 epochs=30, batch_size=64, lr=1e-3, weight_decay=5e-4, cache_dir=None, seed=0, device=None,
                 progress=False):
        super().__init__(backbone=backbone, method=None, selection="last", pretrained=pretrained,
                         image_size=image_size, bottleneck=bottleneck, dropout=dropout, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay, cache_dir=cache_dir, seed=seed,
                         device=device, progress=progress, domain_bn=False)

    def _validate(self, backbone) -> None:
        self._check_common(backbone)
        self._check_network()

    def fit(self, train, val=None, *, source=None, run_dir=None):
        """Train on the labeled rows of ``train``; ``val`` (labeled) picks the epoch; ``source``
        is ignored."""
        from ..adapt.features import train_feature_adapter

        self.validate()
        self._reset_fitted()
        self._check_train(train)
        t0 = time.perf_counter()
        lab = np.flatnonzero(train.labels >= 0)
        F = self._features(train)
        has_val = val is not None and val.labels is not None and bool((val.labels >= 0).any())
        n_classes = train.n_classes if not has_val else max(train.n_classes, val.n_classes)
        res = train_feature_adapter(
            F[lab], train.labels[lab], None, Xt_val=self._features(val) if has_val else None,
            yt_val=val.labels if has_val else None, num_classes=n_classes, method=None,
            bottleneck=self.bottleneck, dropout=self.dropout, epochs=self.epochs,
            batch_size=min(self.batch_size, len(lab)), lr=self.lr, weight_decay=self.weight_decay,
            selection="target_val" if has_val else "last", seed=self.seed, device=self.device or "cpu",
            domain_bn=False)
        self.model_, self.history_, self.best_epoch_ = res["model"], res["history"], res["best_epoch"]
        self.selection_ = "labeled target validation accuracy" if has_val else "last epoch"
        self.trainable_params_ = int(sum(p.numel() for p in self.model_.parameters()))
        self.n_target_labels_ = int(len(lab))
        self.n_classes_ = n_classes
        self.train_time_ = time.perf_counter() - t0
        return self


# ---------------------------------------------------------------------------------- method strategies
class _MethodStrategy(Adapt):
    """An ``adapt`` method that is a strategy of its own (see :func:`_method_strategy`).

    Class attributes: ``closed_form`` (a fixed-feature estimator, no checkpoints),
    ``needs_target_features``, ``method_level`` (the ``adapt`` level it runs at) and
    ``level_reason`` (why, for the error message).
    """

    closed_form = True
    label_shift = None  # adapt's prior correction is not part of this strategy
    needs_target_features = True
    method_level = "features"
    level_reason = "works on fixed features"

    def _validate(self, backbone) -> None:
        self._check_common(backbone)
        self._num("source_val_fraction", low=0, high=1, low_inclusive=False, high_inclusive=False, example=0.2)

    @classmethod
    def _check_method_options(cls, strategy, options: dict, weight) -> None:
        """Checks of ``strategy``'s ``loss_options`` (and other parameters) for this method."""

    @classmethod
    def _fit_closed_form(cls, strategy, Fs, ys, Ft, yt):
        """Fit on source features ``Fs, ys`` and target features ``Ft`` (labels ``yt``, -1 where
        hidden; ``None`` when ``needs_target_features`` is false); return ``(classifier with
        predict_proba and classes_, trainable parameter count)``."""
        raise NotImplementedError


def _logistic(X, y):
    from sklearn.linear_model import LogisticRegression

    from .._compat import one_blas_thread

    with one_blas_thread():
        return LogisticRegression(max_iter=3000).fit(X, y)


class _ClosedFormStrategy(_MethodStrategy):
    """A closed-form method on cached features: none of adapt's network or training parameters
    apply (they are fixed here, see :meth:`Adapt._fix_class_parameters`)."""

    weight = 1.0
    selection = 'dev'
    bottleneck = 256
    dropout = 0.5
    epochs = 30
    lr = 0.001
    weight_decay = 0.0005
    loss_options = None
    domain_bn = True
    level = 'features'
    backbone_lr_mult = 0.1
    unfreeze = 'all'
    target_labels = False


@_method_strategy("source_only_lr")
class SourceOnlyLR(_ClosedFormStrategy):
    """Logistic regression on labeled source features: the shallow methods' source-only baseline.

    The classifier every shallow estimator of ``adapt`` ends with (``LogisticRegression``,
    ``max_iter=3000``), trained on the same labeled source rows (all of them: a closed-form
    method selects no checkpoint, so nothing is held out and ``source_val_fraction`` is unused)
    with no adaptation. No target label and no
    target input is used: ``fit`` does not touch the target training split. Also
    ``Adapt(method="source_only_lr")``.
    """

    name = "source_only_lr"
    # adapt parameters this strategy fixes (not constructor parameters; see Adapt._fix_class_parameters)
    method = 'source_only_lr'
    needs_target_features = False

    def __init__(self, backbone="efficientnet_lite0", pretrained=True, image_size=None, batch_size=64,
                 source_val_fraction=0.2, cache_dir=None, seed=0, device=None, progress=False):
        super().__init__(backbone=backbone, method="source_only_lr", pretrained=pretrained, image_size=image_size,
                         batch_size=batch_size, source_val_fraction=source_val_fraction, cache_dir=cache_dir,
                         seed=seed, device=device, progress=progress)

    @classmethod
    def _check_method_options(cls, strategy, options: dict, weight) -> None:
        if strategy.target_labels:
            raise ConfigError(f"{strategy._p('target_labels')}=true contradicts {strategy._p('method')}="
                              "'source_only_lr' (a source-only baseline reads no target label); drop target_labels.")

    @classmethod
    def _fit_closed_form(cls, strategy, Fs, ys, Ft, yt):
        clf = _logistic(Fs, ys)
        return clf, int(clf.coef_.size + clf.intercept_.size)


@_method_strategy("self_training")
class SelfTraining(_ClosedFormStrategy):
    """Self-training on features: logistic regression refit with confident target pseudo-labels.

    Logistic regression on the labeled source features (as ``source_only_lr``), then rounds of
    :class:`~transferkit.semi.SelfTrainingClassifier`: target rows predicted with probability at
    least ``threshold`` get pseudo-labels (class-balanced) and the classifier is refit. The
    target's labels are never read. Also ``Adapt(method="self_training")`` (threshold 0.9).

    Parameters
    ----------
    threshold
        Confidence a target row needs for a pseudo-label, in (0, 1].
    """

    name = "self_training"
    # adapt parameters this strategy fixes (not constructor parameters; see Adapt._fix_class_parameters)
    method = 'self_training'

    def __init__(self, backbone="efficientnet_lite0", threshold=0.9, pretrained=True, image_size=None, batch_size=64,
                 source_val_fraction=0.2, cache_dir=None, seed=0, device=None, progress=False):
        super().__init__(backbone=backbone, method="self_training", pretrained=pretrained, image_size=image_size,
                         batch_size=batch_size, source_val_fraction=source_val_fraction, cache_dir=cache_dir,
                         seed=seed, device=device, progress=progress)
        self.threshold = threshold

    def _validate(self, backbone) -> None:
        super()._validate(backbone)
        self._num("threshold", low=0, high=1, low_inclusive=False, example=0.9)

    @classmethod
    def _fit_closed_form(cls, strategy, Fs, ys, Ft, yt):
        from sklearn.linear_model import LogisticRegression

        from ..semi import SelfTrainingClassifier

        X, y, dom = _stack_domains(Fs, ys, Ft, yt)
        threshold = getattr(strategy, "threshold", 0.9)
        clf = SelfTrainingClassifier(LogisticRegression(max_iter=3000), threshold=threshold).fit(X, y, sample_domain=dom)
        return clf, int(clf.estimator_.coef_.size + clf.estimator_.intercept_.size)


@_method_strategy("fixmatch")
class FixMatch(_MethodStrategy):
    """FixMatch through the backbone: source loss plus weak/strong consistency on target images.

    ``adapt`` at ``level="backbone"`` with :class:`~transferkit.semi.FixMatchTerm` (Sohn et al.,
    2020): the backbone and an MLP head train on labeled source batches, and each unlabeled
    target image's weak view, when predicted with confidence at least ``threshold``
    (``loss_options``; 0.95), gives the pseudo-label its strong (RandAugment + Cutout) view is
    trained on, at weight ``weight``. The checkpoint is chosen by ``selection`` as in ``adapt``;
    the target's labels are never read. Images only; meant for GPUs. Also
    ``Adapt(method="fixmatch", level="backbone")``.
    """

    name = "fixmatch"
    # adapt parameters this strategy fixes (not constructor parameters; see Adapt._fix_class_parameters)
    method = 'fixmatch'
    bottleneck = 256
    dropout = 0.5
    weight_decay = 0.0005
    domain_bn = True
    level = 'backbone'
    target_labels = False
    closed_form = False
    method_level = "backbone"
    level_reason = "augments images through the backbone"

    def __init__(self, backbone="efficientnet_lite0", weight=1.0, selection="dev", pretrained=True, image_size=None,
                 epochs=30, batch_size=64, lr=1e-3, loss_options=None, source_val_fraction=0.2, cache_dir=None, seed=0,
                 device=None, progress=False, backbone_lr_mult=0.1, unfreeze="all"):
        super().__init__(backbone=backbone, method="fixmatch", weight=weight, selection=selection,
                         pretrained=pretrained, image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                         loss_options=loss_options, source_val_fraction=source_val_fraction, cache_dir=cache_dir,
                         seed=seed, device=device, progress=progress, level="backbone",
                         backbone_lr_mult=backbone_lr_mult, unfreeze=unfreeze)

    def _validate(self, backbone) -> None:
        Adapt._validate(self, backbone)

    @classmethod
    def _check_method_options(cls, strategy, options: dict, weight) -> None:
        from .._validation import suggest
        from ..adapt.backbone import FIXMATCH_OPTIONS
        from ..semi import FixMatchTerm

        lo = strategy._p("loss_options")
        bad = [k for k in options if k not in FIXMATCH_OPTIONS]
        if bad:
            raise ConfigError(f"{lo} has an unknown option {bad[0]!r} for method 'fixmatch'."
                              + suggest(str(bad[0]), FIXMATCH_OPTIONS) + f" Options: {', '.join(FIXMATCH_OPTIONS)}.")
        build_on_meta(lo, lambda: FixMatchTerm(weight=weight, **options), options)
