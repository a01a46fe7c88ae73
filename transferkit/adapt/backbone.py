"""Domain adaptation through the whole backbone (the GPU option; runs on the CPU too).

:func:`train_feature_adapter` adapts a bottleneck and head on cached features of a frozen
backbone. Here the backbone trains as well: a :class:`~transferkit.nn.TransferModel` with a
bottleneck MLP head (``Linear -> BatchNorm -> ReLU -> Dropout -> Linear``) is fine-tuned by the
one :class:`~transferkit.train.Trainer` on labeled source batches, and a loss term sees an
unlabeled target batch at every step through the Trainer's extra-loss hook:

- a registered deep DA loss (``dan``, ``dann``, ``cdan``, ``mcc``, ...), wrapped in
  :class:`DALossTerm`, on the **bottleneck** features (the MLP head's hidden layer, after its
  ReLU), as in DAN/DANN/CDAN/MCC's reference implementations; ``feature_layer="backbone"``
  puts it on the pooled backbone features instead;
- ``"fixmatch"``: :class:`~transferkit.semi.FixMatchTerm`, consistency between a weak and a
  strong (RandAugment + Cutout) view of each target image.

Freezing, per-group learning rates and BatchNorm freezing come from the layer groups
(:mod:`transferkit.finetune`), exactly as in the ``finetune`` strategy. The checkpoint is chosen
per epoch by an unsupervised scorer (:mod:`transferkit.metrics.scorers`) in a Trainer callback,
or by the labeled source validation loss (``source_val``: no target input, the selection of the
``source_only`` baseline); target labels are never read (the target is re-wrapped with every
label set to -1 before the Trainer or any scorer sees it).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .._registry import available
from .._validation import check_choice, check_number, suggest
from ..errors import ConfigError, DataError

__all__ = ["DALossTerm", "SelectionCallback", "train_backbone_adapter"]

from ..train.selection import SELECTIONS, TARGET_SELECTIONS, SelectionCallback  # one selection for both levels
from .features import DALossTerm
FIXMATCH_OPTIONS = ("threshold", "weak", "strong")


class _AdaptModel(nn.Module):
    """A view of a :class:`TransferModel` whose ``features`` end where the DA loss should look.

    With ``layer="bottleneck"``, ``features(x)`` is the MLP head's hidden layer (after ReLU) and
    ``head(h)`` the rest of the head (dropout, last linear layer); with ``"backbone"`` they are
    the model's own. ``forward`` is the model's forward either way, and the parameters are the
    model's (the Trainer trains the wrapped model in place).
    """

    def __init__(self, model: nn.Module, layer: str = "bottleneck"):
        super().__init__()
        self.model = model
        self.layer = layer

    @property
    def spec(self):
        return self.model.spec

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def preprocess(self, inputs):
        return self.model.preprocess(inputs)

    def move_inputs(self, batch, device):
        return self.model.move_inputs(batch, device)

    def layer_groups(self):
        return [(n, ["model." + p for p in ps]) for n, ps in self.model.layer_groups()]

    def features(self, x) -> torch.Tensor:
        f = self.model.features(x)
        return self.model.head.net[:3](f) if self.layer == "bottleneck" else f

    def head(self, h) -> torch.Tensor:
        if self.layer == "bottleneck":
            return self.model.head.net[4](self.model.head.net[3](h))
        return self.model.head(h)

    def forward(self, x) -> torch.Tensor:
        return self.model(x)


def train_backbone_adapter(
    source_ds, target_ds, *, backbone="efficientnet_lite0", num_classes: int | None = None,
    method: str | None = "dann", weight: float = 1.0, loss_options: dict | None = None, selection: str = "dev",
    source_val_ds=None, source_val_fraction: float = 0.2, target_val_ds=None, epochs: int = 10,
    batch_size: int = 32, lr: float = 1e-3, backbone_lr_mult: float = 0.1, layer_decay: float = 1.0,
    weight_decay: float = 0.01, unfreeze="all", freeze_bn: str = "all", feature_layer: str = "bottleneck",
    dropout: float = 0.0, pretrained: bool = True, image_size: int | None = None, augment="light",
    optimizer: str = "adamw", schedule: str = "cosine", warmup_epochs: float = 1.0, grad_clip: float | None = 1.0,
    seed: int = 0, device: str | None = None, run_dir=None, progress: bool = False,
) -> dict:
    r"""Adapt a whole backbone (or its top groups) from a labeled source to an unlabeled target.

    The model is ``TransferModel(backbone, num_classes, head="mlp")``; each step minimises

    .. math::
        \mathcal{L} = \mathrm{CE}(h(g(x_s)), y_s) + \lambda\, \mathcal{L}_{\mathrm{DA}}(\cdot)

    where the second term is a registered deep DA loss on the bottleneck features
    (``feature_layer``) of a source and a target batch, or FixMatch's consistency loss on weak
    and strong views of the target batch (``method="fixmatch"``, :math:`\lambda` = ``weight``,
    confidence threshold 0.95 unless ``loss_options={"threshold": ...}``). The epoch whose
    weights are returned is picked by ``selection``; the target's labels are never read.

    Parameters
    ----------
    source_ds
        Labeled source :class:`~transferkit.data.DomainDataset` (unlabeled rows are dropped).
    target_ds
        Target dataset; only its inputs are used (labels, if any, are ignored). ``None`` for a
        source-only run that uses no target input: ``method=None`` and ``selection`` one of
        ``source_val``, ``target_val``, ``last``.
    backbone
        Backbone name (``create_backbone``), a Backbone instance (trained in place; pass a copy
        to keep it) or a factory ``f(pretrained=...)``.
    num_classes
        Output width (default: the source's ``n_classes``).
    method
        A ``da_loss`` name (``transferkit list da_losses``), ``"fixmatch"``, or ``None``
        (source-only training of the same model, the baseline).
    weight
        :math:`\lambda`, the weight of the DA / FixMatch term.
    loss_options
        Extra constructor arguments of the DA loss (e.g. ``{"hidden": 256}`` for DANN's
        discriminator), or for FixMatch ``threshold``, ``weak``, ``strong``.
    selection
        ``"dev"`` (default), ``"iwcv"`` (need held-out labeled source data), ``"snd"``,
        ``"entropy"`` (target predictions only), ``"source_val"`` (the labeled source
        validation loss; no target input), ``"target_val"`` (accuracy on the labeled
        ``target_val_ds``, when one exists) or ``"last"``.
    source_val_ds
        Held-out labeled source data for ``dev``/``iwcv``/``source_val``. When ``None`` and the selection needs
        it, a stratified ``source_val_fraction`` of ``source_ds`` is held out (seeded by ``seed``)
        and the rest trains. Importance weights ``p_T/p_S`` come from a domain classifier on
        the initial (pretrained) backbone features, so they are the same for every epoch.
    target_val_ds
        Labeled target validation data (``selection="target_val"`` only).
    epochs, batch_size, lr, backbone_lr_mult, layer_decay, weight_decay, optimizer, schedule, warmup_epochs, grad_clip
        Training recipe, as in the ``finetune`` strategy: the head (and the DA loss's
        discriminator) trains at ``lr``, the top backbone group at ``lr * backbone_lr_mult``.
    unfreeze
        Backbone groups that train: ``"all"``, ``"none"`` or ``"last:k"``.
    freeze_bn
        BatchNorm layers kept in eval mode: ``"all"`` (default; the Trainer passes source and
        target batches separately, so training-mode BN would normalize each domain with its
        own batch statistics while evaluation uses a mixture), ``"frozen_groups"`` or ``"none"``.
    feature_layer
        Features the DA loss sees: ``"bottleneck"`` (the head's 256-d hidden layer) or
        ``"backbone"`` (pooled backbone features).
    dropout
        Dropout before the head's last linear layer.
    pretrained, image_size
        Backbone weights and input side (e.g. 64 for fast CPU runs).
    augment
        Augmentation of the labeled source batches (``"light"``, ``"none"``, ...; images only).
    seed, device, run_dir, progress
        Seed of every random choice; device (``None``: GPU when available); where
        ``metrics.jsonl`` goes; a progress bar.

    Returns
    -------
    dict
        ``model`` (the TransferModel with the selected epoch's weights, in eval mode),
        ``trainer`` (its ``predict_logits``/``evaluate`` serve the model), ``history`` (per-epoch
        rows with the losses, ``epoch_time`` and ``score``), ``best_epoch``, ``score`` (the
        selected epoch's score), ``selection``, ``term`` (the loss term, ``None`` for
        source-only) and ``train_time`` (seconds).

    Raises
    ------
    ConfigError
        Unknown ``method``/``selection``/option, or a bad recipe value.
    DataError
        Source without labels, empty target, or ``target_val`` without labeled data.

    References
    ----------
    Long et al., "Learning transferable features with deep adaptation networks", ICML 2015;
    Ganin et al., "Domain-adversarial training of neural networks", JMLR 2016; Jin et al.,
    "Minimum class confusion for versatile domain adaptation", ECCV 2020; Sohn et al.,
    "FixMatch", NeurIPS 2020; You et al., "Towards accurate model selection in deep
    unsupervised domain adaptation", ICML 2019.
    """
    from ..data import stratified_split
    from ..finetune import apply_freeze, build_param_groups, frozen_bn_modules, parse_unfreeze
    from ..train.selection import importance_weights
    from ..nn import TransferModel
    from ..train import Trainer

    t0 = time.perf_counter()
    methods = available("da_loss") + ["fixmatch"]
    if method is not None and not all(m.strip() in available("da_loss") for m in method.split("+")) \
            and method != "fixmatch":
        raise ConfigError(f"method={method!r} is not a registered da_loss or 'fixmatch'." + suggest(method, methods)
                          + f" Choose one of {', '.join(methods)}, or None for source-only training.")
    check_choice("selection", selection, SELECTIONS)
    check_choice("feature_layer", feature_layer, ("bottleneck", "backbone"))
    check_choice("freeze_bn", freeze_bn, ("all", "frozen_groups", "none"))
    check_number("epochs", epochs, low=1, integer=True)
    check_number("weight", weight, low=0)
    check_number("source_val_fraction", source_val_fraction, low=0, high=1, low_inclusive=False, high_inclusive=False)
    if source_ds.labels is None or not (source_ds.labels >= 0).any():
        raise DataError(f"source {source_ds.name!r} has no labels; adaptation needs a labeled source.")
    if target_ds is None:
        if method is not None or selection in TARGET_SELECTIONS:
            what = f"method={method!r}" if method is not None else f"selection={selection!r}"
            raise ConfigError(f"target_ds=None but {what} needs unlabeled target samples; pass target_ds, or use "
                              "method=None with selection='source_val', 'target_val' or 'last'.")
    elif len(target_ds) == 0:
        raise DataError(f"target {target_ds.name!r} is empty; pass the unlabeled target samples.")
    if selection == "target_val" and (target_val_ds is None or target_val_ds.labels is None
                                      or not (target_val_ds.labels >= 0).any()):
        raise DataError("selection='target_val' needs a labeled target validation dataset (target_val_ds); "
                        "otherwise use an unsupervised scorer such as 'dev' or 'snd'.")
    opts = dict(loss_options or {})
    if method == "fixmatch":
        bad = [k for k in opts if k not in FIXMATCH_OPTIONS]
        if bad:
            raise ConfigError(f"method 'fixmatch' has no option {bad[0]!r}." + suggest(bad[0], FIXMATCH_OPTIONS)
                              + f" Options: {', '.join(FIXMATCH_OPTIONS)}.")

    source = source_ds.subset(np.flatnonzero(source_ds.labels >= 0))
    # whatever runs next cannot read target labels
    target = target_ds.without_labels() if target_ds is not None else None
    source_val = source_val_ds
    if selection in ("dev", "iwcv", "source_val"):
        if source_val is None:
            tr, va = stratified_split(source.labels, [1 - source_val_fraction, source_val_fraction], seed=seed)
            source, source_val = source.subset(tr), source.subset(va)
        elif source_val.labels is None or not (source_val.labels >= 0).any():
            raise DataError(f"source_val_ds {source_val.name!r} has no labels; selection={selection!r} needs them.")
        else:
            source_val = source_val.subset(np.flatnonzero(source_val.labels >= 0))
    n_classes = int(num_classes) if num_classes is not None else source_ds.n_classes

    torch.manual_seed(seed)  # the new head, a scratch backbone and the discriminator
    from ..backbones import resolve_backbone

    bb = resolve_backbone(backbone, pretrained, image_size)
    model = TransferModel(bb, n_classes, head="mlp", dropout=dropout)
    nb = len(model.layer_groups()) - 1
    apply_freeze(model, parse_unfreeze(unfreeze, nb))
    view = _AdaptModel(model, feature_layer)

    term = None
    if method == "fixmatch":
        from ..semi import FixMatchTerm

        if target.modality != "image":
            raise ConfigError(f"method 'fixmatch' augments images; target {target.name!r} is {target.modality}.")
        term = FixMatchTerm(weight=weight, mean=bb.spec.mean, std=bb.spec.std, seed=seed, **opts)
    elif method is not None:
        from .features import build_method_loss

        d = model.head.net[0].out_features if feature_layer == "bottleneck" else bb.feature_dim
        term = DALossTerm(build_method_loss(method, d, n_classes, weight, opts))

    groups = build_param_groups(model, lr, backbone_lr_mult=backbone_lr_mult, layer_decay=layer_decay,
                                weight_decay=weight_decay)
    extra = [p for p in term.parameters()] if term is not None else []
    if extra:  # a discriminator trains at the head's rate (the Trainer adds no parameters itself)
        groups.append({"params": extra, "lr": lr, "initial_lr": lr, "weight_decay": weight_decay,
                       "name": "da_loss", "group_index": nb + 1})

    weights_val = None
    if selection in ("dev", "iwcv"):
        from ..train.trainer import check_device

        dev = torch.device(check_device(device) or ("cuda" if torch.cuda.is_available() else "cpu"))
        bb.to(dev)
        from ..features.extractor import extract_features

        Fs, Fv, Ft = (extract_features(bb, d_.inputs, device=dev) for d_ in (source, source_val, target))
        weights_val = importance_weights(Fv, Fs, Ft, seed=seed)
    cb = SelectionCallback(selection, model=model, target=target, source_val=source_val, weights_val=weights_val,
                           target_val=target_val_ds)
    trainer = Trainer(
        view, groups, epochs=epochs, batch_size=batch_size, optimizer=optimizer, schedule=schedule,
        warmup_epochs=warmup_epochs, grad_clip=grad_clip, augment=augment if source.modality == "image" else "none",
        selection=cb, bn_frozen=lambda: frozen_bn_modules(model, freeze_bn), seed=seed, device=device,
        run_dir=run_dir, progress=progress, tag=f"adapt_backbone:{method}", losses=[term] if term is not None else [],
    )
    # val=None: the selection callback scores without target labels, and the Trainer restores its pick
    trainer.fit(source, None, target=target if term is not None else None)
    model.eval()
    return {"model": model, "trainer": trainer, "history": trainer.history, "best_epoch": cb.best_epoch,
            "score": cb.best, "selection": selection, "term": term, "train_time": time.perf_counter() - t0}
