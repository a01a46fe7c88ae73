"""Unsupervised model-selection scorers for domain adaptation (higher is better).

Checkpoint and hyper-parameter selection must never touch target test labels. These scorers
use labeled *source* validation data, unlabeled target data and the candidate model's outputs:

- ``entropy``: minus the mean prediction entropy on the target (Morerio et al. 2018);
- ``snd``: soft neighbourhood density of target predictions (Saito et al., ICCV 2021);
- ``iwcv``: importance-weighted source validation loss (Sugiyama et al., JMLR 2007), the weights
  ``w(x) = p_T(x)/p_S(x)`` estimated by a domain classifier;
- ``dev``: deep embedded validation (You et al., ICML 2019), IWCV with a control variate.

Every scorer has the signature ``scorer(ctx: SelectionContext) -> float``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax, softmax

from .._registry import register
from ._base import as_2d, check_labels


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


def importance_weights(F_sv, F_s_train, F_t, seed: int = 0, clip: float = 20.0) -> np.ndarray:
    """Density-ratio weights ``w(x) = p_T(x)/p_S(x)`` for source validation samples.

    A logistic domain classifier is trained on source-train versus target inputs (features of
    the frozen backbone, so the weights are the same for every candidate model);
    ``w(x) = (n_S / n_T) * P(T|x) / P(S|x)``, clipped at ``clip`` and renormalized to mean 1
    (Sugiyama et al. 2007; You et al. 2019).
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
    return w / w.mean()


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


@register("scorer", "iwcv")
def iwcv_score(ctx: SelectionContext) -> float:
    """Minus the importance-weighted cross-entropy on source validation data (Sugiyama et al. 2007)."""
    y = check_labels(ctx.y_sv, len(ctx.logits_sv), "source validation labels")
    w = np.ones(len(y)) if ctx.weights_sv is None else np.asarray(ctx.weights_sv, dtype=np.float64)
    return float(-(w * _ce(ctx.logits_sv, y)).mean())


@register("scorer", "dev")
def dev_score(ctx: SelectionContext) -> float:
    """Minus deep embedded validation risk (You, Wang, Long & Jordan, ICML 2019).

    With weighted losses ``L_i w_i`` and the control variate ``w_i`` (mean 1 in expectation),
    ``eta = -Cov(Lw, w) / Var(w)`` and ``DEV = mean(Lw) + eta * mean(w) - eta``; lower risk
    is better, so the score is ``-DEV``.
    """
    y = check_labels(ctx.y_sv, len(ctx.logits_sv), "source validation labels")
    w = np.ones(len(y)) if ctx.weights_sv is None else np.asarray(ctx.weights_sv, dtype=np.float64)
    lw = w * _ce(ctx.logits_sv, y)
    var = w.var(ddof=1)
    eta = 0.0 if var <= 1e-12 else -np.cov(lw, w, ddof=1)[0, 1] / var
    return float(-(lw.mean() + eta * w.mean() - eta))
