"""Retrieval recall@k against hand computations and a brute-force reference."""

import numpy as np
import pytest
import torch

from transferkit.errors import DataError
from transferkit.metrics.retrieval import recall_at_k, retrieval_recall


def test_recall_at_k_equals_a_hand_computation():
    S = np.array([[0.9, 0.1, 0.5, 0.3],    # item 2 relevant: item 0 ranks first, item 2 second
                  [0.2, 0.8, 0.1, 0.4],    # item 1 relevant: first
                  [0.7, 0.6, 0.5, 0.4]])   # item 3 relevant: last (fourth)
    got = recall_at_k(S, [2, 1, 3], ks=(1, 2, 3, 4, 10))
    assert got == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3), 4: 1.0, 10: 1.0}
    # the same relevance as a boolean matrix, and a torch tensor
    R = np.zeros((3, 4), dtype=bool)
    R[[0, 1, 2], [2, 1, 3]] = True
    assert recall_at_k(torch.tensor(S), torch.tensor(R), ks=(1, 2, 3, 4, 10)) == got


def test_several_relevant_items_a_query_is_a_hit_when_any_is_in_the_top_k():
    S = np.array([[0.1, 0.9, 0.5, 0.3, 0.2]])
    R = np.array([[True, False, False, True, False]])  # items 0 (rank 5) and 3 (rank 3)
    assert recall_at_k(S, R, ks=(1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 1.0}


def test_ties_count_against_the_query():
    # a constant similarity (a collapsed embedding) must not score a perfect recall
    S = np.ones((4, 4))
    got = recall_at_k(S, np.arange(4), ks=(1, 3, 4))
    assert got == {1: 0.0, 3: 0.0, 4: 1.0}  # 3 non-relevant items tie with the relevant one
    assert recall_at_k([[0.5, 0.5, 0.1]], [1], ks=(1, 2)) == {1: 0.0, 2: 1.0}


def _brute(S, R, k):
    hits = []
    for s, r in zip(S, R):
        top = np.argsort(-s, kind="stable")[:k]
        hits.append(bool(r[top].any()))
    return float(np.mean(hits))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_k_equals_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(40, 25))  # continuous: no ties, so argsort's order is the ranking
    R = rng.random((40, 25)) < 0.08
    R[np.arange(40), rng.integers(0, 25, 40)] = True  # every query has a relevant item
    ks = (1, 2, 5, 10, 30)
    got = recall_at_k(S, R, ks)
    assert got == {k: pytest.approx(_brute(S, R, k)) for k in ks}
    assert [got[k] for k in ks] == sorted(got[k] for k in ks)  # recall never drops as k grows


def test_retrieval_recall_scores_both_directions():
    rng = np.random.default_rng(3)
    S = rng.normal(size=(12, 4))
    cap = np.arange(12) % 4  # image i's caption; every caption is used by three images
    out = retrieval_recall(S, cap, ks=(1, 2))
    R = cap[:, None] == np.arange(4)[None, :]
    assert out["image_to_text"] == recall_at_k(S, cap, (1, 2))
    assert out["text_to_image"] == recall_at_k(S.T, R.T, (1, 2))
    assert out["text_to_image"] == {k: pytest.approx(_brute(S.T, R.T, k)) for k in (1, 2)}


def test_bad_input_is_a_one_line_error():
    S = np.zeros((2, 3))
    with pytest.raises(DataError, match=r"NaN in 1 query"):
        recall_at_k([[0.1, np.nan], [0.2, 0.3]], [0, 1])
    with pytest.raises(DataError, match=r"non-empty \(n_queries, n_items\)"):
        recall_at_k(np.zeros(3), [0])
    with pytest.raises(DataError, match=r"from 0 to 3; they must be in 0..2"):
        recall_at_k(S, [0, 3])
    with pytest.raises(DataError, match=r"shape \(2,\)"):
        recall_at_k(S, [0, 1, 2])
    with pytest.raises(DataError, match=r"boolean matrix of shape \(2, 2\)"):
        recall_at_k(S, np.ones((2, 2), dtype=bool))
    with pytest.raises(DataError, match=r"query 1 .* has no relevant item"):
        recall_at_k(S, np.array([[True, False, False], [False, False, False]]))
    with pytest.raises(DataError, match=r"integer item indices"):
        recall_at_k(S, [0.5, 1.0])
    for ks in ((0,), (), "1", (1.5,)):
        with pytest.raises(DataError, match=r"ks must be"):
            recall_at_k(S, [0, 1], ks=ks)
    with pytest.raises(DataError, match=r"text 2 is relevant to no image"):
        retrieval_recall(S, [0, 1])
