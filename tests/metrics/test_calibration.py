"""Calibration: ECE against hand-computed and calibrated cases; MC-dropout properties."""

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.errors import DataError
from transferkit.metrics.calibration import expected_calibration_error, mc_dropout_predict, reliability_curve


def test_ece_hand_computed():
    # 2 bins: (0, .5], (.5, 1]
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]])
    y = np.array([0, 1, 1, 1, 0])
    # all confidences > .5 -> one bin: conf mean = (.9+.8+.7+.6+.55)/5 = .71, acc = 2/5 (rows 0, 2)
    res = expected_calibration_error(probs, y, n_bins=2)
    assert res.value == pytest.approx(abs(0.4 - 0.71))
    # 10 bins: (.5,.6]: .6,.55 -> conf .575 acc 0 ; (.6,.7]: .7 acc 1 ; (.7,.8]: .8 acc 0 ; (.8,.9]: .9 acc 1
    res = expected_calibration_error(probs, y, n_bins=10)
    want = (2 * 0.575 + 1 * 0.3 + 1 * 0.8 + 1 * 0.1) / 5
    assert res.value == pytest.approx(want)
    assert res.details["mce"] == pytest.approx(0.8)
    rc = reliability_curve(probs, y, n_bins=10)
    assert rc["counts"].tolist() == [0, 0, 0, 0, 0, 2, 1, 1, 1, 0]
    assert np.isnan(rc["accuracy"][0]) and rc["accuracy"][6] == 1.0


def test_ece_near_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    n, K = 200_000, 4
    logits = rng.normal(size=(n, K)) * 2
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = (rng.random(n)[:, None] > P.cumsum(1)).sum(1)  # y ~ Categorical(P): calibrated by construction
    assert expected_calibration_error(P, y).value < 0.01
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    assert expected_calibration_error(sharp, y).value > 0.1


def test_ece_binary_vector_and_validation():
    p = np.array([0.2, 0.9, 0.6])
    y = np.array([0, 1, 0])
    two = np.stack([1 - p, p], 1)
    assert expected_calibration_error(p, y, 5).value == pytest.approx(expected_calibration_error(two, y, 5).value)
    with pytest.raises(DataError, match="apply softmax"):
        expected_calibration_error(np.array([[2.0, -1.0]]), [0])
    with pytest.raises(DataError, match="y must be in 0..1"):
        expected_calibration_error(two, [0, 1, 2])


class _Net(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.fc1, self.bn, self.drop, self.fc2 = nn.Linear(5, 16), nn.BatchNorm1d(16), nn.Dropout(p), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def test_mc_dropout_without_dropout_has_zero_mi_and_equals_eval():
    torch.manual_seed(0)
    net = _Net(0.0)
    x = torch.randn(20, 5)
    net.train()
    net(torch.randn(64, 5) * 3 + 1)  # move BN running stats away from the batch stats
    out = mc_dropout_predict(net, x, n_samples=5, seed=0)
    assert net.training  # modes restored
    np.testing.assert_allclose(out["mutual_information"], 0, atol=1e-12)
    net.eval()
    with torch.no_grad():
        ref = torch.softmax(net(x).double(), 1).numpy()
    np.testing.assert_allclose(out["mean_probs"], ref, rtol=1e-6)  # BN used running stats
    np.testing.assert_allclose(out["predictive_entropy"], out["expected_entropy"], atol=1e-12)


def test_mc_dropout_with_dropout_is_seeded_and_positive_mi():
    torch.manual_seed(0)
    net = _Net(0.5).eval()
    x = torch.randn(30, 5)
    a = mc_dropout_predict(net, x, n_samples=10, seed=1)
    b = mc_dropout_predict(net, x, n_samples=10, seed=1)
    c = mc_dropout_predict(net, x, n_samples=10, seed=2)
    np.testing.assert_array_equal(a["mean_probs"], b["mean_probs"])
    assert not np.allclose(a["mean_probs"], c["mean_probs"])
    assert (a["mutual_information"] > 0).all() and a["n_dropout_modules"] == 1
    np.testing.assert_allclose(a["mean_probs"].sum(1), 1, atol=1e-9)
    # decomposition: predictive entropy = expected entropy + MI, all within [0, log K]
    np.testing.assert_allclose(a["predictive_entropy"], a["expected_entropy"] + a["mutual_information"], atol=1e-9)
    assert (a["predictive_entropy"] <= np.log(3) + 1e-9).all()
    state = torch.get_rng_state()
    mc_dropout_predict(net, x, n_samples=2, seed=3)
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched
