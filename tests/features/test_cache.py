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
    with pytest.warns(Warning, match="is invalid"):
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


# ----------------------------------------------------------------------------- invalid entries


import os  # noqa: E402
import pickle  # noqa: E402
import warnings  # noqa: E402

from transferkit.errors import ConfigError, TransferKitWarning  # noqa: E402
from transferkit.features import check_cache_dir  # noqa: E402


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _npy_bytes(arr, allow_pickle=False) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _zip_bytes(tmp_path, n, d) -> bytes:
    np.savez(tmp_path / "z.npz", x=np.ones((n, d), dtype=np.float32))
    return (tmp_path / "z.npz").read_bytes()


N, D = 30, 64  # digits16 subset below and tiny_cnn's feature width
INVALID = {
    "wrong width": (lambda t, good: _npy_bytes(np.ones((N, D + 1), dtype=np.float32)), "shape (30, 65), expected (30, 64)"),
    "wrong length": (lambda t, good: _npy_bytes(np.ones((N + 1, D), dtype=np.float32)), "expected (30, 64)"),
    "wrong dtype": (lambda t, good: _npy_bytes(np.ones((N, D), dtype=np.float64)), "dtype float64, expected float32"),
    "integer dtype": (lambda t, good: _npy_bytes(np.ones((N, D), dtype=np.int32)), "expected float32"),
    "one NaN": (lambda t, good: _npy_bytes(np.where(np.eye(N, D) > 0, np.nan, 1.0).astype(np.float32)), "NaN/inf"),
    "all NaN": (lambda t, good: _npy_bytes(np.full((N, D), np.nan, dtype=np.float32)), "NaN/inf"),
    "inf": (lambda t, good: _npy_bytes(np.full((N, D), np.inf, dtype=np.float32)), "NaN/inf"),
    "1-D": (lambda t, good: _npy_bytes(np.ones(N, dtype=np.float32)), "expected 2-D"),
    "truncated": (lambda t, good: good[: len(good) // 2], "unreadable"),
    "header only": (lambda t, good: good[:128], "unreadable"),
    "garbage": (lambda t, good: b"garbage", "not a .npy file"),
    "empty file": (lambda t, good: b"", "not a .npy file"),
    "pickle": (lambda t, good: pickle.dumps(_Evil()), "a pickle, not a .npy file; it was not unpickled"),
    "object array with a pickle inside": (
        lambda t, good: _npy_bytes(np.array([_Evil()] * 2, dtype=object), allow_pickle=True), "it was not unpickled"),
    "an npz archive": (lambda t, good: _zip_bytes(t, N, D), "not a .npy file"),
}


@pytest.fixture()
def small():
    return load_digits_domain(size=16).subset(np.arange(N))


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_cache_entry_is_a_miss_recomputed_overwritten_and_warned(case, tmp_path, small, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an unpickled payload would land here
    bb = create_backbone("tiny_cnn", image_size=16)
    fresh = extract_features(bb, small.inputs)
    cache = tmp_path / "cache"
    fe = FeatureExtractor(bb, cache_dir=cache).fit()
    fe.transform(small)
    entry = fe.cache_.path(fe._bkey, small.fingerprint())
    make, why = INVALID[case]
    entry.write_bytes(make(tmp_path, entry.read_bytes()))

    fe2 = FeatureExtractor(bb, cache_dir=cache).fit()
    with pytest.warns(TransferKitWarning) as rec:
        got = fe2.transform(small)
    msgs = [str(w.message) for w in rec if issubclass(w.category, TransferKitWarning)]
    assert len(msgs) == 1 and str(entry) in msgs[0] and why in msgs[0], msgs
    assert "\n" not in msgs[0]
    np.testing.assert_allclose(got, fresh, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (N, D)
    assert (fe2.cache_.hits, fe2.cache_.misses, fe2.cache_.invalid) == (0, 1, 1)
    np.testing.assert_array_equal(np.load(entry, allow_pickle=False), got)  # overwritten with the good features
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]  # no temporary file left
    assert not (tmp_path / "pwned.txt").exists()
    # and the next run hits the repaired entry without a warning
    fe3 = FeatureExtractor(bb, cache_dir=cache).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferKitWarning)
        np.testing.assert_array_equal(fe3.transform(small), got)
    assert (fe3.cache_.hits, fe3.cache_.misses) == (1, 0)


def test_cache_entry_that_is_a_directory_warns_and_still_returns_features(tmp_path, small):
    bb = create_backbone("tiny_cnn", image_size=16)
    fe = FeatureExtractor(bb, cache_dir=tmp_path).fit()
    entry = fe.cache_.path(fe._bkey, small.fingerprint())
    entry.mkdir(parents=True)
    with pytest.warns(TransferKitWarning, match="is a directory"):
        got = fe.transform(small)
    np.testing.assert_allclose(got, extract_features(bb, small.inputs), rtol=1e-5, atol=1e-6)
    assert entry.is_dir()  # a folder in the cache is not deleted


def test_cache_write_failure_warns_and_returns_features(tmp_path, small, monkeypatch):
    import errno
    import tempfile

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    bb = create_backbone("tiny_cnn", image_size=16)
    fe = FeatureExtractor(bb, cache_dir=tmp_path).fit()
    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.warns(TransferKitWarning, match="No space left on device"):
        got = fe.transform(small)
    assert got.shape == (N, D) and list(tmp_path.iterdir()) == []


def test_cache_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        FeatureCache(tmp_path).put("k", "f", np.ones((3, 2), dtype=np.float32))
    finally:
        os.umask(old)
    assert (tmp_path / "k-f.npy").stat().st_mode & 0o777 == 0o644


def test_check_cache_dir(tmp_path):
    assert check_cache_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert (tmp_path / "new" / "deeper").is_dir() and list((tmp_path / "new" / "deeper").iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"cache_dir '.*f' exists but is not a directory \(it is a file\)"):
        check_cache_dir(tmp_path / "f")
    with pytest.raises(ConfigError, match=r"cache_dir '.*f/sub' cannot be created .*point cache_dir at a folder"):
        check_cache_dir(tmp_path / "f" / "sub")
    assert (tmp_path / "f").read_text() == "x"


def test_check_cache_dir_default_and_unwritable(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "c"))
    assert check_cache_dir(None) == tmp_path / "c"
    import tempfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # root ignores chmod, so fake the refusal
    with pytest.raises(ConfigError, match=r"'.*c' is not writable \(Permission denied\)"):
        check_cache_dir(tmp_path / "c")


def test_transform_checks_fit_and_input():
    """scikit-learn's contract: no silent fit in transform; empty and non-finite input refused."""
    from sklearn.exceptions import NotFittedError

    from transferkit.backbones import create_backbone
    from transferkit.errors import DataError

    fe = FeatureExtractor(create_backbone("identity", in_features=3), cache_dir=False)
    X = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(NotFittedError, match="call fit"):
        fe.transform(X)
    fe.fit()
    assert fe.transform(X).shape == (4, 3)
    with pytest.raises(DataError, match="no samples"):
        fe.transform(X[:0])
    for bad in (np.nan, np.inf):
        Y = X.copy()
        Y[1, 2] = bad
        with pytest.raises(DataError, match="NaN or infinite"):
            fe.transform(Y)
