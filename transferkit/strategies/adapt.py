"""Domain adaptation strategies on a frozen, cached backbone: ``adapt`` (deep losses and
shallow estimators), and the baselines ``source_only`` and ``target_only``."""

from __future__ import annotations

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
    seeded,
)

#: Width of the MLP head's hidden layer that a backbone-level DA loss sees (``TransferModel(head="mlp")``).
_BACKBONE_LEVEL_WIDTH = 256


def _is_shallow(method) -> bool:
    """Methods that work on fixed feature matrices (closed-form estimators, no checkpoints)."""
    return method in available("shallow_da") or method in ("self_training", "source_only_lr")


@register("strategy", "adapt")
class Adapt(Strategy):
    """Adapt from a labeled source to a (mostly) unlabeled target on cached backbone features.

    Parameters
    ----------
    method
        A deep DA loss (``transferkit list da_losses``: ``jan`` (the default, chosen on
        development tasks: ``benchmarks/da_dev.py``), ``dan``, ``dann``, ``cdan``, ...) or a sum
        of them (``"jan+mcc"``) trained with a bottleneck + head; a shallow estimator (``coral``, ``sa``, ``tca``, ``ot_mapping``,
        ``kmm``, ``kliep``) followed by logistic regression; ``"self_training"``;
        ``"source_only_lr"`` (logistic regression on source features: the shallow methods'
        baseline); or ``None`` for source-only training of the same bottleneck + head.
    weight
        The DA loss weight (lambda), or a list of candidates: each is trained and the one whose
        best checkpoint has the highest ``selection`` score is kept (no target labels involved).
    selection
        Checkpoint selection: ``"dev"`` (default), ``"iwcv"``, ``"snd"``, ``"entropy"``; or
        ``"target_val"`` to use labeled target validation data when the user has it. Target
        test labels are never used. The scorer is recorded in ``selection_``.
    source_val_fraction
        Held-out labeled source fraction for IWCV/DEV.
    domain_bn
        Feature level: normalize each domain with its own BatchNorm statistics when predicting
        (AdaBN); the fitted model carries the target's.
    level
        ``"features"`` (default): adapt a bottleneck + head on cached features of the frozen
        backbone (fast on a CPU). ``"backbone"``: train the backbone too (its ``unfreeze``
        groups at ``backbone_lr_mult`` times ``lr``) with the DA loss on the bottleneck of an
        MLP head, through the one Trainer (:func:`transferkit.adapt.backbone.train_backbone_adapter`;
        meant for GPUs); also allows ``method="fixmatch"`` (weak/strong image augmentation).
    bottleneck, dropout, epochs, batch_size, lr, weight_decay, loss_options
        The adapter network and its training.
    """

    name = "adapt"
    needs_source = True

    def __init__(self, backbone="efficientnet_lite0", method="jan", weight=1.0, selection="dev",
                 pretrained=True, image_size=None, bottleneck=256, dropout=0.5, epochs=30, batch_size=64,
                 lr=1e-3, weight_decay=5e-4, loss_options=None, source_val_fraction=0.2, cache_dir=None,
                 seed=0, device=None, progress=False, domain_bn=True, level="features", backbone_lr_mult=0.1,
                 unfreeze="all"):
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

    # ------------------------------------------------------------------ validation
    def _method_choices(self) -> list[str]:
        return [*available("da_loss"), *available("shallow_da"), "self_training", "source_only_lr", "fixmatch"]

    def _validate(self, backbone) -> None:
        p = self._p
        self._check_common(backbone)
        level = check_option(p("level"), self.level, ("features", "backbone"))
        grid = self._check_weights()
        check_option(p("selection"), self.selection, [*available("scorer"), "target_val", "last"])
        self._num("bottleneck", low=1, high=MAX_WIDTH, integer=True, example=256)
        self._num("dropout", low=0, high=1, high_inclusive=False, example=0.5)
        self._num("epochs", low=1, high=MAX_EPOCHS, integer=True, example=30)
        self._num("lr", low=0, high=MAX_LR, low_inclusive=False, example=0.001)
        self._num("weight_decay", low=0, high=10, example=0.0005)
        self._num("source_val_fraction", low=0, high=1, low_inclusive=False, high_inclusive=False, example=0.2)
        check_flag(p("domain_bn"), self.domain_bn)
        self._num("backbone_lr_mult", low=0, high=10, example=0.1)
        nb = n_backbone_groups(backbone if backbone is not None else self.backbone)
        check_unfreeze(p("unfreeze"), self.unfreeze, nb if level == "backbone" else None)
        self._check_method(level, grid[0])

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
        if m == "fixmatch":
            if level != "backbone":
                raise ConfigError(f"{where}='fixmatch' augments images through the backbone; set "
                                  f"{self._p('level')}: backbone, or pick a feature-level method such as jan.")
            from .._validation import suggest
            from ..adapt.backbone import FIXMATCH_OPTIONS
            from ..semi import FixMatchTerm

            bad = [k for k in opts if k not in FIXMATCH_OPTIONS]
            if bad:
                raise ConfigError(f"{lo} has an unknown option {bad[0]!r} for method 'fixmatch'."
                                  + suggest(str(bad[0]), FIXMATCH_OPTIONS)
                                  + f" Options: {', '.join(FIXMATCH_OPTIONS)}.")
            build_on_meta(lo, lambda: FixMatchTerm(weight=weight, **opts), opts)
            return
        if _is_shallow(m):
            if level == "backbone":
                raise ConfigError(f"{where}={m!r} works on fixed features; use {self._p('level')}: features for it, "
                                  "or a deep loss / 'fixmatch' with level: backbone.")
            if opts:
                raise ConfigError(f"{lo} is set but {where}={m!r} takes no options; drop loss_options.")
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
                bb = resolve_backbone(self.backbone, self.pretrained, self.image_size)
            self.extractor_ = FeatureExtractor(bb, cache_dir=self.cache_dir, progress=self.progress).fit()
        return self.extractor_.transform(dataset)

    def fit(self, train, val=None, *, source=None, run_dir=None):
        """``train``: target training data (labels -1 where unknown); ``source``: labeled source."""
        from ..data import stratified_split
        from ..metrics.scorers import importance_weights

        self.validate()
        self._reset_fitted()  # a refit never reuses an earlier fit's state
        if source is None:
            raise ConfigError(f"strategy {self.name!r} needs a labeled source dataset (set 'source' in the config).")
        if source.labels is None or not (source.labels >= 0).any():
            raise DataError(f"source {source.name!r} has no labels; adaptation needs a labeled source.")
        t0 = time.perf_counter()
        if self.level == "backbone":
            return self._fit_backbone(train, val, source, run_dir, t0)
        Fs_all, Ft = self._features(source), self._features(train)
        if Fs_all.shape[1] != Ft.shape[1]:
            raise DataError(f"source and target features differ in dimension ({Fs_all.shape[1]} vs {Ft.shape[1]}).")
        ls = np.flatnonzero(source.labels >= 0)
        ys_all = source.labels[ls]
        Fs_all = Fs_all[ls]
        n_classes = max(source.n_classes, train.n_classes)
        yt = train.labels if train.labels is not None else np.full(len(train), -1)
        tr, va = stratified_split(ys_all, [1 - self.source_val_fraction, self.source_val_fraction], seed=self.seed)
        Fs, ys, Fsv, ysv = Fs_all[tr], ys_all[tr], Fs_all[va], ys_all[va]
        w = importance_weights(Fsv, Fs, Ft, seed=self.seed)
        Ftv = ytv = None
        if self.selection == "target_val":
            if val is None or val.labels is None or not (val.labels >= 0).any():
                raise DataError("selection='target_val' needs a labeled target validation split.")
            Ftv, ytv = self._features(val), val.labels
        self.selection_ = self.selection
        method = self.method
        if _is_shallow(method):
            self._fit_shallow(method, Fs, ys, Ft, yt)
            self.history_, self.best_epoch_ = [], None
            self.selection_ = "none (closed-form estimator, no checkpoints to select)"
        else:
            from ..adapt.features import train_feature_adapter

            def train_one(wt, n_candidates):
                res = train_feature_adapter(
                    Fs, ys, Ft, yt=yt, Xs_val=Fsv, ys_val=ysv, weights_val=w, Xt_val=Ftv, yt_val=ytv,
                    num_classes=n_classes, method=method, weight=wt, loss_options=self.loss_options,
                    bottleneck=self.bottleneck, dropout=self.dropout, epochs=self.epochs, batch_size=self.batch_size,
                    lr=self.lr, weight_decay=self.weight_decay, selection=self.selection, seed=self.seed,
                    device=self.device or "cpu", domain_bn=self.domain_bn,
                )
                return res["history"][res["best_epoch"]]["score"], res

            grid, res = self._fit_weight_grid(train_one)
            if len(grid) > 1:
                self.selection_ = f"{self.selection} (epoch and weight from {grid})"
            self.model_, self.history_, self.best_epoch_ = res["model"], res["history"], res["best_epoch"]
            self.trainable_params_ = int(sum(p.numel() for p in self.model_.parameters()))
        self.n_classes_ = n_classes
        self.train_time_ = time.perf_counter() - t0
        return self

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
        n_classes = max(source.n_classes, train.n_classes)

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

        X = np.vstack([Fs, Ft])
        y = np.r_[ys, yt]
        dom = np.r_[np.ones(len(Fs), dtype=int), -np.ones(len(Ft), dtype=int)]
        if method == "source_only_lr":  # the fair baseline of the shallow methods: same classifier, no adaptation
            from .._compat import one_blas_thread

            with one_blas_thread():
                self.clf_ = LogisticRegression(max_iter=3000).fit(Fs, ys)
            self._adapter = None
            self.trainable_params_ = int(self.clf_.coef_.size + self.clf_.intercept_.size)
            return
        if method == "self_training":
            from ..semi import SelfTrainingClassifier

            self.clf_ = SelfTrainingClassifier(LogisticRegression(max_iter=3000), threshold=0.9).fit(X, y, sample_domain=dom)
            self._adapter = None
            self.trainable_params_ = int(self.clf_.estimator_.coef_.size + self.clf_.estimator_.intercept_.size)
            return
        from .._registry import get

        adapter = get("shallow_da", method)()
        y_masked = np.where(dom > 0, y, -1)
        adapter.fit(X, y_masked, sample_domain=dom)
        weights = getattr(adapter, "weights_", None)
        lab = y >= 0
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
        F = self._features(dataset)
        if hasattr(self, "model_"):
            with torch.no_grad():
                return self.model_(torch.as_tensor(F, dtype=torch.float32)).numpy()
        if getattr(self, "_adapter", None) is not None:
            F = self._adapter.transform(F, sample_domain=-np.ones(len(F), dtype=int))
        P = np.full((len(F), self.n_classes_), -1e4)
        P[:, self.clf_.classes_] = np.log(np.clip(self.clf_.predict_proba(F), 1e-12, None))
        return P

    def state_dict(self) -> dict:
        if hasattr(self, "model_"):
            return self.model_.state_dict()
        est = getattr(self.clf_, "estimator_", self.clf_)
        return {"head.weight": est.coef_.astype(np.float32), "head.bias": est.intercept_.astype(np.float32)}


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
