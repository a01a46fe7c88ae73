"""Taylor & Stone's transfer metrics and the policy-distillation loss against hand computations."""

import math

import numpy as np
import pytest
import torch

from transferkit.errors import ConfigError, DataError
from transferkit.rl.methods import policy_distillation_loss
from transferkit.rl.metrics import (
    area_under_curve,
    asymptotic_performance,
    jumpstart,
    mean_return_over_budget,
    retention,
    time_to_threshold,
    transfer_metrics,
    transfer_ratio,
)

# synthetic curves, evaluated every 100 steps up to 400
SCRATCH = {"steps": [0, 100, 200, 300, 400], "returns": [10, 50, 200, 480, 500]}
TRANSFER = {"steps": [0, 100, 200, 300, 400], "returns": [100, 480, 490, 500, 500]}


def test_jumpstart_asymptote_and_time_to_threshold_by_hand():
    assert jumpstart(TRANSFER, SCRATCH) == 90.0
    assert asymptotic_performance(SCRATCH, tail=2) == 490.0
    assert asymptotic_performance(TRANSFER, tail=3) == pytest.approx((490 + 500 + 500) / 3)
    assert asymptotic_performance(SCRATCH, tail=99) == pytest.approx(np.mean(SCRATCH["returns"]))
    assert time_to_threshold(SCRATCH, 475) == 300.0 and time_to_threshold(TRANSFER, 475) == 100.0
    assert time_to_threshold(SCRATCH, 480) == 300.0  # reaching the threshold exactly counts
    assert time_to_threshold(SCRATCH, 501) is None


def test_area_and_transfer_ratio_by_the_trapezoid_rule():
    # scratch: 100 * ((10+50)/2 + (50+200)/2 + (200+480)/2 + (480+500)/2) = 98,500
    assert area_under_curve(SCRATCH) == pytest.approx(98_500)
    # transfer: 100 * (290 + 485 + 495 + 500) = 177,000
    assert area_under_curve(TRANSFER) == pytest.approx(177_000)
    assert transfer_ratio(TRANSFER, SCRATCH) == pytest.approx((177_000 - 98_500) / 98_500)
    # up to 250 steps: scratch 100*(30 + 125) + 50 * (200 + 340) / 2 (interpolated 340 at 250)
    assert area_under_curve(SCRATCH, until=250) == pytest.approx(15_500 + 13_500)
    # a floor shifts every point: the area of (R - floor), so negative returns still give a positive area
    neg = {"steps": [0, 100], "returns": [-500, -300]}
    assert area_under_curve(neg, floor=-500) == pytest.approx(100 * 100)
    # a one-point (zero-shot) curve is flat over the budget
    assert area_under_curve({"steps": [0], "returns": [300]}, until=400) == pytest.approx(120_000)
    assert mean_return_over_budget(SCRATCH, 400) == pytest.approx(98_500 / 400)
    assert mean_return_over_budget(neg, 100, floor=-500) == pytest.approx(-400)


def test_transfer_metrics_over_seeds_give_the_paired_t_verdict():
    # three seeds: transfer = scratch + d_s with mean returns over the budget differing by 1, 2, 3
    scratch = [{"steps": [0, 400], "returns": [100.0 + s, 100.0 + s]} for s in range(3)]
    transfer = [{"steps": [0, 400], "returns": [101.0 + 2 * s, 101.0 + 2 * s]} for s in range(3)]
    m = transfer_metrics(transfer, scratch, budget=400, threshold=475)
    v = m["verdict"]
    half = 4.302652729749464 * 1.0 / math.sqrt(3)  # t_{2, 0.975} * s_d / sqrt(n), s_d = std(1, 2, 3) = 1
    assert v["delta_mean"] == pytest.approx(2.0)
    assert v["ci_low"] == pytest.approx(2.0 - half) and v["ci_high"] == pytest.approx(2.0 + half)
    assert v["verdict"] == "no significant difference"  # 2 - 2.48 < 0
    assert m["jumpstart"]["values"] == [1.0, 2.0, 3.0]
    assert m["time_to_threshold"]["values"] == [None] * 3 and m["time_to_threshold"]["mean"] == 400.0
    # every seed below scratch by the same amount: a certain negative transfer
    worse = [{"steps": [0, 400], "returns": [90.0 + s, 90.0 + s]} for s in range(3)]
    assert transfer_metrics(worse, scratch, budget=400, threshold=475)["verdict"]["verdict"] == "negative transfer"
    m = transfer_metrics([TRANSFER] * 2, [SCRATCH] * 2, budget=400, threshold=475)
    assert m["time_to_threshold"]["values"] == [100.0, 100.0] and m["scratch_time_to_threshold"]["mean"] == 300.0
    assert m["transfer_ratio"]["mean"] == pytest.approx((177_000 - 98_500) / 98_500)
    # a scratch curve at the task's lowest return all along has no ratio, and that is not an error
    flat = [{"steps": [0, 400], "returns": [-200.0, -200.0]}] * 2
    m = transfer_metrics([{"steps": [0, 400], "returns": [-150.0, -50.0]}] * 2, flat, budget=400, threshold=-110,
                         floor=-200)
    assert m["transfer_ratio"]["mean"] is None and m["verdict"]["verdict"] == "positive transfer"


def test_retention_and_bad_curves():
    assert retention(450, 500) == 0.9
    assert retention(-150, -100, floor=-500) == pytest.approx(350 / 400)
    with pytest.raises(DataError, match="not above the floor"):
        retention(1, -500, floor=-500)
    with pytest.raises(DataError, match="increase strictly"):
        area_under_curve({"steps": [0, 100, 100], "returns": [1, 2, 3]})
    with pytest.raises(DataError, match="one return per step count"):
        jumpstart({"steps": [0, 1], "returns": [1]}, SCRATCH)
    with pytest.raises(DataError, match="NaN or inf"):
        time_to_threshold({"steps": [0], "returns": [float("nan")]}, 1)
    with pytest.raises(ConfigError, match="tail=0"):
        asymptotic_performance(SCRATCH, tail=0)
    with pytest.raises(DataError, match="pairs curves by seed"):
        transfer_metrics([SCRATCH], [SCRATCH, SCRATCH], budget=400, threshold=1)


def _np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_the_categorical_distillation_loss_is_kl_teacher_to_student_by_hand():
    s = np.array([[0.2, -1.0, 0.5], [1.5, 0.0, -0.3]])
    t = np.array([[2.0, 0.1, -1.0], [0.0, 0.0, 3.0]])
    for tau in (1.0, 0.5):
        lp_t, lp_s = _np_log_softmax(t / tau), _np_log_softmax(s)
        hand = np.mean(np.sum(np.exp(lp_t) * (lp_t - lp_s), axis=1))
        got = policy_distillation_loss(torch.tensor(s), torch.tensor(t), "categorical", temperature=tau)
        assert float(got) == pytest.approx(hand, rel=1e-10)
    # one state written out: p_T = softmax(t_0), KL = sum_a p_T(a) log(p_T(a) / p_S(a))
    pt = np.exp(t[0]) / np.exp(t[0]).sum()
    ps = np.exp(s[0]) / np.exp(s[0]).sum()
    one = policy_distillation_loss(torch.tensor(s[:1]), torch.tensor(t[:1]))
    assert float(one) == pytest.approx(float(np.sum(pt * np.log(pt / ps))), rel=1e-10)
    assert float(policy_distillation_loss(torch.tensor(t), torch.tensor(t))) == pytest.approx(0.0, abs=1e-12)


def test_the_gaussian_distillation_loss_is_the_closed_form_kl():
    mu_t, ls_t = np.array([[0.5, -1.0]]), np.array([[-0.5, 0.2]])
    mu_s, ls_s = np.array([[0.0, -0.5]]), np.array([[0.1, -0.3]])
    st, ss = np.exp(ls_t), np.exp(ls_s)
    hand = np.sum(np.log(ss / st) + (st ** 2 + (mu_t - mu_s) ** 2) / (2 * ss ** 2) - 0.5)
    s = torch.tensor(np.concatenate([mu_s, ls_s], 1), requires_grad=True)
    t = torch.tensor(np.concatenate([mu_t, ls_t], 1), requires_grad=True)
    loss = policy_distillation_loss(s, t, "gaussian")
    assert float(loss.detach()) == pytest.approx(hand, rel=1e-10)
    # torch's own KL of the two Gaussians agrees
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(torch.tensor(mu_t), torch.tensor(st)),
                                            torch.distributions.Normal(torch.tensor(mu_s), torch.tensor(ss))).sum()
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-10)
    loss.backward()
    assert s.grad is not None and t.grad is None  # the teacher is a constant


def test_distillation_loss_bad_input():
    with pytest.raises(ConfigError, match="same shape"):
        policy_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ConfigError, match="kind='kl'"):
        policy_distillation_loss(torch.zeros(2, 2), torch.zeros(2, 2), "kl")
    with pytest.raises(ConfigError, match="temperature"):
        policy_distillation_loss(torch.zeros(2, 2), torch.zeros(2, 2), temperature=0)
