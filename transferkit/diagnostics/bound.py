"""An *estimate* of the Ben-David et al. domain adaptation bound.

Ben-David, Blitzer, Crammer, Kulesza, Pereira & Vaughan (2010), "A theory of learning from
different domains", Theorem 2: for every hypothesis h in H,

    eps_T(h) <= eps_S(h) + 1/2 d_{H Delta H}(S, T) + lambda,
    lambda = min_{h'} eps_S(h') + eps_T(h').

Every term here is estimated from finite samples with a linear hypothesis class (logistic
regression), so the result is an estimate, not a guarantee:

- ``source_error``: 5-fold cross-validated error of the source classifier on the source;
- ``half_a_distance``: half the proxy A-distance (a stand-in for d_{H Delta H});
- ``lambda_hat``: the joint classifier trained on labeled source plus target, its
  cross-validated error on the source plus its cross-validated error on the target.
"""

from __future__ import annotations

import numpy as np

from ..metrics._base import as_2d, check_labels


def _cv_errors(X, y, domain, seed: int, folds: int = 5) -> tuple[float, float]:
    """Cross-validated error of logistic regression, split by domain (0 = source, 1 = target)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    strat = y * 2 + domain  # keep both domains and every class in every fold
    counts = np.bincount(strat)
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2:
        raise ValueError("too few samples per class for cross-validation")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    from .._compat import one_blas_thread

    with one_blas_thread():
        pred = cross_val_predict(clf, X, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    wrong = pred != y
    err_s = float(wrong[domain == 0].mean()) if (domain == 0).any() else float("nan")
    err_t = float(wrong[domain == 1].mean()) if (domain == 1).any() else float("nan")
    return err_s, err_t


def ben_david_bound(Fs, ys, Ft, yt, *, a_distance: float | None = None, seed: int = 0) -> dict:
    """Estimate ``eps_S + 1/2 d_A + lambda`` (Ben-David et al. 2010) on features.

    Parameters
    ----------
    Fs, ys
        Labeled source features ``(n_s, d)`` and labels.
    Ft, yt
        Labeled target features ``(n_t, d)`` and labels (``lambda`` needs target labels).
    a_distance
        A precomputed proxy A-distance; computed with the registered ``a_distance`` otherwise.
    seed
        Seed of the cross-validation splits.

    Returns
    -------
    dict
        ``{"estimate", "source_error", "half_a_distance", "lambda_hat", "kind": "estimate",
        "note"}``.
    """
    Fs, Ft = as_2d(Fs, "source features"), as_2d(Ft, "target features")
    ys, yt = check_labels(ys, len(Fs), "source labels"), check_labels(yt, len(Ft), "target labels")
    if a_distance is None:
        from .._registry import get

        a_distance = float(get("divergence", "a_distance")(Fs, Ft, seed=seed).value)
    src_err, _ = _cv_errors(Fs, ys, np.zeros(len(ys), dtype=int), seed)
    X = np.vstack([Fs, Ft])
    y = np.concatenate([ys, yt])
    dom = np.r_[np.zeros(len(ys), dtype=int), np.ones(len(yt), dtype=int)]
    js, jt = _cv_errors(X, y, dom, seed)
    lam = js + jt
    return {
        "estimate": src_err + 0.5 * a_distance + lam,
        "source_error": src_err,
        "half_a_distance": 0.5 * a_distance,
        "lambda_hat": lam,
        "kind": "estimate",
        "note": "Ben-David et al. 2010 bound eps_T <= eps_S + d_HdH/2 + lambda, every term estimated "
                "with logistic regression and 5-fold cross-validation; an estimate, not a guarantee.",
    }
