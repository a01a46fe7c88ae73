"""Uncertainty toolkit: scores against sklearn and hand computations, AUROC against
roc_auc_score, temperature scaling recovering a known temperature, ensemble weights, and the
last-layer Laplace approximation against Bayesian linear regression in closed form and the
autograd Hessian."""

import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from transferkit.errors import ConfigError, DataError, TransferKitWarning
from transferkit.metrics.calibration import expected_calibration_error
from transferkit.metrics.uncertainty import (
    LastLayerLaplace,
    TemperatureScaling,
    auroc,
    brier_score,
    ensemble_probs,
    fit_ensemble_weights,
    misclassification_auroc,
    negative_log_likelihood,
    ood_auroc,
    predictive_entropy,
    uncertainty_report,
)


def _softmax(Z):
    E = np.exp(Z - Z.max(1, keepdims=True))
    return E / E.sum(1, keepdims=True)


def _sample_labels(P, rng):
    return (rng.random(len(P))[:, None] > P.cumsum(1)).sum(1).clip(0, P.shape[1] - 1)


# ---- scores -------------------------------------------------------------------------------

def test_nll_brier_entropy_hand_computed_and_against_sklearn():
    P = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]])
    y = np.array([0, 1, 1])
    assert negative_log_likelihood(P, y).value == pytest.approx(-(np.log(0.7) + np.log(0.1) + np.log(0.5)) / 3)
    assert negative_log_likelihood(P, y).value == pytest.approx(log_loss(y, P, labels=[0, 1, 2]))
    want = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.9**2 + 0.8**2) + (0.5**2 + 0.5**2)) / 3
    assert brier_score(P, y).value == pytest.approx(want)
    H = predictive_entropy(P)
    assert H[2] == pytest.approx(math.log(2)) and H[0] == pytest.approx(-(0.7 * np.log(0.7) + 0.2 * np.log(0.2)
                                                                          + 0.1 * np.log(0.1)))
    assert predictive_entropy(np.full((2, 4), 0.25)) == pytest.approx([math.log(4)] * 2)
    # binary: the multiclass Brier sums both classes -> twice sklearn's positive-class score
    p = np.array([0.1, 0.8, 0.6, 0.3])
    yb = np.array([0, 1, 0, 1])
    assert brier_score(p, yb).value == pytest.approx(2 * brier_score_loss(yb, p))
    # a zero probability of the true class is clipped, not infinite
    res = negative_log_likelihood(np.array([[1.0, 0.0]]), [1])
    assert res.value == pytest.approx(-math.log(1e-12)) and res.details["n_clipped"] == 1


def test_score_input_errors():
    with pytest.raises(DataError, match="apply softmax"):
        brier_score(np.array([[2.0, -1.0]]), [0])
    with pytest.raises(DataError, match=r"y must be in 0..2"):
        negative_log_likelihood(np.full((2, 3), 1 / 3), [0, 3])
    with pytest.raises(DataError, match=r"y must have shape \(2,\)"):
        negative_log_likelihood(np.full((2, 3), 1 / 3), [0, 1, 2])
    with pytest.raises(DataError, match="probs must be finite"):
        predictive_entropy(np.array([[np.nan, 1.0]]))


# ---- AUROC --------------------------------------------------------------------------------

def test_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 300))
        s = rng.integers(0, 6, n).astype(float)  # many ties
        lab = rng.random(n) < rng.uniform(0.1, 0.9)
        if lab.all() or not lab.any():
            continue
        assert auroc(s, lab).value == pytest.approx(roc_auc_score(lab, s), abs=1e-12)
    # hand: positives {3, 1}, negatives {2, 1}: pairs (3>2, 3>1, 1<2, 1=1) -> (1 + 1 + 0 + .5) / 4
    assert auroc([3, 1, 2, 1], [1, 1, 0, 0]).value == pytest.approx(0.625)
    with pytest.warns(TransferKitWarning, match="all 3 samples are positives"):
        assert math.isnan(auroc([0.1, 0.2, 0.3], [1, 1, 1]).value)
    with pytest.raises(DataError, match="labels must be 0/1"):
        auroc([0.1, 0.2], [0, 2])
    with pytest.raises(DataError, match="NaN"):
        auroc([np.nan, 0.2], [0, 1])


def test_misclassification_auroc_is_roc_of_the_errors():
    rng = np.random.default_rng(1)
    n, K = 500, 4
    P = _softmax(rng.normal(size=(n, K)) * 2)
    y = _sample_labels(P, rng)
    wrong = P.argmax(1) != y
    for score, s in [("entropy", predictive_entropy(P)), ("max_prob", 1 - P.max(1))]:
        res = misclassification_auroc(P, y, score=score)
        assert res.value == pytest.approx(roc_auc_score(wrong, s))
        assert res.details["n_errors"] == wrong.sum()
        assert res.value > 0.6  # y ~ P: errors are where the model is unsure
    # an uncertainty that exactly flags the errors: AUROC 1
    Q = np.where(wrong[:, None], 1.0 / K, np.eye(K)[P.argmax(1)] * 0.9 + 0.1 / K)
    Q[wrong] = np.eye(K)[(y[wrong] + 1) % K] * 0.01 + 0.99 / K  # wrong argmax, near-uniform
    assert misclassification_auroc(Q, y).value == 1.0
    with pytest.warns(TransferKitWarning, match="every sample correctly"):
        assert math.isnan(misclassification_auroc(np.eye(3), [0, 1, 2]).value)
    with pytest.raises(ConfigError, match="score='entopy' is not valid.*Did you mean 'entropy'"):
        misclassification_auroc(P, y, score="entopy")


def test_ood_auroc():
    rng = np.random.default_rng(2)
    p_in = _softmax(rng.normal(size=(300, 5)) * 4)
    p_out = _softmax(rng.normal(size=(200, 5)) * 0.5)
    res = ood_auroc(p_in, p_out)
    s = np.r_[predictive_entropy(p_in), predictive_entropy(p_out)]
    assert res.value == pytest.approx(roc_auc_score(np.r_[np.zeros(300), np.ones(200)], s)) and res.value > 0.9
    assert ood_auroc(p_out, p_in).value == pytest.approx(1 - res.value)
    assert ood_auroc(p_in, p_in).value == pytest.approx(0.5)
    with pytest.raises(DataError, match="different numbers of classes"):
        ood_auroc(p_in, p_out[:, :4] / p_out[:, :4].sum(1, keepdims=True))
    with pytest.raises(DataError, match="probs_out rows must sum to 1"):
        ood_auroc(p_in, p_out * 0.5)


def test_uncertainty_report_matches_the_functions():
    rng = np.random.default_rng(3)
    P = _softmax(rng.normal(size=(400, 3)) * 3)
    y = _sample_labels(P, rng)
    Po = _softmax(rng.normal(size=(100, 3)))
    r = uncertainty_report(P, y, probs_ood=Po, n_bins=10)
    assert r["accuracy"] == pytest.approx((P.argmax(1) == y).mean())
    assert r["ece"] == pytest.approx(expected_calibration_error(P, y, n_bins=10).value)
    assert r["nll"] == pytest.approx(negative_log_likelihood(P, y).value)
    assert r["brier"] == pytest.approx(brier_score(P, y).value)
    assert r["misclassification_auroc"] == pytest.approx(misclassification_auroc(P, y).value)
    assert r["ood_auroc"] == pytest.approx(ood_auroc(P, Po).value) and r["n_ood"] == 100
    assert all(isinstance(v, (int, float)) for v in r.values())
    assert "ood_auroc" not in uncertainty_report(P, y)


# ---- temperature scaling ------------------------------------------------------------------

def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(20_000, 5)) * 1.5
    y = _sample_labels(_softmax(true_logits), rng)
    ts = TemperatureScaling().fit(3 * true_logits, y)
    assert ts.temperature_ == pytest.approx(3.0, rel=0.1)
    assert ts.nll_after_ <= ts.nll_before_
    P = ts.transform(3 * true_logits)
    assert negative_log_likelihood(P, y).value == pytest.approx(ts.nll_after_)
    assert (P.argmax(1) == true_logits.argmax(1)).all()
    sharp = _softmax(3 * true_logits)
    assert expected_calibration_error(P, y).value < 0.02 < expected_calibration_error(sharp, y).value
    # calibrated logits: T ~ 1
    assert TemperatureScaling().fit(true_logits, y).temperature_ == pytest.approx(1.0, rel=0.1)


def test_temperature_scaling_binary_logit_and_errors():
    rng = np.random.default_rng(1)
    z = rng.normal(size=4000) * 2
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    ts = TemperatureScaling().fit(0.5 * z, y)  # under-confident: T ~ 0.5
    assert ts.temperature_ == pytest.approx(0.5, rel=0.15)
    assert ts.predict_proba(z[:3]).shape == (3, 2) and (ts.predict(0.5 * z) == (z > 0)).all()
    y3 = np.arange(30) % 3
    with pytest.warns(TransferKitWarning, match="separate the labels perfectly"):
        TemperatureScaling().fit(10 * np.eye(3)[y3], y3)
    Z = rng.normal(size=(300, 3))
    with pytest.warns(TransferKitWarning, match="at the bound"):  # anti-informative logits: T -> infinity
        assert TemperatureScaling().fit(Z, Z.argmin(1)).temperature_ == pytest.approx(100.0, rel=1e-3)
    with pytest.raises(NotFittedError, match="call fit"):
        TemperatureScaling().transform(np.zeros((2, 3)))
    with pytest.raises(DataError, match="logits contains NaN"):
        TemperatureScaling().fit(np.array([[0.0, np.nan], [1.0, 0.0]]), [0, 1])
    with pytest.raises(DataError, match=r"y must be in 0..2 for 3 classes, got the label 3"):
        TemperatureScaling().fit(np.zeros((2, 3)), [0, 3])
    with pytest.raises(DataError, match=r"y must have shape \(2,\)"):
        TemperatureScaling().fit(np.zeros((2, 3)), [0, 1, 1])
    with pytest.raises(DataError, match="fitted on 2"):
        ts.transform(np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="0 < T_min < T_max"):
        TemperatureScaling(bounds=(1.0, 0.5)).fit(np.zeros((2, 3)), [0, 1])


# ---- ensembles ----------------------------------------------------------------------------

def test_ensemble_probs_is_the_weighted_mean():
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    b = np.array([[0.5, 0.5], [0.6, 0.4]])
    assert ensemble_probs([a, b]) == pytest.approx((a + b) / 2)
    assert ensemble_probs(np.stack([a, b]), weights=[3, 1]) == pytest.approx(0.75 * a + 0.25 * b)
    with pytest.raises(DataError, match=r"list_of_probs\[1\] has shape \(1, 2\)"):
        ensemble_probs([a, b[:1]])
    with pytest.raises(ConfigError, match=r"weights must have shape \(2,\)"):
        ensemble_probs([a, b], weights=[1.0])
    with pytest.raises(ConfigError, match="non-negative"):
        ensemble_probs([a, b], weights=[1.0, -1.0])
    with pytest.raises(DataError, match="non-empty list"):
        ensemble_probs([])


def test_fit_ensemble_weights():
    rng = np.random.default_rng(0)
    n, K = 3000, 4
    logits = rng.normal(size=(n, K)) * 2
    P = _softmax(logits)
    y = _sample_labels(P, rng)
    useless = np.full((n, K), 1 / K)
    noisy = _softmax(logits + rng.normal(size=(n, K)))
    w = fit_ensemble_weights([P, useless, noisy], y)
    assert w.shape == (3,) and (w >= 0).all() and w.sum() == pytest.approx(1.0)
    # the true probabilities dominate the noisy member; the uniform one helps only by sampling noise
    assert w[2] < 1e-3 and w[1] < 0.03
    # the objective is convex in w: EM's multiplicative updates reach the same optimum
    Py = np.stack([m[np.arange(n), y] for m in (P, useless, noisy)], 1)
    v = np.full(3, 1 / 3)
    for _ in range(3000):
        v = v * (Py / (Py @ v)[:, None]).mean(0)
    np.testing.assert_allclose(w, v, atol=1e-5)
    assert fit_ensemble_weights([P, P, P], y) == pytest.approx([1 / 3] * 3, abs=1e-12)
    # two informative members with independent errors + a useless one: the fitted mixture beats each
    noisy2 = _softmax(logits + rng.normal(size=(n, K)))
    members = [noisy, noisy2, useless]
    w = fit_ensemble_weights(members, y)
    nll = negative_log_likelihood(ensemble_probs(members, w), y).value
    assert all(nll <= negative_log_likelihood(m, y).value for m in members)
    assert nll <= negative_log_likelihood(ensemble_probs(members), y).value
    assert (fit_ensemble_weights(members, y) == w).all()  # deterministic
    with pytest.raises(DataError, match="y_val must be in 0..3"):
        fit_ensemble_weights(members, np.full(n, 4))


# ---- last-layer Laplace -------------------------------------------------------------------

def _blr(rng, n=60, d=3, K=1, s=0.5, lam=2.0, m0=None):
    X = rng.normal(size=(n, d))
    Xa = np.c_[X, np.ones(n)]
    theta_true = rng.normal(size=(K, d + 1))
    Y = Xa @ theta_true.T + s * rng.normal(size=(n, K))
    m0 = np.zeros((K, d + 1)) if m0 is None else m0
    Sigma = np.linalg.inv(Xa.T @ Xa / s**2 + lam * np.eye(d + 1))  # per output
    theta_map = (Sigma @ (Xa.T @ Y / s**2 + lam * m0.T)).T  # (K, d+1): the posterior mean
    return X, Xa, Y, Sigma, theta_map


@pytest.mark.parametrize("hessian", ["full", "kron"])
def test_laplace_regression_is_bayesian_linear_regression(hessian):
    rng = np.random.default_rng(0)
    s, lam, d = 0.5, 2.0, 3
    X, Xa, Y, Sigma, theta = _blr(rng, d=d, s=s, lam=lam)
    la = LastLayerLaplace(prior_precision=lam, likelihood="regression", sigma_noise=s, hessian=hessian)
    la.fit(X, Y[:, 0], theta[:, :d], theta[:, d])
    assert la.hessian_ == hessian
    np.testing.assert_allclose(la.posterior_mean_, theta.ravel(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(la.posterior_covariance(), Sigma, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(la.posterior_variance_, np.diag(Sigma), rtol=1e-8, atol=1e-12)
    Xs = rng.normal(size=(7, d)) * 3
    Xsa = np.c_[Xs, np.ones(7)]
    mean, var = la.predict(Xs)
    assert mean.shape == var.shape == (7,)
    np.testing.assert_allclose(mean, Xsa @ theta[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, np.einsum("ni,ij,nj->n", Xsa, Sigma, Xsa) + s**2, rtol=1e-8)


@pytest.mark.parametrize("hessian", ["full", "kron"])
def test_laplace_regression_two_outputs_and_exact_evidence_with_a_prior_mean(hessian):
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(1)
    s, lam, d, K, n = 0.3, 0.7, 2, 2, 40
    m0 = rng.normal(size=(K, d + 1))  # a "source head" as the prior mean
    X, Xa, Y, Sigma, theta = _blr(rng, n=n, d=d, K=K, s=s, lam=lam, m0=m0)
    la = LastLayerLaplace(prior_precision=lam, prior_mean=(m0[:, :d], m0[:, d]), likelihood="regression",
                          sigma_noise=s, hessian=hessian).fit(X, Y, theta[:, :d], theta[:, d])
    np.testing.assert_allclose(la.posterior_covariance(), np.kron(np.eye(K), Sigma), rtol=1e-8, atol=1e-12)
    mean, var = la.predict(X[:5])
    assert mean.shape == var.shape == (5, K)
    np.testing.assert_allclose(var[:, 1], np.einsum("ni,ij,nj->n", Xa[:5], Sigma, Xa[:5]) + s**2, rtol=1e-8)
    # the Laplace evidence of a linear-Gaussian model is exact: y_k ~ N(Xa m0_k, s^2 I + Xa Xa^T / lam)
    C = s**2 * np.eye(n) + Xa @ Xa.T / lam
    exact = sum(multivariate_normal(Xa @ m0[k], C).logpdf(Y[:, k]) for k in range(K))
    assert la.log_marginal_likelihood() == pytest.approx(exact, rel=1e-10)
    # the flat-array prior mean is the same prior
    la2 = LastLayerLaplace(prior_precision=lam, prior_mean=m0.ravel(), likelihood="regression", sigma_noise=s,
                           hessian=hessian).fit(X, Y, theta[:, :d], theta[:, d])
    assert la2.log_marginal_likelihood() == pytest.approx(exact, rel=1e-10)
    # the evidence-based choice is the grid's argmax of log_marginal_likelihood
    grid = np.logspace(-2, 2, 9)
    la.fit_prior_precision(grid=grid, method="marglik")
    assert la.prior_precision_ == grid[int(np.argmax([la.log_marginal_likelihood(g) for g in grid]))]
    np.testing.assert_allclose(-la.prior_precision_scores_, [la.log_marginal_likelihood(g) for g in grid])


def _softmax_problem(rng, n=60, d=10, K=3, C=1e6):
    from sklearn.linear_model import LogisticRegression

    means = rng.normal(size=(K, d))

    def sample(m):
        yy = rng.integers(0, K, m)
        return means[yy] + rng.normal(size=(m, d)), yy

    Xtr, ytr = sample(n)
    lr = LogisticRegression(C=C, max_iter=5000).fit(Xtr, ytr)  # ~unregularised on separable data
    return Xtr, ytr, sample, lr


def test_laplace_classification_hessian_is_the_autograd_hessian(one_thread):
    import torch

    rng = np.random.default_rng(0)
    n, d, K, lam = 25, 3, 3, 0.5
    X = rng.normal(size=(n, d))
    y = rng.integers(0, K, n)
    W, b = rng.normal(size=(K, d)), rng.normal(size=K)
    la = LastLayerLaplace(prior_precision=lam, hessian="full").fit(X, y, W, b)
    Xa = torch.tensor(np.c_[X, np.ones(n)])
    yt = torch.tensor(y)

    def nll(theta):
        return torch.nn.functional.cross_entropy(Xa @ theta.reshape(K, d + 1).T, yt, reduction="sum")

    Ht = torch.autograd.functional.hessian(nll, torch.tensor(np.c_[W, b].ravel())).numpy()
    np.testing.assert_allclose(la.posterior_precision(), Ht + lam * np.eye(K * (d + 1)), rtol=1e-9, atol=1e-10)
    # diag: the exact diagonal; its variances never exceed the full marginal variances
    dg = LastLayerLaplace(prior_precision=lam, hessian="diag").fit(X, y, W, b)
    np.testing.assert_allclose(np.diag(dg.posterior_precision()), np.diag(Ht) + lam, rtol=1e-10)
    assert (dg.posterior_variance_ <= la.posterior_variance_ + 1e-12).all()
    np.testing.assert_allclose(la.posterior_variance_, np.diag(la.posterior_covariance()), rtol=1e-10)
    # kron: exact for a single sample (Lambda kron phi phi^T is one Kronecker product)
    one = LastLayerLaplace(prior_precision=lam, hessian="kron").fit(X[:1], y[:1], W, b)
    full1 = LastLayerLaplace(prior_precision=lam, hessian="full").fit(X[:1], y[:1], W, b)
    np.testing.assert_allclose(one.posterior_covariance(), full1.posterior_covariance(), rtol=1e-8, atol=1e-10)
    # the output covariance of every structure equals J Sigma J^T from its dense covariance
    Xs = rng.normal(size=(4, d))
    Js = np.c_[Xs, np.ones(4)]
    for m in (la, dg, one):
        S = m.posterior_covariance().reshape(K, d + 1, K, d + 1)
        want = np.einsum("ni,kilj,nj->nkl", Js, S, Js)
        np.testing.assert_allclose(m._function_cov(Js, full=True), want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m._function_cov(Js, full=False), np.einsum("nkk->nk", want), rtol=1e-9, atol=1e-12)


def test_laplace_probit_matches_mc_and_tends_to_the_map():
    rng = np.random.default_rng(1)
    Xtr, ytr, sample, lr = _softmax_problem(rng, d=4)
    Xte, _ = sample(300)
    args = (Xtr, ytr, lr.coef_, lr.intercept_)
    # moderate variance, where the probit approximation is accurate (with lambda = 0.3 it is off by
    # up to 0.2: it ignores the logits' covariance, see the class docstring)
    probit = LastLayerLaplace(prior_precision=3.0).fit(*args).predict_proba(Xte)
    mc = LastLayerLaplace(prior_precision=3.0, link="mc", n_samples=4000, seed=3).fit(*args).predict_proba(Xte)
    assert np.abs(probit - mc).max() < 0.05 and np.abs(probit - mc).mean() < 0.01, np.abs(probit - mc).max()
    assert np.abs(lr.predict_proba(Xte) - mc).mean() > 0.015  # ... and the variance matters
    assert np.allclose(probit.sum(1), 1) and np.allclose(mc.sum(1), 1)
    # a very strong prior leaves no variance: both links give the MAP's softmax
    for link in ("probit", "mc"):
        tight = LastLayerLaplace(prior_precision=1e14, link=link, n_samples=3).fit(*args)
        np.testing.assert_allclose(tight.predict_proba(Xte), lr.predict_proba(Xte), atol=1e-5)
    m1 = LastLayerLaplace(prior_precision=0.3, link="mc", n_samples=20, seed=5).fit(*args)
    assert (m1.predict_proba(Xte) == m1.predict_proba(Xte)).all()  # seeded


def test_laplace_softens_far_away_keeps_argmax_and_lowers_ece():
    rng = np.random.default_rng(0)
    Xtr, ytr, sample, lr = _softmax_problem(rng)
    assert lr.score(Xtr, ytr) == 1.0  # separable: the MAP is over-confident
    Xval, yval = sample(300)
    Xte, yte = sample(3000)
    la = LastLayerLaplace().fit(Xtr, ytr, lr.coef_, lr.intercept_).fit_prior_precision(Xval, yval)
    assert la.prior_precision_ in la.prior_precision_grid_
    p_map, p_la = lr.predict_proba(Xte), la.predict_proba(Xte)
    assert (p_la.argmax(1) == p_map.argmax(1)).mean() > 0.95
    e_map, e_la = expected_calibration_error(p_map, yte).value, expected_calibration_error(p_la, yte).value
    assert e_la < e_map / 2, (e_map, e_la)
    assert negative_log_likelihood(p_la, yte).value < negative_log_likelihood(p_map, yte).value
    far = Xte[:200] * 100
    c_map, c_la = lr.predict_proba(far).max(1), la.predict_proba(far).max(1)
    assert (c_la <= c_map + 1e-12).all() and c_map.mean() > 0.99 and c_la.mean() < 0.95
    assert (la.predict(Xte) == p_la.argmax(1)).all()
    # the evidence picks some lambda on the grid too
    assert LastLayerLaplace().fit(Xtr, ytr, lr.coef_, lr.intercept_).fit_prior_precision(
        method="marglik").prior_precision_ > 0


def test_laplace_auto_structure_no_bias_and_errors():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(8, 3)), np.array([0, 1, 2, 0, 1, 2, 0, 1])
    W, b = rng.normal(size=(3, 3)), np.zeros(3)
    assert LastLayerLaplace().fit(X, y, W, b).hessian_ == "full"
    big = LastLayerLaplace(hessian="auto").fit(rng.normal(size=(4, 1030)), [0, 1, 0, 1], rng.normal(size=(2, 1030)),
                                               np.zeros(2))
    assert big.hessian_ == "kron" and big.posterior_mean_.shape == (2 * 1031,)
    nb = LastLayerLaplace(prior_precision=1.0).fit(X, y, W, None)  # a layer without bias
    assert nb.posterior_mean_.shape == (9,) and nb.predict_proba(X).shape == (8, 3)
    with pytest.raises(DataError, match="features have 4 columns but weight has 3"):
        LastLayerLaplace().fit(rng.normal(size=(8, 4)), y, W, b)
    with pytest.raises(DataError, match=r"bias must have shape \(3,\)"):
        LastLayerLaplace().fit(X, y, W, np.zeros(2))
    with pytest.raises(DataError, match=r"targets must be in 0..2 for 3 classes"):
        LastLayerLaplace().fit(X, np.full(8, 5), W, b)
    with pytest.raises(DataError, match="features contains NaN"):
        LastLayerLaplace().fit(np.full((8, 3), np.nan), y, W, b)
    with pytest.raises(DataError, match=r"targets must have shape \(8,\) or \(8, 3\)"):
        LastLayerLaplace(likelihood="regression").fit(X, np.zeros(8), W, b)
    with pytest.raises(ConfigError, match="link='prob' is not valid.*'probit'"):
        LastLayerLaplace(link="prob").fit(X, y, W, b)
    with pytest.raises(ConfigError, match="prior_precision must be > 0"):
        LastLayerLaplace(prior_precision=0).fit(X, y, W, b)
    with pytest.raises(ConfigError, match=r"prior_mean must have shape \(3, 4\) or \(12,\)"):
        LastLayerLaplace(prior_mean=np.zeros(5)).fit(X, y, W, b)
    with pytest.raises(NotFittedError):
        LastLayerLaplace().predict_proba(X)
    la = LastLayerLaplace().fit(X, y, W, b)
    with pytest.raises(DataError, match="features have 2 columns but the layer has 3"):
        la.predict_proba(X[:, :2])
    with pytest.raises(ConfigError, match="needs features_val and y_val"):
        la.fit_prior_precision()
    with pytest.raises(ConfigError, match="grid must be a non-empty list"):
        la.fit_prior_precision(X, y, grid=[1.0, -1.0])
    with pytest.raises(ConfigError, match="use predict"):
        LastLayerLaplace(likelihood="regression").fit(X, np.zeros((8, 3)), W, b).predict_proba(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        la.fit_prior_precision(X, y)  # no warning on a valid call
