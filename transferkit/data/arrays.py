"""NumPy ``.npz`` archives as image or tabular domains."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._options import MAX_CLASSES, check_n_classes, check_two_classes
from .domain import UNLABELED, DomainDataset

#: Without a ``classes`` array, integer labels may leave at most this much of their label space
#: ``0..max`` empty: ``max + 1 <= max(SPARSE_LABELS_FLOOR, SPARSE_LABELS_FACTOR * n_labeled)``.
SPARSE_LABELS_FLOOR = 1000
SPARSE_LABELS_FACTOR = 10

#: Keys tried, in order, when ``x`` / ``y`` keep their default values.
X_KEYS: tuple[str, ...] = ("x", "X", "images", "features")
Y_KEYS: tuple[str, ...] = ("y", "Y", "labels")


def _open(p: Path, shown: str):
    try:
        data = np.load(p, allow_pickle=False)
    except ValueError as exc:
        # np.load falls back to unpickling anything that is neither zip nor .npy; pickles of
        # protocol >= 2 start with 0x80, anything else is just not an archive.
        with open(p, "rb") as fh:
            head = fh.read(2)
        if "pickle" in str(exc).lower() and head[:1] == b"\x80":
            raise DataError(
                f"{shown!r} is a pickle, not an .npz archive; transferkit loads arrays with "
                "allow_pickle=False because unpickling can run arbitrary code. Save plain arrays "
                "with np.savez(path, x=..., y=...)."
            ) from None
        why = "it is neither a zip archive nor a .npy file" if "pickle" in str(exc).lower() else str(exc)
        raise DataError(
            f"{shown!r} is not a valid .npz archive ({why}); save it with np.savez(path, x=..., y=...)."
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{shown!r} is not a valid .npz archive ({type(exc).__name__}: {exc}); "
            "save it with np.savez(path, x=..., y=...)."
        ) from None
    if isinstance(data, np.ndarray):
        raise DataError(
            f"{shown!r} holds a single array (.npy format), not an .npz archive; save inputs and "
            "labels together with np.savez(path, x=..., y=...)."
        )
    return data


def _memory_limit() -> int:
    """Half the machine's physical memory: no single array read from a file may claim more."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # not POSIX
        return 16 * 2**30


def npy_header(fh) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the header of an open ``.npy`` stream, which is left
    at the start of the data; nothing is unpickled. Raises ``ValueError`` for a non-``.npy`` stream."""
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        return fmt.read_array_header_1_0(fh)
    if version == (2, 0):
        return fmt.read_array_header_2_0(fh)
    try:  # format 3.0 (utf-8 field names) has no public reader
        from numpy.lib._format_impl import _read_array_header
    except ImportError:  # numpy < 2
        from numpy.lib.format import _read_array_header
    return _read_array_header(fh, version)


def _declared_bytes(data, key: str) -> tuple[tuple, np.dtype] | None:
    """(shape, dtype) from the ``.npy`` header of ``key`` without reading its data, or ``None``."""
    try:
        with data.zip.open(key + ".npy") as fh:
            shape, _, dtype = npy_header(fh)
        return shape, dtype
    except Exception:  # leave any oddity to np.load, which reports it below
        return None


def _get(data, key: str, shown: str) -> np.ndarray:
    head = _declared_bytes(data, key)
    if head is not None:
        shape, dtype = head
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes > _memory_limit():
            raise DataError(
                f"{shown!r}: array {key!r} declares shape {shape} ({dtype}), {nbytes / 2**30:,.1f} GiB, more "
                f"than half of this machine's memory ({_memory_limit() * 2 / 2**30:,.1f} GiB); the file is "
                "corrupt or hostile (a compressed archive can claim any size), or the data needs a machine "
                "with more memory: save a smaller array."
            )
    try:
        return data[key]
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(
                f"{shown!r}: array {key!r} holds Python objects, which would need unpickling; "
                "transferkit loads .npz files with allow_pickle=False for safety. Save numeric "
                "(or fixed-width string) arrays instead of object arrays."
            ) from None
        raise DataError(f"{shown!r}: cannot read array {key!r} ({exc}).") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{shown!r}: array {key!r} is corrupt ({type(exc).__name__}: {exc}); save the file again."
        ) from None


def _pick(keys: list[str], wanted: str | None, defaults: tuple[str, ...], default: str) -> str | None:
    if wanted is None:
        return None
    if wanted in keys:
        return wanted
    if wanted == default:
        return next((k for k in defaults if k in keys), None)
    return None


def _labels(y: np.ndarray, shown: str, key: str, n: int) -> tuple[np.ndarray, list[str] | None]:
    if y.ndim != 1:
        raise DataError(f"{shown!r}: labels {key!r} must be 1-D (one label per sample), got shape {y.shape}.")
    if len(y) != n:
        raise DataError(
            f"{shown!r}: {n} inputs but {len(y)} labels in {key!r}; both arrays need the same length."
        )
    if y.dtype.kind in "US":
        from .tables import encode_labels

        vals = y.astype(str)
        return encode_labels(np.where(vals == "", None, vals), what=f"{shown!r}: labels {key!r}")
    if y.dtype.kind == "b":
        return y.astype(np.int64), ["False", "True"]
    if y.dtype.kind in "iuf" and len(y):
        top, low = y.max().item(), y.min().item()
        # checked before the cast to int64, which wraps a uint64 or a float of 1e20 around
        if np.isfinite(low) and low < UNLABELED:
            raise DataError(
                f"{shown!r}: labels {key!r} contain {low!r}; use integer class indices 0..K-1 and "
                "-1 for unlabeled samples."
            )
        if np.isfinite(top) and top > MAX_CLASSES - 1:
            check_n_classes(f"{shown!r}", int(min(float(top), 1e300)) + 1,
                            source=f"labels {key!r} (largest label {top!r})")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise DataError(
                f"{shown!r}: labels {key!r} contain {int(bad.sum())} NaN/inf value(s); mark unlabeled "
                "samples with -1 instead."
            )
        frac = y != np.round(y)
        if frac.any():
            raise DataError(
                f"{shown!r}: labels {key!r} are not whole numbers (e.g. {float(y[frac][0])!r}); labels must be "
                "integer class indices 0..K-1 (-1 = unlabeled)."
            )
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise DataError(f"{shown!r}: labels {key!r} have dtype {y.dtype}; use integers 0..K-1 (-1 = unlabeled).")
    y = y.astype(np.int64)
    if (y < UNLABELED).any():
        raise DataError(
            f"{shown!r}: labels {key!r} contain {int(y.min())}; use integer class indices 0..K-1 and "
            "-1 for unlabeled samples."
        )
    # Integer labels are kept as they are (not re-indexed), so that a domain missing some
    # classes stays aligned with the other domains' label space.
    k = int(y.max()) + 1 if (y >= 0).any() else 0
    return y, ([str(i) for i in range(k)] if k else None)


def load_npz(
    path: str | os.PathLike,
    x: str = "x",
    y: str | None = "y",
    name: str | None = None,
) -> DomainDataset:
    """Load an ``.npz`` archive (``np.savez``) of inputs and labels as a :class:`DomainDataset`.

    Parameters
    ----------
    path
        The ``.npz`` file; read with ``allow_pickle=False`` (object arrays are refused).
    x
        Key of the inputs. With the default ``"x"`` the first of ``x, X, images, features``
        present is used. ``ndim`` 3 ``(n, H, W)`` or 4 ``(n, H, W, C)`` gives
        ``modality="image"``: ``uint8`` (or any integer type with values in 0..255) is scaled
        to [0, 1] float32, floats must already lie in [0, 1]. ``ndim`` 2 ``(n, d)`` gives
        ``modality="tabular"`` (float32).
    y
        Key of the labels. With the default ``"y"`` the first of ``y, Y, labels`` present is
        used. Integer (or whole-number float) labels are kept as class indices with ``-1``
        meaning unlabeled; string labels are mapped to ``0..K-1`` in sorted order. ``None``
        loads the inputs without labels (an unlabeled domain). If the archive holds a string
        array ``classes``, it names the classes.
    name
        Domain name; defaults to the file name without its extension.

    Raises
    ------
    DataError
        Missing file; not an ``.npz`` archive (or a pickle); a key is absent (the message lists
        the keys present); inputs and labels differ in length; labels are not whole numbers;
        inputs contain NaN/inf; image values outside [0, 1].
    """
    p = Path(path).expanduser()
    shown = str(path)
    if not p.exists():
        raise DataError(f"array file {shown!r} does not exist (looked at {str(p.absolute())!r}); check the path.")
    if p.is_dir():
        raise DataError(f"array file {shown!r} is a directory, expected a file: give the path of an .npz "
                        "archive (saved with np.savez(path, x=..., y=...)).")
    with _open(p, shown) as data:
        keys = list(data.files)
        xk = _pick(keys, x, X_KEYS, "x")
        if xk is None:
            tried = ", ".join(map(repr, X_KEYS)) if x == "x" else repr(x)
            raise DataError(
                f"{shown!r} has no input array {tried}; it holds {', '.join(map(repr, keys)) or 'no arrays'}. "
                "Pass x=KEY to name the inputs."
            )
        yk = _pick(keys, y, Y_KEYS, "y")
        if y is not None and yk is None:
            tried = ", ".join(map(repr, Y_KEYS)) if y == "y" else repr(y)
            raise DataError(
                f"{shown!r} has no label array {tried}; it holds {', '.join(map(repr, keys))}. "
                "Pass y=KEY to name the labels, or y=None (spec: y=none) for an unlabeled domain."
            )
        xs = _get(data, xk, shown)
        ys = _get(data, yk, shown) if yk is not None else None
        cls_arr = _get(data, "classes", shown) if "classes" in keys and "classes" not in (xk, yk) else None

    inputs, modality = _inputs(xs, shown, xk)
    labels, classes = (None, None) if ys is None else _labels(ys, shown, yk, len(inputs))
    if cls_arr is not None and cls_arr.dtype.kind in "US" and cls_arr.ndim == 1:
        if ys is not None and ys.dtype.kind in "US":
            pass  # string labels already name their classes
        else:
            if labels is not None and (labels >= len(cls_arr)).any():
                raise DataError(
                    f"{shown!r}: label {int(labels.max())} is outside 'classes' ({len(cls_arr)} names); "
                    "fix the labels or the class names."
                )
            classes = [str(c) for c in cls_arr]
    if classes is not None:
        check_n_classes(f"{shown!r}", len(classes),
                        source="the class names" if cls_arr is not None else f"labels {yk!r}")
    if labels is not None and classes is not None and (cls_arr is None or cls_arr.dtype.kind not in "US"):
        n_labeled = int((labels >= 0).sum())
        bound = max(SPARSE_LABELS_FLOOR, SPARSE_LABELS_FACTOR * n_labeled)
        if ys.dtype.kind not in "USb" and len(classes) > bound:
            raise DataError(
                f"{shown!r}: labels {yk!r} imply {len(classes):,} classes (largest label {len(classes) - 1} + 1) "
                f"for {n_labeled} labeled samples; integer labels without class names may span at most "
                f"max({SPARSE_LABELS_FLOOR:,}, {SPARSE_LABELS_FACTOR} x labeled samples) = {bound:,} classes. "
                "Re-encode them as 0..K-1 (np.unique(y, return_inverse=True)), or save the label space's "
                "names as an array 'classes' in the archive."
            )
    if labels is not None:
        check_two_classes(f"{shown!r}: labels {yk!r}", labels, names=classes,
                          fix="Add samples of other classes (or mark unlabeled ones -1).")
    return DomainDataset(
        inputs=inputs,
        labels=labels,
        name=name or p.stem,
        modality=modality,
        classes=classes,
        meta={"kind": "npz", "path": str(p), "x_key": xk, "y_key": yk},
    )


def _check_float32(xs: np.ndarray, out: np.ndarray, shown: str, key: str) -> None:
    """Refuse finite float64 values that overflow to inf in float32 (e.g. 1e308)."""
    over = ~np.isfinite(out)
    if over.any():
        rows, cols = np.nonzero(over)
        raise DataError(
            f"{shown!r}: inputs {key!r} hold {int(over.sum())} value(s) too large for float32 "
            f"(|x| > {float(np.finfo(np.float32).max):.3g}; first {float(xs[rows[0], cols[0]]):g} in column "
            f"{int(cols[0])}, sample {int(rows[0])}); rescale the features (e.g. standardize or take logs)."
        )


def _inputs(xs: np.ndarray, shown: str, key: str) -> tuple[np.ndarray, str]:
    if xs.ndim not in (2, 3, 4):
        raise DataError(
            f"{shown!r}: inputs {key!r} have shape {xs.shape}; expected (n, d) features, (n, H, W) "
            "grayscale or (n, H, W, C) color images."
        )
    if len(xs) == 0:
        raise DataError(f"{shown!r}: inputs {key!r} are empty (shape {xs.shape}); add samples.")
    if xs.dtype.kind == "b":
        xs = xs.astype(np.float32)
    if xs.dtype.kind not in "iuf":
        raise DataError(f"{shown!r}: inputs {key!r} have dtype {xs.dtype}; save numeric arrays.")
    if xs.dtype.kind == "f":
        bad = ~np.isfinite(xs)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(len(xs), -1).any(axis=1))
            raise DataError(
                f"{shown!r}: inputs {key!r} contain {int(bad.sum())} NaN/inf value(s) in {len(rows)} sample(s) "
                f"(first at index {int(rows[0])}); fill or drop them."
            )
    if xs.ndim == 2:
        with np.errstate(over="ignore"):  # checked just below
            out = xs.astype(np.float32)
        if xs.dtype.kind == "f" and xs.dtype.itemsize > 4:
            _check_float32(xs, out, shown, key)
        return out, "tabular"
    if xs.ndim == 4 and xs.shape[1] in (1, 3) and xs.shape[3] not in (1, 3, 4):
        raise DataError(
            f"{shown!r}: images {key!r} have shape {xs.shape}, which looks channels-first (n, C, H, W); "
            "transferkit expects channels-last (n, H, W, C): save x.transpose(0, 2, 3, 1)."
        )
    if xs.dtype.kind in "iu":
        lo, hi = int(xs.min()), int(xs.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{shown!r}: integer images {key!r} range {lo}..{hi}; integer images must be 0..255 "
                "(uint8), or save floats scaled to [0, 1]."
            )
        return (xs.astype(np.float32) / 255.0), "image"
    lo, hi = float(xs.min()), float(xs.max())
    if lo < 0 or hi > 1:
        raise DataError(
            f"{shown!r}: float images {key!r} range {lo:g}..{hi:g}, outside [0, 1]; scale them first "
            "(e.g. x / 255.0 for 0..255 pixels, or (x - x.min()) / (x.max() - x.min())), or save uint8."
        )
    return xs.astype(np.float32), "image"
