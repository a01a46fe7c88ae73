"""IDX files (the MNIST / Fashion-MNIST format) as lazy, memory-mapped image domains.

The format (every number big-endian)::

    bytes 0-1        0x00 0x00
    byte  2          type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3          number of dimensions d (3 for images (n, rows, cols), 1 for labels (n,))
    bytes 4..4+4d    the d sizes, unsigned 32-bit
    then             prod(sizes) values of the type, in C order; nothing after them

so MNIST images start with ``0x00000803`` and labels with ``0x00000801``.

Raw files are memory-mapped (``np.memmap`` past the header): loading reads the header only,
and an image is read from disk when it is asked for, so a DataLoader worker touches only the
pages of its own batches. A gzip file (recognised by its first two bytes, whatever its name)
cannot be mapped: it is decompressed once, streaming, into a cache file that is then mapped.

The cache
---------
Decompressed copies live in :func:`idx_cache_dir` (``idx/`` under the feature cache
directory: ``$TRANSFERKIT_CACHE/idx`` or ``~/.cache/transferkit/features/idx``), or in
``cache_dir`` when given, named ``<stem>-<key>.idx``. The key hashes the ``.gz`` file's size,
modification time (ns), its first MiB and its last 64 KiB: the last 8 bytes of a gzip file are
the CRC-32 and length of the whole uncompressed content, so an edited file gets a new key
without the file being read in full. A cache file is written to a temporary name and renamed
(:func:`transferkit._io.atomic_path`), so a killed process or two workers decompressing at
once never leave a half-written copy; before it is reused, its header and size are checked
against the ``.gz`` file's header. Stale copies are not deleted: remove the folder to reclaim
the space.

Shifts
------
The ``digits`` shift options (``rotate``, ``translate``, ``scale``, ``noise``, ``blur``,
``invert``) apply lazily, per image on access: image ``j`` of the file draws its parameters
from ``default_rng((seed, j))``, so it is shifted the same way in every process, batch order
and subset.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import os
import re
import shutil
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path
from .._registry import register
from ..errors import ConfigError, DataError
from ._options import MAX_IMAGE_SIZE, check_n_classes, check_two_classes, number, text
from .arrays import _memory_limit
from .domain import UNLABELED, DomainDataset
from .transforms import Shift

#: Type code -> dtype of the stored values (big-endian, as the format requires).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}

#: Most dimensions a header may declare (the format allows 255; real files have 1 to 4).
MAX_DIMS = 8

#: Bytes of the file hashed into cache keys and fingerprints, from its start and from its end.
KEY_HEAD_BYTES = 1 << 20
KEY_TAIL_BYTES = 1 << 16

#: Most parts ``subset=i/n`` may split a file into (as for ``digits``).
MAX_PARTS = 100

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_GZ_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError)
_FIX = "download or write the file again"


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX header declares: the type code, the shape and where the values start."""

    type_code: int
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return IDX_DTYPES[self.type_code]

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES[self.type_code]

    @property
    def offset(self) -> int:
        return 4 + 4 * len(self.shape)

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * self.dtype.itemsize

    @property
    def magic(self) -> str:
        return f"0x0000{self.type_code:02X}{len(self.shape):02X}"


def idx_cache_dir() -> Path:
    """Folder of decompressed ``.gz`` IDX files: ``idx/`` in the feature cache directory.

    The same base as :func:`transferkit.features.extractor.default_cache_dir`
    (``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit/features``), computed here so that
    reading data does not import torch.
    """
    base = os.environ.get("TRANSFERKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "transferkit",
                                                                "features")
    return Path(base).expanduser() / "idx"


# ----------------------------------------------------------------------------- headers


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def _read_header(fh, shown: str) -> IdxHeader:
    """Parse the header at the start of ``fh`` (a raw or a gzip stream), leaving it at the values."""
    magic = fh.read(4)
    if len(magic) < 4:
        raise DataError(
            f"IDX file {shown!r} is truncated: it holds {len(magic)} byte(s), fewer than the 4-byte magic number; "
            f"{_FIX}."
        )
    code, ndim = magic[2], magic[3]
    if magic[0] or magic[1] or code not in IDX_DTYPES or not 1 <= ndim <= MAX_DIMS:
        raise DataError(
            f"{shown!r} is not an IDX file: its magic number is 0x{magic.hex().upper()}, expected 0x0000TTDD (two zero "
            "bytes, a type code 08/09/0B/0C/0D/0E and the number of dimensions, e.g. 0x00000803 for MNIST images, "
            "0x00000801 for labels); give an MNIST-format ...-idx3-ubyte or ...-idx1-ubyte file, raw or .gz."
        )
    dims = fh.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(
            f"IDX file {shown!r} is truncated: its header declares {ndim} dimension(s) ({4 + 4 * ndim} header bytes) "
            f"but the file ends after {4 + len(dims)} bytes; {_FIX}."
        )
    return IdxHeader(code, tuple(int(d) for d in struct.unpack(f">{ndim}I", dims)))


def _check_data_size(h: IdxHeader, held: int, shown: str) -> None:
    if held != h.nbytes:
        what = "truncated" if held < h.nbytes else f"longer than declared ({held - h.nbytes:,} trailing bytes)"
        raise DataError(
            f"IDX file {shown!r} is {what}: its header ({h.magic}) declares shape {h.shape} of {h.type_name}, "
            f"{h.nbytes:,} bytes after the {h.offset}-byte header, but the file holds {held:,}; {_FIX}."
        )


def _raw_header(path: Path, shown: str) -> IdxHeader:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        h = _read_header(fh, shown)
    _check_data_size(h, size - h.offset, shown)
    return h


def _gz_header(path: Path, shown: str) -> IdxHeader:
    try:
        with gzip.open(path, "rb") as g:
            return _read_header(g, shown)
    except _GZ_ERRORS as exc:
        raise DataError(f"gzip file {shown!r} cannot be decompressed ({_why(exc)}); {_FIX}.") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "it is truncated: the compressed stream ends early"
    return f"{type(exc).__name__}: {str(exc).strip()[:160]}"


def _check_file(path: str | os.PathLike, option: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"IDX file {option}={str(path)!r} does not exist (looked at {str(p.absolute())!r}); check the path."
        )
    if not p.is_file():
        raise DataError(f"IDX file {option}={str(path)!r} is a directory, expected a file: give the path of an "
                        "MNIST-format ...-idx3-ubyte (images) or ...-idx1-ubyte (labels) file, raw or .gz.")
    return p


def read_idx_header(path: str | os.PathLike) -> IdxHeader:
    """The header of an IDX file, raw or gzip, without reading its values.

    For a raw file the file size is checked against the declared shape too; a ``.gz`` file's
    length is checked when it is decompressed.

    Raises
    ------
    DataError
        The file is missing, truncated, not an IDX file, or (raw) its size does not match the header.
    """
    p = _check_file(path, "path")
    return _gz_header(p, str(path)) if _is_gzip(p) else _raw_header(p, str(path))


# ----------------------------------------------------------------------------- gzip cache


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _file_key(path: Path) -> str:
    """Size, mtime, first MiB and last 64 KiB of ``path``: a cheap identity of its content."""
    size, mtime = _stamp(path)
    h = hashlib.sha256(f"{size}:{mtime}\n".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(KEY_HEAD_BYTES))
        if size > KEY_HEAD_BYTES:
            fh.seek(max(KEY_HEAD_BYTES, size - KEY_TAIL_BYTES))
            h.update(fh.read(KEY_TAIL_BYTES))
    return h.hexdigest()[:24]


def _stem(path: Path) -> str:
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80] or "idx"


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else idx_cache_dir()
    shown = str(cache_dir) if cache_dir is not None else str(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"IDX cache_dir {shown!r} exists but is not a directory; point cache_dir at a folder "
                          "(or set TRANSFERKIT_CACHE), or decompress the file yourself (gunzip) and give the raw path.")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"IDX cache_dir {shown!r} cannot be created ({exc.strerror or type(exc).__name__}); point "
                          "cache_dir at a folder you can write to (or set TRANSFERKIT_CACHE), or gunzip the file "
                          "yourself and give the raw path.") from None
    return root


def _decompressed(path: Path, shown: str, cache_dir: str | os.PathLike | None) -> tuple[Path, IdxHeader]:
    """The raw copy of the gzip IDX file ``path`` in the cache (made if needed) and its header."""
    head = _gz_header(path, shown)
    root = _cache_root(cache_dir)
    target = root / f"{_stem(path)}-{_file_key(path)}.idx"
    if target.is_file():
        try:
            if _raw_header(target, str(target)) == head:
                return target, head
        except (DataError, OSError):
            pass  # a damaged copy: write it again below
    need = head.offset + head.nbytes
    free = shutil.disk_usage(root).free
    if need > free:
        raise DataError(
            f"gzip IDX file {shown!r} decompresses to {need / 2**20:,.1f} MiB (its header declares shape {head.shape} "
            f"of {head.type_name}) but the cache folder {str(root)!r} has {free / 2**20:,.1f} MiB free; free some "
            "space, point cache_dir (or TRANSFERKIT_CACHE) at a larger disk, or check the file (a corrupt header "
            "can claim any size)."
        )
    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as out, gzip.open(path, "rb") as g:
            written = 0
            while True:
                try:
                    chunk = g.read(_CHUNK)
                except _GZ_ERRORS as exc:
                    raise DataError(f"gzip file {shown!r} cannot be decompressed ({_why(exc)}); {_FIX}.") from None
                if not chunk:
                    break
                written += len(chunk)
                if written > need:  # a corrupt or hostile file: stop before it fills the disk
                    raise DataError(
                        f"gzip IDX file {shown!r} decompresses to more than the {need:,} bytes its header "
                        f"({head.magic}, shape {head.shape}) declares; {_FIX}."
                    )
                out.write(chunk)
            _check_data_size(head, written - head.offset, shown)
    except OSError as exc:  # writing the copy (errors reading the .gz became DataError above)
        raise ConfigError(
            f"cannot write the decompressed copy of {shown!r} to {str(root)!r} ({exc.strerror or type(exc).__name__}); "
            "point cache_dir (or TRANSFERKIT_CACHE) at a folder you can write to, or gunzip the file yourself and "
            "give the raw path."
        ) from None
    return target, head


def open_idx(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> np.memmap:
    """A read-only memory map of the values of an IDX file (a ``.gz`` file via its cached raw copy).

    The array keeps the file's big-endian dtype; nothing is read until it is indexed.
    """
    p = _check_file(path, "path")
    if _is_gzip(p):
        p, h = _decompressed(p, str(path), cache_dir)
    else:
        h = _raw_header(p, str(path))
    return _memmap(p, h)


def _memmap(path: Path, h: IdxHeader) -> np.memmap:
    return np.memmap(path, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape)


# ----------------------------------------------------------------------------- images


def _check_images_header(h: IdxHeader, shown: str) -> None:
    nd = len(h.shape)
    if nd == 1:
        raise DataError(
            f"IDX file images={shown!r} has 1 dimension (magic {h.magic}), which is a labels file; images= takes the "
            "images file (magic 0x00000803, e.g. train-images-idx3-ubyte) and labels= the labels file."
        )
    if nd not in (3, 4) or (nd == 4 and h.shape[3] not in (1, 3)):
        raise DataError(
            f"IDX file images={shown!r} holds shape {h.shape} (magic {h.magic}); images must be (n, rows, cols) "
            "grayscale (magic 0x00000803) or (n, rows, cols, channels) with 1 or 3 channels."
        )
    n, rows, cols = h.shape[:3]
    if n == 0 or rows == 0 or cols == 0:
        raise DataError(f"IDX file images={shown!r} holds no images (shape {h.shape}); give a file with images.")
    if rows > MAX_IMAGE_SIZE or cols > MAX_IMAGE_SIZE:
        raise DataError(
            f"IDX file images={shown!r} holds {rows}x{cols} images, larger than {MAX_IMAGE_SIZE} pixels a side; "
            "store them downscaled, or as an image folder loaded with size=."
        )


def sequence_positions(key, n: int) -> np.ndarray:
    """Positions ``0..n-1`` that ``key`` (a slice, a 1-D integer array with negatives from the
    end, or a boolean mask of length ``n``) selects in a sequence of ``n`` images, int64; an
    ``IndexError`` naming the problem otherwise. Shared by the lazy image sequences."""
    if isinstance(key, slice):
        pos = np.arange(*key.indices(n), dtype=np.int64)
    else:
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (n,):
                raise IndexError(f"boolean index of shape {key.shape} for {n} images")
            pos = np.flatnonzero(key)
        elif key.size == 0:
            pos = np.zeros(0, dtype=np.int64)
        elif key.dtype.kind in "iu" and key.ndim == 1:
            pos = key.astype(np.int64)
            pos = np.where(pos < 0, pos + n, pos)
            if len(pos) and (pos.min() < 0 or pos.max() >= n):
                bad = key[(pos < 0) | (pos >= n)][0]
                raise IndexError(f"image index {int(bad)} out of range for {n} images")
        else:
            raise IndexError(f"images are indexed by an int, a slice or a 1-D integer or boolean array, "
                             f"not {key.dtype} of shape {key.shape}")
    return pos


class IdxImages(Sequence):
    """Images of an IDX file, memory-mapped and decoded one at a time.

    Parameters
    ----------
    path
        An IDX images file, raw or gzip (``(n, rows, cols)`` or ``(n, rows, cols, channels)``).
    cache_dir
        Where a gzip file's decompressed copy is kept; ``None`` uses :func:`idx_cache_dir`.
    shift
        A :class:`~transferkit.data.transforms.Shift` applied to each image on access, or ``None``.
    seed
        Seed of the per-image shift parameters (image ``j`` of the file uses ``(seed, j)``).

    Notes
    -----
    ``self[i]`` is a float32 array ``(rows, cols)`` (``(rows, cols, channels)`` for a 4-D
    file) with values in [0, 1], as the ``digits`` domain holds them: ``uint8`` is divided by
    255; other integer types must hold 0..255 and floats must lie in [0, 1] (checked per image
    as it is read). A slice, an integer array or a boolean mask returns the stacked float32
    batch ``(k, rows, cols)``; :meth:`subset` returns a lazy view.

    The memory map is opened on first access and dropped when pickled, so a DataLoader worker
    reopens it (checking that the file has not changed since it was loaded).
    """

    def __init__(self, path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                 shift: Shift | None = None, seed: int = 0) -> None:
        # absolute paths: a worker, or this process after a chdir, must find the same files
        self.source = _check_file(path, "images").absolute()
        self.shown = str(path)
        self.cache_dir = None if cache_dir is None else str(Path(cache_dir).expanduser().absolute())
        self.compressed = _is_gzip(self.source)
        self.stamp = _stamp(self.source)
        self.header = (_gz_header if self.compressed else _raw_header)(self.source, self.shown)
        _check_images_header(self.header, self.shown)  # before a gzip file is decompressed
        self.mapped = self.source
        if self.compressed:
            self.mapped, self.header = _decompressed(self.source, self.shown, self.cache_dir)
        self.shift = None if shift is None or shift.is_identity else shift
        self.seed = int(seed)
        #: file rows of this sequence, ``None`` for all of them in order
        self.index: np.ndarray | None = None
        self._map: np.memmap | None = None
        self._ident: str | None = None  # see fingerprint()

    # -------------------------------------------------------------- the map
    def _check_unchanged(self) -> None:
        """Raise when the file is gone or its size or modification time changed since loading."""
        try:
            stamp = _stamp(self.source)
        except OSError:
            raise DataError(f"IDX file {self.shown!r} has disappeared since it was loaded; reload the "
                            "dataset.") from None
        if stamp != self.stamp:
            raise DataError(f"IDX file {self.shown!r} has changed since it was loaded (size or modification time "
                            "differ); reload the dataset.")

    def _array(self) -> np.memmap:
        """The memory map, (re)opened on first use in this process."""
        if self._map is None:
            self._check_unchanged()
            if self.compressed and not self.mapped.is_file():  # the cache was cleared: decompress again
                self.mapped, _ = _decompressed(self.source, self.shown, self.cache_dir)
            if _raw_header(self.mapped, str(self.mapped)) != self.header:
                raise DataError(f"IDX file {str(self.mapped)!r} no longer matches {self.shown!r}; reload the dataset.")
            self._map = _memmap(self.mapped, self.header)
        return self._map

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_map"] = None  # a memmap pickles as a full in-memory copy; the worker maps the file again
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -------------------------------------------------------------- sequence
    def __len__(self) -> int:
        return self.header.shape[0] if self.index is None else len(self.index)

    def _rows(self, key) -> np.ndarray:
        """File rows selected by a slice, an integer array or a boolean mask of this sequence."""
        pos = sequence_positions(key, len(self))
        return pos if self.index is None else self.index[pos]

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)):
            n, k = len(self), int(i)
            if k < 0:
                k += n
            if not 0 <= k < n:
                raise IndexError(f"image index {int(i)} out of range for {n} images")
            j = k if self.index is None else int(self.index[k])
            return self._decode(np.asarray(self._array()[j])[None], np.array([j]))[0]
        rows = self._rows(i)
        if len(rows) == 0:
            return np.zeros((0, *self.header.shape[1:]), dtype=np.float32)
        return self._decode(np.asarray(self._array()[rows]), rows)

    def _decode(self, raw: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Stored values of file ``rows`` -> float32 in [0, 1], shifted when a shift is set."""
        with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused below
            x = raw.astype(np.float32)
        kind = raw.dtype.kind
        if kind == "u" and raw.dtype.itemsize == 1:
            x /= 255.0
        elif kind in "iu":
            bad = (raw < 0) | (raw > 255)
            if bad.any():
                k = int(np.flatnonzero(bad.reshape(len(raw), -1).any(1))[0])
                raise DataError(
                    f"IDX file {self.shown!r}: image {int(rows[k])} holds {int(raw[k][bad[k]][0])}; integer images "
                    "must be 0..255, or store floats in [0, 1]."
                )
            x /= 255.0
        else:
            bad = ~np.isfinite(x) | (x < 0) | (x > 1)
            if bad.any():
                k = int(np.flatnonzero(bad.reshape(len(raw), -1).any(1))[0])
                raise DataError(
                    f"IDX file {self.shown!r}: image {int(rows[k])} holds {float(raw[k][bad[k]][0])!r}; float images "
                    "must be finite and lie in [0, 1]: rescale them (e.g. x / 255) or store uint8."
                )
        if self.shift is not None:
            for k, j in enumerate(rows):
                x[k] = self.shift._one(x[k], np.random.default_rng((self.seed, int(j))))
        return x

    def subset(self, idx) -> IdxImages:
        """A lazy :class:`IdxImages` over the images at ``idx`` (positions in this sequence)."""
        rows = self._rows(np.asarray(idx).reshape(-1))
        new = copy.copy(self)  # shares the read-only map
        new.index = np.ascontiguousarray(rows, dtype=np.int64)
        return new

    # -------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """Hash of the file's identity, the selected rows and the shift.

        The file's identity is its size, modification time and a hash of its first MiB and
        last 64 KiB (for a gzip file these end with the CRC of the whole content), computed
        once: the values in between are never read. A file edited after it was loaded has
        another size or modification time; its old dataset object then raises instead of
        answering (what it would serve and what its fingerprint would describe could differ),
        and the reloaded dataset gets a new fingerprint.
        """
        self._check_unchanged()
        if self._ident is None:
            self._ident = _file_key(self.source)
        h = hashlib.sha256(f"idx-images {self.header.magic} {self.header.shape}\n{self._ident}\n".encode())
        if self.index is not None:
            h.update(b"rows\n" + self.index.tobytes())
        if self.shift is not None:
            h.update(f"shift {self.shift!r} seed={self.seed}\n".encode())
        return h.hexdigest()[:20]

    def __repr__(self) -> str:
        return f"IdxImages(path={self.shown!r}, n={len(self)}, image_shape={self.header.shape[1:]})"


# ----------------------------------------------------------------------------- labels


def _read_labels(path: Path, shown: str, n_images: int) -> np.ndarray:
    """All labels of an IDX labels file, int64, after checking its header against the images."""
    gz = _is_gzip(path)
    h = _gz_header(path, shown) if gz else _raw_header(path, shown)
    if len(h.shape) != 1:
        hint = " (this looks like an images file; labels= takes the ...-idx1-ubyte file)" if len(h.shape) >= 3 else ""
        raise DataError(
            f"IDX file labels={shown!r} has shape {h.shape} (magic {h.magic}); labels must be 1-D (magic 0x00000801)"
            f"{hint}."
        )
    if h.dtype.kind not in "iu":
        raise DataError(f"IDX file labels={shown!r} holds {h.type_name} values; labels must be integers (type code "
                        "08, 09, 0B or 0C): class indices 0..K-1, -1 = unlabeled.")
    if h.shape[0] != n_images:
        raise DataError(
            f"IDX file labels={shown!r} holds {h.shape[0]:,} labels but the images file holds {n_images:,} images; "
            "give the labels file that belongs to those images (e.g. train-labels with train-images)."
        )
    if h.nbytes > _memory_limit():  # a gzip header can claim any length
        raise DataError(
            f"IDX file labels={shown!r} declares {h.nbytes / 2**30:,.1f} GiB of labels, more than half of this "
            "machine's memory; the file is corrupt or hostile: download it again."
        )
    if gz:
        try:
            with gzip.open(path, "rb") as g:
                g.seek(h.offset)
                data = g.read(h.nbytes + 1)  # reading to the end also checks the CRC
        except _GZ_ERRORS as exc:
            raise DataError(f"gzip file {shown!r} cannot be decompressed ({_why(exc)}); {_FIX}.") from None
        _check_data_size(h, len(data), shown)
        y = np.frombuffer(data, dtype=h.dtype)
    else:
        y = np.fromfile(path, dtype=h.dtype, count=h.shape[0], offset=h.offset)
    y = y.astype(np.int64)
    if len(y) and y.min() < UNLABELED:
        k = int(np.argmin(y))
        raise DataError(f"IDX file labels={shown!r}: label {int(y[k])} at index {k}; labels must be class indices "
                        "0..K-1, with -1 for unlabeled samples.")
    return y


# ----------------------------------------------------------------------------- loader

_OPTIONS = ("images", "labels", "name", "classes", "subset", "seed", "cache_dir")


def _part(subset: Any, what: str) -> tuple[int, int] | None:
    if subset is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(subset))
    i, n = (int(m.group(1)), int(m.group(2))) if m else (-1, 0)
    if not m or not 0 <= i < n or n > MAX_PARTS:
        raise ConfigError(
            f"{what}: subset={subset!r} must look like i/n with 0 <= i < n <= {MAX_PARTS} (part i of n disjoint "
            "stratified parts), e.g. subset=0/2."
        )
    return i, n


def _classes(classes: Any, what: str) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)) or not classes:
        raise ConfigError(f"{what}: classes={classes!r} must be a non-empty list of class names, e.g. "
                          "classes=[shirt,trouser,...] (index-aligned with the label values).")
    names = [str(c).strip() for c in classes]
    if any(not c for c in names) or len(set(names)) != len(names):
        raise ConfigError(f"{what}: classes={classes!r} must be distinct, non-empty names.")
    return names


def _default_name(path: Path) -> str:
    stem = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    stem = re.sub(r"[-._]idx\d-ubyte$", "", stem)
    return Path(stem).stem if stem.endswith(".idx") else stem


def load_idx(
    images: str | os.PathLike,
    labels: str | os.PathLike | None,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    *,
    subset: str | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    **shift: Any,
) -> DomainDataset:
    """Load an IDX images file and its labels file (MNIST / Fashion-MNIST) as a lazy image domain.

    Parameters
    ----------
    images
        The images file (``(n, rows, cols)``, magic ``0x00000803`` for uint8), raw or gzip.
        Raw files are memory-mapped; a gzip file is decompressed once into the cache (see the
        module docstring) and the copy is mapped.
    labels
        The labels file (``(n,)``, magic ``0x00000801``), raw or gzip, read in full; ``None``
        loads an unlabeled domain. Label ``-1`` (int8 and wider types) marks an unlabeled sample.
    name
        Domain name; defaults to the images file's name without ``.gz`` and ``-idx3-ubyte``.
    classes
        Class names, index-aligned with the labels; by default ``"0"..str(max label)``.
    subset
        ``"i/n"`` keeps part ``i`` of a fixed stratified ``n``-way partition (seed 0), so a
        source ``subset=0/2`` and a target ``subset=1/2`` never share an image.
    seed
        Seed of the per-image shift parameters.
    cache_dir
        Folder of decompressed gzip files; ``None`` uses :func:`idx_cache_dir`.
    **shift
        ``rotate``, ``translate``, ``scale``, ``noise``, ``blur``, ``invert`` (see
        :class:`~transferkit.data.transforms.Shift`), applied lazily to each image on access.

    Returns
    -------
    DomainDataset
        ``modality="image"``; ``inputs`` is a lazy, picklable :class:`IdxImages` whose items are
        float32 ``(rows, cols)`` arrays in [0, 1]; ``labels`` int64 ``(n,)``.

    Raises
    ------
    ConfigError
        An unknown or invalid option; a cache folder that cannot be written.
    DataError
        A missing file, a truncated or corrupt file, a wrong magic number, a file size that does
        not match its header, labels that do not match the images; every message names the file.

    Examples
    --------
    >>> ds = load_idx("fashion/train-images-idx3-ubyte.gz", "fashion/train-labels-idx1-ubyte.gz")  # doctest: +SKIP
    >>> ds = load_dataset("idx:images=t10k-images-idx3-ubyte,labels=t10k-labels-idx1-ubyte,rotate=30")  # doctest: +SKIP
    """
    what = "dataset 'idx'"
    unknown = sorted(set(shift) - set(Shift.OPTIONS))
    if unknown:
        from .._validation import suggest

        raise ConfigError(f"{what}: unknown option {unknown[0]!r}." + suggest(unknown[0], [*Shift.OPTIONS, *_OPTIONS])
                          + f" Options: {', '.join(_OPTIONS)}, {', '.join(Shift.OPTIONS)}.")
    for opt, value in (("images", images), ("labels", labels), ("cache_dir", cache_dir)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, os.PathLike))
                                  or not str(value).strip()):
            raise ConfigError(f"{what}: {opt}={value!r} must be a file path.")
    if images is None:
        raise ConfigError(f"{what}: images= is required; write idx:images=PATH,labels=PATH.")
    name = text(what, "name", name)
    seed = number(what, "seed", seed, low=0, high=2**32 - 1, integer=True,
                  hint="the seed of the per-image shift parameters, e.g. seed=1")
    part = _part(subset, what)
    names = _classes(classes, what)
    if part is not None and labels is None:
        raise ConfigError(f"{what}: subset={subset!r} splits by class and needs labels=PATH.")
    Shift.from_options(what=what, **shift)  # every shift value is checked before any file is read

    img_path = _check_file(images, "images")
    shown = str(images)
    head = _gz_header(img_path, shown) if _is_gzip(img_path) else _raw_header(img_path, shown)
    _check_images_header(head, shown)
    sh = Shift.from_options(what=what, size=min(head.shape[1:3]), **shift)
    y = None
    if labels is not None:
        y = _read_labels(_check_file(labels, "labels"), str(labels), head.shape[0])
        k = int(y.max()) + 1 if (y >= 0).any() else 0
        if names is not None and k > len(names):
            raise DataError(f"IDX file labels={str(labels)!r}: label {k - 1} is outside classes ({len(names)} names); "
                            "give one class name per label value.")
        check_n_classes(f"IDX file labels={str(labels)!r}", k, source=f"labels (largest label {k - 1})")
        if names is None and k:
            names = [str(c) for c in range(k)]
        check_two_classes(f"IDX file labels={str(labels)!r}", y, names=names,
                          fix="Give the labels file of a classification dataset, or labels=none for unlabeled data.")
    if names is not None:
        check_n_classes(what, len(names), source="the class names")

    inputs = IdxImages(img_path, cache_dir=cache_dir, shift=sh, seed=seed)  # decompresses a gzip file once
    if part is not None:
        from .splits import stratified_split

        i, n = part
        idx = stratified_split(y, [1.0 / n] * n, seed=0, dataset=what)[i]
        inputs, y = inputs.subset(idx), y[idx]
    return DomainDataset(
        inputs=inputs,
        labels=y,
        name=name or _default_name(img_path),
        modality="image",
        classes=names,
        meta={"kind": "idx", "images": str(img_path), "labels": None if labels is None else str(labels)},
    )


@register("dataset", "idx", doc="IDX files (MNIST/Fashion-MNIST format, raw or .gz), memory-mapped and read lazily: "
                                "idx:images=PATH,labels=PATH (labels=none: unlabeled)")
def load_idx_spec(**options: Any) -> DomainDataset:
    """The ``idx`` spec: :func:`load_idx` with ``images`` and ``labels`` both required by name."""
    missing = [k for k in ("images", "labels") if k not in options]
    if missing:
        raise ConfigError(
            f"dataset 'idx': option {missing[0]!r} is missing; write idx:images=PATH,labels=PATH "
            "(labels=none for an unlabeled domain)."
        )
    return load_idx(**options)
