"""Checkpoint selection: the unsupervised scorers and the one selection callback.

Every deep method picks the epoch whose weights it returns here, through
:class:`SelectionCallback`: on a labeled validation split (``val_accuracy``, ``val_loss``,
``source_val``, ``target_val``), by an unsupervised scorer that never reads target labels, or
the last epoch. The scorers (higher is better) use labeled *source* validation data, unlabeled
target data and the candidate model's outputs:

- ``entropy``: minus the mean prediction entropy on the target (Morerio et al. 2018);
- ``snd``: soft neighbourhood density of target predictions (Saito et al., ICCV 2021);
- ``iwcv``: importance-weighted source validation loss (Sugiyama et al., JMLR 2007), the weights
  ``w(x) = p_T(x)/p_S(x)`` estimated by a domain classifier;
- ``dev``: deep embedded validation (You et al., ICML 2019), IWCV with the weights as a control
  variate (lower variance than IWCV; it differs from IWCV whenever the weights do not average 1).

Every scorer has the signature ``scorer(ctx: SelectionContext) -> float``. They live with the
Trainer (not in :mod:`transferkit.metrics`, which re-exports them) because training selects
with them: the one-way import rule puts metrics after training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import log_softmax, softmax

from .._registry import register
from .._validation import as_2d, check_labels
from ..errors import ConfigError, DataError


@dataclass
class SelectionContext:
    """What a scorer may look at for one candidate model.

    Attributes
    ----------
    logits_t
        Candidate's logits on unlabeled target samples ``(n_t, K)``.
    logits_sv
        Candidate's logits on held-out labeled source validation samples ``(n_sv, K)``.
    y_sv
        Source validation labels ``(n_sv,)``.
    weights_sv
        Importance weights ``p_T(x)/p_S(x)`` of the source validation samples (see
        :func:`importance_weights`); needed by ``iwcv`` and ``dev``.
    """

    logits_t: np.ndarray
    logits_sv: np.ndarray | None = None
    y_sv: np.ndarray | None = None
    weights_sv: np.ndarray | None = None


def importance_weights(F_sv, F_s_train, F_t, seed: int = 0, clip: float = 20.0,
                       normalize: bool = False) -> np.ndarray:
    """Density-ratio weights ``w(x) = p_T(x)/p_S(x)`` for source validation samples.

    A logistic domain classifier is trained on source-train versus target inputs (features of
    the frozen backbone, so the weights are the same for every candidate model);
    ``w(x) = (n_S / n_T) * P(T|x) / P(S|x)``, clipped at ``clip`` (Sugiyama et al. 2007;
    You et al. 2019).

    The weights are **not** renormalized by default: ``E_S[w] = 1`` holds only in expectation,
    and the gap between the validation rows' ``mean(w)`` and 1 is exactly what DEV's control
    variate corrects (renormalizing to mean 1 makes DEV identical to IWCV). ``normalize=True``
    divides by the mean (self-normalized importance weights).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Fs, Ft, Fv = as_2d(F_s_train, "source features"), as_2d(F_t, "target features"), as_2d(F_sv, "validation features")
    X = np.vstack([Fs, Ft])
    d = np.r_[np.zeros(len(Fs)), np.ones(len(Ft))]
    from .._compat import one_blas_thread

    with one_blas_thread():
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed)).fit(X, d)
    p = np.clip(clf.predict_proba(Fv)[:, 1], 1e-6, 1 - 1e-6)
    w = np.minimum(len(Fs) / len(Ft) * p / (1 - p), clip)
    return w / w.mean() if normalize else w


def _ce(logits, y) -> np.ndarray:
    return -log_softmax(np.asarray(logits, dtype=np.float64), axis=1)[np.arange(len(y)), y]


@register("scorer", "entropy")
def entropy_score(ctx: SelectionContext) -> float:
    """``-mean_i H(softmax(z_i))`` over target samples: confident target predictions score higher."""
    logp = log_softmax(np.asarray(ctx.logits_t, dtype=np.float64), axis=1)
    return float((np.exp(logp) * logp).sum(1).mean())


@register("scorer", "snd")
def snd_score(ctx: SelectionContext, temperature: float = 0.05) -> float:
    """Soft neighbourhood density (Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko, ICCV 2021).

    With ``p_i`` the L2-normalized softmax outputs on target samples, ``s_ij = p_i . p_j / tau``
    (self-similarity excluded) and ``q_ij = softmax_j(s_ij)``, SND is the mean entropy
    ``-1/n sum_i sum_j q_ij log q_ij``: a model whose target predictions form dense clusters
    scores higher. Computed in row blocks, never holding more than a block x n matrix.
    """
    p = softmax(np.asarray(ctx.logits_t, dtype=np.float64), axis=1)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    n = len(p)
    total = 0.0
    for s in range(0, n, 1024):
        sim = p[s : s + 1024] @ p.T / temperature
        sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])] = -np.inf
        logq = log_softmax(sim, axis=1)
        q = np.exp(logq)
        total += float(-(q * np.where(np.isfinite(logq), logq, 0.0)).sum())
    return total / n


def _weighted_losses(ctx: SelectionContext) -> tuple[np.ndarray, np.ndarray]:
    """``(w, l)``: the validation rows' importance weights (ones when none) and cross-entropies."""
    if ctx.logits_sv is None:
        raise DataError("this scorer needs the candidate's logits on labeled source validation data (logits_sv).")
    y = check_labels(ctx.y_sv, len(ctx.logits_sv), "source validation labels")
    if ctx.weights_sv is None:
        return np.ones(len(y)), _ce(ctx.logits_sv, y)
    w = np.asarray(ctx.weights_sv, dtype=np.float64).ravel()
    if len(w) != len(y) or not (np.isfinite(w).all() and (w >= 0).all()):
        raise DataError(f"weights_sv must hold one finite, non-negative weight per validation row ({len(y)}), "
                         f"got {len(w)} values" + ("" if len(w) != len(y) else " with negative or non-finite ones"))
    return w, _ce(ctx.logits_sv, y)


def iwcv_risk(ctx: SelectionContext) -> float:
    """The importance-weighted validation risk ``mean_i w_i l_i`` (Sugiyama et al. 2007)."""
    w, loss = _weighted_losses(ctx)
    return float((w * loss).mean())


def dev_risk(ctx: SelectionContext) -> float:
    """Deep embedded validation risk (You, Wang, Long & Jordan, ICML 2019, Algorithm 1).

    With ``L_i = w_i l_i`` and the control variate ``w`` (``E_S[w] = 1``),
    ``eta = -Cov(L, w) / Var(w)`` and ``R_DEV = mean(L) + eta * mean(w) - eta``: unbiased like
    IWCV (up to the O(1/n) error of estimating ``eta``) and, with the optimal ``eta``, of
    variance ``Var(L) (1 - rho^2)``, never more than IWCV's. When ``mean(w) = 1`` exactly (or
    the weights are constant) the correction vanishes and DEV equals IWCV.
    """
    w, loss = _weighted_losses(ctx)
    lw = w * loss
    if len(w) < 2:
        return float(lw.mean())
    var = w.var(ddof=1)
    eta = 0.0 if var <= 1e-12 * max(1.0, float(w.mean()) ** 2) else -np.cov(lw, w, ddof=1)[0, 1] / var
    return float(lw.mean() + eta * w.mean() - eta)


@register("scorer", "iwcv")
def iwcv_score(ctx: SelectionContext) -> float:
    """Minus the importance-weighted cross-entropy on source validation data (Sugiyama et al. 2007)."""
    return -iwcv_risk(ctx)


@register("scorer", "dev")
def dev_score(ctx: SelectionContext) -> float:
    """Minus deep embedded validation risk (You, Wang, Long & Jordan, ICML 2019): IWCV with the
    importance weights as control variate (:func:`dev_risk`); lower risk is better, so the
    score is ``-R_DEV``."""
    return -dev_risk(ctx)


# ------------------------------------------------------------------------------ selection
#: Checkpoint selections: the registered unsupervised scorers (they read target predictions,
#: never target labels), ``source_val`` (labeled source validation loss: no target input),
#: ``target_val`` (accuracy on a labeled target *validation* split) and ``last``.
SELECTIONS = ("dev", "iwcv", "snd", "entropy", "source_val", "target_val", "last")

#: Selections that need target training inputs (the scorers look at target predictions).
TARGET_SELECTIONS = ("dev", "iwcv", "snd", "entropy")

#: Selections on the Trainer's own labeled validation split (``fit(train, val)``).
VAL_SELECTIONS = ("val_accuracy", "val_loss")


def _capped(dataset, max_samples: int | None, seed: int, weights=None):
    """At most ``max_samples`` rows of ``dataset`` (stratified by label when it has labels),
    the same rows for the whole fit; ``weights`` follow the rows."""
    if dataset is None or max_samples is None or len(dataset) <= max_samples:
        return dataset, weights
    rng = np.random.default_rng(seed)
    y = dataset.labels if dataset.labels is not None else np.full(len(dataset), -1)
    classes, counts = np.unique(y, return_counts=True)
    # largest-remainder allocation of max_samples over the classes, at least one each
    quota = np.maximum(1, np.floor(counts / counts.sum() * max_samples)).astype(int)
    while quota.sum() > max_samples:
        quota[np.argmax(quota)] -= 1
    rest = max_samples - quota.sum()
    order = np.argsort(-(counts / counts.sum() * max_samples - quota))
    quota[order[:rest]] += 1
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), min(q, n), replace=False)
                                   for c, q, n in zip(classes, quota, counts)]))
    return dataset.subset(keep), (None if weights is None else np.asarray(weights)[keep])


class SelectionCallback:
    """Score epochs without test labels; keep the best epoch's weights (the one selection logic).

    Every deep method returns the weights of the epoch this callback picks. At the end of a
    scored epoch it computes the selection's score (higher is better), adds it to the epoch's
    history row, and keeps a CPU copy of ``model``'s ``state_dict`` when the score is the best
    so far. :meth:`restore` (called by the Trainer at the end of ``fit``) puts those weights
    back. :class:`~transferkit.train.callbacks.EarlyStopping` reads ``best_epoch``.

    Parameters
    ----------
    selection
        ``"val_accuracy"`` / ``"val_loss"`` on the Trainer's labeled ``val`` split (rows
        ``val_loss`` and ``val_accuracy`` are logged); ``"source_val"`` (minus the mean
        cross-entropy on ``source_val``; logs ``source_val_loss``, ``source_val_accuracy``);
        ``"target_val"`` (accuracy on the labeled ``target_val``; unlabeled rows are left
        out); a registered ``scorer`` (``dev``, ``iwcv``, ``snd``, ``entropy``) on the
        unlabeled ``target`` (and, for ``dev``/``iwcv``, ``source_val`` with ``weights_val``);
        ``"last"``.
    model
        The module whose weights are kept (default: the Trainer's model).
    target, source_val, weights_val, target_val
        The data the selection reads (see ``selection``). ``target``'s labels are never read.
    every
        Score every ``every`` epochs (and always the last one); unscored epochs cannot be
        selected.
    max_samples
        Score on at most this many rows of each split (a stratified sample drawn once with
        ``seed``); ``None``: every row.
    predict
        ``predict(trainer, dataset, role) -> logits`` (``role`` is ``"val"``, ``"target"``,
        ``"source_val"`` or ``"target_val"``); default ``trainer.predict_logits(dataset)``.
        The feature-level adapter uses it to normalise each domain with its own BatchNorm
        statistics.
    """

    def __init__(self, selection: str, *, model=None, val=None, target=None, source_val=None, weights_val=None,
                 target_val=None, every: int = 1, max_samples: int | None = None, seed: int = 0, predict=None):
        known = (*VAL_SELECTIONS, *SELECTIONS)
        if selection not in known:
            from .._validation import suggest

            raise ConfigError(f"selection={selection!r} is not a checkpoint selection." + suggest(str(selection), known)
                              + f" Use one of {', '.join(known)}.")
        self.selection, self.model, self.every, self.predict = selection, model, int(every), predict
        self.max_samples, self.seed = max_samples, seed
        self.val = val
        self.target, _ = _capped(target, max_samples, seed)
        self.source_val, self.weights_val = _capped(source_val, max_samples, seed, weights_val)
        self.target_val, _ = _capped(target_val, max_samples, seed)
        self.scorer = None
        if selection in TARGET_SELECTIONS:
            from .._registry import get

            self.scorer = get("scorer", selection)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict | None = None
        self.scored_epoch: int | None = None
        self.scores: list[float] = []

    def on_fit_start(self, trainer) -> None:
        if self.model is None:
            self.model = trainer.model
        if self.selection in VAL_SELECTIONS:
            self.val, _ = _capped(trainer.val, self.max_samples, self.seed)

    def _logits(self, trainer, dataset, role: str) -> np.ndarray:
        if self.predict is not None:
            return self.predict(trainer, dataset, role)
        return trainer.predict_logits(dataset)

    def _labeled(self, trainer, dataset, role: str) -> tuple[float, float]:
        """``(mean cross-entropy, accuracy)`` on the labeled rows of ``dataset``."""
        z = torch.as_tensor(self._logits(trainer, dataset, role), dtype=torch.float32)
        y = torch.as_tensor(dataset.labels, dtype=torch.long)
        m = y >= 0
        if not bool(m.any()):
            return float("nan"), float("nan")
        loss = float(torch.nn.functional.cross_entropy(z[m], y[m]))
        return loss, float((z[m].argmax(1) == y[m]).float().mean())

    def score(self, trainer, epoch: int, row: dict) -> float:
        sel = self.selection
        if sel == "last":
            return float(epoch)
        if sel in VAL_SELECTIONS:
            loss, acc = self._labeled(trainer, self.val, "val")
            row["val_loss"], row["val_accuracy"] = loss, acc
            return acc if sel == "val_accuracy" else -loss
        if sel == "target_val":
            return self._labeled(trainer, self.target_val, "target_val")[1]
        if sel == "source_val":
            loss, acc = self._labeled(trainer, self.source_val, "source_val")
            row["source_val_loss"], row["source_val_accuracy"] = loss, acc
            return -loss
        need_sv = sel in ("dev", "iwcv")
        ctx = SelectionContext(
            logits_t=self._logits(trainer, self.target, "target"),
            logits_sv=self._logits(trainer, self.source_val, "source_val") if need_sv else None,
            y_sv=self.source_val.labels if need_sv else None,
            weights_sv=self.weights_val if need_sv else None)
        return float(self.scorer(ctx))

    def due(self, trainer, epoch: int) -> bool:
        return (epoch + 1) % self.every == 0 or epoch == trainer.epochs - 1

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> None:
        if not self.due(trainer, epoch):
            return
        s = self.score(trainer, epoch, row)
        if self.selection not in VAL_SELECTIONS:
            row["score"] = s
        self.scores.append(s)
        self.scored_epoch = epoch
        if self.best is None or s > self.best or (np.isnan(self.best) and not np.isnan(s)):
            self.best, self.best_epoch = s, epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            trainer.best_epoch = epoch

    def state_dict(self) -> dict:
        """What a resumed run needs (tensors and plain types only: loads with ``weights_only``)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "scores": list(self.scores),
                "scored_epoch": self.scored_epoch, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.scores, self.best_state = list(state["scores"]), state["best_state"]
        self.scored_epoch = state.get("scored_epoch")
        if self.best_state is not None:  # checked now, not when the weights are put back at the end
            own = self.model.state_dict()
            missing = sorted(set(own) ^ set(self.best_state))
            if missing:
                raise KeyError(f"best_state has other keys than the model ({missing[0]!r})")
            for k, v in own.items():
                if tuple(self.best_state[k].shape) != tuple(v.shape):
                    raise ValueError(f"best_state[{k!r}] has shape {tuple(self.best_state[k].shape)}, the model "
                                     f"{tuple(v.shape)}")

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
