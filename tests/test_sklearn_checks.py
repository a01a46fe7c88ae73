"""scikit-learn's own estimator checks over every scikit-learn-style estimator of transferkit,
and scikit-learn's ``clone``/``get_params``/``set_params`` contract over every strategy.

Estimators checked (``parametrize_with_checks``, scikit-learn >= 1.6 API):

- every registered shallow adapter (registry ``shallow_da``), as users get it: scikit-learn's
  checks call ``fit(X, y)`` with no ``sample_domain`` and no ``y == -1`` rows, so the adapter
  pools the rows (every row is both source and target, with a ``TransferKitWarning``; see
  :mod:`transferkit.adapt.shallow._base`);
- every registered shallow adapter again with a real domain split: skada's test suite never
  runs scikit-learn's checks (skada 0.6.0 ships none); it gives ``sample_domain`` next to ``X``
  (``make_shifted_datasets``, ``DomainAwareDataset.pack``) as a ``fit`` argument. scikit-learn's
  checks cannot pass fit arguments, so a thin subclass (``<Adapter>OnShiftedDomains``) passes
  ``sample_domain`` itself, computed from the values of ``X`` (the half of the rows with the
  smallest first feature is the source, ``1``, the rest the target, ``-2``: a covariate shift
  that a refit on the same rows reproduces exactly);
- :class:`~transferkit.adapt.shallow.DAClassifier` (CORAL + logistic regression, and a
  reweighter + logistic regression), pooled and with the domain split;
- :class:`~transferkit.semi.SelfTrainingClassifier`;
- :class:`~transferkit.features.FeatureExtractor` on a tiny tabular backbone (``tiny_mlp``,
  ``in_features=3``, seeded).

Every check that does not apply is listed, with its reason, in ``EXPECTED_FAILURES``; the run is
strict (``xfail_strict=True``), so a listed check that starts passing fails the run and the table
cannot go stale.
"""

import inspect

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.multiclass import type_of_target

from transferkit._registry import available, get
from transferkit.adapt.shallow import BaseMappingAdapter, CORALAdapter, DAClassifier, KMMReweighter
from transferkit.backbones import create_backbone
from transferkit.errors import ConfigError
from transferkit.features import FeatureExtractor
from transferkit.semi import SelfTrainingClassifier

# the pooled-rows warning ("no target rows identified") is the documented behaviour under test
pytestmark = pytest.mark.filterwarnings("ignore::transferkit.errors.TransferKitWarning")


# ------------------------------------------------------------------ sample_domain for the checks
def shifted_domains(X, y=None):
    """skada-style ``sample_domain`` for a check's ``X``: ``1`` (source) on the half of the rows
    with the smallest first feature, ``-2`` (target) on the rest; with class labels ``y``, that
    split is made within each class (as in skada's ``make_shifted_datasets``, both domains hold
    every class, and a class with one row keeps it in the source). ``None`` for inputs the
    estimator must reject itself (not 2-D, non-finite, too few rows, not numeric)."""
    try:
        raw = np.asarray(X)
        if np.iscomplexobj(raw):
            return None
        A = raw.astype(float)
    except (TypeError, ValueError):
        return None
    if A.ndim != 2 or A.shape[0] < 4 or A.shape[1] == 0 or not np.isfinite(A).all():
        return None
    groups = np.zeros(len(A), dtype=int)
    if y is not None:
        yy = np.asarray(y)
        yy = yy.ravel() if yy.ndim == 2 and yy.shape[1] == 1 else yy
        if yy.shape == (len(A),) and type_of_target(yy) in ("binary", "multiclass"):
            groups = np.unique(yy, return_inverse=True)[1]
    sd = np.full(len(A), -2)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        rows = rows[np.argsort(A[rows, 0], kind="stable")]
        sd[rows[: max(1, len(rows) // 2)]] = 1
    if (sd > 0).all():
        return None
    return sd


def _on_shifted_domains(cls):
    """A subclass of ``cls`` whose ``fit`` (and ``fit_transform``) pass :func:`shifted_domains`
    when no ``sample_domain`` is given. Made once per class and kept at module level (pickle
    finds it)."""
    name = f"{cls.__name__}OnShiftedDomains"
    if name in globals():
        return globals()[name]

    def fit(self, X, y=None, *, sample_domain=None):
        return cls.fit(self, X, y, sample_domain=shifted_domains(X, y) if sample_domain is None else sample_domain)

    attrs = {"fit": fit, "__module__": __name__, "__doc__": f"{cls.__name__} fitted with shifted_domains(X)."}
    if issubclass(cls, BaseMappingAdapter) or hasattr(cls, "compute_weights"):
        def fit_transform(self, X, y=None, *, sample_domain=None):
            sd = shifted_domains(X, y) if sample_domain is None else sample_domain
            return cls.fit_transform(self, X, y, sample_domain=sd)

        attrs["fit_transform"] = fit_transform
    sub = type(name, (cls,), attrs)
    sub.__qualname__ = name
    globals()[name] = sub
    return sub


def _adapters():
    return [get("shallow_da", name)() for name in available("shallow_da")]


def _estimators():
    ests = _adapters()
    ests += [_on_shifted_domains(type(a))(**a.get_params()) for a in _adapters()]
    ests += [
        DAClassifier(CORALAdapter(), LogisticRegression()),
        DAClassifier(KMMReweighter(), LogisticRegression()),
        _on_shifted_domains(DAClassifier)(CORALAdapter(), LogisticRegression()),
        _on_shifted_domains(DAClassifier)(KMMReweighter(), LogisticRegression()),
        SelfTrainingClassifier(),
        FeatureExtractor(create_backbone("tiny_mlp", pretrained=False, in_features=3, width=8, seed=0),
                         cache_dir=False),
    ]
    return ests


# ------------------------------------------------------------------ expected failures
_WIDTH = ("FeatureExtractor wraps a frozen backbone with a fixed input width (tiny_mlp, in_features=3) and "
          "refuses other widths in one line; this check fits on X with {} columns")

_MINUS_ONE = ("-1 marks unlabeled (target) rows (skada's and scikit-learn's semi-supervised convention); this "
              "check's binary labels are [-1, 1], so one class is left (scikit-learn exempts its own "
              "semi-supervised classifiers from these labels by name)")
_SOURCE_ROWS_MAPPED = ("fit_transform maps the training rows with their domains (source rows onto the target); "
                       "transform(X) without sample_domain treats every row as a target row (skada's rule at "
                       "prediction time), so the two differ on the source rows")

#: check name -> reason, per estimator class name (``type(estimator).__name__``)
EXPECTED_FAILURES = {
    "DAClassifier": {"check_classifiers_classes": _MINUS_ONE},
    "DAClassifierOnShiftedDomains": {"check_classifiers_classes": _MINUS_ONE},
    **{f"{name}OnShiftedDomains": {"check_transformer_general": _SOURCE_ROWS_MAPPED,
                                   "check_transformer_data_not_an_array": _SOURCE_ROWS_MAPPED}
       for name in ("CORALAdapter", "OTMappingAdapter", "SubspaceAlignmentAdapter")},
    "SelfTrainingClassifier": {
        "check_non_transformer_estimators_n_iter": (
            "n_iter_ counts pseudo-labeling rounds, 0 when every row is labeled (iris): the same "
            "expected failure scikit-learn lists for its own SelfTrainingClassifier"),
    },
    "FeatureExtractor": {
        "check_estimators_overwrite_params": _WIDTH.format(2),
        "check_estimators_fit_returns_self": _WIDTH.format(2),
        "check_readonly_memmap_input": _WIDTH.format(2),
        "check_n_features_in_after_fitting": _WIDTH.format(4),
        "check_positive_only_tag_during_fit": _WIDTH.format(4),
        "check_estimators_dtypes": _WIDTH.format(5),
        "check_dtype_object": _WIDTH.format(10),
        "check_fit2d_1sample": _WIDTH.format(10),
        "check_fit2d_1feature": _WIDTH.format(1),
        "check_fit_idempotent": _WIDTH.format(2),
        "check_fit_check_is_fitted": _WIDTH.format(2),
        "check_n_features_in": _WIDTH.format(2),
    },
}


_KMM_FEW_ROWS = ("on this check's split (each class's target half lies beyond its source half in the first feature, "
                 "so the domains do not overlap) KMM's weights rest on 2 of 100 source rows (effective sample size "
                 "1.5, which the fit warns about), so the weighted classifier's training accuracy (0.77 < 0.83) "
                 "depends on which two rows they are (it passed at 0.91 with ESS 2.6 before KMM standardized its "
                 "input by default; B=10 passes one variant and fails another)")


def expected_failed_checks(estimator):
    fails = dict(EXPECTED_FAILURES.get(type(estimator).__name__, {}))
    if type(estimator).__name__ == "DAClassifierOnShiftedDomains" and isinstance(estimator.adapter, KMMReweighter):
        fails["check_classifiers_train"] = _KMM_FEW_ROWS
    return fails


@parametrize_with_checks(_estimators(), expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_every_registered_adapter_is_checked():
    """The check list is the registry: a new adapter is checked without editing this file."""
    names = {type(e).__name__ for e in _estimators()}
    for key in available("shallow_da"):
        cls = get("shallow_da", key)
        assert cls.__name__ in names and f"{cls.__name__}OnShiftedDomains" in names


def test_shifted_domains_is_a_real_split():
    X = np.random.default_rng(0).normal(size=(9, 2))
    sd = shifted_domains(X)
    assert (sd == 1).sum() == 4 and (sd == -2).sum() == 5
    assert X[sd == 1, 0].max() < X[sd == -2, 0].min()
    np.testing.assert_array_equal(shifted_domains(X[::-1]), sd[::-1])  # from the values, not the order
    assert shifted_domains(X[:3]) is None and shifted_domains(X[:, 0]) is None


def test_feature_extractor_keeps_its_backbone_and_checks_the_width():
    """What the width-related expected failures do not show: on rows of the right width,
    fit/transform leave the backbone's weights and mode alone, and a wrong width is a one-line
    error in the format scikit-learn uses."""
    import torch
    from sklearn.exceptions import NotFittedError

    from transferkit.errors import DataError

    bb = create_backbone("tiny_mlp", pretrained=False, in_features=3, width=8, seed=0)
    bb.train()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    fe = FeatureExtractor(bb, cache_dir=False)
    with pytest.raises(NotFittedError):
        fe.transform(np.zeros((2, 3)))
    X = np.random.default_rng(0).normal(size=(5, 3))
    Z = fe.fit(X).transform(X)
    assert Z.shape == (5, 8) and Z.dtype == np.float32 and fe.n_features_in_ == 3
    assert bb.training and all(torch.equal(before[k], v) for k, v in bb.state_dict().items())
    with pytest.raises(DataError, match="X has 2 features, but FeatureExtractor is expecting 3 features as input"):
        fe.transform(X[:, :2])
    with pytest.raises(DataError, match="Reshape your data"):
        fe.transform(X[0])
    with pytest.raises(DataError, match="Complex data not supported"):
        fe.transform(X + 1j)


# ------------------------------------------------------------------ strategies: clone and params
@pytest.mark.parametrize("name", available("strategy"))
def test_strategy_survives_clone_and_params_round_trip(name):
    cls = get("strategy", name)
    s = cls()
    params = s.get_params(deep=True)
    assert set(params) == set(inspect.signature(cls.__init__).parameters) - {"self"}  # every parameter, only those
    # nothing settable hides outside get_params (scikit-learn's check_no_attributes_set_in_init): a
    # subclass's fixed settings (source_only's method=None, ...) are class attributes
    public = {k for k in vars(s) if not k.startswith("_") and not k.endswith("_")}
    assert public == set(params), sorted(public ^ set(params))
    c = clone(s)
    assert type(c) is cls and c is not s
    assert c.get_params(deep=True) == params
    assert s.get_params(deep=False) == params  # no nested estimators among the parameters
    # set_params/get_params round trip, on a fresh instance and with a changed value
    assert cls().set_params(**params).get_params(deep=True) == params
    key = sorted(params)[0]
    marker = object()
    assert s.set_params(**{key: marker}) is s and s.get_params()[key] is marker
    assert clone(s).get_params()[key] is not marker  # clone copies parameters (scikit-learn's rule)
    with pytest.raises(ConfigError, match=rf"unknown parameter '{key}x'.*Did you mean '{key}'"):
        s.set_params(**{f"{key}x": 1})
