"""Issue 10 rules for data files and spec values: float32 overflow, one-class labels, bounded
label spaces and image sizes, decompression bombs, directories where files are expected."""

from __future__ import annotations

import re
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from transferkit.data import load_dataset, load_image_folder, load_npz, load_table
from transferkit.data import _options, folder as folder_mod
from transferkit.data._options import boolean, number, number_range
from transferkit.errors import ConfigError, DataError

HEADER = "a,b,label\n"


def _csv(tmp_path, text, name="t.csv"):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def _rows(n=20, label=lambda i: i % 2):
    return "".join(f"{i * 0.5},{i},{label(i)}\n" for i in range(n))


def _npz(tmp_path, y, x=None, **extra):
    x = np.random.default_rng(0).normal(size=(len(y), 3)).astype(np.float32) if x is None else x
    np.savez(tmp_path / "d.npz", x=x, y=y, **extra)
    return tmp_path / "d.npz"


def _pngs(root, classes, n=3, size=(8, 8)):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, (i * 40, 0, 0)).save(root / c / f"{i}.png")
    return root


# ----------------------------------------------------------------------------- float32 overflow


def test_table_value_that_overflows_float32_names_the_column_and_row(tmp_path):
    p = _csv(tmp_path, HEADER + _rows().replace("1.0,2,", "1e308,2,").replace("3.0,6,", "3.0,-1e39,"))
    with pytest.raises(DataError, match=r"feature column 'a' has 1 value\(s\) too large for float32 .*e\.g\. 1e\+308; "
                                        r"data rows 3\); also in 'b'; rescale"):
        load_table(p)
    ok = load_table(_csv(tmp_path, HEADER + _rows().replace("1.0,2,", "3e38,2,"), name="ok.csv"))
    assert np.isfinite(ok.inputs).all() and ok.inputs.dtype == np.float32


def test_npz_float64_value_that_overflows_float32(tmp_path):
    x = np.ones((20, 3))
    x[4, 2] = -1e300
    with pytest.raises(DataError, match=r"too large for float32 .*first -1e\+300 in column 2, sample 4"):
        load_npz(_npz(tmp_path, np.arange(20) % 2, x=x))
    x[4, 2] = 1e30  # fits float32
    assert load_npz(_npz(tmp_path, np.arange(20) % 2, x=x)).inputs.dtype == np.float32


# ----------------------------------------------------------------------------- one class


@pytest.mark.parametrize("label", [lambda i: 3, lambda i: "spam", lambda i: "spam" if i < 5 else ""])
def test_table_label_column_with_one_class(tmp_path, label):
    p = _csv(tmp_path, HEADER + _rows(label=label))
    with pytest.raises(DataError, match=r"label column 'label': all \d+ labeled samples belong to one class "
                                        r"\('(3|spam)'\); found 1 class, classification needs at least 2"):
        load_table(p)
    assert load_table(p, label=False).labels is None  # not a label column: fine


def test_table_without_any_label_value_is_unlabeled_not_one_class(tmp_path):
    ds = load_table(_csv(tmp_path, HEADER + _rows(label=lambda i: "")))
    assert (ds.labels == -1).all()


@pytest.mark.parametrize("y", [np.zeros(20, int), np.r_[np.full(15, -1), np.full(5, 4)], np.array(["a"] * 20)])
def test_npz_labels_with_one_class(tmp_path, y):
    with pytest.raises(DataError, match=r"labels 'y': all \d+ labeled samples belong to one class.*at least 2"):
        load_npz(_npz(tmp_path, y))


def test_npz_unlabeled_domain_passes(tmp_path):
    assert (load_npz(_npz(tmp_path, np.full(20, -1))).labels == -1).all()


def test_image_folder_with_one_class(tmp_path):
    root = _pngs(tmp_path / "imgs", ["cat"])
    with pytest.raises(DataError, match=r"has 1 class subfolder \('cat'\); found 1 class, classification needs "
                                        r"at least 2: add a subfolder"):
        load_image_folder(root)
    _pngs(tmp_path / "imgs", ["dog"])
    assert load_image_folder(root, size=8).classes == ["cat", "dog"]


# ----------------------------------------------------------------------------- bounded label spaces


@pytest.mark.parametrize("big, shown", [(10**9, "1000000000"), (1e20, "1e+20"), (np.uint64(2**64 - 1), "18446744073709551615"),
                                        (np.int64(2**63 - 1), "9223372036854775807")])
def test_npz_huge_label_is_refused_before_building_class_names(tmp_path, big, shown):
    y = (np.arange(20) % 2).astype(np.asarray(big).dtype)
    y[0] = big
    with pytest.raises(DataError, match=rf"labels 'y' \(largest label {re.escape(shown)}\) imply [\d,]+ classes, more "
                                        r"than the limit of 100,000"):
        load_npz(_npz(tmp_path, y))


def test_npz_sparse_integer_labels_need_class_names(tmp_path):
    y = np.arange(20) % 2
    y[0] = 5000
    with pytest.raises(DataError, match=r"imply 5,001 classes \(largest label 5000 \+ 1\) for 20 labeled samples; .*"
                                        r"max\(1,000, 10 x labeled samples\) = 1,000 .*array 'classes'"):
        load_npz(_npz(tmp_path, y))
    ds = load_npz(_npz(tmp_path, y, classes=np.array([f"c{i}" for i in range(5001)])))
    assert ds.n_classes == 5001  # the class names state the label space: allowed
    y[0] = 999
    assert load_npz(_npz(tmp_path, y)).n_classes == 1000  # within the floor


def test_too_many_class_names_or_label_values(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"the class names imply 200,000 classes, more than the limit of 100,000"):
        load_npz(_npz(tmp_path, np.arange(20) % 2, classes=np.array([f"c{i}" for i in range(200_000)])))
    monkeypatch.setattr(_options, "MAX_CLASSES", 5)
    with pytest.raises(DataError, match=r"the distinct label values imply 6 classes, more than the limit of 5"):
        load_table(_csv(tmp_path, HEADER + _rows(label=lambda i: f"k{i % 6}")))
    with pytest.raises(DataError, match=r"its 6 class subfolders imply 6 classes"):
        load_image_folder(_pngs(tmp_path / "imgs", [f"c{i}" for i in range(6)], n=1))


def test_npz_float_label_below_minus_one_shows_the_value(tmp_path):
    with pytest.raises(DataError, match=r"contain -1e\+20; use integer class indices"):
        load_npz(_npz(tmp_path, np.r_[-1e20, np.arange(19) % 2]))


# ----------------------------------------------------------------------------- memory bombs


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_decompression_bomb_png_is_refused_before_decoding(tmp_path):
    root = _pngs(tmp_path / "imgs", ["cat", "dog"])
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (root / "dog" / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
                                           + _chunk(b"IDAT", zlib.compress(b"\0" * 8)) + _chunk(b"IEND", b""))
    with pytest.raises(DataError, match=r"image '.*bomb\.png' is too large to decode safely .*the limit is 89,478,485 "
                                        r"pixels, a possible decompression bomb\); downscale it"):
        load_image_folder(root)


def test_image_over_our_pixel_limit_is_refused_without_a_pillow_warning(tmp_path, monkeypatch, recwarn):
    root = _pngs(tmp_path / "imgs", ["cat", "dog"])
    monkeypatch.setattr(folder_mod, "MAX_PIXELS", 63)  # the 8x8 images have 64 pixels
    with pytest.raises(DataError, match=r"0\.png' is too large to decode safely \(8x8 pixels"):
        load_image_folder(root)
    monkeypatch.setattr(folder_mod, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # Pillow would only warn between 40 and 80 pixels
    with pytest.raises(DataError, match=r"too large to decode safely"):
        load_image_folder(root)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_npz_declaring_a_huge_array_is_refused_before_reading(tmp_path):
    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(p, "w") as z:
        with z.open("x.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (10**10, 10**3)})
        with z.open("y.npy", "w") as fh:
            np.lib.format.write_array(fh, np.arange(4))
    with pytest.raises(DataError, match=r"array 'x' declares shape \(10000000000, 1000\) \(float64\), 74,505\.8 GiB, "
                                        r"more than half of this machine's memory"):
        load_npz(p)


@pytest.mark.parametrize("opt, match", [("size=0", r"size=0 must be a finite integer >= 1 and <= 1024"),
                                        ("size=2048", r"size=2048 .*<= 1024"),
                                        ("size=nan", r"size='nan' must be a finite integer"),
                                        ("cache_size=-1", r"cache_size=-1 .*>= 0"),
                                        ("cache_size=1.5", r"cache_size=1.5 .*whole number"),
                                        ("name=", r"name='' must be a non-empty string")])
def test_image_folder_option_values(tmp_path, opt, match):
    root = _pngs(tmp_path / "imgs", ["cat", "dog"])
    with pytest.raises(ConfigError, match=match):
        load_dataset(f"{root}:{opt}")


def test_image_folder_cache_bounded_in_bytes(tmp_path, monkeypatch):
    root = _pngs(tmp_path / "imgs", ["cat", "dog"])
    monkeypatch.setattr(folder_mod, "MAX_CACHE_BYTES", 5 * 16 * 16 * 3 * 4)
    assert load_image_folder(root, size=16, cache_size=5).inputs.cache_size == 5
    with pytest.raises(ConfigError, match=r"cache_size=6 would keep up to 6 decoded 16x16 images .*at most 5 at size=16"):
        load_image_folder(root, size=16, cache_size=6)


# ----------------------------------------------------------------------------- files vs folders, encodings


@pytest.mark.parametrize("name", ["data.csv", "data.tsv", "data.parquet", "data.npz"])
def test_directory_where_a_file_is_expected(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(DataError, match=rf"{name}' is a directory, expected a file"):
        load_dataset(str(tmp_path / name))


def test_loaders_called_directly_on_a_directory(tmp_path):
    (tmp_path / "a.npz").mkdir()
    (tmp_path / "t.csv").mkdir()
    with pytest.raises(DataError, match=r"a\.npz' is a directory, expected a file"):
        load_npz(tmp_path / "a.npz")
    with pytest.raises(DataError, match=r"t\.csv' is a directory, expected a file"):
        load_table(tmp_path / "t.csv")


def test_file_where_a_folder_is_expected(tmp_path):
    (tmp_path / "images").write_text("x")
    with pytest.raises(ConfigError, match=r"unsupported file type '\(no extension\)' \(it is a file, not a folder\)"):
        load_dataset(str(tmp_path / "images"))
    with pytest.raises(DataError, match=r"is a file, not a folder"):
        load_image_folder(tmp_path / "images")


def test_non_utf8_table_names_the_file_the_byte_and_the_fix(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes((HEADER + _rows()).encode() + "caf\xe9,1,0\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv' is not UTF-8 text \(byte b'\\xe9' at offset \d+ is invalid UTF-8\); "
                                        r"re-save it as UTF-8 CSV \(e\.g\. 'iconv -f latin1 -t utf-8"):
        load_table(p)


# ----------------------------------------------------------------------------- the option parsers


def test_boolean_is_strict():
    for v in (True, 1, "true", "Yes", "1", "yes"):
        assert boolean("d", "flag", v) is True
    for v in (False, 0, "false", "NO", "0"):
        assert boolean("d", "flag", v) is False
    for v in ("maybe", "on", 2, None, 0.5, "", [True]):
        with pytest.raises(ConfigError, match=r"d: flag=.* is not a boolean; write flag=true or flag=false"):
            boolean("d", "flag", v)


def test_number_and_range():
    assert number("d", "k", np.int64(3), integer=True) == 3 and number("d", "k", "2.5") == 2.5
    assert number("d", "k", 10**30, integer=True) == 10**30  # exact, not through float
    for bad in (True, None, "x", float("nan"), float("inf"), 10**400, [1]):
        with pytest.raises(ConfigError, match=r"d: k=.* must be a finite number"):
            number("d", "k", bad)
    assert number_range("d", "r", "1..2") == (1.0, 2.0) and number_range("d", "r", 3) == (3.0, 3.0)
    with pytest.raises(ConfigError, match=r"must lie in the range >= 0 and <= 1"):
        number_range("d", "r", "0.5..2", low=0, high=1)
