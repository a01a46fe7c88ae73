"""Entropy, cross-entropy, prediction entropy and mutual information."""

import math

import numpy as np
import pytest
from scipy import stats

from transferkit.errors import ConfigError, DataError
from transferkit.metrics import information as I


def test_entropy_and_cross_entropy():
    p, q = np.array([0.1, 0.2, 0.7]), np.array([0.3, 0.3, 0.4])
    assert I.entropy(p) == pytest.approx(stats.entropy(p), rel=1e-12)
    assert I.entropy(p, base=2) == pytest.approx(stats.entropy(p, base=2), rel=1e-12)
    assert I.entropy([1, 1, 1, 1]) == pytest.approx(math.log(4))  # counts are normalized
    assert I.entropy([0, 1, 0]) == 0.0
    assert I.cross_entropy(p, q) == pytest.approx(stats.entropy(p) + stats.entropy(p, q), rel=1e-12)
    assert I.cross_entropy(p, p) == pytest.approx(I.entropy(p), rel=1e-12)
    assert I.cross_entropy([0.5, 0.5], [1.0, 0.0]) == math.inf
    with pytest.raises(DataError, match="same length"):
        I.cross_entropy([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(DataError, match="p contains NaN"):
        I.entropy([0.5, np.nan])
    with pytest.raises(ConfigError, match="base=1"):
        I.entropy(p, base=1)


def test_prediction_entropy():
    import torch

    P = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert I.prediction_entropy(P) == pytest.approx(math.log(3) / 2)
    assert I.prediction_entropy(P, normalize=True) == pytest.approx(0.5)
    assert I.prediction_entropy(torch.softmax(torch.zeros(4, 5), dim=1)) == pytest.approx(math.log(5), rel=1e-6)
    with pytest.raises(DataError, match="rows of probs must sum to 1.*apply softmax"):
        I.prediction_entropy(np.array([[2.0, 1.0], [0.5, 0.5]]))
    with pytest.raises(DataError, match="negative entries"):
        I.prediction_entropy(np.array([[-1.0, 2.0]]))


@pytest.mark.parametrize("method", ["kmeans", "knn"])
def test_mutual_information_independent_and_determined(method):
    rng = np.random.default_rng(0)
    n = 1500
    y = rng.integers(0, 3, n)
    h_y = stats.entropy(np.bincount(y))
    X_indep = rng.standard_normal((n, 4))
    indep = I.mutual_information(X_indep, y, method=method)
    assert indep.value < 0.03 and indep.details["label_entropy"] == pytest.approx(h_y)
    # one feature equal to the label: MI = H(Y)
    X_det = y[:, None].astype(float)
    det = I.mutual_information(X_det, y, method=method)
    assert det.value == pytest.approx(h_y, rel=0.05)
    # two well-separated clusters per class in 8-D: the joint k-means estimate sees all of H(Y)
    centers = 6.0 * rng.standard_normal((3, 8))
    X_sep = centers[y] + rng.standard_normal((n, 8))
    sep = I.mutual_information(X_sep, y, method=method, seed=1)
    assert sep.value > (0.9 * h_y if method == "kmeans" else 0.3)
    assert sep.value == I.mutual_information(X_sep, y, method=method, seed=1).value  # seeded


def test_mutual_information_options_and_errors():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 2)), rng.integers(0, 2, 300)
    plain = I.mutual_information(X, y, n_clusters=20).value
    mm = I.mutual_information(X, y, n_clusters=20, miller_madow=True).value
    assert mm < plain  # the correction removes the positive plug-in bias of independent data
    bits = I.mutual_information(X, y, base=2).value
    assert bits == pytest.approx(I.mutual_information(X, y).value / math.log(2))
    assert I.mutual_information(X, y, method="knn", reduce="sum").details["reduce"] == "sum"
    with pytest.raises(DataError, match=r"labels must have shape \(300,\)"):
        I.mutual_information(X, y[:-1])
    with pytest.raises(ConfigError, match="method='kmean'.*Did you mean 'kmeans'"):
        I.mutual_information(X, y, method="kmean")
