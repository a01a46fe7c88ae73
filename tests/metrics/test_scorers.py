import numpy as np
import pytest
from scipy.special import log_softmax

from transferkit._registry import available, get
from transferkit.metrics.scorers import SelectionContext, importance_weights


def ctx(seed=0, sharp=1.0, n=60, k=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + sharp * 4 * np.eye(k)[y]
    return SelectionContext(logits_t=logits, logits_sv=logits, y_sv=y, weights_sv=np.ones(n))


@pytest.mark.parametrize("name", available("scorer"))
def test_scorer_contract(name):
    f = get("scorer", name)
    a, b = f(ctx(0)), f(ctx(0))
    assert np.isfinite(a) and a == b


@pytest.mark.parametrize("name", ["entropy", "iwcv", "dev"])
def test_confident_correct_models_score_higher(name):
    f = get("scorer", name)
    assert f(ctx(sharp=2.0)) > f(ctx(sharp=0.2))


def test_entropy_extremes():
    k = 4
    uniform = SelectionContext(logits_t=np.zeros((5, k)))
    assert get("scorer", "entropy")(uniform) == pytest.approx(-np.log(k))
    onehot = SelectionContext(logits_t=np.eye(k)[[0, 1, 2, 3, 0]] * 100)
    assert get("scorer", "entropy")(onehot) == pytest.approx(0, abs=1e-6)


def test_iwcv_equals_weighted_cross_entropy():
    c = ctx()
    w = np.linspace(0.5, 1.5, len(c.y_sv))
    c.weights_sv = w
    ce = -log_softmax(c.logits_sv, axis=1)[np.arange(len(c.y_sv)), c.y_sv]
    assert get("scorer", "iwcv")(c) == pytest.approx(-(w * ce).mean())


def test_dev_equals_iwcv_when_weights_are_constant():
    c = ctx()
    assert get("scorer", "dev")(c) == pytest.approx(get("scorer", "iwcv")(c))


def _shifted_validation(rng, n, a=1.5):
    """Source N(0,1) validation rows with the exact ratio w = p_T/p_S for target N(1,1), and a
    model whose loss rises with x (so the loss is correlated with w, as under a real shift)."""
    x = rng.normal(0, 1, n)
    logits = np.c_[np.zeros(n), a * x]  # class 0 is right: loss log(1 + e^{a x})
    return SelectionContext(logits_t=logits, logits_sv=logits, y_sv=np.zeros(n, dtype=int),
                            weights_sv=np.exp(x - 0.5))


def test_dev_differs_from_iwcv_and_follows_its_formula():
    """You et al. (2019): R_DEV = mean(w l) + eta mean(w) - eta, eta = -Cov(w l, w) / Var(w).
    With weights that do not average exactly 1 (any finite draw) the correction is not zero."""
    from transferkit.metrics.scorers import dev_risk, iwcv_risk

    c = _shifted_validation(np.random.default_rng(3), 200)
    w = c.weights_sv
    loss = np.log1p(np.exp(c.logits_sv[:, 1]))  # cross-entropy of class 0 under logits (0, z)
    lw = w * loss
    eta = -np.cov(lw, w, ddof=1)[0, 1] / w.var(ddof=1)
    assert iwcv_risk(c) == pytest.approx(lw.mean())
    assert dev_risk(c) == pytest.approx(lw.mean() + eta * w.mean() - eta)
    assert abs(dev_risk(c) - iwcv_risk(c)) > 1e-3
    assert get("scorer", "dev")(c) == pytest.approx(-dev_risk(c))


def test_dev_has_lower_variance_than_iwcv_over_repeated_draws():
    """Both estimate the target risk E_T[l]; the control variate removes the part of IWCV's
    error explained by mean(w) - 1, so over repeated source validation draws DEV's spread is
    well below IWCV's and both are centred on the true target risk."""
    from transferkit.metrics.scorers import dev_risk, iwcv_risk

    rng = np.random.default_rng(0)
    xt = rng.normal(1, 1, 400_000)
    true = float(np.log1p(np.exp(1.5 * xt)).mean())
    draws = [_shifted_validation(rng, 100) for _ in range(400)]
    iw = np.array([iwcv_risk(c) for c in draws])
    dv = np.array([dev_risk(c) for c in draws])
    assert dv.var() < 0.5 * iw.var(), (dv.var(), iw.var())
    assert abs(dv.mean() - true) < 0.05 * true and abs(iw.mean() - true) < 0.05 * true


def test_importance_weights_are_not_renormalized():
    """Renormalizing to mean 1 on the validation rows would make DEV's correction vanish."""
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(0, 1, (500, 1)), rng.normal(1, 1, (500, 1))
    xv = rng.normal(0, 1, (50, 1))
    w = importance_weights(xv, xs, xt, seed=0)
    assert abs(w.mean() - 1) > 1e-6
    assert importance_weights(xv, xs, xt, seed=0, normalize=True).mean() == pytest.approx(1)
    assert get("scorer", "dev")(_ctx_with(w)) != pytest.approx(get("scorer", "iwcv")(_ctx_with(w)), abs=1e-9)


def _ctx_with(w):
    n = len(w)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 2 * np.eye(3)[y] + 3 * (w[:, None] - 1) * np.eye(3)[(y + 1) % 3]
    return SelectionContext(logits_t=logits, logits_sv=logits, y_sv=y, weights_sv=w)


def test_scorers_refuse_misaligned_weights():
    from transferkit.errors import DataError

    c = ctx()
    c.weights_sv = np.ones(len(c.y_sv) - 1)
    for name in ("iwcv", "dev"):
        with pytest.raises(DataError, match="weights_sv"):
            get("scorer", name)(c)


def test_snd_prefers_clustered_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    clustered = SelectionContext(logits_t=8 * np.eye(3)[y] + 0.1 * rng.normal(size=(90, 3)))
    diffuse = SelectionContext(logits_t=rng.normal(size=(90, 3)))
    assert get("scorer", "snd")(clustered) > get("scorer", "snd")(diffuse)


def test_importance_weights_follow_the_density_ratio():
    """Source N(0,1), target N(1,1) in 1-D: true ratio exp(x - 1/2) is increasing in x."""
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(0, 1, (2000, 1)), rng.normal(1, 1, (2000, 1))
    xv = np.linspace(-2, 2, 41)[:, None]
    w = importance_weights(xv, xs, xt, seed=0)
    true = np.exp(xv[:, 0] - 0.5)
    assert np.corrcoef(np.log(w), np.log(true / true.mean()))[0, 1] > 0.99
