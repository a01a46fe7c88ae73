"""Regression metrics: equal to scikit-learn's, with one-line errors for bad input."""

import numpy as np
import pytest
from sklearn import metrics as skm

from transferkit.errors import DataError
from transferkit.metrics.regression import mae, mse, r2, regression_report, rmse


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.normal(3.0, 2.0, size=shape)
    return t, t + rng.normal(0.0, 0.7, size=shape)


@pytest.mark.parametrize("shape", [(50,), (40, 3)])
def test_equal_to_sklearn(shape):
    t, p = _pair(shape)
    assert mse(t, p) == pytest.approx(skm.mean_squared_error(t, p), rel=1e-12)
    assert mae(t, p) == pytest.approx(skm.mean_absolute_error(t, p), rel=1e-12)
    assert r2(t, p) == pytest.approx(skm.r2_score(t, p), rel=1e-12)
    assert rmse(t, p) == pytest.approx(skm.root_mean_squared_error(t, p), rel=1e-12)


def test_hand_values_and_edge_cases():
    t, p = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0])
    assert mse(t, p) == pytest.approx(4 / 3) and mae(t, p) == pytest.approx(2 / 3)
    assert r2(t, p) == pytest.approx(1 - 4 / 2)  # SS_res 4, SS_tot 2
    assert r2(t, np.full(3, 2.0)) == pytest.approx(0.0)  # the mean predicts R^2 = 0
    # a constant target: scikit-learn's force_finite convention
    assert r2([2.0, 2.0], [2.0, 2.0]) == skm.r2_score([2.0, 2.0], [2.0, 2.0]) == 1.0
    assert r2([2.0, 2.0], [1.0, 2.0]) == skm.r2_score([2.0, 2.0], [1.0, 2.0]) == 0.0
    rep = regression_report(t, p)
    assert rep["n"] == 3 and rep["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert np.isnan(regression_report([1.0], [2.0])["r2"])


def test_bad_input_is_one_line():
    with pytest.raises(DataError, match=r"y_true has shape \(3,\) but y_pred \(2,\)"):
        mse([1, 2, 3], [1, 2])
    with pytest.raises(DataError, match=r"y_pred holds 1 NaN or infinite value\(s\); drop those rows"):
        mae([1, 2, 3], [1, np.nan, 3])
    with pytest.raises(DataError, match=r"y_true must hold numbers, got dtype <U1 \(values such as 'a'\)"):
        mse(["a", "b"], [1, 2])
    with pytest.raises(DataError, match="at least 2 are needed"):
        r2([1.0], [1.0])
    with pytest.raises(DataError, match="must be 1-D"):
        mse(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
