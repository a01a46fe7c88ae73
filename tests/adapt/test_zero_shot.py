"""ESZSL against its objective and on a toy problem with unseen classes."""

import numpy as np
import pytest

from transferkit.adapt.zero_shot import ESZSL
from transferkit.errors import DataError


def _objective(V, X, Y, S, g, lam):
    return (np.sum((X @ V @ S - Y) ** 2) + g * np.sum((V @ S) ** 2) + lam * np.sum((X @ V) ** 2)
            + g * lam * np.sum(V ** 2))


def _toy(seed=0, n_per=40, a=6, d=10, k=8):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(k, a))            # class embeddings
    W = rng.normal(size=(a, d))            # features are a noisy linear image of the embedding
    y = np.repeat(np.arange(k), n_per)
    X = E[y] @ W + 0.3 * rng.normal(size=(len(y), d))
    return X, y, E


def test_closed_form_is_the_minimiser_of_the_objective():
    X, y, E = _toy()
    seen = y < 5
    m = ESZSL(gamma=0.7, lam=1.3).fit(X[seen], y[seen], E[:5])
    Y = -np.ones((seen.sum(), 5))
    Y[np.arange(seen.sum()), y[seen]] = 1
    S = E[:5].T
    V = m.V_
    # the gradient of the (convex) objective vanishes at V
    grad = 2 * (X[seen].T @ (X[seen] @ V @ S - Y) @ S.T + 0.7 * V @ S @ S.T
                + 1.3 * X[seen].T @ X[seen] @ V + 0.7 * 1.3 * V)
    assert np.abs(grad).max() < 1e-8 * max(1.0, np.abs(X[seen].T @ Y @ S.T).max())
    # and any perturbation raises it
    f0 = _objective(V, X[seen], Y, S, 0.7, 1.3)
    rng = np.random.default_rng(1)
    assert all(_objective(V + 1e-3 * rng.normal(size=V.shape), X[seen], Y, S, 0.7, 1.3) > f0 for _ in range(5))


def test_unseen_classes_are_recognised_from_their_embeddings():
    X, y, E = _toy(k=20)
    seen, unseen = y < 15, y >= 15
    m = ESZSL(gamma=1.0, lam=1.0).fit(X[seen], y[seen], E[:15])
    acc = float((m.predict(X[unseen], E[15:]) == y[unseen] - 15).mean())
    assert acc > 0.5, acc  # 5 unseen classes: chance is 0.2 (measured 0.59)
    wrong = E[15:][[1, 2, 3, 4, 0]]  # every unseen class given another's embedding: accuracy collapses
    assert float((m.predict(X[unseen], wrong) == y[unseen] - 15).mean()) < 0.2


def test_bad_input_names_what_to_give():
    X, y, E = _toy()
    with pytest.raises(DataError, match="give every class name an embedding"):
        ESZSL().fit(X, y, E[:5])
    m = ESZSL().fit(X[y < 5], y[y < 5], E[:5])
    with pytest.raises(DataError, match="6-d class embeddings, got 10 and 4"):
        m.predict(X, E[:, :4])
    with pytest.raises(DataError, match="not fitted"):
        ESZSL().predict(X, E)
