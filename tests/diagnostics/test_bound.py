import numpy as np
import pytest

from transferkit.diagnostics import ben_david_bound
from transferkit.errors import DataError


def blobs(n, shift=0.0, flip=False, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 4)) + np.where(y[:, None] == 1, 2.0, -2.0) * np.array([1, 0, 0, 0])
    X[:, 1] += shift
    return X, (1 - y if flip else y)


def test_same_domain_gives_a_small_bound():
    Xs, ys = blobs(300, seed=0)
    Xt, yt = blobs(300, seed=1)
    b = ben_david_bound(Xs, ys, Xt, yt, a_distance=0.0)
    assert b["kind"] == "estimate"
    assert b["source_error"] < 0.05 and b["lambda_hat"] < 0.1
    assert b["estimate"] == pytest.approx(b["source_error"] + b["half_a_distance"] + b["lambda_hat"])


def test_conflicting_labels_make_lambda_large():
    """When the target's labelling contradicts the source on overlapping inputs no joint
    classifier does well: lambda (the adaptability term) must be large."""
    Xs, ys = blobs(300, seed=0)
    Xt, yt = blobs(300, seed=1, flip=True)
    b = ben_david_bound(Xs, ys, Xt, yt, a_distance=0.0)
    assert b["lambda_hat"] > 0.8


def test_bound_validates_inputs():
    Xs, ys = blobs(50)
    with pytest.raises(DataError, match="target labels"):
        ben_david_bound(Xs, ys, Xs, ys[:10], a_distance=0.0)
