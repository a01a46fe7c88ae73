"""Open-set scores against hand computations."""

import math

import numpy as np
import pytest

from transferkit.errors import DataError
from transferkit.metrics.openset import open_set_scores, threshold_unknown


def test_h_score_equals_a_hand_computation():
    # 3 known classes (0, 1, 2); target classes 3 and 4 are unknown (predicted as 3 = unknown)
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 3, 4]
    y_pred = [0, 0, 1, 0, 1, 3, 2, 2, 2, 0, 3, 3, 0, 1, 3]
    r = open_set_scores(y_true, y_pred, n_known=3)
    acc = [3 / 4, 1 / 2, 3 / 4]          # per known class
    unk = 3 / 5                          # unknown samples 10..14: predicted 3, 3, 0, 1, 3
    os_star = sum(acc) / 3
    assert r.details["per_class"] == {0: 0.75, 1: 0.5, 2: 0.75}
    assert r.details["os_star"] == pytest.approx(os_star)
    assert r.details["unk"] == pytest.approx(unk)
    assert r.details["os"] == pytest.approx((sum(acc) + unk) / 4)
    assert r.value == pytest.approx(2 * os_star * unk / (os_star + unk))
    assert r.details["n_unknown"] == 5


def test_never_saying_unknown_scores_zero_h_and_a_perfect_model_one():
    y = np.array([0, 1, 2, 2, 3])
    r = open_set_scores(y, [0, 1, 2, 2, 0], n_known=3)
    assert r.value == 0.0 and r.details["os_star"] == 1.0 and r.details["os"] == pytest.approx(3 / 4)
    assert open_set_scores(y, [0, 1, 2, 2, 3], n_known=3).value == 1.0
    closed = open_set_scores([0, 1], [0, 0], n_known=2)  # no unknown sample: H undefined, OS = OS*
    assert math.isnan(closed.value) and closed.details["os"] == closed.details["os_star"] == 0.5


def test_threshold_unknown():
    p = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]])
    np.testing.assert_array_equal(threshold_unknown(p, 0.6), [0, 2, 1])
    np.testing.assert_array_equal(threshold_unknown(p, 0.0), [0, 0, 1])


@pytest.mark.parametrize("args, msg", [
    (([0, 1], [0, 5], 2), "y_pred must be in 0..2"),
    (([0, 1], [0], 2), "same length"),
    (([3, 4], [2, 2], 2), "no sample of the 2 known classes"),
    (([-1, 0], [0, 0], 2), "unlabeled"),
    (([], [], 2), "empty"),
    (([0.5], [0], 2), "integer class indices"),
])
def test_bad_input_is_one_line(args, msg):
    with pytest.raises(DataError, match=msg) as e:
        open_set_scores(*args)
    assert "\n" not in str(e.value)
