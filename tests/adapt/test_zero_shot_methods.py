"""DeViSE and ConSE: their loss and embedding against hand computations, and unseen classes on a toy
where the class embeddings determine the features."""

import numpy as np
import pytest
import torch

from transferkit.adapt.zero_shot import ConSE, DeViSE, ESZSL, conse_embedding, hinge_rank_loss
from transferkit.errors import ConfigError, DataError


def _toy(seed=0, n_per=40, a=6, d=10, k=20):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(k, a))            # class embeddings
    W = rng.normal(size=(a, d))            # features are a noisy linear image of the embedding
    y = np.repeat(np.arange(k), n_per)
    X = E[y] @ W + 0.3 * rng.normal(size=(len(y), d))
    return X, y, E


def _hand_hinge(S, y, margin):
    total = 0.0
    for i in range(len(S)):
        for j in range(S.shape[1]):
            if j != y[i]:
                total += max(0.0, margin - S[i, y[i]] + S[i, j])
    return total / len(S)


def test_hinge_rank_loss_equals_the_hand_sum():
    rng = np.random.default_rng(0)
    S = rng.normal(scale=0.1, size=(7, 5))  # small scores: some terms active, some clipped at 0
    y = rng.integers(0, 5, size=7)
    got = float(hinge_rank_loss(torch.as_tensor(S), torch.as_tensor(y), margin=0.1))
    assert got == pytest.approx(_hand_hinge(S, y, 0.1), rel=1e-12)
    terms = 0.1 - S[np.arange(7), y][:, None] + S
    terms[np.arange(7), y] = np.nan
    assert 0 < np.sum(terms > 0) < 7 * 4  # some terms clipped at 0, some active: both branches checked


def test_devise_loss_is_the_hinge_rank_loss_of_its_map(one_thread):
    X, y, E = _toy(k=8)
    m = DeViSE(epochs=3, seed=1).fit(X, y, E)
    Xs = (X - X.mean(0)) / X.std(0)
    En = E / np.linalg.norm(E, axis=1, keepdims=True)
    S = Xs @ m.M_.T @ En.T                 # s_j = e_j^T M x, unit-norm e_j
    assert np.allclose(m.decision_function(X, E), S)
    assert m.loss(X, y, E) == pytest.approx(_hand_hinge(S, y, 0.1), rel=1e-9)
    assert m.loss_curve_[-1] < m.loss_curve_[0]


@pytest.mark.parametrize("make", [lambda: DeViSE(epochs=30, lr=1e-2, seed=0), lambda: ConSE()],
                         ids=["devise", "conse"])
def test_unseen_classes_are_recognised_from_their_embeddings(make, one_thread):
    X, y, E = _toy(k=20)
    seen, unseen = y < 15, y >= 15
    m = make().fit(X[seen], y[seen], E[:15])
    acc = float((m.predict(X[unseen], E[15:]) == y[unseen] - 15).mean())
    assert acc > 0.8, acc  # 5 unseen classes: chance is 0.2 (measured DeViSE 0.985, ConSE 1.0)
    wrong = E[15:][[1, 2, 3, 4, 0]]  # every unseen class given another's embedding: accuracy collapses
    assert float((m.predict(X[unseen], wrong) == y[unseen] - 15).mean()) < 0.2


def test_devise_is_deterministic_under_its_seed(one_thread):
    X, y, E = _toy(k=6)
    a = DeViSE(epochs=2, seed=3).fit(X, y, E).M_
    b = DeViSE(epochs=2, seed=3).fit(X, y, E).M_
    c = DeViSE(epochs=2, seed=4).fit(X, y, E).M_
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_conse_embedding_is_the_hand_convex_combination():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(5, 3))
    P = np.array([[0.1, 0.5, 0.05, 0.3, 0.05],
                  [0.2, 0.2, 0.2, 0.2, 0.2]])
    got = conse_embedding(P, E, top_t=2)
    # row 0: classes 1 (0.5) and 3 (0.3); row 1: a five-way tie, broken by the lower index (0, 1)
    assert np.allclose(got[0], (0.5 * E[1] + 0.3 * E[3]) / 0.8)
    assert np.allclose(got[1], (E[0] + E[1]) / 2)
    assert np.allclose(conse_embedding(P, E, top_t=10), P @ E / P.sum(1, keepdims=True))  # T capped at z


def test_conse_with_precomputed_probabilities_scores_by_cosine():
    rng = np.random.default_rng(1)
    S_seen, S_unseen = rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    P = rng.dirichlet(np.ones(4), size=6)
    m = ConSE(top_t=3, classifier="precomputed").fit(P, P.argmax(1), S_seen)
    f = conse_embedding(P, S_seen, 3)
    cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (S_unseen / np.linalg.norm(S_unseen, axis=1,
                                                                                      keepdims=True)).T
    assert np.allclose(m.decision_function(P, S_unseen), cos)
    assert np.array_equal(m.predict(P, S_unseen), cos.argmax(1))


def test_conse_probabilities_are_in_embedding_order(one_thread):
    X, y, E = _toy(k=6)
    keep = y != 2  # seen class 2 has no training sample: probability 0, columns still aligned with E
    m = ConSE().fit(X[keep], y[keep], E)
    P = m.predict_proba_seen(X)
    assert P.shape == (len(X), 6) and np.all(P[:, 2] == 0) and np.allclose(P.sum(1), 1)
    assert float((P.argmax(1)[keep] == y[keep]).mean()) > 0.9


@pytest.mark.parametrize("cls", [ESZSL, DeViSE, ConSE])
def test_one_api_and_one_line_errors(cls, one_thread):
    X, y, E = _toy(k=6)
    kw = {"epochs": 1} if cls is DeViSE else {}
    with pytest.raises(DataError, match="give every class name an embedding"):
        cls(**kw).fit(X, y, E[:5])
    with pytest.raises(DataError, match="integer class indices"):
        cls(**kw).fit(X, y[:-1], E)
    with pytest.raises(DataError, match="not fitted"):
        cls(**kw).predict(X, E)
    m = cls(**kw).fit(X, y, E)
    assert m.predict(X, E[3:]).shape == (len(X),) and m.decision_function(X, E[3:]).shape == (len(X), 3)
    with pytest.raises(DataError, match="6-d class embeddings, got 10 and 4"):
        m.predict(X, E[:, :4])
    with pytest.raises(DataError, match="10-d features"):
        m.predict(X[:, :3], E)


def test_bad_parameters_name_themselves():
    X, y, E = _toy(k=4)
    with pytest.raises(ConfigError, match="optimizer='rmsprop' is not valid"):
        DeViSE(optimizer="rmsprop").fit(X, y, E)
    with pytest.raises(ConfigError, match="margin must be > 0"):
        DeViSE(margin=0).fit(X, y, E)
    with pytest.raises(ConfigError, match="top_t must be >= 1"):
        ConSE(top_t=0).fit(X, y, E)
    with pytest.raises(DataError, match="precomputed.*4 seen classes, got 10 columns"):
        ConSE(classifier="precomputed").fit(X, y, E)
    with pytest.raises(DataError, match="proba has 3 columns but class_embeddings has 4 rows"):
        conse_embedding(np.ones((2, 3)), E)
