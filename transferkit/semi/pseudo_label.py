"""Pseudo-labeling with a confidence threshold and iterative self-training."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from .._validation import check_number
from ..errors import ConfigError, DataError


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
        A classifier with ``predict_proba``; ``None``: ``LogisticRegression(max_iter=2000)``.
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
    classes_ : ndarray
        The class labels (of the labeled rows).
    n_features_in_ : int
    pseudo_labels_ : ndarray of shape (n_samples,)
        ``y`` with the pseudo-labels filled in; rows still unlabeled keep ``-1``.
    n_pseudo_labeled_
        Pseudo-labeled rows used in the final fit.
    n_iter_ : int
        Rounds that added pseudo-labels (refits of the estimator after the first fit); 0 when
        no unlabeled row qualified (as scikit-learn's ``SelfTrainingClassifier``).
    history_
        ``[(round, n_pseudo_labeled)]``.
    """

    # like skada's DA estimators: a metadata-routing pipeline passes sample_domain on by default
    __metadata_request__fit = {"sample_domain": True}

    def __init__(self, estimator=None, threshold=0.9, max_iter=5, class_balance=True, growth=0.5):
        self.estimator = estimator
        self.threshold = threshold
        self.max_iter = max_iter
        self.class_balance = class_balance
        self.growth = growth

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        return tags

    def _base(self):
        from sklearn.linear_model import LogisticRegression

        base = LogisticRegression(max_iter=2000) if self.estimator is None else self.estimator
        if not hasattr(base, "predict_proba"):
            raise ConfigError(
                f"estimator {type(base).__name__} has no predict_proba, which self-training needs to rank "
                "confidences; choose a probabilistic classifier (LogisticRegression, SVC(probability=True), ...)."
            )
        return base

    def fit(self, X, y, sample_domain=None):
        """Fit on the labeled rows, then pseudo-label and refit for up to ``max_iter`` rounds.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels; ``-1`` for unlabeled rows.
        sample_domain : array-like of shape (n_samples,), optional
            When given, only rows with ``sample_domain < 0`` (target) are pseudo-labeled.

        Returns
        -------
        self
        """
        from .._sklearn import check_class_labels, check_X, masked_labels

        who = "SelfTrainingClassifier.fit"
        check_number("threshold", self.threshold, low=0, high=1)
        max_iter = check_number("max_iter", self.max_iter, low=0, integer=True)
        growth = check_number("growth", self.growth, low=0, high=1, low_inclusive=False)
        base = self._base()
        if y is None:
            check_class_labels(y, 0, who)  # raises: y is required
        X = check_X(X, who=who, min_rows=1, estimator=self, reset=True)
        y = check_class_labels(y, X.shape[0], who, mask_unlabeled=True)
        unlabeled = masked_labels(y)
        labeled = ~unlabeled
        if not labeled.any():
            raise DataError(f"{who}: self-training needs some labeled rows (y != -1); all {len(y)} rows are "
                            "unlabeled (-1 or NaN).")
        candidates = unlabeled.copy()
        if sample_domain is not None:
            sd = np.asarray(sample_domain)
            if sd.shape != (len(y),):
                raise DataError(f"{who}: sample_domain has shape {sd.shape} but X has {len(y)} rows; "
                                "give one domain label per row.")
            candidates &= sd < 0
        self.classes_ = np.unique(y[labeled])
        yy = y.copy()  # string labels have no unlabeled rows (-1 is numeric), so no dtype clash
        have = labeled.copy()  # rows with a label or a pseudo-label
        self.history_ = []
        est = clone(base).fit(X[labeled], y[labeled])
        for it in range(int(max_iter)):
            pool = np.flatnonzero(candidates & ~have)
            if len(pool) == 0:
                break
            probs = est.predict_proba(X[pool])
            full = np.zeros((len(pool), len(self.classes_)))
            full[:, np.searchsorted(self.classes_, est.classes_)] = probs
            idx, lab = select_pseudo_labels(full, self.threshold, self.class_balance)
            if len(idx) == 0:
                break
            limit = max(1, int(growth * candidates.sum()))
            if len(idx) > limit:
                order = np.argsort(-full[idx].max(1))[:limit]
                idx, lab = idx[order], lab[order]
            yy[pool[idx]] = self.classes_[lab]
            have[pool[idx]] = True
            est = clone(base).fit(X[have], yy[have])
            self.history_.append((it, int((have & ~labeled).sum())))
        self.estimator_ = est
        self.pseudo_labels_ = yy
        self.n_pseudo_labeled_ = int((have & ~labeled).sum())
        self.n_iter_ = len(self.history_)
        return self

    def _rows(self, X, method):
        from .._sklearn import check_X

        check_is_fitted(self)
        return check_X(X, who=f"SelfTrainingClassifier.{method}", estimator=self, reset=False)

    def predict(self, X):
        """Class labels of the rows of ``X``."""
        X = self._rows(X, "predict")  # first: raises NotFittedError before estimator_ is read
        return self.estimator_.predict(X)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``."""
        X = self._rows(X, "predict_proba")
        return self.estimator_.predict_proba(X)
