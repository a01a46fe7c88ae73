"""Fine-tuning and the from-scratch baseline."""

from __future__ import annotations

import time

import numpy as np
import torch

from .._compat import one_blas_thread
from .._registry import register
from .._validation import check_choice
from ..finetune import (
    ProgressiveUnfreezer,
    apply_freeze,
    build_param_groups,
    frozen_bn_modules,
    parse_unfreeze,
)
from .base import Strategy, resolve_backbone


@register("strategy", "finetune")
class FineTune(Strategy):
    """Pretrained backbone + new head, trained end to end (or its top groups).

    Parameters
    ----------
    backbone
        Backbone name or instance.
    pretrained
        Start from pretrained weights.
    unfreeze
        Backbone groups that train: ``"all"``, ``"none"`` or ``"last:k"``.
    lr
        Learning rate of the new head.
    backbone_lr_mult
        Backbone learning rate as a fraction of ``lr`` (discriminative fine-tuning; 0.1 =
        a 10x lower rate for pretrained layers).
    layer_decay
        Layer-wise decay: each backbone group below the top trains ``layer_decay`` times slower.
    progressive_unfreeze
        Unfreeze one more group (top first) every N epochs, starting from ``unfreeze``'s groups
        (``None``: off).
    lp_init
        Linear-probe-then-fine-tune (LP-FT, Kumar et al. 2022): initialize the head with
        logistic regression on the frozen features so fine-tuning starts from a good head and
        distorts the pretrained features less.
    freeze_bn
        BatchNorm statistics to keep fixed: ``"all"`` (the default; small target batches give
        poor statistics), ``"frozen_groups"``, or ``"none"``.
    epochs, batch_size, optimizer, schedule, warmup_epochs, weight_decay, grad_clip,
    label_smoothing, augment, early_stopping, monitor
        Training budget and recipe, see :class:`transferkit.train.Trainer`. Early stopping
        watches the labeled *validation* split; the test split is never seen in ``fit``.
    dropout, head
        Head dropout and kind (``"linear"`` or ``"mlp"``).
    """

    name = "finetune"

    def __init__(self, backbone="efficientnet_lite0", pretrained=True, image_size=None, unfreeze="all",
                 lr=1e-3, backbone_lr_mult=0.1, layer_decay=1.0, progressive_unfreeze=None, lp_init=True,
                 freeze_bn="all", epochs=30, batch_size=32, optimizer="adamw", schedule="cosine",
                 warmup_epochs=1.0, weight_decay=0.01, dropout=0.0, head="linear", grad_clip=1.0,
                 label_smoothing=0.0, augment="light", early_stopping=None, monitor="val_accuracy",
                 cache_dir=None, seed=0, device=None, progress=False):
        self.backbone = backbone
        self.pretrained = pretrained
        self.image_size = image_size
        self.unfreeze = unfreeze
        self.lr = lr
        self.backbone_lr_mult = backbone_lr_mult
        self.layer_decay = layer_decay
        self.progressive_unfreeze = progressive_unfreeze
        self.lp_init = lp_init
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

    def _build_model(self, n_classes: int):
        from ..nn import TransferModel

        torch.manual_seed(self.seed)  # the new head's (and a scratch backbone's) initialization
        bb = resolve_backbone(self.backbone, self.pretrained, self.image_size)
        return TransferModel(bb, n_classes, head=self.head, dropout=self.dropout)

    def _linear_probe(self, model, train) -> None:
        from sklearn.linear_model import LogisticRegression

        from ..features import FeatureExtractor
        from .feature_extraction import logistic_as_linear

        if self.head != "linear":
            return
        mask = train.labeled_mask
        fe = FeatureExtractor(model.backbone, cache_dir=self.cache_dir).fit()
        feats = fe.transform(train)[mask]
        with one_blas_thread():
            clf = LogisticRegression(C=1.0, max_iter=5000, tol=1e-6).fit(feats, train.labels[mask])
        W, b = logistic_as_linear(clf, model.num_classes)
        b = np.maximum(b, -10.0)  # an absent class must stay learnable, not pinned at -1e4
        with torch.no_grad():
            model.head.fc.weight.copy_(torch.from_numpy(W))
            model.head.fc.bias.copy_(torch.from_numpy(b))

    def fit(self, train, val=None, *, run_dir=None):
        from ..train import Trainer

        self._check_train(train)
        check_choice("freeze_bn", self.freeze_bn, ("all", "frozen_groups", "none"))
        t0 = time.perf_counter()
        model = self._build_model(train.n_classes)
        nb = len(model.layer_groups()) - 1
        k = parse_unfreeze(self.unfreeze, nb)
        callbacks = []
        if self.progressive_unfreeze:
            unf = ProgressiveUnfreezer(model, self.progressive_unfreeze, start=k)

            class _CB:
                def on_epoch_start(self, trainer, epoch):
                    unf.on_epoch_start(epoch)

            callbacks.append(_CB())
            self.unfreezer_ = unf
            apply_freeze(model, unf.n_unfrozen(0))
        else:
            apply_freeze(model, k)
        if self.lp_init and self.pretrained:
            self._linear_probe(model, train)
        groups = build_param_groups(model, self.lr, backbone_lr_mult=self.backbone_lr_mult,
                                    layer_decay=self.layer_decay, weight_decay=self.weight_decay)
        # parameters that train by the end (progressive unfreezing reaches more groups later)
        final_k = unf.n_unfrozen(self.epochs - 1) if self.progressive_unfreeze else k
        params = dict(model.named_parameters())
        self.trainable_params_ = sum(params[n].numel() for _, names in model.layer_groups()[nb - final_k:] for n in names)
        trainer = Trainer(
            model, groups, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
            schedule=self.schedule, warmup_epochs=self.warmup_epochs, grad_clip=self.grad_clip,
            label_smoothing=self.label_smoothing, augment=self.augment if train.modality == "image" else "none",
            early_stopping=self.early_stopping, monitor=self.monitor, callbacks=callbacks,
            bn_frozen=lambda: frozen_bn_modules(model, self.freeze_bn), seed=self.seed, device=self.device,
            run_dir=run_dir, progress=self.progress, tag=self.name,
        )
        trainer.fit(train, val)
        self.model_, self.trainer_, self.history_ = model, trainer, trainer.history
        self.best_epoch_ = trainer.best_epoch
        self.param_groups_ = [{"name": g["name"], "lr": g["initial_lr"], "weight_decay": g["weight_decay"]} for g in groups]
        self.train_time_ = time.perf_counter() - t0
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        return self.trainer_.predict_logits(dataset)

    def state_dict(self) -> dict:
        return self.model_.state_dict()


@register("strategy", "scratch")
class Scratch(FineTune):
    """Baseline: the same architecture from random initialization, same budget and splits.

    Every group trains at ``lr``; BatchNorm statistics update; no linear-probe init. This is
    the baseline that tells whether transfer helped.
    """

    name = "scratch"

    def __init__(self, backbone="efficientnet_lite0", pretrained=False, image_size=None, unfreeze="all",
                 lr=1e-3, backbone_lr_mult=1.0, layer_decay=1.0, progressive_unfreeze=None, lp_init=False,
                 freeze_bn="none", epochs=30, batch_size=32, optimizer="adamw", schedule="cosine",
                 warmup_epochs=1.0, weight_decay=0.01, dropout=0.0, head="linear", grad_clip=1.0,
                 label_smoothing=0.0, augment="light", early_stopping=None, monitor="val_accuracy",
                 cache_dir=None, seed=0, device=None, progress=False):
        super().__init__(backbone, pretrained, image_size, unfreeze, lr, backbone_lr_mult, layer_decay,
                         progressive_unfreeze, lp_init, freeze_bn, epochs, batch_size, optimizer, schedule,
                         warmup_epochs, weight_decay, dropout, head, grad_clip, label_smoothing, augment,
                         early_stopping, monitor, cache_dir, seed, device, progress)
