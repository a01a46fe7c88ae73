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
