"""An adapter followed by a classifier trained on the adapted, labeled source rows."""

from __future__ import annotations

import numpy as np
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, has_fit_parameter

from ..._registry import get
from ...errors import ConfigError, DataError
from ._base import check_domain_input


def fit_with_weights(estimator, X, y, sample_weight=None):
    """``estimator.fit(X, y, sample_weight=...)``; for a :class:`~sklearn.pipeline.Pipeline`
    the weights go to its last step only (a scaler before it is fitted unweighted).

    Works with scikit-learn's metadata routing on or off (skada turns it on when imported): with
    routing on, the request flags are set on ``estimator``, which should therefore be a clone.
    """
    if sample_weight is None:
        return estimator.fit(X, y)
    last = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if not has_fit_parameter(last, "sample_weight"):
        raise ConfigError(
            f"{type(last).__name__}.fit takes no sample_weight, so it cannot use a reweighter's "
            "weights; choose an estimator that does (LogisticRegression, SVC, ...)."
        )
    if not isinstance(estimator, Pipeline):
        return estimator.fit(X, y, sample_weight=sample_weight)
    if get_config().get("enable_metadata_routing", False):
        for _, step in estimator.steps[:-1]:
            if hasattr(step, "set_fit_request") and has_fit_parameter(step, "sample_weight"):
                step.set_fit_request(sample_weight=False)
        last.set_fit_request(sample_weight=True)
        return estimator.fit(X, y, sample_weight=sample_weight)
    return estimator.fit(X, y, **{f"{estimator.steps[-1][0]}__sample_weight": sample_weight})


def _estimator_has(attr):
    return lambda self: hasattr(self.estimator_ if hasattr(self, "estimator_") else self._estimator(), attr)


class DAClassifier(ClassifierMixin, BaseEstimator):
    r"""Shallow domain adaptation then a classifier: ``adapter`` + ``estimator`` in one estimator.

    ``fit(X, y, sample_domain=...)`` (skada's convention: positive = source, negative = target,
    ``y = -1`` for unlabeled rows)

    1. fits a clone of ``adapter`` on all rows, with the labels of target rows masked to ``-1``
       (target labels are never used, even when given);
    2. trains a clone of ``estimator`` on the labeled source rows, adapted by
       ``adapter.transform(X, sample_domain)`` for a mapping adapter, or unchanged and weighted
       by ``adapter.weights_`` (``sample_weight``) for a reweighter.

    ``predict(X, sample_domain=None)`` adapts the rows (``None``: all target rows) and applies
    the estimator: the usual way to score a method on its target.

    Parameters
    ----------
    adapter : estimator or str
        A shallow adapter (:class:`CORALAdapter`, ...) or its registry name (``"coral"``,
        ``"sa"``, ``"tca"``, ``"ot_mapping"``, ``"kmm"``, ``"kliep"``) for the defaults.
    estimator : classifier or None, default None
        ``None``: ``LogisticRegression(max_iter=1000)``. A :class:`~sklearn.pipeline.Pipeline`
        gets reweighter weights in its last step only.

    Attributes
    ----------
    adapter_ : the fitted adapter
    estimator_ : the fitted classifier
    classes_ : ndarray
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline          # doctest: +SKIP
    >>> from sklearn.preprocessing import StandardScaler    # doctest: +SKIP
    >>> clf = DAClassifier(CORALAdapter(), make_pipeline(StandardScaler(), LogisticRegression()))  # doctest: +SKIP
    >>> clf.fit(X, y, sample_domain=sd).score(X_target, y_target)  # doctest: +SKIP
    """

    def __init__(self, adapter, estimator=None):
        self.adapter = adapter
        self.estimator = estimator

    def _adapter(self):
        if isinstance(self.adapter, str):
            return get("shallow_da", self.adapter)()
        if self.adapter is None or not hasattr(self.adapter, "fit") or not hasattr(self.adapter, "transform"):
            raise ConfigError(
                f"adapter must be a shallow adapter (with fit and transform) or a registry name, got {self.adapter!r}."
            )
        return clone(self.adapter)

    def _estimator(self):
        return LogisticRegression(max_iter=1000) if self.estimator is None else self.estimator

    def fit(self, X, y, *, sample_domain=None) -> DAClassifier:
        """Fit the adapter on all rows, then the classifier on the adapted labeled source rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source and target rows together.
        y : array-like of shape (n_samples,)
            Source labels; ``-1`` for unlabeled rows. Target labels are ignored.
        sample_domain : array-like of shape (n_samples,)
            Positive for source rows, negative for target rows.

        Returns
        -------
        self
        """
        adapter = self._adapter()
        if y is None:
            raise DataError("DAClassifier.fit needs y: the labels of the source rows (-1 for unlabeled rows).")
        X, y, is_source = check_domain_input(X, y, sample_domain, who="DAClassifier.fit")
        unlabeled = (y == -1) if np.issubdtype(y.dtype, np.number) else np.zeros(len(y), dtype=bool)
        train = is_source & ~unlabeled
        if not train.any():
            raise DataError("DAClassifier.fit: no labeled source row (every source label is -1).")
        y_masked = y.copy()
        if np.issubdtype(y.dtype, np.number):
            y_masked[~is_source] = -1
        adapter.fit(X, y_masked, sample_domain=sample_domain)
        weights = None
        if hasattr(adapter, "weights_") and hasattr(adapter, "compute_weights"):
            Z = X
            w = np.zeros(len(X))
            w[is_source] = adapter.weights_
            weights = w[train]
        else:
            Z = np.asarray(adapter.transform(X, sample_domain=sample_domain))
        self.estimator_ = fit_with_weights(clone(self._estimator()), Z[train], y[train], weights)
        self.adapter_ = adapter
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def _adapt(self, X, sample_domain):
        check_is_fitted(self, "estimator_")
        return self.adapter_.transform(X, sample_domain=sample_domain)

    def predict(self, X, sample_domain=None) -> np.ndarray:
        """Labels of adapted rows (``sample_domain=None``: all rows are target rows)."""
        return self.estimator_.predict(self._adapt(X, sample_domain))

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X, sample_domain=None) -> np.ndarray:
        """Class probabilities of adapted rows (``sample_domain=None``: all target rows)."""
        return self.estimator_.predict_proba(self._adapt(X, sample_domain))

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X, sample_domain=None) -> np.ndarray:
        return self.estimator_.decision_function(self._adapt(X, sample_domain))

    def score(self, X, y, sample_weight=None, sample_domain=None) -> float:
        """Accuracy on adapted rows (``sample_domain=None``: all rows are target rows)."""
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.predict(X, sample_domain=sample_domain), sample_weight=sample_weight))
