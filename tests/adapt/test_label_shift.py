"""Label-shift estimation (BBSE, MLLS/EM) and prior correction, on a simulated shift with a
known answer: three unit-variance Gaussian classes in 2-D, a logistic regression trained on
balanced source data (well specified, so close to calibrated), target priors [0.7, 0.2, 0.1]."""

import dataclasses
import json
import warnings

import numpy as np
import pytest

from transferkit.adapt.label_shift import (
    LabelShiftEstimate,
    class_weights_for_priors,
    correct_probs,
    estimate_target_priors,
    prior_matched_counts,
)
from transferkit.errors import ConfigError, DataError, TransferKitWarning

MEANS = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
SOURCE = np.ones(3) / 3
TARGET = np.array([0.7, 0.2, 0.1])
METHODS = ["bbse", "bbse_soft", "mlls"]


def _draw(n, priors, rng):
    y = rng.choice(3, size=n, p=priors)
    return MEANS[y] + rng.normal(size=(n, 2)), y


@pytest.fixture(scope="module")
def clf():
    from sklearn.linear_model import LogisticRegression

    X, y = _draw(20000, SOURCE, np.random.default_rng(0))
    model = LogisticRegression(C=100.0).fit(X, y)
    model.train_priors_ = np.bincount(y, minlength=3) / len(y)
    return model


def _task(clf, n, seed, target=TARGET):
    """Held-out source probabilities and labels, target probabilities and (hidden) labels."""
    rng = np.random.default_rng(1000 + seed)
    Xh, yh = _draw(n, SOURCE, rng)
    Xt, yt = _draw(n, target, rng)
    return clf.predict_proba(Xh), yh, clf.predict_proba(Xt), yt


def _estimate(clf, ph, yh, pt, method, **kw):
    if method == "mlls":  # MLLS needs the priors the classifier's probabilities are calibrated to
        kw.setdefault("source_priors", clf.train_priors_)
    return estimate_target_priors(ph, yh, pt, method=method, **kw)


@pytest.mark.parametrize("method", METHODS)
def test_recovers_target_priors_and_error_shrinks_with_n(clf, method):
    # measured (mean over these 5 seeds of max_k |q_hat_k - q_k|), bbse / bbse_soft / mlls:
    # n=500: 0.051 / 0.048 / 0.025; n=2000: 0.023 / 0.019 / 0.017; n=8000: 0.021 / 0.016 / 0.010
    err = {}
    for n in (500, 2000, 8000):
        err[n] = np.mean([np.abs(_estimate(clf, *_task(clf, n, s)[:3], method, n_bootstrap=0).priors - TARGET).max()
                          for s in range(5)])
    assert err[8000] < err[500]
    assert err[2000] < 0.05
    assert err[8000] < 0.03


@pytest.mark.parametrize("method", ["bbse", "mlls"])
def test_bootstrap_ci_covers_truth(clf, method):
    hits = []
    for s in range(20):
        ph, yh, pt, _ = _task(clf, 1000, s)
        e = _estimate(clf, ph, yh, pt, method, n_bootstrap=100, seed=s)
        assert (e.ci_low <= e.priors + 1e-12).all() and (e.priors <= e.ci_high + 1e-12).all()
        hits.extend((e.ci_low <= TARGET) & (TARGET <= e.ci_high))
    # 60 (repetition, class) pairs, nominal 95%; measured: bbse 0.88, mlls 0.93
    assert np.mean(hits) >= 0.8, np.mean(hits)


@pytest.mark.parametrize("method", METHODS)
def test_no_shift_gives_source_priors(clf, method):
    ph, yh, pt, _ = _task(clf, 3000, 7, target=SOURCE)
    e = _estimate(clf, ph, yh, pt, method, n_bootstrap=50)
    assert np.abs(e.priors - SOURCE).max() < 0.04
    assert np.abs(e.weights - 1).max() < 0.15
    assert e.converged


def test_prior_correction_raises_accuracy(clf):
    ph, yh, pt, yt = _task(clf, 5000, 3)
    raw = (pt.argmax(1) == yt).mean()
    oracle = (correct_probs(pt, clf.train_priors_, TARGET).argmax(1) == yt).mean()
    est = _estimate(clf, ph, yh, pt, "mlls", n_bootstrap=0)
    estimated = (correct_probs(pt, est.source_priors, est.priors).argmax(1) == yt).mean()
    # measured: 0.738 without correction, 0.822 with the true priors, 0.823 with MLLS's estimate
    assert oracle > raw + 0.04
    assert estimated > raw + 0.04


def test_correct_probs_closed_form():
    # f = (0.6, 0.4), p = (0.5, 0.5), q = (0.2, 0.8): (0.6*0.4, 0.4*1.6) = (0.24, 0.64) -> (3/11, 8/11)
    out = correct_probs([[0.6, 0.4], [0.5, 0.5]], [0.5, 0.5], [0.2, 0.8])
    np.testing.assert_allclose(out, [[3 / 11, 8 / 11], [0.2, 0.8]], atol=1e-12)
    np.testing.assert_allclose(correct_probs([[0.3, 0.7]], [0.4, 0.6], [0.4, 0.6]), [[0.3, 0.7]])  # q = p
    # a zero source prior gets 0; a row with all its mass on a class the target lacks becomes q
    out = correct_probs([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(out, [[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    assert np.isfinite(out).all()


def test_bbse_closed_form():
    # held-out: C[pred, true] = [[0.4, 0.2], [0.1, 0.3]], so P(pred | y) = [[0.8, 0.4], [0.2, 0.6]];
    # q = (0.8, 0.2) gives target prediction rates mu = (0.72, 0.28): 18 of 25 rows predict class 0
    one = np.eye(2)
    ys = np.array([0] * 5 + [1] * 5)
    preds = np.array([0, 0, 0, 0, 1] + [0, 0, 1, 1, 1])
    pt = one[[0] * 18 + [1] * 7]
    e = estimate_target_priors(one[preds] * 0.9 + 0.05, ys, pt * 0.9 + 0.05, method="bbse", n_bootstrap=0)
    np.testing.assert_allclose(e.priors, [0.8, 0.2], atol=1e-12)
    np.testing.assert_allclose(e.weights, [1.6, 0.4], atol=1e-12)
    # unbalanced held-out priors (0.8, 0.2): C = [[0.6, 0.1], [0.2, 0.1]]; q = (0.2, 0.8) gives mu =
    # (0.55, 0.45), w = q / p = (0.25, 4): q is w times the held-out priors, not w renormalised
    ys = np.array([0] * 8 + [1] * 2)
    preds = np.array([0] * 6 + [1] * 2 + [0, 1])
    e = estimate_target_priors(one[preds], ys, one[[0] * 11 + [1] * 9], method="bbse", n_bootstrap=0)
    np.testing.assert_allclose(e.priors, [0.2, 0.8], atol=1e-12)
    # every target row predicts class 0: w = C^-1 (1, 0) = (2.5, -5), clipped to (2.5, 0), q = (2, 0) -> (1, 0)
    e = estimate_target_priors(one[preds], ys, one[[0] * 20], method="bbse", n_bootstrap=0)
    np.testing.assert_allclose(e.priors, [1.0, 0.0], atol=1e-12)


def test_mlls_fixed_point_and_maximum_likelihood(clf):
    # probabilities whose mean is already the source priors: EM stays there (first iteration)
    e = estimate_target_priors(None, None, [[0.8, 0.2], [0.2, 0.8]], source_priors=[0.5, 0.5], n_bootstrap=0)
    np.testing.assert_allclose(e.priors, [0.5, 0.5], atol=1e-12)
    assert e.converged
    # posteriors already calibrated for the target, and those priors given as the source's: EM keeps them
    rng = np.random.default_rng(4)
    Xt, _ = _draw(20000, TARGET, rng)
    dens = np.exp(-0.5 * ((Xt[:, None, :] - MEANS[None]) ** 2).sum(-1)) * TARGET
    e = estimate_target_priors(None, None, dens / dens.sum(1, keepdims=True), source_priors=TARGET, n_bootstrap=0)
    assert np.abs(e.priors - TARGET).max() < 0.01
    # reference: the EM result is the maximum of sum_n log sum_k (q_k / p_k) f_k(x_n) over the simplex
    from scipy.optimize import minimize

    _, _, pt, _ = _task(clf, 2000, 1)
    p = clf.train_priors_

    def nll(z):
        q = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        return -np.log(pt @ (q / p)).sum()

    z = minimize(nll, np.zeros(3), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 5000}).x
    q_ref = np.exp(z) / np.exp(z).sum()
    em = estimate_target_priors(None, None, pt, source_priors=p, n_bootstrap=0).priors
    np.testing.assert_allclose(em, q_ref, atol=1e-4)
    assert nll(np.log(em)) <= nll(z) + 1e-8


def test_estimate_object_is_frozen_json_safe_and_seeded(clf):
    ph, yh, pt, _ = _task(clf, 500, 2)
    a = estimate_target_priors(ph, yh, pt, method="bbse", n_bootstrap=30, seed=3)
    b = estimate_target_priors(ph, yh, pt, method="bbse", n_bootstrap=30, seed=3)
    np.testing.assert_array_equal(a.ci_low, b.ci_low)
    assert isinstance(a, LabelShiftEstimate) and (a.n_source, a.n_target, a.method) == (500, 500, "bbse")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.method = "mlls"
    d = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert len(d["priors"]) == 3 and d["converged"] is True
    no_ci = estimate_target_priors(ph, yh, pt, n_bootstrap=0).to_dict()
    json.dumps(no_ci, allow_nan=False)
    assert no_ci["ci_low"] == [None, None, None]
    text = a.summary(["yes", "no", "maybe"])
    line = f"class 'yes': {a.source_priors[0]:.2f} -> {a.priors[0]:.2f} [{a.ci_low[0]:.2f}, {a.ci_high[0]:.2f}]"
    assert line in text and "95% bootstrap CI" in text
    with pytest.raises(ConfigError, match="class_names has 2 names for 3 classes"):
        a.summary(["yes", "no"])


def test_input_errors_and_warnings():
    good = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    y = np.array([0, 1, 1])
    with pytest.raises(DataError, match="target_probs has values outside \\[0, 1\\].*not logits"):
        estimate_target_priors(good, y, [[2.0, -1.0]])
    with pytest.raises(DataError, match="source_probs row 1 sums to 1.5"):
        estimate_target_priors([[0.5, 0.5], [0.9, 0.6], [0.5, 0.5]], y, good)
    with pytest.raises(DataError, match="source_probs has 3 columns but n_classes is 2"):
        estimate_target_priors(np.full((3, 3), 1 / 3), y, good)
    with pytest.raises(DataError, match="source_labels has class 2 but the probabilities have 2 columns"):
        estimate_target_priors(good, [0, 1, 2], good)
    with pytest.raises(DataError, match="source_labels must have shape \\(3,\\)"):
        estimate_target_priors(good, [0, 1], good)
    with pytest.raises(DataError, match="no sample of classes \\[1\\]; BBSE needs at least one held-out"):
        estimate_target_priors(good, [0, 0, 0], good, method="bbse")
    with pytest.raises(DataError, match="source_probs is None; method='bbse' needs"):
        estimate_target_priors(None, None, good, method="bbse", source_priors=[0.5, 0.5])
    with pytest.raises(ConfigError, match="method='mls' is not valid.*Did you mean 'mlls'"):
        estimate_target_priors(good, y, good, method="mls")
    with pytest.raises(DataError, match="source_priors must be 2 non-negative"):
        estimate_target_priors(good, y, good, source_priors=[0.5, -0.5])
    # a classifier that always predicts class 0: singular confusion matrix
    with pytest.warns(TransferKitWarning, match="confusion matrix is singular.*classes \\[1\\] are never predicted"):
        estimate_target_priors(np.tile([0.9, 0.1], (4, 1)), [0, 1, 0, 1], good, method="bbse", n_bootstrap=0)
    with pytest.warns(TransferKitWarning, match="EM did not converge in 1 iterations"):
        e = estimate_target_priors(good, y, np.tile([0.9, 0.1], (5, 1)), max_iter=1, n_bootstrap=0)
    assert not e.converged and "[EM did not converge]" in e.summary()


def test_class_weights_for_priors():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    q = np.array([0.2, 0.3, 0.5])
    w = class_weights_for_priors(y, q)
    np.testing.assert_allclose(np.bincount(y, weights=w) / w.sum(), q)
    assert w.mean() == pytest.approx(1.0)
    with pytest.warns(TransferKitWarning, match="classes \\[2\\] have target priors \\[0.5\\] but no labeled"):
        w = class_weights_for_priors([0, 0, 1], q)
    np.testing.assert_allclose(np.bincount([0, 0, 1], weights=w) / w.sum(), [0.4, 0.6])
    with pytest.raises(DataError, match="labels has class 3 but target_priors has 3 entries"):
        class_weights_for_priors([0, 3], q)


def test_prior_matched_counts_properties():
    np.testing.assert_array_equal(prior_matched_counts(10, [0.7, 0.2, 0.1], [100, 100, 100]), [7, 2, 1])
    # class 0 capped at 3: the other 7 split 2:1 (4.67, 2.33) -> 5, 2
    np.testing.assert_array_equal(prior_matched_counts(10, [0.7, 0.2, 0.1], [3, 100, 100]), [3, 5, 2])
    # at least one per positive-prior class: 20 * 0.01 = 0.2 still gets one
    np.testing.assert_array_equal(prior_matched_counts(20, [0.94, 0.05, 0.01], [50, 50, 50]), [18, 1, 1])
    np.testing.assert_array_equal(prior_matched_counts(2, [0.7, 0.2, 0.1], [5, 5, 5]), [1, 1, 0])  # too few
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(2, 7))
        p = rng.dirichlet(np.ones(k)) * (rng.random(k) > 0.2)
        if p.sum() == 0:
            continue
        a = rng.integers(0, 40, k)
        cap = int(a[p > 0].sum())
        total = int(rng.integers(0, cap + 1))
        n = prior_matched_counts(total, p, a)
        assert n.sum() == total and (n >= 0).all() and (n <= a).all() and (n[p == 0] == 0).all()
        elig = (p > 0) & (a > 0)
        if total >= elig.sum():
            assert (n[elig] >= 1).all()
        if total >= elig.sum() and (a >= total).all() and (total * p[elig] >= 1).all():
            assert np.abs(n - total * p / p.sum()).max() < 1  # no bound binds: rounding only
    with pytest.raises(DataError, match="total=31 but only 30 samples are available.*at most 30"):
        prior_matched_counts(31, [0.5, 0.5, 0.0], [10, 20, 99])
    with pytest.raises(DataError, match="available must be a 1-D list of non-negative whole numbers"):
        prior_matched_counts(3, [0.5, 0.5], [1.5, 2])


def test_lazy_export():
    import transferkit.adapt as adapt

    assert adapt.estimate_target_priors is estimate_target_priors
    assert adapt.prior_matched_counts is prior_matched_counts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert adapt.correct_probs([[0.5, 0.5]], [0.5, 0.5], [0.5, 0.5]).shape == (1, 2)
