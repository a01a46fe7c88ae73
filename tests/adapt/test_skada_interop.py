"""transferkit's shallow adapters inside skada's pipelines, compared with skada's own adapters.

Every adapter with a skada counterpart runs in ``skada.make_da_pipeline(adapter, classifier)``
on the same synthetic shift (``skada.datasets.make_shifted_datasets``), next to skada's adapter
in the same pipeline; the target accuracies must agree within a stated tolerance, and an adapter
must beat the source-only pipeline where skada's does. The reweighters must hand their weights
to the classifier the way skada's reweighting adapters do (``fit_transform`` returns
``(X, {"sample_weight": w})`` to skada's selector, which routes ``w`` to the steps that request
it); before that fix they were silently ignored (source-only accuracy). skada's scorers must
work on our pipelines.

Importing skada switches scikit-learn's metadata routing on for the whole process; the
``skada`` fixture imports it for this module only and puts the setting back afterwards.
"""

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import ShuffleSplit, cross_validate
from sklearn.pipeline import make_pipeline

from transferkit.adapt.shallow import (
    CORALAdapter,
    DAClassifier,
    KLIEPReweighter,
    KMMReweighter,
    OTMappingAdapter,
    SubspaceAlignmentAdapter,
    TCAAdapter,
)


@pytest.fixture(scope="module")
def skada():
    from transferkit._compat import ensure_torchvision

    ensure_torchvision()  # skada.datasets imports torchvision (CPU-only torch: see _compat)
    before = sklearn.get_config()["enable_metadata_routing"]
    mod = pytest.importorskip("skada")
    import skada.base  # noqa: F401
    import skada.datasets  # noqa: F401
    import skada.metrics  # noqa: F401

    sklearn.set_config(enable_metadata_routing=True)  # what `import skada` does, also on a re-import
    yield mod
    sklearn.set_config(enable_metadata_routing=before)


def _data(skada, shift):
    X, y, sd = skada.datasets.make_shifted_datasets(
        n_samples_source=20, n_samples_target=21, shift=shift, noise=None, label="binary", random_state=42)
    return X, y, sd


def _clf():
    return LogisticRegression().set_fit_request(sample_weight=True)


# (ours, skada's, shift, tolerance on |accuracy difference|): parameters matched where the two
# define them alike; the tolerance is wider where the methods are defined differently. skada's
# adapters do not standardize their input (ours do by default), so ours get standardize=False
PAIRS = {
    # same map; transferkit adds reg to both covariances, skada shrinks them (Ledoit-Wolf)
    "coral": (lambda: CORALAdapter(), lambda sk: sk.CORALAdapter(), "conditional_shift", 0.03),
    "sa": (lambda: SubspaceAlignmentAdapter(n_components=2, standardize=False),
           lambda sk: sk.SubspaceAlignmentAdapter(n_components=2), "conditional_shift", 0.03),
    # skada's mu multiplies K L K where ours weights tr(W^T W): mu_ours = 1 / mu_skada; skada's rbf
    # has gamma = 1 / n_features; skada solves with eigh of a non-symmetric matrix (see
    # benchmarks/shallow_vs_skada.py), so wider
    "tca": (lambda: TCAAdapter(n_components=2, mu=10.0, gamma=0.5, standardize=False),
            lambda sk: sk.TransferComponentAnalysisAdapter(n_components=2, mu=0.1), "conditional_shift", 0.1),
    "ot_mapping": (lambda: OTMappingAdapter(), lambda sk: sk.OTMappingAdapter(), "conditional_shift", 0.03),
    "kmm": (lambda: KMMReweighter(standardize=False), lambda sk: sk.KMMReweightAdapter(), "covariate_shift", 0.03),
    # skada's KLIEP takes a gamma grid, ours a sigma grid (LCV both); skada's ascent step differs
    "kliep": (lambda: KLIEPReweighter(standardize=False, random_state=0),
              lambda sk: sk.KLIEPReweightAdapter(gamma=[0.1, 1.0, 10.0], random_state=0), "covariate_shift", 0.05),
}


def test_every_registered_adapter_has_a_skada_comparison():
    from transferkit._registry import available

    assert set(PAIRS) == set(available("shallow_da"))


@pytest.mark.parametrize("key", sorted(PAIRS))
def test_ours_in_a_skada_pipeline_matches_skadas_adapter(skada, key):
    ours, theirs, shift, tol = PAIRS[key]
    X, y, sd = _data(skada, shift)
    Xt, yt = X[sd < 0], y[sd < 0]
    source_only = skada.make_da_pipeline(LogisticRegression()).fit(X, y, sample_domain=sd).score(Xt, yt)
    acc_ours = skada.make_da_pipeline(ours(), _clf()).fit(X, y, sample_domain=sd).score(Xt, yt)
    acc_skada = skada.make_da_pipeline(theirs(skada), _clf()).fit(X, y, sample_domain=sd).score(Xt, yt)
    print(f"{key}: ours {acc_ours:.3f}, skada {acc_skada:.3f}, source-only {source_only:.3f}")
    assert abs(acc_ours - acc_skada) <= tol, (acc_ours, acc_skada)
    if acc_skada > source_only + 0.05:  # skada's adapter helps here: ours must too
        assert acc_ours > source_only + 0.05, (acc_ours, source_only)


@pytest.mark.parametrize("cls", [KMMReweighter, KLIEPReweighter], ids=lambda c: c.__name__)
def test_reweighter_weights_reach_the_classifier_in_a_skada_pipeline(skada, cls):
    X, y, sd = _data(skada, "covariate_shift")
    Xt, yt = X[sd < 0], y[sd < 0]
    est = cls(random_state=0) if "random_state" in cls().get_params() else cls()
    # the explicit request the brief documents works, and so does the class default
    for adapter in (clone(est), clone(est).set_fit_request(sample_domain=True)):
        pipe = skada.make_da_pipeline(adapter, _clf()).fit(X, y, sample_domain=sd)
        fitted = pipe.steps[0][1].base_estimator_
        w = fitted.weights_
        assert not np.allclose(w, w.mean())  # a real reweighting, not uniform weights
        # the classifier is exactly the source-row LR weighted by the adapter's weights
        ref = LogisticRegression().fit(X[sd > 0], y[sd > 0], sample_weight=w)
        lr = pipe.steps[-1][1].base_estimator_
        np.testing.assert_allclose(lr.coef_, ref.coef_, rtol=1e-6)
        unweighted = LogisticRegression().fit(X[sd > 0], y[sd > 0])
        assert not np.allclose(lr.coef_, unweighted.coef_, rtol=1e-3)
    # and it is what DAClassifier does with the same adapter
    dac = DAClassifier(clone(est), LogisticRegression()).fit(X, np.where(sd > 0, y, -1), sample_domain=sd)
    np.testing.assert_allclose(pipe.predict_proba(Xt), dac.predict_proba(Xt), rtol=1e-6)
    # skada's y == -1 rule: no sample_domain, masked target labels
    auto = skada.make_da_pipeline(clone(est), _clf()).fit(X, np.where(sd > 0, y, -1))
    np.testing.assert_allclose(auto.predict_proba(Xt), pipe.predict_proba(Xt), rtol=1e-6)


def test_reweighter_needs_a_step_that_takes_the_weights(skada):
    """No step requests sample_weight: skada refuses the pipeline (as with its own reweighters)
    instead of dropping the weights."""
    X, y, sd = _data(skada, "covariate_shift")
    with pytest.raises(skada.base.IncompatibleMetadataError, match="sample_weight"):
        skada.make_da_pipeline(KMMReweighter(), LogisticRegression()).fit(X, y, sample_domain=sd)


def test_reweighter_is_a_plain_transformer_outside_skada(skada):
    """Only skada's selector gets the (X, params) tuple; everything else gets an array."""
    X, y, sd = _data(skada, "covariate_shift")
    out = KMMReweighter().fit_transform(X, sample_domain=sd)
    assert isinstance(out, np.ndarray) and np.array_equal(out, X)
    shared = skada.base.Shared(KMMReweighter())
    container = shared.fit_transform(X, np.where(sd > 0, y, -1), sample_domain=sd)
    _, _, params = container.merge_out(None)
    w = params["sample_weight"]
    assert w.shape == (len(X),) and (w[sd < 0] == 0).all()
    np.testing.assert_allclose(w[sd > 0], shared.base_estimator_.weights_)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(KMMReweighter(), LogisticRegression())
        assert isinstance(pipe.fit(X, y, sample_domain=sd).predict(X), np.ndarray)


def test_reweighters_beat_source_only_in_skada_pipelines(skada):
    X, y, sd = _data(skada, "covariate_shift")
    Xt, yt = X[sd < 0], y[sd < 0]
    source_only = skada.make_da_pipeline(LogisticRegression()).fit(X, y, sample_domain=sd).score(Xt, yt)
    theirs = skada.make_da_pipeline(skada.KMMReweightAdapter(), _clf()).fit(X, y, sample_domain=sd).score(Xt, yt)
    assert theirs > source_only + 0.05  # the setting where reweighting helps
    for est in (KMMReweighter(), KLIEPReweighter(random_state=0)):
        acc = skada.make_da_pipeline(est, _clf()).fit(X, y, sample_domain=sd).score(Xt, yt)
        assert acc > source_only + 0.05, (type(est).__name__, acc, source_only)


@pytest.mark.parametrize("adapter", [CORALAdapter(), KMMReweighter(), TCAAdapter(n_components=2, gamma=0.5)],
                         ids=lambda a: type(a).__name__)
def test_skada_scorers_work_on_our_pipelines(skada, adapter):
    from skada import metrics

    X, y, sd = _data(skada, "covariate_shift")
    y_masked = np.where(sd > 0, y, -1)
    pipe = skada.make_da_pipeline(
        clone(adapter), LogisticRegression().set_fit_request(sample_weight=True).set_score_request(sample_weight=True))
    scorers = [metrics.ImportanceWeightedScorer(), metrics.PredictionEntropyScorer(), metrics.SoftNeighborhoodDensity(),
               metrics.DeepEmbeddedValidation(), metrics.CircularValidation(), metrics.MaNoScorer(),
               metrics.MixValScorer()]
    cv = ShuffleSplit(n_splits=2, test_size=0.3, random_state=0)
    for scorer in scorers:
        scores = cross_validate(pipe, X, y_masked, cv=cv, params={"sample_domain": sd}, scoring=scorer,
                                error_score="raise")["test_score"]
        assert scores.shape == (2,) and np.isfinite(scores).all(), type(scorer).__name__
    # the supervised scorer is the target accuracy of the fitted pipeline
    fitted = clone(pipe).fit(X, y_masked, sample_domain=sd)
    score = metrics.SupervisedScorer()(fitted, X, y_masked, sample_domain=sd, target_labels=y)
    assert score == pytest.approx(accuracy_score(y[sd < 0], fitted.predict(X[sd < 0])))
    assert score > 0.9
