"""An adapter followed by a classifier trained on the adapted, labeled source rows."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, has_fit_parameter

from ...errors import ConfigError, DataError, TransferKitWarning
from ..._sklearn import check_class_labels, check_X
from ..._sklearn import masked_labels as _masked_labels
from ._base import DIAGNOSTIC_KEYS, check_domain_input, check_random_state_param, infer_sample_domain
from ._factory import check_options, make_shallow

#: DAClassifier warns when it predicts one class for at least this share of its target rows
ONE_CLASS_SHARE = 0.99


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

    After the fit, the classifier is applied to the target rows it was fitted with; when it
    predicts one class for at least 99% of them (:data:`ONE_CLASS_SHARE`) a
    :class:`~transferkit.errors.TransferKitWarning` says so (a model that ignores its input:
    under label shift, a mapping adapter can remove the class signal along with the shift).

    Parameters
    ----------
    adapter : estimator or str
        A shallow adapter (:class:`CORALAdapter`, ...) or its registry name (``"coral"``,
        ``"sa"``, ``"tca"``, ``"ot_mapping"``, ``"kmm"``, ``"kliep"``).
    estimator : classifier or None, default None
        ``None``: ``LogisticRegression(max_iter=1000)``. A :class:`~sklearn.pipeline.Pipeline`
        gets reweighter weights in its last step only.
    adapter_options : mapping or None, default None
        Parameters of the adapter by name (``{"n_components": 10}``), for a registry name or an
        adapter (set on its clone). An unknown name is a
        :class:`~transferkit.errors.ConfigError` naming the nearest valid one
        (:func:`~transferkit.adapt.shallow.make_shallow`).
    random_state : int, RandomState or None, default 0
        Replaces the ``random_state`` of the adapter (when it has one, and
        ``adapter_options`` does not set it) and every ``random_state`` of the estimator, as
        scikit-learn's ensembles seed their members; so two fits are identical and a different
        seed gives the other draws of the adapters with randomness (TCA, KMM and KLIEP
        subsamples, centres and folds; SA's subsample for its dimension estimate). ``None``
        leaves theirs as they are.

    Attributes
    ----------
    adapter_ : the fitted adapter
    estimator_ : the fitted classifier
    classes_ : ndarray
    diagnostics_ : dict
        The adapter's ``diagnostics_`` (keys
        :data:`~transferkit.adapt.shallow._base.DIAGNOSTIC_KEYS`; an adapter without one gives
        ``None`` values) plus ``target_top_class_share``: the share of the target rows given to
        ``fit`` that get the most predicted class (``None`` without target rows); ``warnings``
        also holds the one-class warning.
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline          # doctest: +SKIP
    >>> from sklearn.preprocessing import StandardScaler    # doctest: +SKIP
    >>> clf = DAClassifier(CORALAdapter(), make_pipeline(StandardScaler(), LogisticRegression()))  # doctest: +SKIP
    >>> clf.fit(X, y, sample_domain=sd).score(X_target, y_target)  # doctest: +SKIP
    """

    # like skada's DA estimators: a metadata-routing pipeline passes sample_domain on by default
    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__predict = {"sample_domain": True}
    __metadata_request__predict_proba = {"sample_domain": True}
    __metadata_request__decision_function = {"sample_domain": True}
    __metadata_request__score = {"sample_domain": True}

    def __init__(self, adapter, estimator=None, adapter_options=None, random_state=0):
        self.adapter = adapter
        self.estimator = estimator
        self.adapter_options = adapter_options
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        return tags

    def _adapter(self):
        seed = check_random_state_param(self.random_state)
        if isinstance(self.adapter, str):
            adapter = make_shallow(self.adapter, self.adapter_options, where="adapter_options")
            opts = dict(self.adapter_options or {})
        else:
            if self.adapter is None or not hasattr(self.adapter, "fit") or not hasattr(self.adapter, "transform"):
                raise ConfigError(f"adapter must be a shallow adapter (with fit and transform) or a registry name, "
                                  f"got {self.adapter!r}.")
            adapter = clone(self.adapter)
            opts = check_options(self.adapter_options, adapter.get_params(deep=True),
                                 what=type(adapter).__name__, where="adapter_options")
            adapter.set_params(**opts)
            if hasattr(adapter, "_check_params"):
                try:
                    adapter._check_params()
                except ConfigError as exc:
                    raise ConfigError(f"adapter_options: {exc}") from None
        if seed is not None and "random_state" in adapter.get_params(deep=False) and "random_state" not in opts:
            adapter.set_params(random_state=seed)
        return adapter

    def _estimator(self):
        est = LogisticRegression(max_iter=1000) if self.estimator is None else self.estimator
        seed = check_random_state_param(self.random_state)
        if seed is None:
            return est
        est = clone(est)
        keys = {k: seed for k in est.get_params(deep=True) if k == "random_state" or k.endswith("__random_state")}
        return est.set_params(**keys) if keys else est

    def fit(self, X, y, *, sample_domain=None) -> DAClassifier:
        """Fit the adapter on all rows, then the classifier on the adapted labeled source rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source and target rows together.
        y : array-like of shape (n_samples,)
            Source labels; ``-1`` for unlabeled rows. Target labels are ignored.
        sample_domain : array-like of shape (n_samples,), optional
            Positive for source rows, negative for target rows. ``None``: skada's rule, the
            rows with ``y == -1`` are the target; with no such row, every row is used as both
            source and target (nothing to adapt to: the adapter warns, and the result is the
            estimator trained on all rows).

        Returns
        -------
        self
        """
        who = "DAClassifier.fit"
        adapter = self._adapter()
        if y is None:
            check_class_labels(y, 0, who)  # raises: y is required
        X = check_X(X, who=who, min_rows=2, estimator=self, reset=True)
        n = X.shape[0]
        y = check_class_labels(y, n, who, mask_unlabeled=True)
        unlabeled = _masked_labels(y)
        # given, or skada's rule: y == -1 marks the target rows; None: no target row (pooled rows)
        sd = infer_sample_domain(y, sample_domain, n, who)
        if sd is None:
            is_source = is_target = np.ones(n, dtype=bool)  # the adapter warns about it
        else:
            _, _, is_source, is_target = check_domain_input(X, None, sd, who=who)
        train = is_source & ~unlabeled
        if not train.any():
            raise DataError(f"{who}: no labeled source row (every source label is -1); label some source rows.")
        # the adapter gets the domains, and never a target label (masked to -1 when y is numeric)
        y_adapter = np.where(is_source, y, -1) if sd is not None and y.dtype.kind in "iuf" else None
        adapter.fit(X, y_adapter, sample_domain=sd)
        weights = None
        if hasattr(adapter, "weights_") and hasattr(adapter, "compute_weights"):
            Z = X
            w = np.zeros(n)
            w[is_source] = adapter.weights_
            weights = w[train]
        else:
            Z = np.asarray(adapter.transform(X, sample_domain=sd))
        self.estimator_ = fit_with_weights(clone(self._estimator()), Z[train], y[train], weights)
        self.adapter_ = adapter
        self.classes_ = self.estimator_.classes_
        diag = getattr(adapter, "diagnostics_", None)
        diag = dict(diag) if isinstance(diag, dict) else {k: None for k in DIAGNOSTIC_KEYS}
        diag["warnings"] = list(diag.get("warnings") or [])
        diag["target_top_class_share"] = None
        if sd is not None:
            pred = self.estimator_.predict(Z[is_target])
            values, counts = np.unique(pred, return_counts=True)
            share = float(counts.max() / len(pred))
            diag["target_top_class_share"] = share
            if share >= ONE_CLASS_SHARE and len(self.classes_) > 1:
                top = values[counts.argmax()]
                top = top.item() if isinstance(top, np.generic) else top
                src_share = float(np.mean(y[train] == top))
                name = self.adapter if isinstance(self.adapter, str) else type(adapter).__name__
                msg = (f"DAClassifier({name!r}) predicts class {top!r} for {counts.max()} of {len(pred)} target rows "
                       f"({100 * share:.1f}%; {100 * src_share:.0f}% of the labeled source rows): a one-class model on "
                       "the target; compare it with the majority class and with the estimator trained on the source "
                       "rows alone (under label shift a mapping adapter can remove the class signal with the shift).")
                diag["warnings"].append(msg)
                warnings.warn(msg, TransferKitWarning, stacklevel=2)
        self.diagnostics_ = diag
        return self

    def _adapt(self, X, sample_domain, method):
        check_is_fitted(self)
        X = check_X(X, who=f"DAClassifier.{method}", estimator=self, reset=False)
        return self.adapter_.transform(X, sample_domain=sample_domain)

    def predict(self, X, sample_domain=None) -> np.ndarray:
        """Labels of adapted rows (``sample_domain=None``: all rows are target rows)."""
        Z = self._adapt(X, sample_domain, "predict")
        return self.estimator_.predict(Z)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X, sample_domain=None) -> np.ndarray:
        """Class probabilities of adapted rows (``sample_domain=None``: all target rows)."""
        Z = self._adapt(X, sample_domain, "predict_proba")
        return self.estimator_.predict_proba(Z)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X, sample_domain=None) -> np.ndarray:
        Z = self._adapt(X, sample_domain, "decision_function")
        return self.estimator_.decision_function(Z)

    def score(self, X, y, sample_weight=None, sample_domain=None) -> float:
        """Accuracy on adapted rows (``sample_domain=None``: all rows are target rows)."""
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.predict(X, sample_domain=sample_domain), sample_weight=sample_weight))
