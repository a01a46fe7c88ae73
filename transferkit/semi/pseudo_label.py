"""Pseudo-labeling with a confidence threshold and iterative self-training."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from .._validation import check_number
from ..errors import DataError


def select_pseudo_labels(probs, threshold: float = 0.9, class_balance: bool = True,
                         max_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels of confident predictions (Lee 2013).

    A sample is kept when its top probability is at least ``threshold``. With
    ``class_balance``, each class keeps at most as many samples as the class with the fewest
    confident ones has (at least one), the most confident first, so that an easy class cannot
    swamp the others (the failure mode of naive self-training; Zou et al. 2018 CBST).

    Returns
    -------
    idx, labels : ndarray
        Row indices into ``probs`` and their pseudo-labels.
    """
    P = np.asarray(probs, dtype=np.float64)
    if P.ndim != 2:
        raise DataError(f"probs must have shape (n, n_classes), got {P.shape}.")
    check_number("threshold", threshold, low=0, high=1)
    conf, lab = P.max(1), P.argmax(1)
    keep = np.flatnonzero(conf >= threshold)
    if not class_balance or len(keep) == 0:
        return keep, lab[keep]
    per = [keep[lab[keep] == c] for c in range(P.shape[1])]
    nonempty = [len(p) for p in per if len(p)]
    cap = max(1, min(nonempty)) if max_per_class is None else max_per_class
    out = []
    for p in per:
        out.append(p[np.argsort(-conf[p])][:cap])
    idx = np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=int)
    return idx, lab[idx]


class SelfTrainingClassifier(ClassifierMixin, BaseEstimator):
    """Iterative self-training: fit on labeled rows, pseudo-label confident unlabeled rows, refit.

    Follows scikit-learn's semi-supervised convention (``y = -1`` marks unlabeled rows) and
    accepts skada's ``sample_domain`` (only target rows, ``sample_domain < 0``, receive
    pseudo-labels when it is given).

    Parameters
    ----------
    estimator
        A classifier with ``predict_proba``.
    threshold
        Confidence needed for a pseudo-label.
    max_iter
        Rounds of pseudo-labeling; stops early when no new sample qualifies.
    class_balance
        Cap each class's pseudo-labels per round (see :func:`select_pseudo_labels`).
    growth
        At most this fraction of the unlabeled rows is added per round (the most confident).

    Attributes
    ----------
    estimator_
        The final fitted classifier.
    n_pseudo_labeled_
        Pseudo-labeled rows used in the final fit.
    history_
        ``[(round, n_pseudo_labeled)]``.
    """

    def __init__(self, estimator=None, threshold=0.9, max_iter=5, class_balance=True, growth=0.5):
        self.estimator = estimator
        self.threshold = threshold
        self.max_iter = max_iter
        self.class_balance = class_balance
        self.growth = growth

    def fit(self, X, y, sample_domain=None):
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X)
        y = np.asarray(y).astype(np.int64)
        if len(X) != len(y):
            raise DataError(f"X has {len(X)} rows but y has {len(y)}.")
        labeled = y >= 0
        if not labeled.any():
            raise DataError("self-training needs some labeled rows (y >= 0); all rows are -1.")
        candidates = ~labeled
        if sample_domain is not None:
            candidates &= np.asarray(sample_domain) < 0
        base = self.estimator if self.estimator is not None else LogisticRegression(max_iter=2000)
        self.classes_ = np.unique(y[labeled])
        yy = y.copy()
        self.history_ = []
        est = clone(base).fit(X[labeled], y[labeled])
        for it in range(int(self.max_iter)):
            pool = np.flatnonzero(candidates & (yy < 0))
            if len(pool) == 0:
                break
            probs = est.predict_proba(X[pool])
            full = np.zeros((len(pool), int(self.classes_.max()) + 1))
            full[:, est.classes_] = probs
            idx, lab = select_pseudo_labels(full, self.threshold, self.class_balance)
            if len(idx) == 0:
                break
            limit = max(1, int(self.growth * candidates.sum()))
            if len(idx) > limit:
                order = np.argsort(-full[idx].max(1))[:limit]
                idx, lab = idx[order], lab[order]
            yy[pool[idx]] = lab
            use = yy >= 0
            est = clone(base).fit(X[use], yy[use])
            self.history_.append((it, int((use & ~labeled).sum())))
        self.estimator_ = est
        self.pseudo_labels_ = yy
        self.n_pseudo_labeled_ = int(((yy >= 0) & ~labeled).sum())
        return self

    def predict(self, X):
        return self.estimator_.predict(X)

    def predict_proba(self, X):
        return self.estimator_.predict_proba(X)
