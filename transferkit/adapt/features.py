"""Domain adaptation on cached features of a frozen backbone.

The default way to adapt on a CPU: the backbone runs once per domain (features cached on
disk), and a bottleneck ``Linear -> BatchNorm -> ReLU -> Dropout`` plus a linear head train on
top with the source classification loss plus a registered deep DA loss on unlabeled target
batches. Checkpoints are selected by an unsupervised scorer (never target test labels), or by
the labeled source validation loss (``selection="source_val"``: no target input at all, the
selection of the ``source_only`` baseline).
"""

from __future__ import annotations

import inspect
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._faults import fault_point
from .._registry import get
from .._validation import check_number
from ..errors import ConfigError, DataError


class BottleneckClassifier(nn.Module):
    """``head(bottleneck(x))`` on backbone features; ``features(x)`` is the bottleneck output."""

    def __init__(self, in_features: int, num_classes: int, bottleneck: int = 256, dropout: float = 0.5):
        super().__init__()
        self.bottleneck = nn.Sequential(nn.Linear(in_features, bottleneck), nn.BatchNorm1d(bottleneck), nn.ReLU(),
                                        nn.Dropout(dropout))
        self.head = nn.Linear(bottleneck, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(x)

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


#: Checkpoint selections of :func:`train_feature_adapter`: the registered unsupervised scorers
#: (target inputs), ``source_val`` (labeled source validation loss: no target input),
#: ``target_val`` (labeled target validation accuracy) and ``last``.
SELECTIONS = ("dev", "iwcv", "snd", "entropy", "source_val", "target_val", "last")

#: Selections that need target training inputs (the scorers look at target predictions).
TARGET_SELECTIONS = ("dev", "iwcv", "snd", "entropy")


def train_feature_adapter(
    Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray | None, *, yt: np.ndarray | None = None,
    Xs_val: np.ndarray | None = None, ys_val: np.ndarray | None = None, weights_val: np.ndarray | None = None,
    Xt_val: np.ndarray | None = None, yt_val: np.ndarray | None = None,
    num_classes: int, method: str | None = "dann", weight: float = 1.0, loss_options: dict | None = None,
    bottleneck: int = 256, dropout: float = 0.5, epochs: int = 30, steps_per_epoch: int | None = None,
    batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 5e-4, selection: str = "dev", seed: int = 0,
    device: str = "cpu", init_state: dict | None = None, domain_bn: bool = True,
) -> dict:
    """Train a :class:`BottleneckClassifier` on source features with a DA loss on target features.

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

    Returns
    -------
    dict
        ``model`` (the best epoch's weights; with ``domain_bn`` its BatchNorm statistics are
        then set from ``Xt`` through those weights), ``history`` (per-epoch losses and scores;
        ``source_val`` also logs ``source_val_loss`` and ``source_val_accuracy``),
        ``best_epoch``, ``selection``.
    """
    from ..metrics.scorers import SelectionContext

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
        yt_val = np.asarray(yt_val)
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
    gen = torch.Generator().manual_seed(seed)
    d = Xs.shape[1]
    model = BottleneckClassifier(d, num_classes, bottleneck, dropout).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    da = build_method_loss(method, bottleneck, num_classes, weight, loss_options).to(device) if method else None
    params = [{"params": model.bottleneck.parameters(), "lr": lr}, {"params": model.head.parameters(), "lr": lr}]
    if da is not None and any(True for _ in da.parameters()):
        params.append({"params": da.parameters(), "lr": lr})
    opt = torch.optim.AdamW(params, weight_decay=weight_decay)
    S = torch.as_tensor(Xs, dtype=torch.float32)
    T = None if Xt is None else torch.as_tensor(Xt, dtype=torch.float32)
    ys_t = torch.as_tensor(ys, dtype=torch.long)
    yt_t = None if T is None else torch.as_tensor(yt if yt is not None else np.full(len(T), -1), dtype=torch.long)
    n_t = 0 if T is None else len(T)
    steps = steps_per_epoch or max(1, int(np.ceil(max(len(S), n_t) / batch_size)))
    total = epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 + 10 * s / total) ** -0.75)  # Ganin et al.'s decay
    scorer = get("scorer", selection) if selection in TARGET_SELECTIONS else None
    history, best, best_state, best_epoch = [], None, None, None

    bn = model.bottleneck[1]

    @torch.no_grad()
    def logits(X, stats=None):
        model.eval()
        saved = (bn.running_mean.clone(), bn.running_var.clone())
        if domain_bn and stats is not None:
            model.set_bn_statistics(stats.to(device))
        out = model(torch.as_tensor(X, dtype=torch.float32, device=device)).cpu().numpy()
        bn.running_mean.copy_(saved[0])
        bn.running_var.copy_(saved[1])
        model.train()
        return out

    step = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        for _ in range(steps):
            i_s = torch.randint(len(S), (batch_size,), generator=gen)
            xs = S[i_s].to(device)
            if T is not None:  # (a target index is drawn even when unused, so runs with and without labels align)
                i_t = torch.randint(len(T), (batch_size,), generator=gen)
                xt = T[i_t].to(device)
                lab = yt_t[i_t] >= 0
            else:
                lab = torch.zeros(0, dtype=torch.bool)
            fs = model.features(xs)
            zs = model.head(fs)
            if da is not None or lab.any():
                ft = model.features(xt)
                zt = model.head(ft)
            # else: the target inputs are not forwarded (not even through BatchNorm in training mode)
            loss = F.cross_entropy(zs, ys_t[i_s].to(device))
            terms = {"cls": loss.item()}
            if lab.any():
                lt = F.cross_entropy(zt[lab.to(device)], yt_t[i_t][lab].to(device))
                loss = loss + lt
                terms["target_cls"] = lt.item()
            if da is not None:
                if hasattr(da, "set_progress"):
                    da.set_progress(step / total)
                out = da(fs, ft, logits_s=zs, logits_t=zt, y_s=ys_t[i_s].to(device))
                loss = loss + out["loss"]
                terms.update({k: float(v) for k, v in out.items() if k != "loss" and torch.as_tensor(v).numel() == 1})
            if not torch.isfinite(loss):
                from ..train.trainer import TrainingDivergedError

                raise TrainingDivergedError(
                    f"adaptation diverged: the loss became {loss.item()} at epoch {epoch}, step {step + 1} of {total} "
                    f"(lr {lr:g}, weight {weight:g}); lower lr or weight, and check the inputs for huge values.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v / steps
        bad = next((n for n, t in [*model.named_parameters(), *model.named_buffers()]
                    if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:  # the last step's update, before it is scored or kept
            from ..train.trainer import TrainingDivergedError

            raise TrainingDivergedError(
                f"adaptation diverged: weight {bad!r} became NaN or infinite at epoch {epoch} (lr {lr:g}); lower lr "
                "or weight, and check the inputs for huge values.")
        row = {"epoch": epoch, **sums, "epoch_time": time.perf_counter() - t0}
        if selection == "target_val":
            m = yt_val >= 0  # unlabeled (-1) validation rows are no evidence either way
            score = float((logits(Xt_val, T).argmax(1)[m] == yt_val[m]).mean())
        elif selection == "source_val":
            z = torch.as_tensor(logits(Xs_val, S))
            y_sv = torch.as_tensor(np.asarray(ys_val), dtype=torch.long)
            row["source_val_loss"] = float(F.cross_entropy(z, y_sv))
            row["source_val_accuracy"] = float((z.argmax(1) == y_sv).float().mean())
            score = -row["source_val_loss"]
        elif selection == "last":
            score = float(epoch)
        else:
            ctx = SelectionContext(logits_t=logits(Xt, T), logits_sv=None if Xs_val is None else logits(Xs_val, S),
                                   y_sv=ys_val, weights_sv=weights_val)
            score = float(scorer(ctx))
        row["score"] = score
        history.append(row)
        fault_point("adapt.epoch")
        if best is None or score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    if domain_bn and T is not None:  # after the weights: the statistics are those of the restored layers
        model.set_bn_statistics(T.to(device))
    model.eval()
    return {"model": model, "history": history, "best_epoch": best_epoch, "selection": selection}
