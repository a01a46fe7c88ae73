"""EpisodeSampler, split_classes and mean_ci95 (transferkit.fewshot.episodes)."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.errors import ConfigError, DataError
from transferkit.fewshot import EpisodeSampler, mean_ci95, split_classes

LABELS = np.repeat(np.arange(20), 12)  # 20 classes x 12 rows


def _same(a, b) -> bool:
    return (np.array_equal(a.classes, b.classes) and np.array_equal(a.support, b.support)
            and np.array_equal(a.query, b.query) and np.array_equal(a.support_labels, b.support_labels)
            and np.array_equal(a.query_labels, b.query_labels))


def test_episode_shape_labels_and_rows():
    s = EpisodeSampler(LABELS, 5, 3, 4, n_episodes=30, seed=0)
    for ep in s:
        assert ep.n_way == 5 and len(set(ep.classes.tolist())) == 5
        assert ep.support.shape == (15,) and ep.query.shape == (20,)
        np.testing.assert_array_equal(ep.support_labels, np.repeat(np.arange(5), 3))
        np.testing.assert_array_equal(ep.query_labels, np.repeat(np.arange(5), 4))
        # episode label j means dataset class classes[j]
        np.testing.assert_array_equal(LABELS[ep.support], ep.classes[ep.support_labels])
        np.testing.assert_array_equal(LABELS[ep.query], ep.classes[ep.query_labels])
        assert not set(ep.support) & set(ep.query)  # no row both support and query
        assert len(set(ep.support.tolist()) | set(ep.query.tolist())) == 35


def test_same_seed_same_episodes():
    a = list(EpisodeSampler(LABELS, 5, 1, 3, n_episodes=20, seed=7))
    b = list(EpisodeSampler(LABELS, 5, 1, 3, n_episodes=20, seed=7))
    assert all(_same(x, y) for x, y in zip(a, b))


def test_episode_independent_of_those_drawn_before():
    s = EpisodeSampler(LABELS, 5, 2, 2, n_episodes=50, seed=3)
    stream = list(s)
    fresh = EpisodeSampler(LABELS, 5, 2, 2, n_episodes=50, seed=3)
    assert _same(fresh.episode(43), stream[43])  # drawn alone, first
    assert _same(s.episode(43), stream[43])  # drawn again after the whole stream


def test_different_seeds_differ():
    a = list(EpisodeSampler(LABELS, 5, 1, 3, n_episodes=10, seed=0))
    b = list(EpisodeSampler(LABELS, 5, 1, 3, n_episodes=10, seed=1))
    assert sum(_same(x, y) for x, y in zip(a, b)) == 0
    # and within one sampler, episodes differ from each other
    assert not _same(a[0], a[1])


def test_fractions_split_disjoint_and_meta_test_never_in_meta_train():
    sp = split_classes(LABELS, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=4)
    assert [len(sp[k]) for k in ("train", "val", "test")] == [12, 4, 4]
    assert not set(sp["train"]) & set(sp["test"]) and not set(sp["train"]) & set(sp["val"])
    assert not set(sp["val"]) & set(sp["test"])
    assert sorted(np.concatenate(list(sp.values())).tolist()) == list(range(20))
    train = EpisodeSampler(LABELS, 5, 2, 3, classes=sp["train"], n_episodes=200, seed=0)
    seen = set()
    for ep in train:
        seen |= set(LABELS[np.concatenate([ep.support, ep.query])].tolist())
    assert seen <= set(sp["train"].tolist()) and not seen & set(sp["test"].tolist())
    # another seed, another permutation
    assert not np.array_equal(split_classes(LABELS, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=5)["train"],
                              sp["train"])


def test_split_by_names_and_ids():
    names = [f"c{i}" for i in range(20)]
    sp = split_classes(LABELS, {"train": ["c0", "c3"], "test": ["c5"]}, class_names=names)
    assert sp["train"].tolist() == [0, 3] and sp["test"].tolist() == [5] and "val" not in sp
    assert split_classes(LABELS, {"train": [2, 1], "val": [7]})["train"].tolist() == [1, 2]


def test_overlapping_classes_refused():
    with pytest.raises(ConfigError, match=r"classes.train and classes.test overlap \(3\)"):
        split_classes(LABELS, {"train": [1, 2, 3], "test": [3, 4]})
    names = [f"c{i}" for i in range(20)]
    with pytest.raises(ConfigError, match="overlap .'c4'."):
        split_classes(LABELS, {"val": ["c4"], "test": ["c4", "c5"]}, class_names=names)


def test_unknown_classes_refused():
    names = [f"c{i}" for i in range(20)]
    with pytest.raises(ConfigError, match="unknown class 'c99'"):
        split_classes(LABELS, {"train": ["c99"]}, class_names=names)
    with pytest.raises(ConfigError, match="class 25 has no labeled rows"):
        split_classes(LABELS, {"train": [25]})
    with pytest.raises(ConfigError, match="unknown split 'tets'"):
        split_classes(LABELS, {"tets": [1]})
    with pytest.raises(ConfigError, match="lists a class twice"):
        split_classes(LABELS, {"train": [1, 1]})
    with pytest.raises(ConfigError, match="sum to 1.2 > 1"):
        split_classes(LABELS, {"train": 0.8, "test": 0.4})
    with pytest.raises(DataError, match="no labeled rows"):
        split_classes(np.full(5, -1))


def test_n_way_above_classes_refused():
    with pytest.raises(ConfigError, match=r"meta-test: n_way=6 is larger than the 5 classes"):
        EpisodeSampler(LABELS, 6, 1, 1, classes=[0, 1, 2, 3, 4], where="meta-test")


def test_k_plus_q_above_class_rows_refused():
    labels = np.concatenate([np.repeat(np.arange(4), 10), np.full(6, 4)])  # class 4 has 6 rows
    EpisodeSampler(labels, 5, 1, 5, seed=0)  # 6 = 6 fits
    with pytest.raises(ConfigError, match=r"k_shot \+ q_query = 2 \+ 5 = 7 is larger than class 4's 6 rows"):
        EpisodeSampler(labels, 5, 2, 5, where="meta-val")


def test_bad_sampler_numbers_refused():
    with pytest.raises(ConfigError, match="n_way must be >= 2"):
        EpisodeSampler(LABELS, 1, 1, 1)
    with pytest.raises(ConfigError, match="k_shot must be >= 1"):
        EpisodeSampler(LABELS, 5, 0, 1)
    with pytest.raises(ConfigError, match="seed"):
        EpisodeSampler(LABELS, 5, 1, 1, seed=-1)


def test_mean_ci95_against_formula():
    rng = np.random.default_rng(0)
    a = rng.random(600)
    m, h = mean_ci95(a)
    n = len(a)
    mean = sum(a) / n
    sd = (sum((x - mean) ** 2 for x in a) / (n - 1)) ** 0.5
    assert m == pytest.approx(mean, rel=1e-12)
    assert h == pytest.approx(1.96 * sd / n ** 0.5, rel=1e-12)
    m1, h1 = mean_ci95([0.7])
    assert m1 == 0.7 and np.isnan(h1)
    assert mean_ci95([0.5, 0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_ci95([])
