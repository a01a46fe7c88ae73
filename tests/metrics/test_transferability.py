"""Transferability scores: agreement with direct computations, the rankings they must get right,
and the errors a person sees."""

import warnings

import numpy as np
import pytest
from scipy import optimize
from scipy.special import softmax
from scipy.stats import multivariate_normal

from transferkit._registry import available, get
from transferkit.errors import ConfigError, DataError
from transferkit.metrics._base import MetricResult
from transferkit.metrics.transferability import (
    hscore,
    hscore_shrinkage,
    leep,
    logme,
    nce,
    nleep,
    rank_correlation,
    score_all,
)

NAMES = ["hscore", "hscore_shrinkage", "leep", "logme", "nce", "nleep"]


def _onehot(y, K):
    out = np.zeros((len(y), K))
    out[np.arange(len(y)), y] = 1.0
    return out


def _features(n, d, K, informative, seed=0, noise=0.3):
    """Balanced labels; features = one-hot labels (padded to d) + noise, or pure noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    if informative:
        F = np.zeros((n, d))
        F[:, :K] = _onehot(y, K)
        F += noise * rng.normal(size=(n, d))
    else:
        F = rng.normal(size=(n, d))
    return F, y


# ------------------------------------------------------------------------------------- LogME


def _direct_logme(F, y):
    """max over (alpha, beta) of log N(y_k; 0, F F^T / alpha + I / beta), per sample, mean over k.

    Independent of the implementation: closed-form Gaussian marginal likelihood, no SVD, no
    fixed point; Nelder-Mead on log-parameters from several starts.
    """
    n = F.shape[0]
    G = F @ F.T
    values = []
    for k in np.unique(y):
        yk = (y == k).astype(float)

        def nll(p):
            a, b = np.exp(np.clip(p, -30, 30))
            return -multivariate_normal(np.zeros(n), G / a + np.eye(n) / b).logpdf(yk)

        fits = [
            optimize.minimize(nll, x0, method="Nelder-Mead",
                              options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
            for x0 in ([0.0, 0.0], [2.0, 2.0], [-2.0, 1.0])
        ]
        values.append(-min(f.fun for f in fits) / n)
    return float(np.mean(values))


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)], ids=["n>d", "n<d"])
def test_logme_equals_direct_evidence_maximisation(n, d):
    rng = np.random.default_rng(1)
    K = 3
    y = rng.integers(0, K, n)
    # partly informative features, so the optimum is interior for some classes
    F = rng.normal(size=(n, d)) + _onehot(y, K) @ rng.normal(size=(K, d))
    res = logme(F, y)
    assert isinstance(res, MetricResult) and res.name == "logme"
    assert res.details["converged"]
    np.testing.assert_allclose(res.value, _direct_logme(F, y), rtol=1e-4)
    # the per-class average is the value; alpha, beta are positive
    assert res.value == pytest.approx(np.mean(res.details["evidence_per_class"]))
    assert min(res.details["alpha"]) > 0 and min(res.details["beta"]) > 0


def test_logme_boundary_optimum_matches_direct():
    """Pure-noise features: the maximum lies at alpha/beta -> inf; the value must still be right."""
    rng = np.random.default_rng(0)
    F, y = rng.normal(size=(40, 8)), rng.integers(0, 3, 40)
    res = logme(F, y)
    assert res.details["at_boundary"] >= 1 and np.isfinite(res.value)
    np.testing.assert_allclose(res.value, _direct_logme(F, y), rtol=1e-4)


# ------------------------------------------------- informative features must beat pure noise


@pytest.mark.parametrize("name", ["logme", "hscore", "hscore_shrinkage", "nleep"])
def test_feature_scores_rank_informative_above_noise(name):
    fn = get("transferability", name)
    good = fn(*_features(150, 10, 3, informative=True))
    bad = fn(*_features(150, 10, 3, informative=False))
    assert np.isfinite(good.value) and np.isfinite(bad.value)
    assert good.value > bad.value + 0.3, (good.value, bad.value)


# -------------------------------------------------------------------------------------- LEEP


def test_leep_hand_computation():
    theta = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    y = np.array([0, 0, 1, 1])
    # P(y, z) = [[1.5, .5], [.5, 1.5]] / 4, P(z) = [.5, .5] -> P(y|z) = [[.75, .25], [.25, .75]]
    # sum_z P(y_i|z) theta_iz = .75*.9+.25*.1, .75*.6+.25*.4, .25*.2+.75*.8, .25*.3+.75*.7
    expected = np.mean(np.log([0.7, 0.55, 0.65, 0.6]))
    assert leep(theta, y).value == pytest.approx(expected, rel=1e-12)
    # logits giving the same probabilities give the same score
    assert leep(np.log(theta) + 3.0, y, from_logits=True).value == pytest.approx(expected, rel=1e-12)


def test_leep_perfect_and_uninformative_source():
    K, n = 4, 40
    y = np.arange(n) % K
    perm = np.array([2, 0, 3, 1])
    perfect = _onehot(perm[y], K)  # one-hot source predictions, in 1-1 correspondence with y
    uniform = np.full((n, 6), 1 / 6)
    assert leep(perfect, y).value == pytest.approx(0.0, abs=1e-12)
    # every sample gets the same prediction: LEEP = mean_i log P(y_i) = log(1/K) for balanced y
    assert leep(uniform, y).value == pytest.approx(np.log(1 / K), rel=1e-12)
    # unbalanced labels: -H(Y) with empirical class frequencies
    y2 = np.array([0] * 30 + [1] * 10)
    p = np.array([0.75, 0.25])
    assert leep(np.full((40, 3), 1 / 3), y2).value == pytest.approx((p * np.log(p)).sum(), rel=1e-12)


# --------------------------------------------------------------------------------------- NCE


def test_nce_deterministic_and_independent_labels():
    z = np.repeat(np.arange(6), 10)
    y = z % 3  # target label is a function of the source prediction
    assert nce(z, y).value == pytest.approx(0.0, abs=1e-12)
    # independent: every (z, y) pair equally often -> H(Y|Z) = H(Y) = log 3
    z2 = np.repeat(np.arange(4), 9)
    y2 = np.tile(np.arange(3), 12)
    res = nce(z2, y2)
    assert res.value == pytest.approx(-np.log(3), rel=1e-12)
    assert res.details["entropy_y"] == pytest.approx(np.log(3), rel=1e-12)
    # probabilities / uniform calling convention use the argmax
    probs = softmax(np.random.default_rng(0).normal(size=(36, 4)) + 5 * _onehot(z2, 4), axis=1)
    assert nce(probs, y2).value == pytest.approx(res.value)
    assert nce(features=None, labels=y2, source_probs=probs).value == pytest.approx(res.value)


# ----------------------------------------------------------------------------------- H-score


def _hscore_numpy(f, y):
    """Bao et al.'s estimator as usually written: np.cov of f and of the class-mean matrix."""
    covf = np.cov(f, rowvar=False)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    covg = np.cov(g, rowvar=False)
    return float(np.trace(np.linalg.pinv(covf) @ covg))


def test_hscore_equals_direct_numpy_computation():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    F = rng.normal(size=(200, 12)) + _onehot(y, 4) @ rng.normal(size=(4, 12))
    assert hscore(F, y).value == pytest.approx(_hscore_numpy(F, y), rel=1e-9)


def test_hscore_shrinkage_formula_and_large_n_limit():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 3000)
    F = rng.normal(size=(3000, 5)) + _onehot(y, 3) @ rng.normal(size=(3, 5))
    res = hscore_shrinkage(F, y)
    # the docstring's formula, written out with explicit matrices
    Fc = F - F.mean(0)
    lw = LedoitWolf().fit(Fc)
    g = np.stack([Fc[y == c].mean(0) for c in range(3)])[y]
    expected = np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * (g.T @ g / len(y))))
    assert res.value == pytest.approx(expected, rel=1e-9)
    assert res.details["shrinkage"] == pytest.approx(lw.shrinkage_)
    # n >> d: little shrinkage, close to the plain H-score
    assert res.details["shrinkage"] < 0.05
    assert res.value == pytest.approx(hscore(F, y).value, rel=0.05)


def test_hscore_saturates_when_n_below_d_but_shrinkage_does_not():
    good = _features(30, 100, 3, informative=True)
    bad = _features(30, 100, 3, informative=False)
    with pytest.warns(RuntimeWarning, match="hscore_shrinkage"):
        plain_good = hscore(*good).value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain_bad = hscore(*bad).value
    # singular covariance: any labels are "perfectly explained" -> K - 1, noise or not
    assert plain_good == pytest.approx(2.0, abs=1e-6) and plain_bad == pytest.approx(2.0, abs=1e-6)
    sg, sb = hscore_shrinkage(*good), hscore_shrinkage(*bad)
    assert np.isfinite(sg.value) and np.isfinite(sb.value)
    assert 0 < sg.details["shrinkage"] <= 1
    assert sg.value > sb.value + 0.3


# ------------------------------------------------------------------------------------- N-LEEP


def test_nleep_seeded_and_scale_free():
    F, y = _features(120, 8, 3, informative=True, noise=0.6)
    a, b = nleep(F, y, seed=0), nleep(F, y, seed=0)
    assert a.value == b.value and a.details["n_components"] == 15
    assert nleep(F * 1000.0, y, seed=0).value == pytest.approx(a.value, abs=1e-6)
    assert a.value <= 0


# ------------------------------------------------------------- registry, score_all, rankings


def test_registry_entries_share_the_calling_convention():
    assert set(NAMES) <= set(available("transferability"))
    F, y = _features(60, 6, 3, informative=True)
    P = softmax(np.random.default_rng(0).normal(size=(60, 5)), axis=1)
    for name in NAMES:
        fn = get("transferability", name)
        r1 = fn(features=F, labels=y, source_probs=P, seed=0)
        r2 = fn(features=F, labels=y, source_probs=P, seed=0)
        assert isinstance(r1, MetricResult) and r1.name == name
        assert np.isfinite(r1.value) and r1.value == r2.value, name
        assert fn.__doc__ and "References" in fn.__doc__


def test_score_all_picks_the_applicable_scores():
    F, y = _features(60, 6, 3, informative=True)
    P = softmax(np.random.default_rng(0).normal(size=(60, 5)), axis=1)
    assert set(score_all(F, y)) == {"logme", "hscore", "hscore_shrinkage", "nleep"}
    assert set(score_all(F, y, source_probs=P)) == {"logme", "hscore", "hscore_shrinkage", "leep", "nce"}
    assert list(score_all(F, y, names=["nce"], source_probs=P)) == ["nce"]
    with pytest.raises(ConfigError, match="Did you mean 'logme'"):
        score_all(F, y, names=["logm"])
    with pytest.raises(ConfigError, match="leep needs source_probs"):
        score_all(F, y, names=["leep"])


def test_rank_correlation():
    truth = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.5}
    same = rank_correlation({"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}, truth)
    assert same["kendall_tau"] == pytest.approx(1) and same["spearman_rho"] == pytest.approx(1)
    assert same["weighted_tau"] == pytest.approx(1) and same["n"] == 4
    rev = rank_correlation({"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}, truth)
    assert rev["kendall_tau"] == pytest.approx(-1) and rev["spearman_rho"] == pytest.approx(-1)
    with pytest.raises(DataError, match=r"in truth but not scores: \['d'\]"):
        rank_correlation({"a": 1.0, "b": 2.0, "c": 3.0}, truth)


# --------------------------------------------------------------------------------- validation


def test_validation_messages():
    F, y = _features(20, 4, 2, informative=True)
    P = np.full((20, 3), 1 / 3)
    with pytest.raises(DataError, match="labels has 19 entries but features has 20 rows"):
        logme(F, y[:-1])
    with pytest.raises(DataError, match="labels has 20 entries but source_probs has 19 rows"):
        leep(P[:-1], y)
    with pytest.raises(DataError, match="negative values"):
        hscore(F, np.r_[y[:-1], -1])
    with pytest.raises(DataError, match="single class"):
        hscore_shrinkage(F, np.zeros(20, dtype=int))
    with pytest.raises(DataError, match=r"rows must sum to 1 \(row 0 sums to 0.9.*from_logits=True"):
        leep(P * 0.9, y)
    with pytest.raises(DataError, match="negative entries"):
        leep(P - 0.5, y)
    with pytest.raises(DataError, match="use nce"):
        leep(y, y)
    with pytest.raises(ConfigError, match="leep needs source_probs"):
        leep(features=F, labels=y)
    with pytest.raises(ConfigError, match="nce needs source_probs"):
        nce(features=F, labels=y)
    with pytest.raises(ConfigError, match="only one of them"):
        nce(y, y, source_probs=P)
    with pytest.raises(DataError, match="NaN or infinite"):
        logme(np.where(np.eye(20, 4) > 0, np.nan, F), y)
    with pytest.raises(ConfigError, match="n_components must be <= 20"):
        nleep(F, y, n_components=50)


def test_hscore_says_when_it_is_saturated():
    """n <= d: the value is K - 1 whatever the features, and the result says so (assess marks it)."""
    from transferkit.assess import format_assessment as format_assess

    few = _features(30, 100, 3, informative=False)
    with pytest.warns(RuntimeWarning):
        r = hscore(*few)
    assert r.details["saturated"] and r.value == pytest.approx(2.0, abs=1e-6)
    assert not hscore(*_features(150, 10, 3, informative=True)).details["saturated"]
    res = {"source": "s", "n_source": 30, "target": "t", "n_target": 30, "n_target_labeled": 30, "divergences": {},
           "feature_space": "bb",
           "transferability": {"bb": {"hscore": r.to_dict()}}, "verdict": {"text": "v"}}
    assert "2*" in format_assess(res) and "* saturated" in format_assess(res)
