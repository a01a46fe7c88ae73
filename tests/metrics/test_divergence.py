"""Divergences between domains: accuracy against closed forms and references, tests' calibration
and power, exact equalities (blockwise MMD, Wasserstein in 1-D, BH), and error messages."""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist, jensenshannon

from transferkit._registry import available, get
from transferkit.errors import ConfigError, DataError
from transferkit.metrics import divergence as D
from transferkit.metrics._base import MetricResult


def _rng(seed=0):
    return np.random.default_rng(seed)


def _gauss_kl(mu0, S0, mu1, S1):
    d = len(mu0)
    S1i = np.linalg.inv(S1)
    dm = mu1 - mu0
    return 0.5 * (np.trace(S1i @ S0) + dm @ S1i @ dm - d + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])


# ---------------------------------------------------------------------------------------------
# contract over the registry (the repository-wide common test checks it too)
# ---------------------------------------------------------------------------------------------

EXPECTED = {
    "mmd", "mmd_linear", "a_distance", "kl_gaussian", "js_gaussian", "kl_knn", "js_knn",
    "wasserstein", "sliced_wasserstein", "coral_distance", "ks_features", "mannwhitney_features",
}


def test_registry_has_every_divergence():
    assert EXPECTED <= set(available("divergence"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_divergence_contract_low_dim(name):
    rng = _rng(1)
    X, Y = rng.standard_normal((120, 4)), rng.standard_normal((100, 4))
    f = get("divergence", name)
    r1, r2 = f(X, Y, seed=3), f(X, Y, seed=3)
    assert isinstance(r1, MetricResult) and r1.name == name
    assert np.isfinite(r1.value) and r1.value == r2.value and r1.p_value == r2.p_value
    same = f(X, X.copy(), seed=0)  # identical samples
    assert abs(same.value) < 0.02, same
    shifted = f(X, 2.0 * Y + 3.0, seed=0)  # location and scale (CORAL sees only the latter)
    assert shifted.value > max(0.1, 5 * abs(same.value)), shifted


# ---------------------------------------------------------------------------------------------
# MMD
# ---------------------------------------------------------------------------------------------


def _mmd_reference(Z, n_s, gammas, A):
    """Direct O(N^2): full pooled kernel matrix, statistic per split by indexing."""
    D2 = cdist(Z, Z, "sqeuclidean")
    K = np.mean([np.exp(-g * D2) for g in gammas], axis=0)
    out = []
    for col in A.T:
        s = col.astype(bool)
        m, n = s.sum(), (~s).sum()
        Kxx, Kyy, Kxy = K[np.ix_(s, s)], K[np.ix_(~s, ~s)], K[np.ix_(s, ~s)]
        out.append((Kxx.sum() - np.trace(Kxx)) / (m * (m - 1)) + (Kyy.sum() - np.trace(Kyy)) / (n * (n - 1))
                   - 2 * Kxy.mean())
    return np.array(out)


@pytest.mark.parametrize("block_size", [7, 16, 1000])
@pytest.mark.parametrize("mults", [(1.0,), (0.25, 0.5, 1, 2, 4)])
def test_mmd_blockwise_equals_direct_reference(block_size, mults):
    rng = _rng(0)
    S, T = rng.standard_normal((23, 4)), rng.standard_normal((31, 4)) + 0.3
    Z = np.vstack([S, T])
    gammas = D._gammas(1.7, mults)
    A = D._permutation_assignments(len(Z), len(S), 25, rng)
    assert (A.sum(axis=0) == len(S)).all()
    got = D._mmd_statistics(Z, len(S), gammas, A, block_size)
    np.testing.assert_allclose(got, _mmd_reference(Z, len(S), gammas, A), rtol=0, atol=1e-10)
    # the public function (centring, observed column) agrees as well
    r = D.mmd(S, T, bandwidth=1.7, kernel_mults=mults, n_permutations=0, block_size=block_size)
    assert r.value == pytest.approx(_mmd_reference(Z, len(S), gammas, A[:, :1])[0], abs=1e-10)
    assert r.p_value is None


def test_mmd_identical_and_torch_input():
    import torch

    rng = _rng(0)
    X = rng.standard_normal((200, 6))
    r = D.mmd(X, X.copy())
    assert abs(r.value) < 0.01 and r.p_value > 0.5
    r_np = D.mmd(X[:100], X[100:], seed=4)
    r_t = D.mmd(torch.from_numpy(X[:100]), torch.from_numpy(X[100:]), seed=4)
    assert r_np.value == pytest.approx(r_t.value, abs=1e-12) and r_np.p_value == r_t.p_value


def test_mmd_permutation_p_values_are_uniform_under_the_null():
    # 200 repeats, n = 30 per domain, 100 permutations each
    rng = _rng(123)
    p = np.array([D.mmd(rng.standard_normal((30, 3)), rng.standard_normal((30, 3)), seed=i, n_permutations=100).p_value
                  for i in range(200)])
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert 0.01 <= np.mean(p <= 0.05) <= 0.12


def test_mmd_power_for_small_mean_shift():
    # shift of 0.3 (0.3 standard deviations) in one of d=5 coordinates, n=500 per domain:
    # the test at level 0.05 rejects in every one of 20 repeats (power >= 0.95 required).
    rng = _rng(7)
    rejections = 0
    for i in range(20):
        X, Y = rng.standard_normal((500, 5)), rng.standard_normal((500, 5))
        Y[:, 0] += 0.3
        rejections += D.mmd(X, Y, seed=i).p_value <= 0.05
    assert rejections / 20 >= 0.95


def test_mmd_median_heuristic():
    rng = _rng(0)
    X = rng.standard_normal((300, 3))
    Y = rng.standard_normal((200, 3))
    Z = np.vstack([X, Y])
    want = np.median(cdist(Z, Z)[np.triu_indices(len(Z), 1)])
    assert D.median_heuristic(X, Y) == pytest.approx(want, rel=1e-10)
    assert D.mmd(X, Y, n_permutations=0).details["bandwidth"] == pytest.approx(want, rel=1e-10)
    sub = D.median_heuristic(np.vstack([X] * 5), Y, max_points=400, seed=1)  # subsampled: close, not equal
    assert sub == pytest.approx(want, rel=0.15)


def test_mmd_linear_calibration_and_chunking():
    rng = _rng(5)
    p = np.array([D.mmd_linear(rng.standard_normal((200, 3)), rng.standard_normal((200, 3)), seed=i).p_value
                  for i in range(100)])
    assert stats.kstest(p, "uniform").pvalue > 0.01
    X, Y = rng.standard_normal((1001, 8)), rng.standard_normal((1400, 8))
    a = D.mmd_linear(X, Y + 0.5, seed=2)
    b = D.mmd_linear(X, Y + 0.5, seed=2, chunk_size=7)
    assert a.value == pytest.approx(b.value, abs=1e-14) and a.details["n_pairs"] == 500
    assert a.p_value < 1e-4 and a.value > 0
    # float32 input is streamed without up-casting the whole array, same answer to float32 accuracy
    c = D.mmd_linear(X.astype(np.float32), (Y + 0.5).astype(np.float32), seed=2)
    assert c.value == pytest.approx(a.value, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# A-distance, CORAL, Gaussian fits, kNN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("classifier", ["logistic", "linear_svm"])
def test_a_distance_identical_vs_disjoint(classifier):
    rng = _rng(0)
    X, Y = rng.standard_normal((300, 5)), rng.standard_normal((250, 5))
    same = D.a_distance(X, Y, classifier=classifier)
    assert same.value < 0.3 and same.details["n_per_domain"] == 250
    assert 0.4 < same.details["error"] < 0.6
    far = D.a_distance(X, Y + 10.0, classifier=classifier)
    assert far.value == pytest.approx(2.0) and far.details["error"] == 0.0


def test_a_distance_bad_classifier_suggests():
    X = _rng().standard_normal((20, 2))
    with pytest.raises(ConfigError, match="classifier='logistc'.*Did you mean 'logistic'"):
        D.a_distance(X, X, classifier="logistc")


def test_coral_distance():
    rng = _rng(0)
    X = rng.standard_normal((50, 4))
    assert D.coral_distance(X, X.copy()).value == 0.0
    Y = 2.0 * rng.standard_normal((60, 4))
    want = np.sum((np.cov(X, rowvar=False) - np.cov(Y, rowvar=False)) ** 2) / (4 * 16)
    assert D.coral_distance(X, Y).value == pytest.approx(want, rel=1e-12)


def _two_gaussians(n, seed=0):
    rng = _rng(seed)
    d = 5
    B = rng.standard_normal((d, d)) / 4
    mu0, S0 = np.zeros(d), B @ B.T + np.eye(d)
    mu1, S1 = np.full(d, 0.5), np.diag(np.linspace(0.8, 2.0, d))
    X = rng.multivariate_normal(mu0, S0, size=n)
    Y = rng.multivariate_normal(mu1, S1, size=n)
    return X, Y, (mu0, S0, mu1, S1)


def test_kl_gaussian_matches_closed_form():
    X, Y, (mu0, S0, mu1, S1) = _two_gaussians(5000)
    true = _gauss_kl(mu0, S0, mu1, S1)
    got = D.kl_gaussian(X, Y).value
    assert got == pytest.approx(true, rel=0.05)
    # and the closed form itself, on exact fitted parameters
    assert got == pytest.approx(_gauss_kl(X.mean(0), np.cov(X, rowvar=False), Y.mean(0), np.cov(Y, rowvar=False)),
                                rel=1e-4)
    assert D.kl_gaussian(X, X.copy()).value == pytest.approx(0.0, abs=1e-9)


def test_kl_gaussian_high_dimension_uses_shrinkage():
    rng = _rng(0)
    X, Y = rng.standard_normal((40, 60)), rng.standard_normal((40, 60))
    r = D.kl_gaussian(X, Y)
    assert r.details["covariance"] == ["ledoit_wolf", "ledoit_wolf"] and np.isfinite(r.value)
    assert D.kl_gaussian(X, Y, covariance="empirical").value > 10 * r.value  # ridge-dominated


def test_js_gaussian_monte_carlo_accuracy():
    X, Y, _ = _two_gaussians(5000, seed=1)
    est = D.js_gaussian(X, Y)
    ref = D.js_gaussian(X, Y, n_mc=400_000, seed=99)
    assert est.value == pytest.approx(ref.value, rel=0.05)
    assert 0 < ref.value < math.log(2)
    assert est.details["mc_std_error"] < 0.015 * est.value
    assert D.js_gaussian(X, X.copy()).value == pytest.approx(0.0, abs=1e-12)
    far = D.js_gaussian(X, Y + 100.0)
    assert far.value == pytest.approx(math.log(2), abs=1e-6)


def test_kl_knn_converges_to_known_kl():
    # KL(N(0, I) || N((1, 0), I)) = 0.5; mean absolute error over 3 seeds shrinks with n
    def err(n):
        out = []
        for s in range(3):
            rng = _rng(s)
            X, Y = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
            Y[:, 0] += 1.0
            out.append(abs(D.kl_knn(X, Y).value - 0.5))
        return np.mean(out)

    e_small, e_large = err(500), err(5000)
    assert e_large < e_small and e_large < 0.05


def test_knn_tree_and_brute_agree_and_duplicates_are_skipped():
    rng = _rng(0)
    X, Y = rng.standard_normal((150, 3)), rng.standard_normal((170, 3)) + 0.5
    X[10] = X[11]  # an exact duplicate inside the source
    a = D.kl_knn(X, Y, algorithm="kd_tree").value
    b = D.kl_knn(X, Y, algorithm="brute").value
    assert a == pytest.approx(b, abs=1e-9)
    n = len(X)
    assert D.kl_knn(X, X.copy()).value == pytest.approx(math.log(n / (n - 1)), abs=1e-12)
    assert D.js_knn(X, Y, algorithm="kd_tree").value == pytest.approx(D.js_knn(X, Y, algorithm="brute").value,
                                                                      abs=1e-9)


def test_js_knn_close_to_gaussian_reference():
    rng = _rng(3)
    X, Y = rng.standard_normal((3000, 2)), rng.standard_normal((3000, 2))
    Y[:, 0] += 1.5
    ref = D.js_gaussian(X, Y, n_mc=200_000).value
    assert D.js_knn(X, Y).value == pytest.approx(ref, rel=0.1)


def test_knn_too_few_samples():
    X = _rng().standard_normal((5, 2))
    with pytest.raises(DataError, match="k=5 need more than 5 samples"):
        D.kl_knn(X, X + 1)
    with pytest.raises(DataError, match="fewer than k=2 distinct neighbours"):
        D.kl_knn(np.zeros((6, 2)), np.ones((6, 2)), k=2)


# ---------------------------------------------------------------------------------------------
# optimal transport
# ---------------------------------------------------------------------------------------------


def test_wasserstein_1d_equals_scipy():
    rng = _rng(0)
    x, y = rng.standard_normal(97), rng.exponential(size=131)
    want = stats.wasserstein_distance(x, y)
    # sorting path (d = 1) and the network-simplex path (d = 2 with a constant second feature)
    assert D.wasserstein(x, y, p=1).value == pytest.approx(want, rel=1e-12)
    X2, Y2 = np.c_[x, np.zeros_like(x)], np.c_[y, np.zeros_like(y)]
    r = D.wasserstein(X2, Y2, p=1)
    assert r.details["method"] == "emd" and r.value == pytest.approx(want, rel=1e-9)
    assert D.wasserstein(x, y, p=2).value == pytest.approx(D.wasserstein(X2, Y2, p=2).value, rel=1e-9)
    # sliced in 1-D is exact (every direction is +-1)
    assert D.sliced_wasserstein(x, y, p=1, n_projections=3).value == pytest.approx(want, rel=1e-12)


def test_wasserstein_isotropic_shift_exact_and_sliced():
    rng = _rng(0)
    d = 3
    X = rng.standard_normal((300, d))
    delta = np.array([0.6, -0.3, 0.9])
    exact = D.wasserstein(X, X + delta).value  # translation: W2 = |delta| exactly
    assert exact == pytest.approx(np.linalg.norm(delta), rel=1e-9)
    # SW2 of a translation is |delta| / sqrt(d) (mean of (theta . delta)^2 over the sphere)
    sliced = D.sliced_wasserstein(X, X + delta, n_projections=4000).value
    assert sliced * math.sqrt(d) == pytest.approx(exact, rel=0.03)
    # independent samples with the same shift: sliced still tracks the exact value
    Y = rng.standard_normal((300, d)) + delta
    e2 = D.wasserstein(X, Y).value
    s2 = D.sliced_wasserstein(X, Y, n_projections=2000).value * math.sqrt(d)
    assert s2 == pytest.approx(e2, rel=0.2)


def test_sliced_unequal_sizes_by_quantile_merge():
    rng = _rng(1)
    X, Y = rng.standard_normal((50, 4)), rng.standard_normal((40, 4)) + 0.2
    a = D.sliced_wasserstein(X, Y, seed=3)
    b = D.sliced_wasserstein(X, np.repeat(Y, 3, axis=0), seed=3)  # same empirical distribution
    assert a.value == pytest.approx(b.value, rel=1e-12)
    c = D.sliced_wasserstein(X.astype(np.float32), Y.astype(np.float32), seed=3)
    assert c.value == pytest.approx(a.value, rel=1e-5)


def test_wasserstein_limit_suggests_sliced():
    X = _rng().standard_normal((60, 2))
    with pytest.raises(ConfigError, match="sliced_wasserstein"):
        D.wasserstein(X, X, max_pairs=1000)
    with pytest.raises(ConfigError, match="p=3"):
        D.wasserstein(X, X, p=3)


# ---------------------------------------------------------------------------------------------
# per-feature tests, BH, discrete
# ---------------------------------------------------------------------------------------------


def test_benjamini_hochberg_equals_scipy():
    rng = _rng(0)
    p = np.r_[rng.random(200) ** 3, [0.01, 0.01, 0.5, 1.0, 0.0]]
    np.testing.assert_allclose(D.benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    assert D.benjamini_hochberg([]).size == 0
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        D.benjamini_hochberg([0.1, 1.5])


@pytest.mark.parametrize("name", ["ks_features", "mannwhitney_features"])
def test_feature_tests(name):
    rng = _rng(0)
    f = get("divergence", name)
    X, Y = rng.standard_normal((200, 30)), rng.standard_normal((220, 30))
    same = f(X, Y)
    assert same.value <= 1 / 30 and same.p_value > 0.01
    assert f(X, X.copy()).value == 0.0
    shifted = f(X, Y + 1.0)
    assert shifted.value == 1.0 and shifted.details["n_shifted"] == 30 and shifted.p_value < 1e-10
    half = Y.copy()
    half[:, :10] += 1.0
    r = f(X, half)
    # BH controls the false discovery rate, so a null feature may occasionally be flagged too
    assert 10 / 30 <= r.value <= 12 / 30 and sorted(r.details["most_shifted_features"]) == list(range(10))


def test_discrete_divergences():
    p, q = np.array([0.2, 0.5, 0.3]), np.array([0.1, 0.1, 0.8])
    assert D.kl_discrete(p, q) == pytest.approx(stats.entropy(p, q), rel=1e-12)
    assert D.kl_discrete(p, q, base=2) == pytest.approx(stats.entropy(p, q, base=2), rel=1e-12)
    assert D.js_discrete(p, q) == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-10)
    assert D.kl_discrete([2, 5, 3], [1, 1, 8]) == pytest.approx(stats.entropy(p, q), rel=1e-12)  # counts
    assert D.kl_discrete([0.5, 0.5], [1.0, 0.0]) == math.inf
    assert np.isfinite(D.kl_discrete([0.5, 0.5], [1.0, 0.0], smoothing=0.01))
    assert D.js_discrete([1, 0], [0, 1]) == pytest.approx(math.log(2))
    with pytest.raises(DataError, match="same number of categories"):
        D.kl_discrete([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(DataError, match="negative"):
        D.js_discrete([-0.1, 1.1], [0.5, 0.5])


def test_label_shift():
    rng = _rng(0)
    ys, yt = rng.integers(0, 4, 2000), rng.integers(0, 4, 1500)
    same = D.label_shift(ys, yt)
    assert same.value < 0.005 and same.p_value > 0.01
    yt2 = rng.choice(4, 1500, p=[0.7, 0.1, 0.1, 0.1])
    r = D.label_shift(ys, yt2, n_classes=5, smoothing=0.0)
    assert r.p_value < 1e-10
    ps, pt = np.bincount(ys, minlength=5) / 2000, np.bincount(yt2, minlength=5) / 1500
    assert r.value == pytest.approx(D.js_discrete(ps, pt), rel=1e-10)
    assert r.details["kl"] == pytest.approx(D.kl_discrete(ps[:4], pt[:4]), rel=1e-10)
    assert np.isfinite(D.label_shift([0, 0, 1], [2, 2, 2]).details["kl"])  # Laplace smoothing
    with pytest.raises(DataError, match="negative values"):
        D.label_shift([0, -1], [0, 1])


# ---------------------------------------------------------------------------------------------
# errors and the convenience wrapper
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_error_messages(name):
    f = get("divergence", name)
    rng = _rng(0)
    X = rng.standard_normal((40, 3))
    with pytest.raises(DataError, match=r"different feature dimensions \(3 vs 4\)"):
        f(X, rng.standard_normal((40, 4)))
    bad = X.copy()
    bad[[3, 7]] = np.nan
    with pytest.raises(DataError, match="source samples contains NaN or infinite values in 2 rows"):
        f(bad, X)
    with pytest.raises(DataError, match="target samples has 0 samples; at least"):
        f(X, X[:0])
    with pytest.raises(ConfigError, match="seed must be >= 0"):
        f(X, X, seed=-1)


def test_too_few_samples_messages():
    X = _rng().standard_normal((40, 3))
    with pytest.raises(DataError, match="target samples has 1 samples; at least 2 are needed"):
        D.mmd(X, X[:1])
    with pytest.raises(DataError, match="target samples has 3 samples; at least 4"):
        D.mmd_linear(X, X[:3])
    with pytest.raises(DataError, match="at least 5 are needed"):
        D.a_distance(X, X[:4])


def test_option_errors():
    X = _rng().standard_normal((20, 2))
    with pytest.raises(ConfigError, match="kernel_mults"):
        D.mmd(X, X, kernel_mults=(1, -2))
    with pytest.raises(ConfigError, match="n_permutations must be >= 0"):
        D.mmd(X, X, n_permutations=-1)
    with pytest.raises(ConfigError, match="covariance='lw'"):
        D.kl_gaussian(X, X, covariance="lw")


def test_compute_divergences():
    rng = _rng(0)
    X, Y = rng.standard_normal((80, 3)), rng.standard_normal((90, 3)) + 1.0
    out = D.compute_divergences(X, Y, names=["mmd", "coral_distance"], mmd={"n_permutations": 50})
    assert list(out) == ["mmd", "coral_distance"]
    assert out["mmd"].details["n_permutations"] == 50 and out["mmd"].p_value < 0.05
    assert out["mmd"].value == D.mmd(X, Y, n_permutations=50).value
    all_ = D.compute_divergences(X, Y)
    assert list(all_) == list(D.DEFAULT_DIVERGENCES) and all(np.isfinite(r.value) for r in all_.values())
    with pytest.raises(ConfigError, match="unknown divergence 'mdd'.*Did you mean 'mmd'"):
        D.compute_divergences(X, Y, names=["mdd"])
    with pytest.raises(ConfigError, match="options given for 'wasserstein', which is not among names"):
        D.compute_divergences(X, Y, names=["mmd"], wasserstein={"p": 1})


def test_mean_std_is_the_sample_std_over_seeds():
    from transferkit.metrics._base import mean_std

    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # ddof=1: sqrt(((1)^2 + 0 + 1^2) / 2)
    assert mean_std([0.7]) == (0.7, 0.0)
