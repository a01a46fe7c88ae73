import numpy as np
import pytest

from transferkit.backbones import create_backbone
from transferkit.data import load_digits_domain
from transferkit.features import FeatureCache, FeatureExtractor, extract_features
from transferkit.strategies import FeatureExtraction


@pytest.fixture()
def digits16():
    return load_digits_domain(size=16).subset(np.arange(120))


def test_second_run_hits_cache_and_returns_same_features(tmp_path, digits16):
    bb = create_backbone("tiny_cnn", image_size=16)
    fe1 = FeatureExtractor(bb, cache_dir=tmp_path).fit()
    f1 = fe1.transform(digits16)
    assert (fe1.cache_.hits, fe1.cache_.misses) == (0, 1)
    fe2 = FeatureExtractor(bb, cache_dir=tmp_path).fit()
    f2 = fe2.transform(digits16)
    assert (fe2.cache_.hits, fe2.cache_.misses) == (1, 0)
    np.testing.assert_array_equal(f1, f2)
    assert len(list(tmp_path.glob("*.npy"))) == 1


def test_cache_key_changes_with_data_and_weights(tmp_path, digits16):
    bb = create_backbone("tiny_cnn", image_size=16)
    fe = FeatureExtractor(bb, cache_dir=tmp_path).fit()
    fe.transform(digits16)
    fe.transform(digits16.subset(np.arange(60)))  # different data -> miss
    assert fe.cache_.misses == 2
    import torch

    with torch.no_grad():
        bb.stem[0].weight.add_(1.0)  # different weights -> different key -> miss
    fe_b = FeatureExtractor(bb, cache_dir=tmp_path).fit()
    fe_b.transform(digits16)
    assert fe_b.cache_.misses == 1 and fe_b.cache_.hits == 0


def test_cached_features_equal_direct_extraction(tmp_path, digits16):
    bb = create_backbone("tiny_cnn", image_size=16)
    direct = extract_features(bb, digits16.inputs, batch_size=7)
    cached = FeatureExtractor(bb, cache_dir=tmp_path, batch_size=64).fit().transform(digits16)
    np.testing.assert_allclose(direct, cached, rtol=1e-5, atol=1e-6)


def test_corrupt_cache_entry_is_recomputed(tmp_path, digits16):
    bb = create_backbone("tiny_cnn", image_size=16)
    fe = FeatureExtractor(bb, cache_dir=tmp_path).fit()
    f = fe.transform(digits16)
    entry = next(tmp_path.glob("*.npy"))
    entry.write_bytes(b"garbage")
    fe2 = FeatureExtractor(bb, cache_dir=tmp_path).fit()
    np.testing.assert_array_equal(fe2.transform(digits16), f)
    assert fe2.cache_.misses == 1


def test_feature_extraction_strategy_reuses_cache_across_seeds(tmp_path):
    d = load_digits_domain(size=16)
    train, test = d.subset(np.arange(0, 200)), d.subset(np.arange(200, 400))
    bb = create_backbone("tiny_cnn", image_size=16)
    s1 = FeatureExtraction(backbone=bb, cache_dir=tmp_path, seed=0).fit(train)
    s2 = FeatureExtraction(backbone=bb, cache_dir=tmp_path, seed=1).fit(train)
    assert s2.extractor_.cache_.hits == 1 and s2.extractor_.cache_.misses == 0
    assert s1.score(test) == s2.score(test)
    assert s1.trainable_params_ == 10 * 64 + 10


def test_feature_cache_writes_atomically(tmp_path):
    c = FeatureCache(tmp_path)
    c.put("k", "f", np.ones((3, 2), dtype=np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["k-f.npy"]
