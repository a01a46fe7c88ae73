"""Zero-shot metrics against hand computations: per-class accuracy, GZSL's harmonic mean, calibrated stacking."""

import numpy as np
import pytest

from transferkit.errors import DataError
from transferkit.metrics._base import MetricResult
from transferkit.metrics.zero_shot import calibrated_stacking, gzsl_scores, per_class_accuracy


def test_per_class_accuracy_weights_classes_not_samples():
    # class 0: 8 samples, 6 right; class 1: 2 samples, 0 right; class 2: 2 samples, 1 right
    yt = np.array([0] * 8 + [1] * 2 + [2] * 2)
    yp = np.array([0] * 6 + [1] * 2 + [0, 0] + [2, 1])
    r = per_class_accuracy(yt, yp)
    assert isinstance(r, MetricResult) and r.name == "per_class_accuracy"
    assert r.value == pytest.approx((6 / 8 + 0 / 2 + 1 / 2) / 3)
    assert r.details["accuracy"] == pytest.approx(7 / 12)  # plain accuracy is higher: class 0 dominates it
    assert r.details["per_class"] == {0: 0.75, 1: 0.0, 2: 0.5}


def test_gzsl_harmonic_mean_by_hand():
    # seen classes 0, 1; unseen 2, 3. Seen recalls 3/4 and 1/2 -> s = 0.625; unseen 1/2 and 0 -> u = 0.25
    yt = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    yp = np.array([0, 0, 0, 2, 1, 0, 2, 0, 1, 0])
    r = gzsl_scores(yt, yp, seen=[0, 1])
    s, u = 0.625, 0.25
    assert r.details["seen"] == pytest.approx(s) and r.details["unseen"] == pytest.approx(u)
    assert r.value == pytest.approx(2 * s * u / (s + u))
    assert gzsl_scores(yt, yp, seen=np.array([True, True, False, False])).value == pytest.approx(r.value)
    # a model that always predicts a seen class: u = 0 so H = 0, whatever s
    assert gzsl_scores(yt, np.where(yt < 2, yt, 0), seen=[0, 1]).value == 0.0


def test_calibrated_stacking_subtracts_gamma_from_seen_scores_only():
    F = np.array([[0.9, 0.1, 0.8],    # seen 0 wins by 0.1 over unseen 2
                  [0.2, 0.3, 0.0],    # seen 1 wins by 0.3
                  [0.0, 0.1, 0.5]])   # unseen 2 wins already
    assert calibrated_stacking(F, seen=[0, 1], gamma=0).tolist() == [0, 1, 2]
    assert calibrated_stacking(F, seen=[0, 1], gamma=0.15).tolist() == [2, 1, 2]
    assert calibrated_stacking(F, seen=[0, 1], gamma=0.35).tolist() == [2, 2, 2]
    assert calibrated_stacking(F, seen=[0, 1], gamma=-1.0).tolist() == [0, 1, 1]


def test_errors_say_what_to_give():
    with pytest.raises(DataError, match="no sample of a unseen class"):
        gzsl_scores([0, 1], [0, 1], seen=[0, 1])
    with pytest.raises(DataError, match="same length"):
        per_class_accuracy([0, 1], [0])
    with pytest.raises(DataError, match="outside 0..2"):
        calibrated_stacking(np.zeros((2, 3)), seen=[3])
    with pytest.raises(DataError, match="boolean mask over 2 classes but the scores have 3"):
        calibrated_stacking(np.zeros((2, 3)), seen=[True, False])
