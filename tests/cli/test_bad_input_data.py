"""Bad datasets, dataset spec values, data files, labels, resource bounds and cache directories
through the CLI (issue 10): exit code 2, one line naming the problem and the fix, and every
file already on disk (a finished run, the inputs, the working directory) byte-identical.

Cache *entries* that are invalid are not errors (they are recomputed with a warning); those
cases are tested in ``tests/features/test_cache.py``.
"""

import struct
import zipfile
import zlib

import numpy as np
from pathlib import Path

import pytest

from _badinput import ROWS, _cfg, _csv, _folder, _npz, _run, _tab, check_case, existing  # noqa: F401

HEADER = "a,b,c,d,label\n"


def _digits(t, opts: str) -> list:
    return _run(t, _cfg(t, target=f"digits:subset=1/2,size=16,{opts}"))


def _one_class_folder(t) -> str:
    from PIL import Image

    root = t / "imgs"
    (root / "cat").mkdir(parents=True)
    for i in range(6):
        Image.fromarray((np.random.default_rng(i).random((8, 8, 3)) * 255).astype(np.uint8)).save(root / "cat" / f"{i}.png")
    return str(root)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_folder(t) -> str:
    """A valid two-class folder plus a 300-byte PNG that declares 100,000 x 100,000 pixels."""
    root = _folder(t)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
           + _png_chunk(b"IEND", b""))
    (t / "imgs" / "dog" / "bomb.png").write_bytes(png)
    return root


def _npz_header_bomb(t) -> str:
    """An .npz whose 'x' declares a (10**12, 4) float32 array (14.6 TiB) and holds no data."""
    p = t / "bomb.npz"
    with zipfile.ZipFile(p, "w") as z:
        with z.open("x.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4)})
        with z.open("y.npy", "w") as fh:
            np.lib.format.write_array(fh, np.arange(40) % 2)
    return str(p)


def _labels(**change) -> np.ndarray:
    y = np.arange(40) % 2
    for i, v in change.items():
        y = y.astype(np.asarray(v).dtype) if np.asarray(v).dtype.kind in "fu" else y
        y[int(i[1:])] = v
    return y


def _mkdir(p):
    p.mkdir()
    return str(p)


CASES = {
    # --- digits spec values: non-finite, malformed, out of range, unbounded
    "digits rotate=nan": lambda t: (_digits(t, "rotate=nan"), ["digits: rotate='nan'", "finite"]),
    "digits rotate=inf": lambda t: (_digits(t, "rotate=inf"), ["rotate='inf'", "finite"]),
    "digits rotate=1..nan": lambda t: (_digits(t, "rotate=1..nan"), ["rotate='1..nan'", "range low..high"]),
    "digits rotate=45..22": lambda t: (_digits(t, "rotate=45..22"), ["low end is above its high end", "rotate=22..45"]),
    "digits rotate=1e308": lambda t: (_digits(t, "rotate=1e308"), ["rotate=", "-360 and <= 360"]),
    "digits noise=inf": lambda t: (_digits(t, "noise=inf"), ["noise='inf'", "finite number >= 0 and <= 1"]),
    "digits noise=abc": lambda t: (_digits(t, "noise=abc"), ["noise='abc'", "e.g. noise=0.1"]),
    "digits invert=maybe": lambda t: (_digits(t, "invert=maybe"), ["invert='maybe'", "invert=true or invert=false"]),
    "digits invert=2": lambda t: (_digits(t, "invert=2"), ["invert=2", "not a boolean"]),
    "digits seed=-1": lambda t: (_digits(t, "seed=-1"), ["digits: seed=-1", ">= 0"]),
    "digits seed=1.5": lambda t: (_digits(t, "seed=1.5"), ["seed=1.5", "whole number"]),
    "digits size=0": lambda t: (_run(t, _cfg(t, target="digits:size=0")), ["size=0", ">= 8 and <= 512"]),
    "digits size=inf": lambda t: (_run(t, _cfg(t, target="digits:size=inf")), ["size='inf'", "finite integer"]),
    "digits blur=1e9 (60 GiB kernel)": lambda t: (_digits(t, "blur=1e9"), ["blur=", "at most the image side (16)"]),
    "digits blur=nan": lambda t: (_digits(t, "blur=nan"), ["blur='nan'", "finite"]),
    "digits translate=0.1..0.2": lambda t: (_digits(t, "translate=0.1..0.2"), ["translate='0.1..0.2'", "fraction of the image size"]),
    "digits scale=0": lambda t: (_digits(t, "scale=0"), ["scale=0", ">= 0.1 and <= 10"]),
    "digits subset=0/100000000 (memory)": lambda t: (
        _run(t, _cfg(t, target="digits:size=16,subset=0/100000000")), ["subset='0/100000000'", "n <= 100"]),
    "digits empty name": lambda t: (_digits(t, "name="), ["name=''", "non-empty string"]),
    # --- data files and paths
    "CSV value 1e308 overflows float32": lambda t: (
        _run(t, _tab(t, _csv(t, HEADER + ROWS.replace("0.5,1,", "1e308,1,", 1)))),
        ["feature column 'a'", "too large for float32", "data rows 2", "rescale"]),
    "npz float64 value 1e308 overflows float32": lambda t: (
        _run(t, _tab(t, _npz(t, x=np.where(np.eye(40, 4) > 0, 1e308, 1.0)))),
        ["too large for float32", "column 0, sample 0", "rescale"]),
    "non-UTF-8 CSV": lambda t: (
        _run(t, _tab(t, str((t / "latin.csv").write_bytes((HEADER + ROWS).encode() + b"\xe9t\xe9,1,2,3,1\n")
                            and t / "latin.csv"))),
        ["latin.csv", "not UTF-8", "re-save it as UTF-8"]),
    "a folder named like a CSV": lambda t: (
        _run(t, _tab(t, _mkdir(t / "data.csv"))), ["data.csv", "is a directory, expected a file"]),
    "a folder named like an npz": lambda t: (
        _run(t, _tab(t, _mkdir(t / "arrays.npz"))), ["arrays.npz", "is a directory, expected a file"]),
    "a file where an image folder is expected": lambda t: (
        _run(t, _cfg(t, target=str((t / "images").write_text("x") and t / "images"))),
        ["images", "it is a file, not a folder", "class subfolders"]),
    "npz declaring a 14.6 TiB array": lambda t: (
        _run(t, _tab(t, _npz_header_bomb(t))), ["array 'x' declares shape (1000000000000, 4)", "save a smaller array"]),
    "decompression bomb in an image folder": lambda t: (
        _run(t, _cfg(t, target=_bomb_folder(t), split={"labels_per_class": 2})),
        ["bomb.png", "too large to decode safely", "decompression bomb", "downscale it"]),
    "image folder size=0": lambda t: (
        _run(t, _cfg(t, target=_folder(t) + ":size=0")), ["size=0", ">= 1 and <= 1024"]),
    "image folder size=100000": lambda t: (
        _run(t, _cfg(t, target=_folder(t) + ":size=100000")), ["size=100000", "<= 1024"]),
    "image folder cache_size=-1": lambda t: (
        _run(t, _cfg(t, target=_folder(t) + ":cache_size=-1")), ["cache_size=-1", ">= 0"]),
    # --- labels
    "CSV label column with one class": lambda t: (
        _run(t, _tab(t, _csv(t, HEADER + "".join(f"{i},{i},{i},{i},7\n" for i in range(40))))),
        ["label column 'label'", "one class ('7')", "found 1 class", "at least 2", "Add rows of other classes"]),
    "npz labels with one class": lambda t: (
        _run(t, _tab(t, _npz(t, y=np.zeros(40, dtype=int)))),
        ["labels 'y'", "found 1 class", "at least 2"]),
    "npz with one labeled class among unlabeled": lambda t: (
        _run(t, _tab(t, _npz(t, y=np.r_[np.full(30, -1), np.ones(10, dtype=int)]))),
        ["all 10 labeled samples belong to one class", "at least 2"]),
    "image folder with one class folder": lambda t: (
        _run(t, _cfg(t, target=_one_class_folder(t))),
        ["has 1 class subfolder ('cat')", "found 1 class", "at least 2", "add a subfolder"]),
    "npz label 10**9 (22 GB of class names)": lambda t: (
        _run(t, _tab(t, _npz(t, y=_labels(i0=10**9)))),
        ["imply 1,000,000,001 classes", "limit of 100,000", "largest label + 1", "re-encode"]),
    "npz float label 1e20": lambda t: (
        _run(t, _tab(t, _npz(t, y=_labels(i0=1e20)))), ["largest label 1e+20", "limit of 100,000"]),
    "npz uint64 label 2**64-1": lambda t: (
        _run(t, _tab(t, _npz(t, y=_labels(i0=np.uint64(2**64 - 1))))), ["largest label 18446744073709551615"]),
    "npz sparse labels without class names": lambda t: (
        _run(t, _tab(t, _npz(t, y=_labels(i0=5000)))),
        ["imply 5,001 classes", "40 labeled samples", "max(1,000, 10 x labeled samples) = 1,000", "'classes'"]),
    "npz with 200,000 class names": lambda t: (
        _run(t, _tab(t, _npz(t, classes=np.array([f"c{i}" for i in range(200_000)])))),
        ["the class names imply 200,000 classes", "limit of 100,000"]),
    "npz float label -2.5": lambda t: (
        _run(t, _tab(t, _npz(t, y=_labels(i0=-2.5)))), ["contain -2.5", "-1 for unlabeled"]),
    # --- the feature cache directory
    "cache_dir is a file": lambda t: (
        _run(t, _cfg(t, cache_dir=_csv(t, "not a folder", name="cachefile"))),
        ["cache_dir", "cachefile", "is not a directory", "point cache_dir at a folder"]),
    "cache_dir below a file": lambda t: (
        _run(t, _cfg(t, cache_dir=_csv(t, "not a folder", name="cachefile") + "/sub")),
        ["cache_dir", "cannot be created", "point cache_dir at a folder you can write to"]),
}


def test_the_table_covers_every_input_format(tmp_path):
    """Digits specs, CSV, npz, image folders and the feature cache each have cases here, and
    every case is a distinct input."""
    from _badinput import check_table

    built = check_table(CASES, tmp_path)
    targets = [str((c or {}).get("target", "")) for _, _, c in built.values()]
    kinds = {"digits": any(t.startswith("digits") for t in targets),
             "csv": any(t.endswith(".csv") for t in targets),
             "npz": any(t.endswith(".npz") for t in targets),
             "image folder": any(Path(t).is_dir() for t in targets if t),
             "cache_dir": any("cache_dir" in (c or {}) for _, _, c in built.values())}
    assert all(kinds.values()), f"no case for {[k for k, v in kinds.items() if not v]}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data(case, tmp_path, existing, capsys, monkeypatch):
    check_case(CASES, case, tmp_path, capsys, monkeypatch)
