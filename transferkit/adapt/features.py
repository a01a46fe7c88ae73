"""Domain adaptation on cached features of a frozen backbone.

The default way to adapt on a CPU: the backbone runs once per domain (features cached on
disk), and a bottleneck ``Linear -> BatchNorm -> ReLU -> Dropout`` plus a linear head train on
top with the source classification loss plus a registered deep DA loss on unlabeled target
batches. The model on features is trained by the one :class:`~transferkit.train.Trainer`, with
the same loss term (:class:`DALossTerm`) and the same checkpoint selection
(:class:`~transferkit.train.selection.SelectionCallback`) as adaptation through the whole
backbone: an unsupervised scorer (never target test labels), or the labeled source validation
loss (``selection="source_val"``: no target input at all, the selection of the ``source_only``
baseline).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._registry import get
from .._validation import check_number
from ..errors import ConfigError, DataError
from ..train.selection import SELECTIONS, TARGET_SELECTIONS, SelectionCallback


class BottleneckClassifier(nn.Module):
    """``head(bottleneck(x))`` on backbone features; ``features(x)`` is the bottleneck output."""

    def __init__(self, in_features: int, num_classes: int, bottleneck: int = 256, dropout: float = 0.5):
        super().__init__()
        self.bottleneck = nn.Sequential(nn.Linear(in_features, bottleneck), nn.BatchNorm1d(bottleneck), nn.ReLU(),
                                        nn.Dropout(dropout))
        self.head = nn.Linear(bottleneck, num_classes)

    #: What the Trainer's data path needs to know: inputs are rows of features.
    spec = SimpleNamespace(modality="tabular", input_size=None)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(x)

    def preprocess(self, X) -> torch.Tensor:
        return torch.as_tensor(np.asarray(X), dtype=torch.float32)

    def move_inputs(self, batch, device):
        return batch.to(device)

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        return [("bottleneck", ["bottleneck." + n for n, _ in self.bottleneck.named_parameters()]),
                ("head", ["head." + n for n, _ in self.head.named_parameters()])]

    @torch.no_grad()
    def set_bn_statistics(self, X: torch.Tensor) -> None:
        """Set the bottleneck BatchNorm's running statistics to the exact statistics of ``X``.

        AdaBN (Li et al., 2016, "Revisiting Batch Normalization for Practical Domain
        Adaptation"): during adaptation each domain's batches are normalized with that domain's
        batch statistics, so at prediction time a domain's samples should be normalized with
        its own statistics, not with a running average that mixes both domains.
        """
        lin, bn = self.bottleneck[0], self.bottleneck[1]
        h = lin(X)
        bn.running_mean.copy_(h.mean(0))
        bn.running_var.copy_(h.var(0, unbiased=True) if len(h) > 1 else torch.ones_like(bn.running_var))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bottleneck(x))


def build_da_loss(name: str, in_features: int, num_classes: int, weight: float, **options) -> nn.Module:
    """Instantiate a registered deep DA loss, passing only the arguments its constructor takes."""
    cls = get("da_loss", name)
    params = inspect.signature(cls.__init__).parameters
    kw = {"in_features": in_features, "num_classes": num_classes, "weight": weight, **options}
    unknown = [k for k in options if k not in params]
    if unknown:
        from .._validation import suggest

        raise ConfigError(f"da_loss {name!r} has no option {unknown[0]!r}." + suggest(unknown[0], [p for p in params if p != "self"]))
    return cls(**{k: v for k, v in kw.items() if k in params})


class CombinedDALoss(nn.Module):
    """The sum of several deep DA losses (e.g. ``"jan+mcc"``: alignment plus class confusion).

    Each part keeps its own weight; the logged terms of all parts are merged.
    """

    def __init__(self, parts: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict(parts)

    def set_progress(self, p: float) -> None:
        for m in self.parts.values():
            if hasattr(m, "set_progress"):
                m.set_progress(p)

    def forward(self, f_s, f_t, **kw) -> dict:
        total, logs = 0.0, {}
        for m in self.parts.values():
            out = m(f_s, f_t, **kw)
            total = total + out["loss"]
            logs.update({k: v for k, v in out.items() if k != "loss"})
        return {"loss": total, **logs}


def class_weight_refreshers(loss: nn.Module, target) -> list:
    """Trainer callbacks that give every class-weighted part of ``loss`` (PADA, BA3US) its class
    weights from eval-mode predictions of the whole ``target`` each epoch
    (:class:`~transferkit.adapt.deep.ClassWeightRefresh`, the paper's schedule): batch statistics
    alone hide the classes a partial target lacks."""
    if target is None:
        return []
    from .deep import ClassWeightRefresh

    parts = list(loss.parts.values()) if isinstance(loss, CombinedDALoss) else [loss]
    return [ClassWeightRefresh(p, target) for p in parts if hasattr(p, "set_target_predictions")]


def _epoch_weight_defaults(method: str, loss_options: dict | None) -> dict | None:
    """A class-weighted loss refreshed each epoch takes its weights from that refresh alone
    (``momentum=1``: the paper's schedule) unless the options say otherwise."""
    names = [m.strip() for m in method.split("+")]
    opts = dict(loss_options or {})
    for n in names:
        if not hasattr(get("da_loss", n), "set_target_predictions"):
            continue
        if len(names) == 1:
            opts.setdefault("momentum", 1.0)
        else:
            opts[n] = {"momentum": 1.0, **opts.get(n, {})}
    return opts


def build_method_loss(method: str, in_features: int, num_classes: int, weight: float,
                      loss_options: dict | None = None) -> nn.Module:
    """``"name"`` -> one registered DA loss; ``"a+b"`` -> :class:`CombinedDALoss` of both.

    For combinations, ``loss_options`` may be keyed by part name (``{"mcc": {"temperature": 2}}``);
    ``weight`` applies to every part.
    """
    names = [m.strip() for m in method.split("+")]
    if len(names) == 1:
        return build_da_loss(method, in_features, num_classes, weight, **(loss_options or {}))
    opts = loss_options or {}
    stray = [k for k in opts if k not in names]
    if stray:
        raise ConfigError(f"loss_options for method {method!r} must be keyed by part name ({', '.join(names)}); "
                          f"got {stray[0]!r}.")
    return CombinedDALoss({n: build_da_loss(n, in_features, num_classes, weight, **opts.get(n, {})) for n in names})


class DALossTerm(nn.Module):
    """A deep DA loss as a :class:`~transferkit.train.Trainer` loss term.

    Calls ``da(ctx.features, ctx.target_features, logits_s=ctx.logits, logits_t=ctx.target_logits,
    y_s=ctx.labels)`` after ``da.set_progress(ctx.progress)`` (the adversarial losses' warm
    start), and returns its dict (``"loss"`` plus logged scalars). Being a module, the loss
    (and a discriminator inside it) moves with the term; its parameters must still be put in
    the optimizer's parameter groups (both adapters do).

    Parameters
    ----------
    da_loss
        A :class:`~transferkit.adapt.deep.DALoss` (anything with the same call signature).
    """

    def __init__(self, da_loss: nn.Module):
        super().__init__()
        self.da = da_loss

    def forward(self, ctx) -> dict:
        if ctx.target_features is None:
            raise DataError("a domain-adaptation loss term needs target batches: call "
                            "trainer.fit(train, val, target=unlabeled_target) with a model that has "
                            "features() and head().")
        if hasattr(self.da, "set_progress"):
            self.da.set_progress(min(max(float(ctx.progress), 0.0), 1.0))
        return self.da(ctx.features, ctx.target_features, logits_s=ctx.logits, logits_t=ctx.target_logits,
                       y_s=ctx.labels)


class TargetLabelTerm(nn.Module):
    """Cross-entropy on the labeled rows of each target batch (semi-supervised adaptation:
    the few target labels a user has join the loss; rows labeled -1 are left out)."""

    def forward(self, ctx) -> dict:
        lab = ctx.target_labels >= 0
        if not bool(lab.any()):
            return {"loss": ctx.target_logits.sum() * 0.0}
        lt = F.cross_entropy(ctx.target_logits[lab], ctx.target_labels[lab])
        return {"loss": lt, "target_cls": lt.detach()}


class RowWeightedCETerm(nn.Module):
    r"""Turn the Trainer's mean source cross-entropy into a row-weighted one.

    With per-row weights :math:`w_i` of the training set (read for the batch through
    ``ctx.indices``) the term returns

    .. math::
        \frac{\sum_{i \in B} w_i\,\ell_i}{\sum_{i \in B} w_i} - \frac{1}{|B|}\sum_{i \in B} \ell_i,

    so that the Trainer's total (its plain mean plus this term) is the weighted mean: the
    importance weighting of source classes toward estimated target priors (``w_i = q_{y_i} /
    p_{y_i}``, :func:`transferkit.adapt.label_shift.class_weights_for_priors`), PADA's class
    weights, or a per-source relevance. Logged as ``weighted_ce``.

    Parameters
    ----------
    weights
        ``(n_train,)`` non-negative weights, one per row of the training set, in its order.
    """

    def __init__(self, weights):
        super().__init__()
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if w.ndim != 1 or len(w) == 0 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise DataError("weights must be a non-empty 1-D array of finite values >= 0, one per training row.")
        if float(w.sum()) <= 0:
            raise DataError("weights are all 0; at least one training row must count.")
        self.register_buffer("weights", w, persistent=False)

    def forward(self, ctx) -> dict:
        w = self.weights[ctx.indices.to(self.weights.device)].to(ctx.logits.device, ctx.logits.dtype)
        ce = F.cross_entropy(ctx.logits, ctx.labels, reduction="none")
        weighted = (w * ce).sum() / w.sum().clamp_min(1e-12)
        return {"loss": weighted - ce.mean(), "weighted_ce": weighted.detach()}


def _rows(X, y, name: str):
    from ..data import DomainDataset

    X = np.ascontiguousarray(X, dtype=np.float32)
    labels = None if y is None else np.asarray(y, dtype=np.int64)
    return DomainDataset(X, labels, name, "tabular")


def train_feature_adapter(
    Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray | None, *, yt: np.ndarray | None = None,
    Xs_val: np.ndarray | None = None, ys_val: np.ndarray | None = None, weights_val: np.ndarray | None = None,
    Xt_val: np.ndarray | None = None, yt_val: np.ndarray | None = None,
    num_classes: int, method: str | None = "dann", weight: float = 1.0, loss_options: dict | None = None,
    bottleneck: int = 256, dropout: float = 0.5, epochs: int = 30, steps_per_epoch: int | None = None,
    batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 5e-4, selection: str = "dev", seed: int = 0,
    device: str = "cpu", init_state: dict | None = None, domain_bn: bool = True, terms: Sequence[nn.Module] = (),
) -> dict:
    """Train a :class:`BottleneckClassifier` on source features with a DA loss on target features.

    The model trains through the one :class:`~transferkit.train.Trainer`: AdamW, the
    ``inverse`` learning-rate annealing of Ganin et al., ``steps_per_epoch`` full batches of
    source rows per epoch (consecutive shuffled passes) with a target batch drawn at every
    step, and the epoch chosen by :class:`~transferkit.train.selection.SelectionCallback`.

    Parameters
    ----------
    Xs, ys
        Labeled source features and labels.
    Xt
        Target training features, or ``None`` when no target input may be used (then
        ``method=None``, ``domain_bn=False``, no ``yt`` and a selection that needs no target
        input: ``source_val``, ``target_val`` or ``last``). Unlabeled unless ``yt`` is given.
    yt
        Labels of the ``Xt`` rows (-1 where unknown), or ``None``. Only for semi-supervised
        adaptation: labeled target rows then join the classification loss. Leave it ``None``
        for unsupervised adaptation and for every source-only baseline.
    Xs_val, ys_val, weights_val
        Held-out labeled source data and its importance weights (``iwcv``/``dev``; ``Xs_val``
        and ``ys_val`` alone for ``source_val``).
    Xt_val, yt_val
        Labeled target validation data, used only when ``selection="target_val"`` (rows with
        label -1 are left out of its accuracy).
    method
        A registered ``da_loss`` name, several joined by ``+`` (their sum, e.g. ``"jan+mcc"``),
        or ``None`` for training on the labeled rows only (target inputs are then not
        forwarded through the network at all; with ``domain_bn=True`` it is AdaBN: source
        training plus the target's BatchNorm statistics, and ``Xt`` also feeds the unsupervised
        scorers of ``selection``).
    steps_per_epoch
        Batches per epoch (default: enough to cover the larger domain once).
    selection
        ``"dev"``, ``"iwcv"``, ``"snd"``, ``"entropy"`` (unsupervised scorers: they read target
        predictions), ``"source_val"`` (the negative mean cross-entropy on ``Xs_val``: labeled
        source data only, no target input and no importance weights), ``"target_val"``
        (labeled target validation accuracy) or ``"last"``.
    domain_bn
        Normalize each domain with its own BatchNorm statistics when predicting (AdaBN): source
        validation logits with the source training features' statistics, target logits with
        the target training features'. The returned model carries the *target* statistics, so
        it is a model of the target domain. ``False``: one running average over the domains
        the network was trained on.
    terms
        Extra :class:`~transferkit.train.Trainer` loss terms added after the DA loss (their
        parameters train at ``lr`` with the DA loss's): the multi-domain terms of
        :mod:`transferkit.adapt.multi_source` and :mod:`transferkit.adapt.dg`, which read the
        domain of each pooled source row through ``ctx.indices``.

    Returns
    -------
    dict
        ``model`` (the best epoch's weights; with ``domain_bn`` its BatchNorm statistics are
        then set from ``Xt`` through those weights), ``history`` (per-epoch rows of the
        Trainer: ``train_loss``, the DA loss's terms, ``score``; ``source_val`` also logs
        ``source_val_loss`` and ``source_val_accuracy``), ``best_epoch``, ``score``,
        ``selection``, ``trainer``.
    """
    from ..train import Trainer

    check_number("epochs", epochs, low=1, integer=True)
    if selection not in SELECTIONS:
        from .._validation import suggest

        raise ConfigError(f"selection={selection!r} is not a checkpoint selection." + suggest(str(selection), SELECTIONS)
                          + f" Use one of {', '.join(SELECTIONS)}.")
    if selection in ("dev", "iwcv", "source_val") and (Xs_val is None or ys_val is None):
        raise ConfigError(f"selection={selection!r} needs held-out labeled source data (Xs_val, ys_val).")
    if selection == "target_val":
        if Xt_val is None or yt_val is None or not (np.asarray(yt_val) >= 0).any():
            raise DataError("selection='target_val' needs labeled target validation data (Xt_val, yt_val with "
                            "labels >= 0).")
    if Xt is None:
        for what, uses_target in ((f"method={method!r}", method is not None),
                                  (f"domain_bn={domain_bn!r}", bool(domain_bn)),
                                  ("yt (target labels)", yt is not None),
                                  (f"selection={selection!r}", selection in TARGET_SELECTIONS)):
            if uses_target:
                raise ConfigError(f"Xt=None (no target input) but {what} needs target training features; "
                                  "pass Xt, or use method=None, domain_bn=False and selection='source_val', "
                                  "'target_val' or 'last'.")
    torch.manual_seed(seed)
    model = BottleneckClassifier(Xs.shape[1], num_classes, bottleneck, dropout)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    source = _rows(Xs, ys, "source")
    target = None if Xt is None else _rows(Xt, yt if yt is not None else np.full(len(Xt), -1), "target")
    source_val = None if Xs_val is None else _rows(Xs_val, ys_val, "source_val")
    target_val = None if Xt_val is None else _rows(Xt_val, yt_val, "target_val")
    labeled_target = yt is not None and bool((np.asarray(yt) >= 0).any())
    extra_terms, terms = list(terms), []
    refresh: list = []
    if method:
        da = build_method_loss(method, bottleneck, num_classes, weight, _epoch_weight_defaults(method, loss_options))
        terms.append(DALossTerm(da))
        refresh = class_weight_refreshers(da, target)
    if labeled_target:
        terms.append(TargetLabelTerm())
    terms.extend(extra_terms)
    groups = [{"params": list(model.bottleneck.parameters()), "lr": lr, "weight_decay": weight_decay,
               "name": "bottleneck"},
              {"params": list(model.head.parameters()), "lr": lr, "weight_decay": weight_decay, "name": "head"}]
    extra = [p for t in terms for p in t.parameters()]
    if extra:
        groups.append({"params": extra, "lr": lr, "weight_decay": weight_decay, "name": "da_loss"})
    n_t = 0 if target is None else len(target)
    steps = steps_per_epoch or max(1, int(np.ceil(max(len(source), n_t) / batch_size)))

    S = torch.as_tensor(source.inputs)
    T = None if target is None else torch.as_tensor(target.inputs)
    bn = model.bottleneck[1]

    @torch.no_grad()
    def domain_logits(trainer, dataset, role: str) -> np.ndarray:
        """Logits with the BatchNorm statistics of the dataset's own domain (AdaBN)."""
        stats = S if role == "source_val" else T
        was = model.training
        model.eval()
        saved = (bn.running_mean.clone(), bn.running_var.clone())
        try:
            model.set_bn_statistics(stats.to(device))
            return model(torch.as_tensor(dataset.inputs, device=device)).float().cpu().numpy()
        finally:
            bn.running_mean.copy_(saved[0])
            bn.running_var.copy_(saved[1])
            model.train(was)

    cb = SelectionCallback(selection, model=model, target=target, source_val=source_val, weights_val=weights_val,
                           target_val=target_val, predict=domain_logits if domain_bn and T is not None else None)
    trainer = Trainer(model, groups, epochs=epochs, batch_size=batch_size, steps_per_epoch=steps, optimizer="adamw",
                      schedule="inverse", warmup_epochs=0.0, grad_clip=None, augment="none", selection=cb, seed=seed,
                      device=device, progress=False, tag=f"adapt:{method}", losses=terms, fault_prefix="adapt",
                      callbacks=refresh)
    trainer.fit(source, None, target=target if terms else None)
    if domain_bn and T is not None:  # after the weights: the statistics are those of the restored layers
        model.set_bn_statistics(T.to(device))
    model.eval()
    return {"model": model, "history": trainer.history, "best_epoch": cb.best_epoch, "score": cb.best,
            "selection": selection, "trainer": trainer}
