"""Unsupervised model-selection scorers for domain adaptation (higher is better).

Checkpoint and hyper-parameter selection must never touch target test labels. These scorers
use labeled *source* validation data, unlabeled target data and the candidate model's outputs:

- ``entropy``: minus the mean prediction entropy on the target (Morerio et al. 2018);
- ``snd``: soft neighbourhood density of target predictions (Saito et al., ICCV 2021);
- ``iwcv``: importance-weighted source validation loss (Sugiyama et al., JMLR 2007), the weights
  ``w(x) = p_T(x)/p_S(x)`` estimated by a domain classifier;
- ``dev``: deep embedded validation (You et al., ICML 2019), IWCV with the weights as a control
  variate (lower variance than IWCV; it differs from IWCV whenever the weights do not average 1).

Every scorer has the signature ``scorer(ctx: SelectionContext) -> float``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax, softmax

from .._registry import register
from ..errors import DataError
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
    from .information import prediction_entropy

    return -prediction_entropy(softmax(np.asarray(ctx.logits_t, dtype=np.float64), axis=1))


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
