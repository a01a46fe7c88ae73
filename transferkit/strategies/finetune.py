"""Fine-tuning and the from-scratch baseline."""

from __future__ import annotations

import time

import numpy as np
import torch

from .._compat import one_blas_thread
from .._faults import fault_point
from .._registry import register
from ..errors import ConfigError
from ..finetune import (
    ProgressiveUnfreezer,
    apply_freeze,
    build_param_groups,
    frozen_bn_modules,
    parse_unfreeze,
)
from .base import (
    MAX_EPOCHS,
    MAX_LR,
    MAX_WIDTH,
    Strategy,
    build_on_meta,
    check_finite_tree,
    check_flag,
    check_option,
    check_options_signature,
    check_unfreeze,
    n_backbone_groups,
    resolve_backbone,
    seeded,
)

#: Choices of the recipe parameters (the Trainer's and the finetune module's).
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")
AUGMENTS = ("none", "light", "strong", "randaugment")
FREEZE_BN = ("all", "frozen_groups", "none")
HEADS = ("linear", "mlp", "vib")
#: ``vib_beta`` and ``vib_dim`` when ``head="vib"`` and they are left out.
VIB_DEFAULTS = {"vib_beta": 1e-3, "vib_dim": 64}
MONITORS = ("val_accuracy", "val_loss")


def check_training_budget(strat) -> int:
    """The fine-tuning recipe's shared parameters of ``strat`` (``lr``, ``backbone_lr_mult``,
    ``layer_decay``, ``freeze_bn``, ``epochs``, ``val_every``, ``val_max_samples``,
    ``mixed_precision``, ``optimizer``, ``schedule``, ``warmup_epochs``, ``weight_decay``), each
    checked with its one-line error; returns ``epochs``. ``finetune`` and ``multitask`` share it."""
    p = strat._p
    strat._num("lr", low=0, high=MAX_LR, low_inclusive=False, example=0.001)
    strat._num("backbone_lr_mult", low=0, high=10, example=0.1)
    strat._num("layer_decay", low=0, high=1, low_inclusive=False, example=0.75)
    check_option(p("freeze_bn"), strat.freeze_bn, FREEZE_BN)
    epochs = strat._num("epochs", low=1, high=MAX_EPOCHS, integer=True, example=10)
    if strat.val_every != "auto":
        strat._num("val_every", low=1, high=MAX_EPOCHS, integer=True, example=5)
    strat._num("val_max_samples", low=2, high=10**9, integer=True, none_ok=True, example=256)
    check_option(p("mixed_precision"), strat.mixed_precision, ("no", "bf16", "fp16"))
    if strat.mixed_precision == "fp16" and (strat.device == "cpu" or not torch.cuda.is_available()):
        raise ConfigError(f"{p('mixed_precision')}='fp16' needs a CUDA GPU; use 'bf16' or 'no' on the CPU.")
    check_option(p("optimizer"), strat.optimizer, OPTIMIZERS)
    check_option(p("schedule"), strat.schedule, SCHEDULES)
    warm = strat._num("warmup_epochs", low=0, high=MAX_EPOCHS, example=1)
    if warm > epochs:
        raise ConfigError(f"{p('warmup_epochs')}={warm!r} is longer than {p('epochs')}={epochs}; the learning "
                          "rate would never reach its peak: use warmup_epochs <= epochs.")
    strat._num("weight_decay", low=0, high=10, example=0.01)
    return epochs


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
        Head dropout and kind: ``"linear"``, ``"mlp"`` or ``"vib"``, a variational information
        bottleneck (Alemi et al. 2017, :mod:`transferkit.nn.vib`): the features are encoded to
        the mean and log-variance of a Gaussian code of width ``vib_dim``, training classifies a
        reparameterised sample and adds ``vib_beta`` times the KL divergence of the code from
        N(0, I) to the loss (logged per epoch as ``vib_kl``); prediction classifies the mean
        code. ``lp_init`` initialises the linear head only.
    vib_beta, vib_dim
        The bottleneck's weight beta >= 0 (default 1e-3; 0: no compression term) and code width
        (default 64); only with ``head="vib"`` (``None``: the default).
    penalty
        Regularizer(s) that keep source knowledge, added to the loss (registry kind
        ``penalty``): ``"l2sp"``, ``"ewc"``, ``"lwf"``, ``"replay"``, ``"bss"``, a list of
        names, or :class:`transferkit.finetune.penalties.Penalty` instances. ``None``: off.
        EWC and replay need labeled source data (``fit(..., source=...)``); EWC, LwF and
        replay need the source task's classifier, taken from the backbone when it carries one
        whose width matches the source classes (``Backbone.source_head``), else fitted as a
        logistic-regression probe on the source features of the pretrained backbone. Their raw
        terms are logged per epoch in ``history_`` under the penalty names.
    penalty_options
        Keyword arguments of the penalties: ``{"ewc": {"lam": 500}, "lwf": {"temperature": 2}}``;
        with a single penalty a flat dict (``{"lam": 500}``) is accepted too.
    val_every, val_max_samples
        Score the validation split every ``val_every`` epochs (and after the last) on at most
        ``val_max_samples`` of its rows (a stratified sample drawn once per fit; ``None``: every
        row). Only scored epochs can be kept; early stopping counts epochs since the best
        scored one. ``"auto"`` (default): as rarely as keeps validation at about a tenth of
        the training work (:func:`transferkit.train.trainer.auto_val_every`: every 15th epoch
        on the demo's 100 training and 401 validation images; every epoch once the training
        split is 4x the validation split). ``val_every=1`` scores every epoch.
    mixed_precision
        ``"no"``, ``"bf16"`` or ``"fp16"`` (CUDA): autocast through accelerate; on a device
        without native bfloat16 it stays float32, with a warning.

    Fitted attributes (besides :class:`Strategy`'s)
    ------------------------------------------------
    penalties_ : list of Penalty
        The attached penalties (their buffers hold the reference weights, Fisher, old head).
    source_head_ : FrozenHead or None
        The source classifier used by the penalties; :meth:`predict_source_logits` scores the
        source task with it on the fine-tuned trunk (forgetting).
    source_head_origin_ : str or None
        ``"backbone"`` or ``"linear probe on <source>"``.
    """

    name = "finetune"
    accepts_source = True  # the experiment runner passes ``source=`` when the config has one

    def __init__(self, backbone="efficientnet_lite0", pretrained=True, image_size=None, unfreeze="all",
                 lr=1e-3, backbone_lr_mult=0.1, layer_decay=1.0, progressive_unfreeze=None, lp_init=True,
                 freeze_bn="all", epochs=30, batch_size=32, optimizer="adamw", schedule="cosine",
                 warmup_epochs=1.0, weight_decay=0.01, dropout=0.0, head="linear", grad_clip=1.0,
                 label_smoothing=0.0, augment="light", early_stopping=None, monitor="val_accuracy",
                 cache_dir=None, seed=0, device=None, progress=False, penalty=None, penalty_options=None,
                 val_every="auto", val_max_samples=None, mixed_precision="no", vib_beta=None, vib_dim=None):
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
        self.penalty = penalty
        self.penalty_options = penalty_options
        self.val_every = val_every
        self.val_max_samples = val_max_samples
        self.mixed_precision = mixed_precision
        self.vib_beta = vib_beta
        self.vib_dim = vib_dim

    @property
    def needs_source(self) -> bool:
        """Whether ``fit`` needs labeled source data (a penalty such as EWC or replay is set)."""
        return any(getattr(cls, "needs_source_data", False) for cls, _ in self._penalty_specs(check=False))

    # ------------------------------------------------------------------ penalties
    def _penalty_specs(self, check: bool = True) -> list:
        """``[(class or instance, options)]`` from ``penalty``/``penalty_options``."""
        from .._registry import get
        from ..errors import ConfigError
        from ..finetune.penalties import Penalty

        pen = self.penalty
        if pen is None or pen == "none":
            return []
        items = list(pen) if isinstance(pen, (list, tuple)) else [pen]
        opts = dict(self.penalty_options or {})
        names = [p for p in items if isinstance(p, str)]
        nested = {k: v for k, v in opts.items() if k in names and isinstance(v, dict)}
        flat = {k: v for k, v in opts.items() if k not in nested}
        if flat and len(items) != 1:
            if check:
                raise ConfigError(
                    f"penalty_options keys {sorted(flat)} are not among the penalties {names}; with several "
                    "penalties give options per name, e.g. {'ewc': {'lam': 500}}.")
            flat = {}
        out = []
        for p in items:
            if isinstance(p, Penalty):
                out.append((p, None))
            elif isinstance(p, str):
                cls = get("penalty", p)
                out.append((cls, {**flat, **nested.get(p, {})}))
            elif check:
                raise ConfigError(f"penalty={p!r} must be a penalty name (e.g. 'ewc') or a Penalty instance.")
        return out

    def _source_head(self, model, source):
        """The source classifier ``(W, b)`` and where it came from, or ``(None, None)``."""
        sh = getattr(model.backbone, "source_head", None)
        if source is None:
            return (sh, "backbone") if sh is not None else (None, None)
        if sh is not None and int(torch.as_tensor(sh[0]).shape[0]) == source.n_classes:
            return sh, "backbone"
        W, b = self._probe(model.backbone, source, source.n_classes)
        return (torch.from_numpy(W), torch.from_numpy(b)), f"linear probe on {source.name}"

    def _attach_penalties(self, model, source) -> list:
        from ..errors import DataError
        from ..finetune.penalties import FrozenHead

        specs = self._penalty_specs()
        self.source_head_, self.source_head_origin_ = None, None
        if not specs:
            return []
        if source is not None and (source.labels is None or not (source.labels >= 0).any()):
            raise DataError(f"source dataset {source.name!r} has no labels; the penalties need a labeled source.")
        built = [p if opts is None else p(**opts) for p, opts in specs]
        if any(p.needs_source_head for p in built):
            head, origin = self._source_head(model, source)
            if head is not None:
                self.source_head_, self.source_head_origin_ = FrozenHead(head), origin
        for p in built:
            p.attach(model, source=source, source_head=self.source_head_, seed=self.seed,
                     batch_size=max(self.batch_size, 64))
        return built

    def _vib(self, param: str):
        """``vib_beta``/``vib_dim`` with its default when left out."""
        v = getattr(self, param)
        return VIB_DEFAULTS[param] if v is None else v

    def _head_arg(self):
        """What :class:`~transferkit.nn.TransferModel` gets as ``head``: the name, or for the
        bottleneck a factory with its code width."""
        if self.head != "vib":
            return self.head
        import functools

        from ..nn.vib import VIBHead

        return functools.partial(VIBHead, dim=self._vib("vib_dim"))

    def _head_losses(self) -> list:
        """Loss terms of the head itself: the bottleneck's beta * KL."""
        if self.head != "vib":
            return []
        from ..nn.vib import VIBLoss

        return [VIBLoss(self._vib("vib_beta"))]

    def _build_model(self, n_classes: int, data=None):
        from ..nn import TransferModel

        # the new head's (and a scratch backbone's) initialization, whatever ran before
        with seeded(self.seed):
            bb = resolve_backbone(self.backbone, self.pretrained, self.image_size, data=data)
            return TransferModel(bb, n_classes, head=self._head_arg(), dropout=self.dropout)

    # ------------------------------------------------------------------ validation
    def _validate(self, backbone) -> None:
        p = self._p
        self._check_common(backbone)
        nb = n_backbone_groups(backbone if backbone is not None else self.backbone)
        check_unfreeze(p("unfreeze"), self.unfreeze, nb)
        self._num("progressive_unfreeze", low=1, high=MAX_EPOCHS, integer=True, none_ok=True, example=2)
        check_flag(p("lp_init"), self.lp_init)
        check_training_budget(self)
        self._num("dropout", low=0, high=1, high_inclusive=False, example=0.1)
        check_option(p("head"), self.head, HEADS)
        for k, rule in (("vib_beta", dict(low=0, high=1e6, example=0.001)),
                        ("vib_dim", dict(low=1, high=MAX_WIDTH, integer=True, example=64))):
            if getattr(self, k) is not None:
                if self.head != "vib":
                    raise ConfigError(f"{p(k)} is set but {p('head')}={self.head!r}; it belongs to the information "
                                      f"bottleneck head: set head: vib, or drop {k}.")
                self._num(k, **rule)
        self._num("grad_clip", low=0, none_ok=True, example=1.0)
        self._num("label_smoothing", low=0, high=1, high_inclusive=False, example=0.1)
        self._check_augment()
        self._num("early_stopping", low=1, high=MAX_EPOCHS, integer=True, none_ok=True, example=5)
        check_option(p("monitor"), self.monitor, MONITORS)
        self._check_penalties()

    def _check_augment(self) -> None:
        from ..train.augment import make_augment

        where, aug = self._p("augment"), self.augment
        if aug is None or aug is False:
            return
        if isinstance(aug, dict):
            check_finite_tree(where, aug)
            try:
                make_augment(aug)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            except TypeError as exc:
                raise ConfigError(f"{where}={aug!r} has an option the augmentation does not take ({exc}); see "
                                  "RandomAffine (rotate, translate, scale, hflip) or RandAugment.") from None
            return
        check_option(where, aug, AUGMENTS)

    def _check_penalties(self) -> None:
        from .._registry import available, get
        from ..finetune.penalties import Penalty

        where, pen, opts = self._p("penalty"), self.penalty, self.penalty_options
        if opts is not None and not isinstance(opts, dict):
            raise ConfigError(f"{self._p('penalty_options')}={opts!r} must be a mapping, e.g. "
                              "penalty_options: {ewc: {lam: 500}}.")
        if pen is None or pen == "none":
            if opts:
                raise ConfigError(f"{self._p('penalty_options')} is set but {where} is not; set penalty "
                                  "(e.g. penalty: l2sp) or drop penalty_options.")
            return
        items = list(pen) if isinstance(pen, (list, tuple)) else [pen]
        if not items:
            raise ConfigError(f"{where}=[] is empty; name at least one penalty (e.g. l2sp) or leave it out.")
        names = []
        for item in items:
            if isinstance(item, Penalty):
                continue
            if not isinstance(item, str):
                raise ConfigError(f"{where}={item!r} must be a penalty name (one of {', '.join(available('penalty'))}) "
                                  "or a Penalty instance.")
            check_option(where, item, available("penalty"))
            names.append(item)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{where} names {dup[0]!r} twice; give each penalty once.")
        try:
            specs = self._penalty_specs()
        except ConfigError as exc:
            raise ConfigError(f"{self._p('penalty_options')}: {exc}") from None
        check_finite_tree(self._p("penalty_options"), opts or {})
        for cls, options in specs:
            if options is None:  # an instance: already built
                continue
            name = next(n for n in names if get("penalty", n) is cls)
            loc = self._p("penalty_options") + (f".{name}" if name in (opts or {}) else "")
            check_options_signature(loc, cls, options, what=f"penalty {name!r}")
            build_on_meta(loc, lambda: cls(**options), options)

    def _probe(self, backbone, dataset, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """A linear classifier ``(W, b)`` fitted by logistic regression on the frozen (cached)
        features of ``dataset``'s labeled samples; absent classes get a bias of -10, not -1e4,
        so a head initialized from it can still learn them."""
        from sklearn.linear_model import LogisticRegression

        from ..features import FeatureExtractor
        from .feature_extraction import logistic_as_linear

        mask = dataset.labeled_mask
        feats = FeatureExtractor(backbone, cache_dir=self.cache_dir).fit().transform(dataset)[mask]
        with one_blas_thread():
            clf = LogisticRegression(C=1.0, max_iter=5000, tol=1e-6).fit(feats, dataset.labels[mask])
        W, b = logistic_as_linear(clf, n_classes)
        fault_point("finetune.probe")
        return W, np.maximum(b, -10.0)

    def _linear_probe(self, model, train) -> None:
        if self.head != "linear":
            return
        W, b = self._probe(model.backbone, train, model.num_classes)
        with torch.no_grad():
            model.head.fc.weight.copy_(torch.from_numpy(W))
            model.head.fc.bias.copy_(torch.from_numpy(b))
        fault_point("finetune.linear_probe")

    def fit(self, train, val=None, *, source=None, run_dir=None):
        """Fine-tune on the labeled ``train`` split; ``val`` picks the best epoch.

        ``source``: labeled source data, used only by the penalties (EWC's Fisher, replay's
        memory, the source classifier's probe); a :class:`ConfigError` says when a penalty
        needs it and it is missing.
        """
        from ..train import Trainer

        self.validate()
        self._reset_fitted()  # a refit never reuses an earlier fit's state
        self._check_train(train)
        t0 = time.perf_counter()
        model = self._build_model(train.n_classes, data=train)
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
        # reference weights, Fisher and old head are taken here: after the head's probe init,
        # before any backbone weight moves
        penalties = self._attach_penalties(model, source)
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
            run_dir=run_dir, progress=self.progress, tag=self.name, losses=penalties + self._head_losses(),
            val_every=self.val_every, val_max_samples=self.val_max_samples, mixed_precision=self.mixed_precision,
        )
        trainer.fit(train, val)
        self.model_, self.trainer_, self.history_ = model, trainer, trainer.history
        self.penalties_ = penalties
        self.best_epoch_ = trainer.best_epoch
        self.param_groups_ = [{"name": g["name"], "lr": g["initial_lr"], "weight_decay": g["weight_decay"]} for g in groups]
        self.train_time_ = time.perf_counter() - t0
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        return self.trainer_.predict_logits(dataset)

    @torch.no_grad()
    def predict_source_logits(self, dataset, head=None) -> np.ndarray:
        """Source-task logits: the source classifier on the fine-tuned trunk.

        ``head``: the source classifier (``(W, b)``, ``nn.Linear`` or a module); default
        ``source_head_`` (set when a penalty used one).
        """
        from ..errors import ConfigError
        from ..features.extractor import extract_features
        from ..finetune.penalties import FrozenHead

        if head is None and getattr(self, "source_head_", None) is None:
            raise ConfigError("no source classifier: pass head=(W, b), or fit with a penalty that uses one "
                              "(ewc, lwf, replay).")
        head = self.source_head_ if head is None else (head if isinstance(head, FrozenHead) else FrozenHead(head))
        dev = next(self.model_.parameters()).device
        # the fine-tuned trunk's features (TransferModel.features is its backbone), in eval mode
        feats = torch.from_numpy(extract_features(self.model_.backbone, dataset.inputs, device=dev)).to(dev)
        return head.to(dev)(feats).float().cpu().numpy()

    def state_dict(self) -> dict:
        return self.model_.state_dict()

    def load_state(self, state: dict, metadata: dict | None = None, where: str = "model.safetensors"):
        """The fine-tuned model from :meth:`state_dict` (the whole backbone and head); returns ``self``."""
        from ._state import transfer_model_from_state

        self.validate()
        self._reset_fitted()
        last = state.get("head.net.4.weight" if self.head == "mlp" else "head.fc.weight")
        if last is None or (self.head == "vib") != ("head.encoder.weight" in state):
            raise ConfigError(f"{where} holds no {self.head!r} head (head.* tensors); the file and config.yaml "
                              "must come from the same run.")
        self.model_, self.trainer_ = transfer_model_from_state(self, state, int(last.shape[0]), self._head_arg(),
                                                               self.dropout, where)
        self.history_, self.penalties_ = [], []
        return self


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
                 cache_dir=None, seed=0, device=None, progress=False, penalty=None, penalty_options=None,
                 val_every="auto", val_max_samples=None, mixed_precision="no", vib_beta=None, vib_dim=None):
        super().__init__(backbone, pretrained, image_size, unfreeze, lr, backbone_lr_mult, layer_decay,
                         progressive_unfreeze, lp_init, freeze_bn, epochs, batch_size, optimizer, schedule,
                         warmup_epochs, weight_decay, dropout, head, grad_clip, label_smoothing, augment,
                         early_stopping, monitor, cache_dir, seed, device, progress, penalty=penalty,
                         penalty_options=penalty_options, val_every=val_every, val_max_samples=val_max_samples,
                         mixed_precision=mixed_precision, vib_beta=vib_beta, vib_dim=vib_dim)
