"""Shallow domain adaptation: properties a wrong implementation breaks, the scikit-learn
contract, and the errors a user sees."""

import inspect
import json
import sys
import warnings

import numpy as np
import pytest
import sklearn
from scipy.spatial.distance import pdist
from scipy.stats import norm, spearmanr
import scipy.sparse
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from transferkit._registry import available, get
from transferkit.adapt.shallow import (
    DIAGNOSTIC_KEYS,
    BaseReweighter,
    CORALAdapter,
    DAClassifier,
    KLIEPReweighter,
    KMMReweighter,
    OTMappingAdapter,
    ShallowConvergenceWarning,
    SubspaceAlignmentAdapter,
    TCAAdapter,
    effective_sample_size,
    make_shallow,
    shallow_options,
)
from transferkit.adapt.shallow.kmm import project_box_sum
from transferkit.adapt.shallow.subspace_alignment import mle_intrinsic_dimension
from transferkit.errors import ConfigError, DataError, MissingDependencyError, TransferKitWarning

KEYS = {"coral": CORALAdapter, "sa": SubspaceAlignmentAdapter, "tca": TCAAdapter, "ot_mapping": OTMappingAdapter,
        "kmm": KMMReweighter, "kliep": KLIEPReweighter}


def domains(Xs, Xt):
    X = np.vstack([Xs, Xt])
    sd = np.r_[np.ones(len(Xs), dtype=int), -2 * np.ones(len(Xt), dtype=int)]
    return X, sd


def mean_gap(Z, is_source):
    """Squared distance between the domain means over the total variance (scale-free)."""
    diff = Z[is_source].mean(0) - Z[~is_source].mean(0)
    return float(diff @ diff / np.trace(np.atleast_2d(np.cov(Z.T))))


@pytest.fixture(scope="module")
def shifted():
    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(120, 4)) @ rng.normal(size=(4, 4))
    Xt = rng.normal(size=(100, 4)) @ rng.normal(size=(4, 4)) + 2.0
    return domains(Xs, Xt)


@pytest.fixture(scope="module")
def covariate_shift_1d():
    """Source N(0, 1), target N(0.7, 0.6^2): the true ratio p_t/p_s at the source points."""
    rng = np.random.default_rng(1)
    xs, xt = rng.normal(0, 1, 300), rng.normal(0.7, 0.6, 300)
    X, sd = domains(xs[:, None], xt[:, None])
    return X, sd, norm.pdf(xs, 0.7, 0.6) / norm.pdf(xs, 0, 1)


# ---------------------------------------------------------------------------- CORAL
def test_coral_source_covariance_becomes_target_covariance(shifted):
    X, sd = shifted
    Xs, Xt = X[sd > 0], X[sd < 0]
    Z = CORALAdapter(reg=1e-9).fit_transform(X, sample_domain=sd)
    np.testing.assert_allclose(np.cov(Z[sd > 0].T), np.cov(Xt.T), atol=1e-6)
    np.testing.assert_allclose(Z[sd > 0].mean(0), Xt.mean(0), atol=1e-10)
    np.testing.assert_array_equal(Z[sd < 0], Xt)  # target rows untouched
    assert not np.allclose(np.cov(Xs.T), np.cov(Xt.T), atol=0.1)


def test_coral_reg_is_added_to_both_covariances(shifted):
    X, sd = shifted
    reg = 2.0
    c = CORALAdapter(reg=reg).fit(X, sample_domain=sd)
    A = c.coral_matrix_
    np.testing.assert_allclose(c.cov_source_, np.cov(X[sd > 0].T) + reg * np.eye(4))
    # A^T (C_s + reg I) A = C_t + reg I exactly
    np.testing.assert_allclose(A.T @ c.cov_source_ @ A, c.cov_target_, atol=1e-9)
    Z = CORALAdapter(reg=reg, center=False).fit_transform(X, sample_domain=sd)
    np.testing.assert_allclose(Z[sd > 0], X[sd > 0] @ A)


def test_coral_more_features_than_rows_needs_and_takes_reg():
    rng = np.random.default_rng(0)
    X, sd = domains(rng.normal(size=(10, 30)), rng.normal(size=(12, 30)) * 2)
    Z = CORALAdapter(reg=1.0).fit_transform(X, sample_domain=sd)
    assert np.isfinite(Z).all()


# ---------------------------------------------------------------------------- SA
def test_sa_full_dimension_is_a_rotation_onto_the_target_basis(shifted):
    X, sd = shifted
    sa = SubspaceAlignmentAdapter(n_components=None, standardize=False).fit(X, sample_domain=sd)
    assert sa.n_components_ == 4
    Z = sa.transform(X, sample_domain=sd)
    Xs, Xt = X[sd > 0], X[sd < 0]
    Pt = sa.components_target_
    # k = d: Ps Ps^T = I, so Xs Ps M = (Xs - mu_s) Pt, and distances are preserved
    np.testing.assert_allclose(Z[sd > 0], (Xs - Xs.mean(0)) @ Pt, atol=1e-10)
    np.testing.assert_allclose(Z[sd < 0], (Xt - Xt.mean(0)) @ Pt, atol=1e-10)
    np.testing.assert_allclose(pdist(Z[sd > 0]), pdist(Xs), rtol=1e-10)
    np.testing.assert_allclose(sa.alignment_ @ sa.alignment_.T, np.eye(4), atol=1e-10)


def test_sa_alignment_maps_source_basis_onto_target_basis():
    rng = np.random.default_rng(2)
    # both domains vary mostly in a 2-D subspace: same subspace, different bases and scales
    B = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    Xs = (rng.normal(size=(200, 6)) * [5, 3, 0.1, 0.1, 0.1, 0.1]) @ B.T
    Xt = (rng.normal(size=(200, 6)) * [3, 6, 0.1, 0.1, 0.1, 0.1]) @ B.T + 1.0
    X, sd = domains(Xs, Xt)
    sa = SubspaceAlignmentAdapter(n_components=2).fit(X, sample_domain=sd)
    Ps, Pt = sa.components_source_, sa.components_target_
    np.testing.assert_allclose(sa.alignment_, Ps.T @ Pt)
    # the target basis is (nearly) reachable from the source basis: ||Ps M - Pt|| ~ 0
    assert np.linalg.norm(Ps @ sa.alignment_ - Pt) < 0.05
    Z = sa.transform(X, sample_domain=sd)
    assert Z.shape == (400, 2)
    # new rows default to the target projection
    np.testing.assert_allclose(sa.transform(Xt[:5]), Z[sd < 0][:5])


# ---------------------------------------------------------------------------- TCA
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_tca_embedding_closes_the_mean_gap(kernel):
    rng = np.random.default_rng(3)
    Xs, Xt = rng.normal(size=(120, 5)), rng.normal(size=(120, 5))
    Xt[:, 0] += 3.0  # the shift lies along a high-variance direction, so plain (k)PCA keeps it
    X, sd = domains(Xs, Xt)
    tca = TCAAdapter(n_components=2, kernel=kernel, mu=1.0, standardize=False).fit(X, sample_domain=sd)
    Z = tca.transform(X, sample_domain=sd)
    kpca = TCAAdapter(n_components=2, kernel=kernel, mu=1e6, standardize=False).fit_transform(X, sample_domain=sd)
    raw = mean_gap(X, sd > 0)
    assert raw > 0.5
    assert mean_gap(Z, sd > 0) < 0.01 * raw
    assert mean_gap(kpca, sd > 0) > 0.5 * raw  # without the MMD term the shift stays
    np.testing.assert_allclose(Z.var(axis=0), 1.0, rtol=1e-6)  # unit-variance components
    # new rows embed through the kernel with the fitted rows
    np.testing.assert_allclose(tca.transform(X[:7]), Z[:7], atol=1e-8)


def test_tca_landmarks_when_too_many_rows():
    rng = np.random.default_rng(4)
    X, sd = domains(rng.normal(size=(80, 3)), rng.normal(size=(60, 3)) + 1)
    tca = TCAAdapter(n_components=3, max_samples=50, random_state=0).fit(X, sample_domain=sd)
    assert tca.X_fit_.shape == (50, 3) and tca.components_.shape == (50, 3)
    assert 2 <= tca.is_source_fit_.sum() <= 48
    assert tca.transform(X).shape == (140, 3)
    again = TCAAdapter(n_components=3, max_samples=50, random_state=0).fit(X, sample_domain=sd)
    np.testing.assert_array_equal(again.X_fit_, tca.X_fit_)  # seeded
    lin = TCAAdapter(n_components=10, kernel="linear").fit(X, sample_domain=sd)
    assert lin.n_components_ <= 3  # a 3-feature linear kernel has rank 3


# ---------------------------------------------------------------------------- OT mapping
def test_ot_emd_equal_sizes_maps_source_onto_a_permutation_of_target():
    rng = np.random.default_rng(5)
    Xs, Xt = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)) * 0.5 + [3, 0, 0]
    X, sd = domains(Xs, Xt)
    ot_ = OTMappingAdapter(method="emd").fit(X, sample_domain=sd)
    Z = ot_.transform(X, sample_domain=sd)
    D = ((Z[sd > 0][:, None] - Xt[None]) ** 2).sum(-1)
    assert D.min(axis=1).max() < 1e-20  # every mapped source row is a target row...
    assert sorted(D.argmin(axis=1)) == list(range(40))  # ...and each target row is hit once
    np.testing.assert_array_equal(Z[sd < 0], Xt)
    np.testing.assert_allclose(ot_.coupling_.sum(axis=1), 1 / 40)
    # out of sample: a new source row moves by its nearest fitted row's displacement
    x_new = Xs[:3] + 1e-3
    np.testing.assert_allclose(ot_.transform(x_new, sample_domain=[1, 1, 1]), x_new + ot_.displacement_[:3])


def test_ot_sinkhorn_mapping_is_a_smoothed_emd():
    rng = np.random.default_rng(6)
    X, sd = domains(rng.normal(size=(30, 2)), rng.normal(size=(45, 2)) + [2, 0])
    Xt = X[sd < 0]
    small = OTMappingAdapter(method="sinkhorn", reg_e=0.05, norm="max", max_iter=5000).fit(X, sample_domain=sd)
    big = OTMappingAdapter(method="sinkhorn", reg_e=100.0, norm="max").fit(X, sample_domain=sd)
    np.testing.assert_allclose(small.coupling_.sum(axis=0), 1 / 45, rtol=1e-6)
    Zb = big.transform(X, sample_domain=sd)[sd > 0]
    np.testing.assert_allclose(Zb, np.broadcast_to(Xt.mean(0), Zb.shape), atol=0.05)  # all mass spread evenly
    Zs = small.transform(X, sample_domain=sd)[sd > 0]
    np.testing.assert_allclose(Zs.mean(0), Xt.mean(0), atol=1e-3)
    assert Zs.std(0).min() > 0.5  # small reg keeps the spread


def test_ot_sinkhorn_survives_underflow():
    rng = np.random.default_rng(7)
    X, sd = domains(rng.normal(size=(20, 2)) * 10, rng.normal(size=(20, 2)) * 10 + 50)
    with warnings.catch_warnings():  # exp(-C / 5) underflows: the log domain takes over
        warnings.simplefilter("ignore", ConvergenceWarning)
        Z = OTMappingAdapter(method="sinkhorn", reg_e=5.0, max_iter=2000).fit_transform(X, sample_domain=sd)
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(Z[sd > 0].mean(0), X[sd < 0].mean(0), atol=1.0)


def test_ot_n_iter_reports_the_solver(shifted):
    X, sd = shifted
    assert OTMappingAdapter().fit(X, sample_domain=sd).n_iter_ == 1  # one exact solve
    with pytest.warns(ConvergenceWarning, match="stopped at max_iter=5 .* increase max_iter"):
        assert OTMappingAdapter(max_iter=5).fit(X, sample_domain=sd).n_iter_ == 5
    short = OTMappingAdapter(method="sinkhorn", norm="median", reg_e=0.05, max_iter=30)
    with pytest.warns(ConvergenceWarning, match="did not reach tol"):
        assert short.fit(X, sample_domain=sd).n_iter_ == 30
    long = OTMappingAdapter(method="sinkhorn", norm="median", reg_e=1.0, tol=1e-6, max_iter=5000)
    assert 1 <= long.fit(X, sample_domain=sd).n_iter_ < 5000


# ---------------------------------------------------------------------------- reweighting
@pytest.mark.parametrize("est", [KMMReweighter(), KMMReweighter(solver="slsqp"), KLIEPReweighter(random_state=0)],
                         ids=["kmm_pgd", "kmm_slsqp", "kliep"])
def test_weights_follow_the_true_density_ratio(est, covariate_shift_1d):
    X, sd, ratio = covariate_shift_1d
    w = clone(est).fit(X, sample_domain=sd).weights_
    assert w.shape == (300,) and (w >= 0).all()
    assert spearmanr(w, ratio)[0] > 0.8
    assert abs(w.mean() - 1.0) < 0.05
    xs = X[sd > 0, 0]
    assert w[np.abs(xs - 0.7) < 0.3].mean() > 3 * w[np.abs(xs - 0.7) > 1.5].mean()


def test_kmm_solvers_agree_and_weights_extend_to_rows(covariate_shift_1d):
    X, sd, _ = covariate_shift_1d
    pgd = KMMReweighter(gamma=0.5).fit(X, sample_domain=sd)
    qp = KMMReweighter(gamma=0.5, solver="slsqp").fit(X, sample_domain=sd)
    assert abs(pgd.objective_ - qp.objective_) < 1e-4 * abs(qp.objective_)
    w = pgd.compute_weights(X, sample_domain=sd)
    np.testing.assert_array_equal(w[sd > 0], pgd.weights_)
    assert (w[sd < 0] == 0).all()
    w_new = pgd.compute_weights([[0.7], [-3.0]])  # default: rows are source rows
    assert w_new[0] > w_new[1] >= 0
    tight = KMMReweighter(eps=0.01).fit(X, sample_domain=sd).weights_
    assert abs(tight.mean() - 1) <= 0.01 + 1e-9


def test_box_sum_projection_is_the_euclidean_projection():
    rng = np.random.default_rng(8)
    v = rng.normal(2, 3, 50)
    p = project_box_sum(v, 4.0, 10.0, 20.0)
    assert p.min() >= 0 and p.max() <= 4 and 10 - 1e-9 <= p.sum() <= 20 + 1e-9
    for _ in range(200):  # no feasible point is closer to v
        q = project_box_sum(p + rng.normal(0, 0.5, 50), 4.0, 10.0, 20.0)
        assert np.linalg.norm(q - v) >= np.linalg.norm(p - v) - 1e-9


def test_kliep_is_seeded_and_normalized(covariate_shift_1d):
    X, sd, _ = covariate_shift_1d
    a = KLIEPReweighter(random_state=3).fit(X, sample_domain=sd)
    b = KLIEPReweighter(random_state=3).fit(X, sample_domain=sd)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert a.sigma_ in a.cv_scores_ and len(a.cv_scores_) == 5
    assert abs(a.weights_.mean() - 1) < 1e-9  # the normalization constraint
    fixed = KLIEPReweighter(sigma=0.5, random_state=0).fit(X, sample_domain=sd)
    assert fixed.sigma_ == 0.5 and fixed.cv_scores_ == {}
    np.testing.assert_allclose(fixed.compute_weights(X[sd > 0]), fixed.weights_)
    # n_iter_: ascent steps tried over the 7 learning rates, at most max_iter each
    assert 7 <= a.n_iter_ <= 7 * a.max_iter
    assert a.converged_ and a.diagnostics_["converged"] is True
    assert KLIEPReweighter(sigma=0.5, max_iter=1, random_state=0).fit(X, sample_domain=sd).n_iter_ == 7
    # a narrow kernel needs more than one step per learning rate: still improving at the end
    with pytest.warns(ShallowConvergenceWarning, match="kliep: the likelihood ascent was still improving after "
                                                       "max_iter=1 steps .* raise max_iter"):
        capped = KLIEPReweighter(sigma=0.05, max_iter=1, random_state=0).fit(X, sample_domain=sd)
    assert capped.n_iter_ == 7 and not capped.converged_ and capped.diagnostics_["converged"] is False


# ---------------------------------------------------------------------------- DAClassifier
@pytest.fixture(scope="module")
def shifted_classes():
    """Two classes; the target is the source shifted by +3 and stretched: source-only fails."""
    rng = np.random.default_rng(9)
    ys, yt = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    Xs = rng.normal(size=(200, 2)) * 0.5 + np.c_[2 * ys - 1, np.zeros(200)]
    Xt = (rng.normal(size=(200, 2)) * 0.5 + np.c_[2 * yt - 1, np.zeros(200)]) * [1.5, 1.0] + [3.0, 1.0]
    X, sd = domains(Xs, Xt)
    return X, np.r_[ys, -np.ones(200, dtype=int)], sd, Xt, yt


@pytest.mark.parametrize("adapter", [CORALAdapter(reg=1e-3), OTMappingAdapter(), SubspaceAlignmentAdapter(2)],
                         ids=lambda a: type(a).__name__)
def test_da_classifier_beats_source_only(adapter, shifted_classes):
    X, y, sd, Xt, yt = shifted_classes
    source_only = LogisticRegression().fit(X[sd > 0], y[sd > 0]).score(Xt, yt)
    clf = DAClassifier(adapter, make_pipeline(StandardScaler(), LogisticRegression())).fit(X, y, sample_domain=sd)
    assert source_only < 0.75
    assert clf.score(Xt, yt) > 0.9
    assert clf.predict_proba(Xt).shape == (200, 2)
    np.testing.assert_array_equal(clf.classes_, [0, 1])


def test_da_classifier_passes_weights_and_ignores_target_labels(shifted_classes):
    X, y, sd, Xt, yt = shifted_classes
    y_leak = np.r_[y[sd > 0], yt]  # target labels given: must not change anything
    a = DAClassifier("kmm", make_pipeline(StandardScaler(), LogisticRegression())).fit(X, y, sample_domain=sd)
    b = DAClassifier(KMMReweighter(), make_pipeline(StandardScaler(), LogisticRegression())).fit(
        X, y_leak, sample_domain=sd)
    np.testing.assert_allclose(a.predict_proba(Xt), b.predict_proba(Xt))
    unweighted = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[sd > 0], y[sd > 0])
    assert not np.allclose(a.predict_proba(Xt), unweighted.predict_proba(Xt))  # weights reached the LR
    with sklearn.config_context(enable_metadata_routing=True):  # what importing skada switches on
        routed = DAClassifier(KMMReweighter(), make_pipeline(StandardScaler(), LogisticRegression())).fit(
            X, y, sample_domain=sd)
    np.testing.assert_allclose(routed.predict_proba(Xt), a.predict_proba(Xt))
    with pytest.raises(ConfigError, match="takes no sample_weight"):
        from sklearn.neighbors import KNeighborsClassifier

        DAClassifier(KMMReweighter(), KNeighborsClassifier()).fit(X, y, sample_domain=sd)


@pytest.mark.parametrize("adapter", [CORALAdapter(reg=1e-3), KMMReweighter()], ids=lambda a: type(a).__name__)
def test_da_classifier_follows_the_sklearn_contract(adapter, shifted_classes):
    X, y, sd, Xt, yt = shifted_classes
    clf = DAClassifier(adapter, LogisticRegression())
    for method in ("predict", "predict_proba", "decision_function"):
        with pytest.raises(NotFittedError, match="DAClassifier instance is not fitted yet"):
            getattr(clf, method)(Xt)
    ref = clone(clf).fit(X, y, sample_domain=sd)
    assert ref.n_features_in_ == 2
    # skada's rule: without sample_domain, the y == -1 rows are the target rows
    auto = clone(clf).fit(X, y)
    np.testing.assert_allclose(auto.predict_proba(Xt), ref.predict_proba(Xt))
    with pytest.raises(DataError, match=r"Unknown label type 'continuous' .* this is a classifier"):
        clone(clf).fit(X, y + 0.5, sample_domain=sd)
    with pytest.raises(DataError, match=r"y should be a 1d array, got an array of shape \(400, 2\)"):
        clone(clf).fit(X, np.c_[y, y], sample_domain=sd)
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed"):
        col = clone(clf).fit(X, y[:, None], sample_domain=sd)
    np.testing.assert_allclose(col.predict_proba(Xt), ref.predict_proba(Xt))
    with pytest.raises(DataError, match="X has 1 features, but DAClassifier is expecting 2 features as input"):
        ref.predict(Xt[:, :1])
    with pytest.raises(DataError, match="Reshape your data"):
        ref.predict(Xt[0])


# ---------------------------------------------------------------------------- contract
#: every registered adapter: a new registry entry gets the contract and error tests below
ADAPTERS = available("shallow_da")


def test_registry_names():
    assert set(KEYS) <= set(ADAPTERS)
    for key, cls in KEYS.items():
        assert get("shallow_da", key) is cls


@pytest.mark.parametrize("key", ADAPTERS)
def test_sklearn_contract(key, shifted):
    X, sd = shifted
    cls = get("shallow_da", key)
    sig = inspect.signature(cls.__init__)
    assert all(p.default is not inspect.Parameter.empty for k, p in sig.parameters.items() if k != "self")
    est = cls()
    params = est.get_params()
    assert set(params) == {k for k in sig.parameters if k != "self"}
    assert vars(est) == params, "__init__ must only store its parameters"
    c = clone(est)
    assert c.get_params() == params
    y = np.r_[np.zeros(int((sd > 0).sum()), dtype=int), -np.ones(int((sd < 0).sum()), dtype=int)]
    assert est.fit(X, y, sample_domain=sd) is est
    fitted = set(vars(est)) - set(params)
    assert fitted and all(a.endswith("_") for a in fitted), fitted
    assert est.n_features_in_ == 4
    out = est.transform(X, sample_domain=sd)
    assert out.shape[0] == len(X) and np.isfinite(out).all()
    assert est.transform(X[:3]).shape[0] == 3  # no sample_domain: target rows
    if isinstance(est, BaseReweighter):
        assert est.weights_.shape == ((sd > 0).sum(),)
        np.testing.assert_allclose(est.compute_weights(X, sample_domain=sd)[sd > 0], est.weights_)
    # a clone fitted on the same data gives the same result (deterministic with default seeds)
    c.fit(X, y, sample_domain=sd)
    np.testing.assert_allclose(c.transform(X, sample_domain=sd), out)
    # skada's rule without sample_domain: y == -1 marks the target rows; the same fit
    y_src = np.r_[np.arange(int((sd > 0).sum())) % 2, -np.ones(int((sd < 0).sum()), dtype=int)]
    auto = clone(est).fit(X, y_src)
    np.testing.assert_allclose(auto.transform(X, sample_domain=sd), out)
    # ... and fit_transform maps the rows with the domains it found
    np.testing.assert_allclose(clone(est).fit_transform(X, y_src), out)
    assert est.__sklearn_tags__().transformer_tags is not None
    if "max_iter" in est.get_params():
        assert est.n_iter_ >= 1
    # diagnostics_: the same keys for every estimator, plain JSON values, the counts of this fit
    diag = est.diagnostics_
    assert tuple(diag) == DIAGNOSTIC_KEYS and diag["estimator"] == key
    assert json.loads(json.dumps(diag)) == diag
    assert diag["n_samples"] == len(X) and 1 <= diag["n_fit_samples"] <= len(X)
    if isinstance(est, BaseReweighter):
        assert diag["ess"] == pytest.approx(effective_sample_size(est.weights_)) and diag["converged"] is not None
    if hasattr(est, "n_components_"):
        assert diag["n_components"] == est.n_components_


@pytest.mark.parametrize("key", ADAPTERS)
def test_no_target_rows_pool_the_rows_with_a_warning(key, shifted):
    """No sample_domain and no y == -1 (what scikit-learn's own calls give): every row is both
    source and target, so the adapter learns the no-shift case of its map, and says so."""
    X, _ = shifted
    est = get("shallow_da", key)()
    with pytest.warns(TransferKitWarning, match=r"no target rows identified \(no sample_domain, and no y == -1\)"):
        est.fit(X, np.zeros(len(X), dtype=int))
    if isinstance(est, BaseReweighter):
        np.testing.assert_allclose(est.weights_, 1.0, atol=0.1)  # nothing to reweight
        assert est.weights_.shape == (len(X),)
    else:  # source map == target map
        np.testing.assert_allclose(est.transform(X, sample_domain=np.ones(len(X))), est.transform(X), atol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferKitWarning)
        np.testing.assert_allclose(clone(est).fit_transform(X), clone(est).fit(X).transform(X), atol=1e-8)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("key", ADAPTERS)
def test_clear_errors(key, shifted):
    X, sd = shifted
    est = get("shallow_da", key)()
    with pytest.raises(NotFittedError):
        est.transform(X)
    if isinstance(est, BaseReweighter):
        with pytest.raises(NotFittedError):
            est.compute_weights(X)
    with pytest.raises(DataError, match=r"every row has y = -1 \(or NaN: unlabeled target\) .* no source row"):
        est.fit(X, -np.ones(len(X), dtype=int))
    with pytest.raises(DataError, match=r"both positive \(source\) and negative \(target\).*only source"):
        est.fit(X, sample_domain=np.ones(len(X), dtype=int))
    with pytest.raises(DataError, match="only target"):
        est.fit(X, sample_domain=-np.ones(len(X), dtype=int))
    with pytest.raises(DataError, match="one domain label per row"):
        est.fit(X, sample_domain=sd[:-1])
    with pytest.raises(DataError, match="one label per row"):
        est.fit(X, np.zeros(len(X) - 1), sample_domain=sd)
    with pytest.raises(DataError, match="is 0 for 1 rows"):
        est.fit(X, sample_domain=np.r_[sd[:-1], 0])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN or infinite values in 1 rows"):
        est.fit(Xn, sample_domain=sd)
    with pytest.raises(DataError, match=r"1-D array of shape \(220,\); Reshape your data"):
        est.fit(X[:, 0], sample_domain=sd)
    with pytest.raises(DataError, match="Complex data not supported"):
        est.fit(X + 1j, sample_domain=sd)
    with pytest.raises(DataError, match=r"X has 0 sample\(s\)"):
        est.fit(X[:0])
    with pytest.raises(DataError, match=r"X has 0 feature\(s\)"):
        est.fit(X[:, :0], sample_domain=sd)
    with pytest.raises(DataError, match="sparse matrix .* pass X.toarray()"):
        est.fit(scipy.sparse.csr_matrix(X), sample_domain=sd)
    Xo = X.astype(object)
    Xo[0, 0] = {"a": 1}
    with pytest.raises(TypeError, match="argument must be a string or a real number"):
        est.fit(Xo, sample_domain=sd)
    est.fit(X, sample_domain=sd)
    name = type(est).__name__
    with pytest.raises(DataError, match=rf"X has 3 features, but {name} is expecting 4 features as input"):
        est.transform(X[:, :3])
    with pytest.raises(DataError, match="NaN or infinite"):
        est.transform(Xn)


def test_parameter_errors(shifted):
    X, sd = shifted
    with pytest.raises(ConfigError, match="reg must be >= 0"):
        CORALAdapter(reg=-1).fit(X, sample_domain=sd)
    with pytest.raises(ConfigError, match="kernel='rbff' is not valid.*Did you mean 'rbf'"):
        TCAAdapter(kernel="rbff").fit(X, sample_domain=sd)
    with pytest.raises(ConfigError, match="mu must be > 0"):
        TCAAdapter(mu=0).fit(X, sample_domain=sd)
    with pytest.raises(ConfigError, match="method='sinkorn'.*Did you mean 'sinkhorn'"):
        OTMappingAdapter(method="sinkorn").fit(X, sample_domain=sd)
    with pytest.raises(ConfigError, match="B=0.01 is too small"):
        KMMReweighter(B=0.01, eps=0.1).fit(X, sample_domain=sd)
    with pytest.raises(ConfigError, match="sigma must be a positive number"):
        KLIEPReweighter(sigma=-1.0).fit(X, sample_domain=sd)
    with pytest.raises(ConfigError, match="adapter must be a shallow adapter"):
        DAClassifier(LogisticRegression()).fit(X, np.zeros(len(X)), sample_domain=sd)
    with pytest.raises(ConfigError, match="unknown shallow_da 'corall'.*Did you mean 'coral'"):
        DAClassifier("corall").fit(X, np.zeros(len(X)), sample_domain=sd)
    with pytest.raises(DataError, match="requires y to be passed, but the target y is None"):
        DAClassifier("coral").fit(X, None, sample_domain=sd)


def test_missing_pot_names_the_extra(shifted, monkeypatch):
    X, sd = shifted
    monkeypatch.setitem(sys.modules, "ot", None)  # makes `import ot` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'transferkit\[ot\]'"):
        OTMappingAdapter().fit(X, sample_domain=sd)


# ---------------------------------------------------------------------------- seeds, subsamples
def _two_blobs(n_s=80, n_t=60, d=3, seed=4):
    rng = np.random.default_rng(seed)
    return domains(rng.normal(size=(n_s, d)), rng.normal(size=(n_t, d)) + 1)


#: estimator -> options that make its randomness matter on _two_blobs (a subsample or centres)
RANDOMIZED = {
    "tca": {"n_components": 3, "max_samples": 50},
    "kmm": {"max_samples": 40},
    "kliep": {"n_centers": 20},
}


def _result(est, X, sd):
    return est.weights_ if isinstance(est, BaseReweighter) else est.transform(X, sample_domain=sd)


@pytest.mark.parametrize("key", sorted(RANDOMIZED))
def test_randomness_is_seeded_by_random_state(key):
    """Default random_state=0: two fits are identical (TCA's were not, issue 13); another seed
    draws another subsample (or centres and folds) and gives another result."""
    X, sd = _two_blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferKitWarning)  # the subsample warnings
        a = make_shallow(key, RANDOMIZED[key]).fit(X, sample_domain=sd)
        b = make_shallow(key, RANDOMIZED[key]).fit(X, sample_domain=sd)
        c = make_shallow(key, {**RANDOMIZED[key], "random_state": 1}).fit(X, sample_domain=sd)
    assert a.random_state == 0
    np.testing.assert_array_equal(_result(a, X, sd), _result(b, X, sd))
    assert not np.allclose(_result(a, X, sd), _result(c, X, sd))


def test_da_classifier_seeds_its_adapter():
    """DAClassifier("tca") three times: one answer (issue 13 saw 0.8893 / 0.8903 / 0.8917); its
    random_state reaches the adapter, and a seed set in adapter_options wins."""
    X, sd = _two_blobs(300, 300, 3)
    y = np.r_[(X[sd > 0, 0] + X[sd > 0, 1] > 0).astype(int), -np.ones(300, dtype=int)]
    Xt = X[sd < 0]
    opts = {"max_samples": 100, "n_components": 5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferKitWarning)
        probas = [DAClassifier("tca", adapter_options=opts).fit(X, y, sample_domain=sd).predict_proba(Xt)
                  for _ in range(3)]
        other = DAClassifier("tca", adapter_options=opts, random_state=1).fit(X, y, sample_domain=sd)
        pinned = DAClassifier("tca", adapter_options={**opts, "random_state": 0}, random_state=1).fit(
            X, y, sample_domain=sd)
        inst = DAClassifier(TCAAdapter(**opts, random_state=5), random_state=1).fit(X, y, sample_domain=sd)
    np.testing.assert_array_equal(probas[0], probas[1])
    np.testing.assert_array_equal(probas[0], probas[2])
    assert other.adapter_.random_state == 1 and not np.allclose(other.predict_proba(Xt), probas[0])
    assert pinned.adapter_.random_state == 0
    np.testing.assert_array_equal(pinned.predict_proba(Xt), probas[0])
    assert inst.adapter_.random_state == 1  # replaced, as scikit-learn's ensembles seed their members


def test_tca_subsample_is_stated_recorded_and_warned():
    X, sd = _two_blobs()
    with pytest.warns(TransferKitWarning, match=r"tca: fitted its kernel on 50 of 140 rows \(max_samples=50, a "
                                                r"seeded subsample, random_state=0\); raise max_samples .*O\(n\^2\) "
                                                r"memory"):
        tca = TCAAdapter(n_components=3, max_samples=50).fit(X, sample_domain=sd)
    assert tca.n_fit_samples_ == 50 == tca.diagnostics_["n_fit_samples"] and tca.diagnostics_["n_samples"] == 140
    assert tca.diagnostics_["warnings"] == [next(w for w in tca.diagnostics_["warnings"])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferKitWarning)  # no subsample, no warning
        full = TCAAdapter(n_components=3).fit(X, sample_domain=sd)
    assert full.n_fit_samples_ == 140 and full.diagnostics_["warnings"] == []


def test_kmm_subsample_keeps_the_fitted_weights_and_extends_them():
    X, sd = _two_blobs()
    with pytest.warns(TransferKitWarning, match=r"kmm: fitted its weights on 80 of 140 rows \(max_samples=40"):
        kmm = KMMReweighter(max_samples=40).fit(X, sample_domain=sd)
    assert kmm.n_fit_samples_ == 80 and kmm.X_source_.shape == (40, 3) and kmm.weights_.shape == (80,)
    Z = (X[sd > 0] - kmm.input_mean_) / kmm.input_scale_
    fitted = (Z[:, None, :] == kmm.X_source_[None]).all(-1).any(1)
    assert fitted.sum() == 40
    np.testing.assert_array_equal(np.sort(kmm.weights_[fitted]), np.sort(kmm.beta_))
    # the rows left out get the kernel average of the fitted weights: inside their range
    assert kmm.beta_.min() - 1e-12 <= kmm.weights_[~fitted].min() <= kmm.weights_[~fitted].max() <= kmm.beta_.max()


# ---------------------------------------------------------------------------- convergence, ESS
def test_effective_sample_size_closed_forms():
    assert effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert effective_sample_size(np.r_[1.0, np.zeros(9)]) == pytest.approx(1)
    assert effective_sample_size(np.r_[np.ones(5), np.zeros(5)] * 7) == pytest.approx(5)
    assert effective_sample_size(np.zeros(4)) == 0.0


def test_kmm_that_stops_early_says_so(covariate_shift_1d):
    X, sd, _ = covariate_shift_1d
    with pytest.warns(ShallowConvergenceWarning, match=r"kmm: the projected gradient \(FISTA\) stopped at "
                                                       r"max_iter=3 before converging .* raise max_iter"):
        kmm = KMMReweighter(max_iter=3).fit(X, sample_domain=sd)
    assert issubclass(ShallowConvergenceWarning, TransferKitWarning)
    assert issubclass(ShallowConvergenceWarning, ConvergenceWarning)
    assert not kmm.converged_ and kmm.n_iter_ == 3
    d = kmm.diagnostics_
    assert d["converged"] is False and d["n_iter"] == 3 and "stopped at max_iter=3" in d["warnings"][0]
    done = KMMReweighter().fit(X, sample_domain=sd)
    assert done.converged_ and done.n_iter_ < 1000 and done.diagnostics_["warnings"] == []


@pytest.mark.parametrize("est", [KMMReweighter(), KLIEPReweighter()], ids=["kmm", "kliep"])
def test_weights_on_a_few_rows_are_warned_about(est, covariate_shift_1d):
    """Domains that barely overlap (target N(4, 0.3^2), source N(0, 1)): the weights rest on the
    few source rows near 4, and the fit says so; on overlapping domains it does not."""
    rng = np.random.default_rng(11)
    X, sd = domains(rng.normal(0, 1, (300, 1)), rng.normal(4, 0.3, (200, 1)))
    with pytest.warns(TransferKitWarning, match=r"(kmm|kliep): the importance weights have an effective sample size "
                                                r"of \d+ of 300 source rows \(\d+\.\d%, below 10%\)"):
        fitted = clone(est).fit(X, sample_domain=sd)
    assert fitted.ess_ < 30 and fitted.ess_ == pytest.approx(effective_sample_size(fitted.weights_))
    assert fitted.diagnostics_["ess_fraction"] == pytest.approx(fitted.ess_ / 300)
    X1, sd1, _ = covariate_shift_1d
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferKitWarning)
        ok = clone(est).fit(X1, sample_domain=sd1)
    assert ok.ess_ > 0.1 * 300


def test_kliep_search_goes_on_past_the_edge_of_its_grid(covariate_shift_1d):
    """A grid of widths far too narrow: LCV keeps doubling while the held-out likelihood rises,
    and says so when it is still rising at the end of the search."""
    X, sd, _ = covariate_shift_1d
    with pytest.warns(TransferKitWarning, match=r"kliep: likelihood cross-validation chose the largest kernel width "
                                                r"searched \(sigma=.*\), so the best width may lie beyond it"):
        k = KLIEPReweighter(sigma_grid=(0.001, 0.002)).fit(X, sample_domain=sd)
    assert len(k.cv_scores_) == 2 + 4 and k.sigma_ == max(k.cv_scores_)
    scores = [k.cv_scores_[s] for s in sorted(k.cv_scores_)]
    assert all(b > a for a, b in zip(scores, scores[1:]))  # still rising: hence the warning
    wide = KLIEPReweighter().fit(X, sample_domain=sd)  # the default grid has its best inside
    assert min(wide.cv_scores_) < wide.sigma_ < max(wide.cv_scores_) and wide.diagnostics_["warnings"] == []


def test_ot_records_convergence(shifted):
    X, sd = shifted
    with pytest.warns(ShallowConvergenceWarning, match="ot_mapping: the exact solver stopped at max_iter=5"):
        capped = OTMappingAdapter(max_iter=5).fit(X, sample_domain=sd)
    assert not capped.converged_ and capped.diagnostics_["converged"] is False
    assert OTMappingAdapter().fit(X, sample_domain=sd).converged_


# ---------------------------------------------------------------------------- standardize, SA's k
@pytest.mark.parametrize("key", ["sa", "tca", "kmm", "kliep"])
def test_standardize_is_the_pooled_z_score(key):
    """standardize=True is the same fit as standardize=False on rows z-scored with the mean and
    std of source and target together (not per domain: that would itself align the means)."""
    rng = np.random.default_rng(12)
    X, sd = domains(rng.normal(size=(70, 3)) * [1, 100, 0.01], rng.normal(size=(50, 3)) * [1, 100, 0.01] + [1, 50, 0])
    Z = (X - X.mean(0)) / X.std(0)
    on = make_shallow(key, {"standardize": True}).fit(X, sample_domain=sd)
    off = make_shallow(key, {"standardize": False}).fit(Z, sample_domain=sd)
    np.testing.assert_allclose(on.input_mean_, X.mean(0))
    np.testing.assert_allclose(_result(on, X, sd), _result(off, Z, sd), rtol=1e-6, atol=1e-8)
    raw, scaled = _result(make_shallow(key, {"standardize": False}).fit(X, sample_domain=sd), X, sd), _result(on, X, sd)
    assert raw.shape != scaled.shape or not np.allclose(raw, scaled, atol=1e-3)  # and it matters here


def test_mle_intrinsic_dimension_finds_a_known_dimension():
    """Levina & Bickel's estimate on a 4-dimensional Gaussian embedded linearly in 30 dimensions."""
    rng = np.random.default_rng(13)
    B = np.linalg.qr(rng.normal(size=(30, 30)))[0][:, :4]
    est = mle_intrinsic_dimension(rng.normal(size=(1000, 4)) @ B.T)
    assert 3.5 < est < 4.5
    # full-dimensional: the estimate is biased low as the dimension grows (Levina & Bickel, Sec. 4)
    assert 7.5 < mle_intrinsic_dimension(rng.normal(size=(1000, 10))) < 10.5
    assert mle_intrinsic_dimension(np.zeros((10, 3))) is None  # duplicates only: no neighbourhood
    a = mle_intrinsic_dimension(rng.normal(size=(400, 6)), max_samples=100, random_state=0)
    b = mle_intrinsic_dimension(rng.normal(size=(400, 6)), max_samples=100, random_state=1)
    assert a != b


def test_sa_auto_keeps_the_subspace_or_every_direction():
    """n_components='auto': the intrinsic dimension (rounded up) where the data lie near a
    subspace much smaller than the feature space; every direction on a full-dimensional table."""
    rng = np.random.default_rng(14)
    B = np.linalg.qr(rng.normal(size=(40, 40)))[0][:, :3]
    low = lambda n, shift: rng.normal(size=(n, 3)) * [3, 2, 1] @ B.T + 0.01 * rng.normal(size=(n, 40)) + shift
    X, sd = domains(low(300, 0.0), low(300, 0.5))
    sa = SubspaceAlignmentAdapter(n_components="auto").fit(X, sample_domain=sd)
    assert sa.n_components_ == 3 == sa.diagnostics_["n_components"]
    assert SubspaceAlignmentAdapter().fit(X, sample_domain=sd).n_components_ == 40  # the default keeps every direction
    assert all(2.5 < v <= 3.3 for v in sa.intrinsic_dimension_)
    X6, sd6 = domains(rng.normal(size=(200, 6)), rng.normal(size=(200, 6)) + 1)
    assert SubspaceAlignmentAdapter(n_components="auto").fit(X6, sample_domain=sd6).n_components_ == 6
    assert SubspaceAlignmentAdapter(n_components=2).fit(X6, sample_domain=sd6).intrinsic_dimension_ is None


# ---------------------------------------------------------------------------- defaults, options
def label_shifted_table(n=600, seed=0):
    """Six columns in their own units (an age, an income, a count, a flag, a ratio, a score), the
    positive class 19% of the source and 42% of the target, and a covariate drift (issue 13's
    table, generated)."""
    rng = np.random.default_rng(seed)

    def draw(pos, shift):
        y = (rng.random(n) < pos).astype(int)
        X = np.c_[np.round(rng.normal(40 + 6 * y + 4 * shift, 11, n)),
                  np.exp(rng.normal(10.4 + 0.35 * y + 0.15 * shift, 0.6, n)),
                  rng.poisson(2 + 2.5 * y + shift, n),
                  (rng.random(n) < 0.3 + 0.25 * y).astype(float),
                  rng.beta(2 + y, 5, n) + 0.05 * shift,
                  rng.gamma(2.0, 50 + 10 * shift, n) + 30 * y * rng.random(n)]
        return X, y

    Xs, ys = draw(0.19, 0.0)
    Xt, yt = draw(0.42, 1.0)
    X, sd = domains(Xs, Xt)
    return X, np.r_[ys, -np.ones(n, dtype=int)], sd, Xt, yt


@pytest.mark.parametrize("key", ["tca", "kliep", "kmm", "sa"])
def test_defaults_do_not_collapse_on_a_label_shifted_table(key):
    """On this table (seed 0: majority class 0.613, source-only logistic regression 0.777, target
    oracle 0.798) TCA's old defaults (raw columns: the kernel saw only the income) predicted the
    majority class for 97% of the target rows (0.632), as skada's TCA does on the raw columns
    (0.613, every row); with skada's StandardScaler in front it reaches 0.743. The defaults now:
    tca 0.747, kliep 0.762, kmm 0.763, sa 0.755 (SA re-centres each domain, which under label
    shift predicts fewer positives: 18% for the target's 42%, below source-only but no collapse)."""
    X, y, sd, Xt, yt = label_shifted_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TransferKitWarning)  # TCA's subsample of 1200 rows
        clf = DAClassifier(key).fit(X, y, sample_domain=sd)
    pred = clf.predict(Xt)
    top = max(pred.mean(), 1 - pred.mean())
    assert top < 0.9 and clf.diagnostics_["target_top_class_share"] == pytest.approx(top)
    assert np.mean(pred == yt) > 0.7  # majority class 0.613


def test_one_class_predictions_are_warned_about():
    """A model that predicts one class for every target row says so, and records it."""
    rng = np.random.default_rng(15)
    X, sd = domains(rng.normal(size=(100, 2)), rng.normal(size=(80, 2)) + [6, 0])
    y = np.r_[(X[sd > 0, 0] > 0).astype(int), -np.ones(80, dtype=int)]
    with pytest.warns(TransferKitWarning, match=r"DAClassifier\('kliep'\) predicts class 1 for 80 of 80 target rows "
                                                r"\(100.0%; \d+% of the labeled source rows\): a one-class model"):
        clf = DAClassifier("kliep").fit(X, y, sample_domain=sd)
    assert clf.diagnostics_["target_top_class_share"] == 1.0
    assert any("one-class model" in w for w in clf.diagnostics_["warnings"])
    assert set(DIAGNOSTIC_KEYS) < set(clf.diagnostics_)


def test_every_option_by_name_and_unknown_options_are_errors():
    assert shallow_options("sa") == ("n_components", "random_state", "standardize")
    for key in ADAPTERS:  # every constructor parameter is an option
        est = make_shallow(key, {})
        assert set(shallow_options(key)) == set(est.get_params())
    assert make_shallow("tca", {"n_components": 7, "mu": 2.0}).get_params()["n_components"] == 7
    with pytest.raises(ConfigError, match=r"^options has an unknown option 'n_component' for shallow estimator 'sa'\. "
                                          r"Did you mean 'n_components'\? Options: n_components, random_state, "
                                          r"standardize\.$"):
        make_shallow("sa", {"n_component": 3})
    with pytest.raises(ConfigError, match=r"adapt\.loss_options has an unknown option 'gama' .* Did you mean 'gamma'"):
        make_shallow("tca", {"gama": 1.0}, where="adapt.loss_options")
    with pytest.raises(ConfigError, match=r"^adapt\.loss_options: n_components must be >= 1, got 0\.$"):
        make_shallow("tca", {"n_components": 0}, where="adapt.loss_options")
    with pytest.raises(ConfigError, match=r"options: n_components='all' is not valid; give 'auto'"):
        make_shallow("sa", {"n_components": "all"})
    with pytest.raises(ConfigError, match=r"options: random_state must be None, a whole number"):
        make_shallow("kliep", {"random_state": -1})
    with pytest.raises(ConfigError, match="must be a mapping of option names to values"):
        make_shallow("kmm", ["B", 3])
    with pytest.raises(ConfigError, match="unknown shallow_da 'tcaa'.*Did you mean 'tca'"):
        make_shallow("tcaa")
    X, sd = _two_blobs()
    y = np.r_[np.arange(80) % 2, -np.ones(60, dtype=int)]
    with pytest.raises(ConfigError, match=r"adapter_options has an unknown option 'regg' for shallow estimator 'coral'\."
                                          r" Did you mean 'reg'"):
        DAClassifier("coral", adapter_options={"regg": 1.0}).fit(X, y, sample_domain=sd)
    with pytest.raises(ConfigError, match=r"adapter_options has an unknown option 'regg' for CORALAdapter"):
        DAClassifier(CORALAdapter(), adapter_options={"regg": 1.0}).fit(X, y, sample_domain=sd)
    with pytest.raises(ConfigError, match=r"adapter_options: reg must be >= 0"):
        DAClassifier(CORALAdapter(), adapter_options={"reg": -1.0}).fit(X, y, sample_domain=sd)
    clf = DAClassifier("sa", adapter_options={"n_components": 2}).fit(X, y, sample_domain=sd)
    assert clf.adapter_.n_components_ == 2
