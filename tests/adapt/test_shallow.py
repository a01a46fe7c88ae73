"""Shallow domain adaptation: properties a wrong implementation breaks, the scikit-learn
contract, and the errors a user sees."""

import inspect
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
    BaseReweighter,
    CORALAdapter,
    DAClassifier,
    KLIEPReweighter,
    KMMReweighter,
    OTMappingAdapter,
    SubspaceAlignmentAdapter,
    TCAAdapter,
)
from transferkit.adapt.shallow.kmm import project_box_sum
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
    sa = SubspaceAlignmentAdapter(n_components=None).fit(X, sample_domain=sd)
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
    tca = TCAAdapter(n_components=2, kernel=kernel, mu=1.0, random_state=0).fit(X, sample_domain=sd)
    Z = tca.transform(X, sample_domain=sd)
    kpca = TCAAdapter(n_components=2, kernel=kernel, mu=1e6, random_state=0).fit_transform(X, sample_domain=sd)
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
    capped = KLIEPReweighter(sigma=0.5, max_iter=1, random_state=0).fit(X, sample_domain=sd)
    assert capped.n_iter_ == 7


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
