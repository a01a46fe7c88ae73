"""IDX (MNIST-format) files: headers, the gzip cache, memory maps, pickling and DataLoader workers."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.data import DomainDataset, IdxImages, list_datasets, load_dataset, load_idx
from transferkit.data.folder import load_image_folder
from transferkit.data.idx import IdxHeader, idx_cache_dir, open_idx, read_idx_header
from transferkit.errors import ConfigError, DataError

CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


# ----------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of ``arr``, written independently of the reader under test."""
    arr = np.asarray(arr)
    head = bytes([0, 0, CODES[arr.dtype.name], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    if gz:
        with gzip.open(path, "wb") as g:
            g.write(data)
    else:
        path.write_bytes(data)
    return path


def pair(tmp_path: Path, n: int = 40, shape=(7, 5), gz: bool = False, seed: int = 0, stem: str = "train"):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = (np.arange(n) % 4).astype(np.uint8)
    suffix = ".gz" if gz else ""
    images = write_idx(tmp_path / f"{stem}-images-idx3-ubyte{suffix}", x, gz)
    labels = write_idx(tmp_path / f"{stem}-labels-idx1-ubyte{suffix}", y, gz)
    return images, labels, x, y


class MapDataset(torch.utils.data.Dataset):
    """A map-style dataset over lazy inputs, as a training loop would write it."""

    def __init__(self, inputs, labels):
        self.inputs, self.labels = inputs, labels

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        x = self.inputs[i]
        mapped = isinstance(getattr(self.inputs, "_map", None), np.memmap)
        return torch.from_numpy(x), int(self.labels[i]), os.getpid(), mapped


# ----------------------------------------------------------------------------- headers


@pytest.mark.parametrize("dtype", list(CODES))
def test_header_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.random((6, 4, 3)) * 100).astype(dtype)
    p = write_idx(tmp_path / f"a-{dtype}", arr)
    h = read_idx_header(p)
    assert h == IdxHeader(CODES[dtype], (6, 4, 3))
    assert h.offset == 16 and h.nbytes == arr.nbytes and h.magic == f"0x0000{CODES[dtype]:02X}03"
    m = open_idx(p)
    assert isinstance(m, np.memmap) and m.shape == (6, 4, 3)
    np.testing.assert_array_equal(m, arr)  # big-endian values read back
    g = write_idx(tmp_path / f"a-{dtype}.gz", arr, gz=True)
    assert read_idx_header(g) == h
    np.testing.assert_array_equal(open_idx(g, cache_dir=tmp_path / "c"), arr)


def test_items_follow_the_image_convention(tmp_path):
    images, labels, x, y = pair(tmp_path)
    ds = load_idx(images, labels)
    assert isinstance(ds, DomainDataset) and isinstance(ds.inputs, IdxImages)
    assert ds.modality == "image" and len(ds) == 40 and ds.name == "train-images"
    assert ds.classes == ["0", "1", "2", "3"] and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, y)
    item = ds.inputs[5]
    # the digits domain holds (n, H, W) float32 in [0, 1]: an item is (H, W)
    assert item.shape == (7, 5) and item.dtype == np.float32
    np.testing.assert_allclose(item, x[5] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.inputs[-1], ds.inputs[39])
    batch = ds.inputs[2:9:3]
    assert batch.shape == (3, 7, 5) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, x[2:9:3] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.inputs[[4, 0, 4]], np.stack([ds.inputs[4], ds.inputs[0], ds.inputs[4]]))
    mask = np.zeros(40, dtype=bool)
    mask[[1, 3]] = True
    np.testing.assert_array_equal(ds.inputs[mask], ds.inputs[[1, 3]])
    assert ds.inputs[[]].shape == (0, 7, 5)
    assert len(list(ds.inputs)) == 40
    with pytest.raises(IndexError, match="out of range"):
        ds.inputs[40]
    with pytest.raises(IndexError, match="out of range"):
        ds.inputs[[0, 41]]


def test_channels_and_other_value_types(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(6, 4, 4, 3)).astype(np.uint8)
    ds = load_idx(write_idx(tmp_path / "rgb", rgb), write_idx(tmp_path / "y", np.array([0, 1] * 3, np.uint8)))
    assert ds.inputs[0].shape == (4, 4, 3)
    fl = rng.random((6, 4, 4)).astype(np.float64)
    f = load_idx(write_idx(tmp_path / "f", fl), tmp_path / "y")
    np.testing.assert_allclose(f.inputs[3], fl[3], rtol=1e-6)
    wide = rng.integers(0, 256, size=(6, 4, 4)).astype(np.int16)
    np.testing.assert_allclose(load_idx(write_idx(tmp_path / "i", wide), tmp_path / "y").inputs[2], wide[2] / 255.0)
    bad = wide.copy()
    bad[4, 1, 1] = 300
    lazy = load_idx(write_idx(tmp_path / "bad", bad), tmp_path / "y")
    lazy.inputs[3]  # values are checked per image, as it is read
    with pytest.raises(DataError, match=r"'.*bad': image 4 holds 300; integer images must be 0\.\.255"):
        lazy.inputs[4]
    fl[2, 0, 0] = 1.5
    with pytest.raises(DataError, match=r"image 2 holds 1\.5; float images must be finite and lie in \[0, 1\]"):
        load_idx(write_idx(tmp_path / "f2", fl), tmp_path / "y").inputs[1:3]


# ----------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("case, match", [
    ("empty", r"'.*img' is truncated: it holds 0 byte\(s\), fewer than the 4-byte magic number"),
    ("short_header", r"'.*img' is truncated: its header declares 3 dimension\(s\) \(16 header bytes\)"),
    ("truncated", r"'.*img' is truncated: its header \(0x00000803\) declares shape \(10, 4, 4\) of uint8, "
                  r"160 bytes .* but the file holds 100"),
    ("trailing", r"'.*img' is longer than declared \(3 trailing bytes\)"),
    ("bad_magic", r"'.*img' is not an IDX file: its magic number is 0x89504E47"),
    ("bad_type", r"'.*img' is not an IDX file: its magic number is 0x00000703"),
    ("labels_as_images", r"images='.*img' has 1 dimension \(magic 0x00000801\), which is a labels file"),
    ("no_images", r"images='.*img' holds no images \(shape \(0, 4, 4\)\)"),
])
def test_bad_images_file_rejected_with_its_name(tmp_path, case, match):
    good = idx_bytes(np.zeros((10, 4, 4), np.uint8))
    data = {
        "empty": b"",
        "short_header": good[:10],
        "truncated": good[:16 + 100],
        "trailing": good + b"xyz",
        "bad_magic": b"\x89PNG\r\n\x1a\n" + good[8:],
        "bad_type": b"\x00\x00\x07\x03" + good[4:],
        "labels_as_images": idx_bytes(np.zeros(10, np.uint8)),
        "no_images": idx_bytes(np.zeros((0, 4, 4), np.uint8)),
    }[case]
    img = tmp_path / "img"
    img.write_bytes(data)
    labels = write_idx(tmp_path / "lab", (np.arange(10) % 2).astype(np.uint8))
    with pytest.raises(DataError, match=match) as exc:
        load_idx(img, labels)
    assert "\n" not in str(exc.value)
    if case not in ("labels_as_images", "no_images"):  # those are checks of an images file, not of the format
        with pytest.raises(DataError, match=match):
            read_idx_header(img)
        gz = tmp_path / "img.gz"
        gz.write_bytes(gzip.compress(data))
        gz_match = (r"'.*img\.gz' decompresses to more than the 176 bytes its header" if case == "trailing"
                    else match.replace("img'", r"img\.gz'"))  # a stream's length is known only at its end
        with pytest.raises(DataError, match=gz_match):
            load_idx(gz, labels, cache_dir=tmp_path / "cache")


def test_bad_labels_rejected_with_their_name(tmp_path):
    images, labels, x, y = pair(tmp_path, n=12)
    short = write_idx(tmp_path / "short-labels", y[:11])
    with pytest.raises(DataError, match=r"labels='.*short-labels' holds 11 labels but the images file holds 12"):
        load_idx(images, short)
    with pytest.raises(DataError, match=r"labels='.*train-images-idx3-ubyte' has shape \(12, 7, 5\).*looks like an "
                                        r"images file"):
        load_idx(images, images)
    with pytest.raises(DataError, match=r"labels='.*float-labels' holds float32 values; labels must be integers"):
        load_idx(images, write_idx(tmp_path / "float-labels", y.astype(np.float32)))
    with pytest.raises(DataError, match=r"labels='.*neg': label -3 at index 0"):
        load_idx(images, write_idx(tmp_path / "neg", np.r_[-3, y[1:].astype(np.int8)].astype(np.int8)))
    with pytest.raises(DataError, match=r"labels='.*one': all 12 labeled samples belong to one class"):
        load_idx(images, write_idx(tmp_path / "one", np.zeros(12, np.uint8)))
    with pytest.raises(DataError, match=r"label 3 is outside classes \(2 names\)"):
        load_idx(images, labels, classes=["a", "b"])
    with pytest.raises(DataError, match=r"IDX file labels='.*nowhere' does not exist"):
        load_idx(images, tmp_path / "nowhere")
    partly = np.r_[-1, y[1:].astype(np.int8)].astype(np.int8)  # -1 = unlabeled, as everywhere in transferkit
    ds = load_idx(images, write_idx(tmp_path / "partly", partly), classes=["a", "b", "c", "d"])
    assert ds.labels[0] == -1 and ds.classes == ["a", "b", "c", "d"]
    assert load_idx(images, None).labels is None


def test_bad_gzip_rejected_with_its_name(tmp_path):
    x = np.arange(10 * 16, dtype=np.uint8).reshape(10, 4, 4)
    lab = write_idx(tmp_path / "lab", (np.arange(10) % 2).astype(np.uint8))
    blob = gzip.compress(idx_bytes(x))
    cache = tmp_path / "cache"
    (tmp_path / "cut.gz").write_bytes(blob[: len(blob) - 20])
    with pytest.raises(DataError, match=r"gzip file '.*cut\.gz' cannot be decompressed \(it is truncated"):
        load_idx(tmp_path / "cut.gz", lab, cache_dir=cache)
    crc = bytearray(blob)
    crc[-8] ^= 0xFF  # the CRC-32 of the content
    (tmp_path / "crc.gz").write_bytes(bytes(crc))
    with pytest.raises(DataError, match=r"gzip file '.*crc\.gz' cannot be decompressed \(BadGzipFile: CRC check"):
        load_idx(tmp_path / "crc.gz", lab, cache_dir=cache)
    (tmp_path / "short.gz").write_bytes(gzip.compress(idx_bytes(x)[:-7]))
    with pytest.raises(DataError, match=r"'.*short\.gz' is truncated: its header .* but the file holds 153"):
        load_idx(tmp_path / "short.gz", lab, cache_dir=cache)
    (tmp_path / "long.gz").write_bytes(gzip.compress(idx_bytes(x) + bytes(3 << 20)))
    with pytest.raises(DataError, match=r"'.*long\.gz' decompresses to more than the 176 bytes its header"):
        load_idx(tmp_path / "long.gz", lab, cache_dir=cache)
    (tmp_path / "lab.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8))[:-1]))
    with pytest.raises(DataError, match=r"'.*lab\.gz' is truncated"):
        load_idx(tmp_path / "long.gz", tmp_path / "lab.gz", cache_dir=cache)
    # nothing half-written is left in the cache
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert list(cache.iterdir()) == []


def test_options_are_checked_before_any_file_is_read(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option 'rotation'\. Did you mean 'rotate'"):
        load_idx(tmp_path / "missing", None, rotation=3)
    with pytest.raises(ConfigError, match=r"subset='3/2' must look like i/n"):
        load_idx(tmp_path / "missing", None, subset="3/2")
    with pytest.raises(ConfigError, match=r"subset='0/2' splits by class and needs labels=PATH"):
        load_idx(tmp_path / "missing", None, subset="0/2")
    with pytest.raises(ConfigError, match=r"classes='abc' must be a non-empty list"):
        load_idx(tmp_path / "missing", None, classes="abc")
    with pytest.raises(ConfigError, match=r"noise=2 must be a finite number >= 0 and <= 1"):
        load_idx(tmp_path / "missing", None, noise=2)
    with pytest.raises(DataError, match=r"IDX file images='.*missing' does not exist"):
        load_idx(tmp_path / "missing", None)
    with pytest.raises(DataError, match=r"images='.*' is a directory, expected a file"):
        load_idx(tmp_path, None)


# ----------------------------------------------------------------------------- gzip cache


def test_gz_is_decompressed_once_into_the_cache(tmp_path):
    images, labels, x, y = pair(tmp_path, gz=True)
    ds = load_idx(images, labels)
    assert ds.inputs.compressed
    cache = idx_cache_dir()
    assert cache == Path(os.environ["TRANSFERKIT_CACHE"]) / "idx"  # under the feature cache (conftest isolates it)
    files = sorted(cache.iterdir())
    assert [f.name.split("-")[:3] for f in files] == [["train", "images", "idx3"]] and files[0].suffix == ".idx"
    assert ds.inputs.mapped == files[0]
    np.testing.assert_array_equal(files[0].read_bytes(), idx_bytes(x))  # a plain raw copy
    np.testing.assert_allclose(ds.inputs[:], x / 255.0, rtol=1e-6)
    assert isinstance(ds.inputs._array(), np.memmap)

    stamp = files[0].stat().st_mtime_ns
    fp = ds.fingerprint()
    again = load_idx(images, labels)
    assert again.inputs.mapped == files[0] and files[0].stat().st_mtime_ns == stamp  # reused, not rewritten
    assert again.fingerprint() == ds.fingerprint()

    files[0].write_bytes(files[0].read_bytes()[:-10])  # a damaged copy is detected and replaced
    np.testing.assert_allclose(load_idx(images, labels).inputs[-1], x[-1] / 255.0, rtol=1e-6)
    assert files[0].stat().st_size == len(idx_bytes(x))

    x2 = x.copy()
    x2[3] = 255 - x2[3]
    write_idx(images, x2, gz=True)
    os.utime(images, ns=(stamp + 10**9, stamp + 10**9))
    changed = load_idx(images, labels)
    assert len(list(cache.iterdir())) == 2 and changed.inputs.mapped != files[0]  # a new key
    np.testing.assert_allclose(changed.inputs[3], x2[3] / 255.0, rtol=1e-6)
    assert changed.fingerprint() != fp
    with pytest.raises(DataError, match=r"IDX file '.*train-images-idx3-ubyte\.gz' has changed since it was loaded"):
        ds.fingerprint()  # the old object serves the old copy: it has no honest answer
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]

    own = load_idx(images, labels, cache_dir=tmp_path / "mine")
    assert own.inputs.mapped.parent == tmp_path / "mine"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"IDX cache_dir '.*afile' exists but is not a directory"):
        load_idx(images, labels, cache_dir=tmp_path / "afile")


def test_cleared_cache_is_rebuilt_in_a_worker(tmp_path):
    images, labels, x, y = pair(tmp_path, gz=True)
    inputs = load_idx(images, labels).inputs
    blob = pickle.dumps(inputs)
    shutil.rmtree(idx_cache_dir())
    back = pickle.loads(blob)
    np.testing.assert_allclose(back[7], x[7] / 255.0, rtol=1e-6)
    assert back.mapped.is_file()


# ----------------------------------------------------------------------------- laziness


def test_reading_one_image_of_a_huge_file_maps_it(tmp_path):
    n, side = 1_000_000, 64  # 4.1 GB of pixels: reading the file whole would not fit this test's budget
    p = tmp_path / "huge-images-idx3-ubyte"
    head = bytes([0, 0, 8, 3]) + struct.pack(">3I", n, side, side)
    five = (np.arange(side * side) % 251).astype(np.uint8)
    with open(p, "wb") as f:
        f.write(head)
        f.seek(16 + 5 * side * side)
        f.write(five.tobytes())
        f.truncate(16 + n * side * side)  # a sparse file: the rest reads as zeros, without disk space
    if p.stat().st_blocks * 512 > 2**28:
        pytest.skip("this filesystem does not make sparse files")
    labels = write_idx(tmp_path / "huge-labels", (np.arange(n) % 10).astype(np.uint8))
    tracemalloc.start()
    try:
        ds = load_idx(p, labels)
        loaded, load_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        item = ds.inputs[5]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(ds.inputs._array(), np.memmap)
    assert load_peak < 64 * 2**20, f"loading allocated {load_peak:,} bytes"  # the 1M labels, not the 4 GB of pixels
    assert peak - loaded < 2**20, f"reading one image allocated {peak - loaded:,} bytes"
    np.testing.assert_allclose(item, five.reshape(side, side) / 255.0, rtol=1e-6)
    assert not ds.inputs[6].any()
    sub = ds.subset(np.arange(4, 8))
    np.testing.assert_array_equal(sub.inputs[1], item)
    assert len(pickle.dumps(ds.inputs)) < 4096  # the map is not pickled


# ----------------------------------------------------------------------------- pickling, subsets, fingerprints


def test_pickle_round_trip_reopens_the_map(tmp_path):
    images, labels, x, y = pair(tmp_path, n=300, shape=(28, 28))
    ds = load_idx(images, labels, rotate="0..40", seed=3)
    ds.inputs[0]
    assert isinstance(ds.inputs._map, np.memmap)
    blob = pickle.dumps(ds)
    assert len(blob) < 300 * 28 * 28 / 10  # labels and metadata, not the pixels
    back = pickle.loads(blob)
    assert back.inputs._map is None  # reopened on first access
    np.testing.assert_array_equal(back.inputs[[0, 17, 299]], ds.inputs[[0, 17, 299]])
    assert isinstance(back.inputs._map, np.memmap)
    assert back.fingerprint() == ds.fingerprint()
    sub = pickle.loads(pickle.dumps(ds.subset([5, 9])))
    np.testing.assert_array_equal(sub.inputs[1], ds.inputs[9])

    fresh = pickle.loads(blob)
    write_idx(images, 255 - x)
    os.utime(images, ns=(1, 1))
    with pytest.raises(DataError, match=r"IDX file '.*train-images-idx3-ubyte' has changed since it was loaded"):
        fresh.inputs[0]


def test_subsets_and_fingerprints(tmp_path):
    images, labels, x, y = pair(tmp_path, n=60)
    ds = load_idx(images, labels)
    fp = ds.fingerprint()
    assert fp == load_idx(images, labels).fingerprint() == ds.fingerprint()
    sub = ds.subset([10, 3, 3, -1])
    assert isinstance(sub.inputs, IdxImages) and len(sub) == 4
    np.testing.assert_array_equal(sub.inputs[:], ds.inputs[[10, 3, 3, 59]])
    np.testing.assert_array_equal(sub.labels, y[[10, 3, 3, 59]])
    np.testing.assert_array_equal(sub.subset([0, 3]).inputs[:], ds.inputs[[10, 59]])  # subsets compose
    fps = {fp, sub.fingerprint(), ds.subset([3, 10]).fingerprint(), ds.subset(np.arange(30)).fingerprint(),
           load_idx(images, labels, rotate=10).fingerprint(), load_idx(images, labels, rotate="0..10").fingerprint(),
           load_idx(images, labels, rotate="0..10", seed=1).fingerprint()}
    assert len(fps) == 7
    with pytest.raises(IndexError, match="out of range"):
        ds.subset([60])
    # a rewritten file of the same size changes the fingerprint of the reloaded dataset
    x2 = x.copy()
    x2[0, 0, 0] ^= 1
    st = images.stat()
    write_idx(images, x2)
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_idx(images, labels).fingerprint() != fp
    with pytest.raises(DataError, match=r"has changed since it was loaded"):
        ds.fingerprint()


def test_shifts_are_per_image_and_lazy(tmp_path):
    images, labels, x, y = pair(tmp_path, n=40, shape=(16, 16))
    plain = load_idx(images, labels)
    ds = load_idx(images, labels, rotate="10..40", invert=True, seed=2)
    a = ds.inputs[7]
    assert a.dtype == np.float32 and a.shape == (16, 16) and 0 <= a.min() and a.max() <= 1
    assert not np.allclose(a, plain.inputs[7])
    np.testing.assert_array_equal(a, ds.inputs[7])  # the same draw every time
    np.testing.assert_array_equal(ds.subset([7, 1]).inputs[0], a)  # and in every subset
    np.testing.assert_array_equal(ds.inputs[[7, 8]][0], a)
    assert not np.array_equal(load_idx(images, labels, rotate="10..40", invert=True, seed=3).inputs[7], a)


# ----------------------------------------------------------------------------- spec strings


def test_idx_spec(tmp_path):
    images, labels, x, y = pair(tmp_path, n=40, gz=True)
    assert "idx" in list_datasets()
    ds = load_dataset(f"idx:images={images},labels={labels},name=mnistish,rotate=15")
    assert ds.name == "mnistish" and ds.spec.startswith("idx:images=") and isinstance(ds.inputs, IdxImages)
    assert ds.inputs.shift is not None and ds.inputs.shift.rotate == (15.0, 15.0)
    a = load_dataset(f"idx:images={images},labels={labels},subset=0/2")
    b = load_dataset(f"idx:images={images},labels={labels},subset=1/2")
    assert len(a) + len(b) == 40
    assert not set(a.inputs.index) & set(b.inputs.index)
    assert (np.bincount(a.labels) == np.bincount(b.labels)).all()
    un = load_dataset(f"idx:images={images},labels=none")
    assert un.labels is None
    named = load_dataset({"name": "idx", "images": str(images), "labels": str(labels), "classes": list("abcd")})
    assert named.classes == ["a", "b", "c", "d"]
    with pytest.raises(ConfigError, match=r"dataset 'idx': option 'labels' is missing; write idx:images=PATH,"):
        load_dataset(f"idx:images={images}")
    with pytest.raises(ConfigError, match=r"unknown option 'lables'\. Did you mean 'labels'"):
        load_dataset(f"idx:images={images},labels={labels},lables=x")
    raw, _, _, _ = pair(tmp_path, stem="raw")
    with pytest.raises(ConfigError, match=r"unsupported file type .* For IDX \(MNIST-format\) files write "
                                          r"idx:images=.*raw-images-idx3-ubyte,labels=LABELS_FILE"):
        load_dataset(str(raw))


# ----------------------------------------------------------------------------- DataLoader workers


def _batches(n: int, start: int = 0, size: int = 7) -> list[list[int]]:
    return [list(range(start + s, start + min(n, s + size))) for s in range(0, n, size)]


def _check_batches(batches, inputs, labels) -> set[bool]:
    """The loader's batches equal direct indexing; returns whether the items came from a memory map."""
    n = len(inputs)
    assert [len(b[0]) for b in batches] == [len(b) for b in _batches(n)]
    for s, (xb, yb, _, _) in zip(range(0, n, 7), batches):
        direct = inputs[s : s + 7] if isinstance(inputs, IdxImages) else np.stack(
            [inputs[i] for i in range(s, min(n, s + 7))])
        assert xb.dtype == torch.float32
        np.testing.assert_array_equal(xb.numpy(), direct)
        np.testing.assert_array_equal(yb.numpy(), labels[s : s + 7])
    return {bool(m) for b in batches for m in b[3]}


def _pids(batches) -> set[int]:
    return {int(p) for b in batches for p in b[2]}


def _idx_domain(tmp_path):
    images, labels, x, y = pair(tmp_path, n=45, shape=(12, 12), gz=True)
    ds = load_idx(images, labels, rotate="0..30")
    return ds.subset(np.arange(44, -1, -2))  # a reversed, strided view: 23 images


def _folder_domain(tmp_path):
    root = tmp_path / "pets"
    for k, cls in enumerate(["cat", "dog"]):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (9, 5 + i), (40 * i, 100 * k, 7)).save(root / cls / f"{i}.png")
    return load_image_folder(root, size=8)


def test_dataloader_spawned_workers_stream_idx_and_folders(tmp_path, one_thread):
    """Two spawned workers (so the datasets are pickled to them, as on macOS and Windows) read an
    IDX view and an image folder; one loader over both keeps it to one start-up of the workers."""
    idx, folder = _idx_domain(tmp_path), _folder_domain(tmp_path)
    assert idx.inputs._map is None  # nothing mapped yet: each worker opens the map itself
    parts = [MapDataset(idx.inputs, idx.labels), MapDataset(folder.inputs, folder.labels)]
    plan = _batches(len(idx)) + _batches(len(folder), start=len(idx))  # no batch mixes the two image shapes
    loader = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset(parts), batch_sampler=plan, num_workers=2,
                                         multiprocessing_context="spawn")
    got = list(loader)
    k = len(_batches(len(idx)))
    assert _check_batches(got[:k], idx.inputs, idx.labels) == {True}  # each worker (re)opened the memory map
    _check_batches(got[k:], folder.inputs, folder.labels)
    assert len(_pids(got)) == 2 and os.getpid() not in _pids(got)  # two worker processes did the reading


def test_dataloader_forked_workers_share_the_map(tmp_path, one_thread):
    idx = _idx_domain(tmp_path)
    idx.inputs[0]  # mapped before the fork: the workers inherit the read-only map
    loader = torch.utils.data.DataLoader(MapDataset(idx.inputs, idx.labels), batch_size=7, num_workers=2,
                                         multiprocessing_context="fork")
    got = list(loader)
    assert _check_batches(got, idx.inputs, idx.labels) == {True}
    assert len(_pids(got)) == 2 and os.getpid() not in _pids(got)


# ----------------------------------------------------------------------------- Fashion-MNIST from Debian


def _debian_fashion_mnist() -> dict[str, Path]:
    try:
        out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in out.stdout.splitlines():
        p = Path(line.strip())
        for part in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            if p.name.startswith(part) and p.is_file():
                found[part] = p
    return found


def test_fashion_mnist_from_the_debian_package(tmp_path):
    files = _debian_fashion_mnist()
    if len(files) < 2:
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    ds = load_idx(files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"], cache_dir=tmp_path)
    assert len(ds) == 10_000 and ds.n_classes == 10
    assert ds.inputs[0].shape == (28, 28) and 0 <= ds.inputs[0].min() and ds.inputs[0].max() <= 1
    assert (np.bincount(ds.labels) == 1000).all()


def test_relative_paths_survive_a_change_of_directory(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    images, labels, x, y = pair(tmp_path / "d", gz=True)
    monkeypatch.chdir(tmp_path)
    ds = load_idx("d/" + images.name, "d/" + labels.name, cache_dir="cache")
    blob = pickle.dumps(ds.inputs)
    monkeypatch.chdir(tmp_path / "d")  # a worker started elsewhere
    back = pickle.loads(blob)
    np.testing.assert_allclose(back[3], x[3] / 255.0, rtol=1e-6)
    assert back.mapped.parent == tmp_path / "cache" and "d/train-images" in repr(back)
