"""FeatureExtractor (a scikit-learn transformer) and its on-disk cache.

Features of a frozen backbone are expensive (EfficientNet-Lite0 at 64x64 runs ~800 images/s on
2 cores) and the same for every seed and every head trained on them, so they are cached on
disk as ``.npy`` files keyed by the backbone (name, weights, input size, state hash) and a
content fingerprint of the data.

A cache miss streams the features to disk chunk by chunk, resumable after a kill, and, with
several processes, sharded across them (see :class:`FeatureExtractor` and :class:`_Partial`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin

from .. import _dist
from .._faults import fault_point
from .._validation import check_number
from ..data.arrays import npy_header
from ..errors import ConfigError, DataError, TransferKitWarning


def default_cache_dir() -> str:
    """``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit/features``."""
    return os.environ.get("TRANSFERKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "transferkit", "features")


def backbone_key(backbone) -> str:
    """A stable identity of a backbone's function: spec plus a hash of its weights."""
    h = hashlib.sha256()
    spec = backbone.spec.to_dict()
    h.update(json.dumps({k: spec[k] for k in ("name", "input_size", "mean", "std", "weights", "feature_dim")},
                        sort_keys=True, default=str).encode())
    # every byte of every tensor (buffers included: BN statistics change features too);
    # ~30 ms for EfficientNet-Lite0, against seconds of extraction
    for k, v in backbone.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Check that the feature cache directory can be used; create it if it is missing.

    Called before a run directory is created, so that a cache directory that is a file, or
    cannot be created or written, fails in one line and before anything on disk changes.

    Parameters
    ----------
    path
        The cache directory; ``None`` uses :func:`default_cache_dir`.

    Returns
    -------
    Path
        The directory.

    Raises
    ------
    ConfigError
        ``path`` exists but is not a directory, or cannot be created or written.
    """
    shown = str(path) if path is not None else default_cache_dir()
    p = Path(shown).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(
            f"cache_dir {shown!r} exists but is not a directory (it is a file); point cache_dir at a "
            "folder (or remove the file)."
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cache_dir {shown!r} cannot be created ({exc.strerror or type(exc).__name__}); point cache_dir "
            "at a folder you can write to."
        ) from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-check-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"cache_dir {shown!r} is not writable ({exc.strerror or type(exc).__name__}); point cache_dir "
            "at a folder you can write to, or fix its permissions."
        ) from None
    return p


def _invalid(p: Path, why: str) -> None:
    warnings.warn(
        f"feature cache entry {str(p)!r} is invalid ({why}); ignoring it, recomputing the features "
        "and overwriting it.", TransferKitWarning, stacklevel=4)


#: Bytes read (and checked for NaN/inf) at a time from a cache entry: a bounded temporary.
_READ_BYTES = 16 << 20


def _npy_layout(fh) -> tuple[tuple, bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of the ``.npy`` stream ``fh``; nothing is
    unpickled. Raises ``ValueError`` when it is not a ``.npy`` stream."""
    shape, fortran, dtype = npy_header(fh)
    return shape, fortran, dtype, fh.tell()


def _read_entry(p: Path, n: int | None, dim: int | None) -> np.ndarray | str:
    """The cached array, or a reason why the file is not a valid entry.

    The ``.npy`` header is read and checked (float32, 2-D, ``(n, dim)``, the file as long as
    the header says) before the data, with ``np.lib.format`` directly: :func:`numpy.load` would
    also open a zip archive or, if allowed, a pickle. The data is then read into one array in
    blocks of ``_READ_BYTES``, each checked for NaN/inf as it comes (one pass, no temporary
    as large as the entry).
    """
    try:
        with open(p, "rb") as fh:
            head = fh.read(1)
            fh.seek(0)
            try:
                shape, fortran, dtype, offset = _npy_layout(fh)
            except ValueError:
                return "a pickle, not a .npy file; it was not unpickled" if head == b"\x80" else "not a .npy file"
            if dtype.hasobject:
                return f"dtype {dtype} holds Python objects; it was not unpickled"
            if dtype != np.float32:
                return f"dtype {dtype}, expected float32"
            if len(shape) != 2:
                return f"shape {shape}, expected 2-D (samples, features)"
            if (n is not None and shape[0] != n) or (dim is not None and shape[1] != dim):
                return f"shape {shape}, expected ({n}, {dim})"
            size, want = os.fstat(fh.fileno()).st_size, offset + shape[0] * shape[1] * 4
            if size < want:
                return f"unreadable: truncated ({size} bytes, the header announces {want})"
            if fortran:  # not written by transferkit; rare enough for the plain reader
                fh.seek(0)
                arr = np.lib.format.read_array(fh, allow_pickle=False)
                return arr if np.isfinite(arr).all() else "it holds NaN/inf values"
            arr = np.empty(shape, dtype=np.float32)
            step = max(1, _READ_BYTES // max(1, 4 * shape[1]))
            for s in range(0, shape[0], step):
                block = arr[s : s + step]
                if fh.readinto(memoryview(block).cast("B")) != block.nbytes:
                    return "unreadable: it ended before its last row"
                if not np.isfinite(block).all():
                    return "it holds NaN/inf values"
    except (OSError, ValueError, EOFError) as exc:  # unreadable, bad header
        return f"unreadable: {type(exc).__name__}: {str(exc).strip()[:120]}"
    return arr


try:  # advisory locks: one writer per cache entry among independent processes (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: Size of one progress record: written in place with a single ``pwrite`` (atomic for a process
#: kill) and a checksum (a torn write reads as "no progress", never as wrong progress).
_RECORD_BYTES = 512


class _Partial:
    """A cache entry being written, next to its final name ``<key>-<fingerprint>.npy``:

    ``<entry>.partial``
        The preallocated ``.npy`` (float32 ``(n, dim)``), written in place through
        :func:`numpy.lib.format.open_memmap` one chunk at a time and ``msync``-ed after each.
    ``<entry>.rows-A-B``
        The progress of the process that extracts rows ``A..B-1``: one fixed-size record (the
        entry's key, fingerprint, ``n``, ``dim``, ``A``, ``B`` and ``done``: rows ``A..A+done-1``
        are on disk), rewritten in place and ``fsync``-ed after each chunk. A rows file is only
        written after the rows it counts are durable.
    ``<entry>.lock``
        An advisory ``flock`` held by the one process (the main one) that creates, resumes,
        finalizes or deletes the entry; another process finding it held extracts without caching.

    Resume: the rows on disk are the union of ``A..A+done-1`` over every valid rows file of the
    entry (whatever the number of processes of the run that wrote them). The entry is complete
    when every process has written its shard; the main process then renames the partial file
    to the final name (atomic) and deletes the rows files and the lock. Only the main process
    creates the partial file and renames or deletes anything; every process creates and rewrites
    its own rows file, and writes its rows into the partial file.
    """

    def __init__(self, cache: FeatureCache, bkey: str, fp: str, n: int, dim: int):
        self.final = cache.path(bkey, fp)
        self.root = self.final.parent
        self.data = self.final.with_name(self.final.name + ".partial")
        self.lock_path = self.final.with_name(self.final.name + ".lock")
        self.ident = {"key": bkey, "fingerprint": fp, "n": int(n), "dim": int(dim)}
        self.n, self.dim = int(n), int(dim)
        self._lock_fd: int | None = None

    # ---------------------------------------------------------------- main process
    def acquire(self) -> bool:
        """Take the entry's lock; ``False`` when another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            if fcntl is None:
                self._lock_fd = fd
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:  # the holder before us may have finished and unlinked the file we locked
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return True
            os.close(fd)

    def release(self) -> None:
        """Drop the lock (the lock file is unlinked while still held, so no waiter is lost)."""
        if self._lock_fd is not None:
            try:
                self.lock_path.unlink(missing_ok=True)
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def prepare(self) -> list[tuple[int, int]]:
        """The row intervals already on disk (resume), after creating the partial file when it
        is missing or not a float32 ``(n, dim)`` ``.npy`` of the full length. Lock held."""
        if self._data_ok():
            return _merge(self._records())
        self._remove_records()  # rows files of an earlier partial file never count for a new one
        self._create()
        return []

    def finalize(self) -> None:
        """Rename the complete partial file into place; delete the rows files and the lock."""
        os.replace(self.data, self.final)
        _fsync_dir(self.root)
        self._remove_records()
        self.release()

    def discard(self) -> None:
        """Delete the partial file, the rows files and the lock (best effort)."""
        for p in (self.data, *self._record_files()):
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass
        self.release()

    def _data_ok(self) -> bool:
        try:
            with open(self.data, "rb") as fh:
                shape, fortran, dtype, offset = _npy_layout(fh)
                size = os.fstat(fh.fileno()).st_size
        except (OSError, ValueError, EOFError):
            return False
        return (dtype == np.float32 and not fortran and tuple(shape) == (self.n, self.dim)
                and size == offset + self.n * self.dim * 4)

    def _create(self) -> None:
        # created under a temporary name, then renamed: a kill part way leaves no half header
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n, self.dim))
            del mm
            with open(tmp, "r+b") as fh:
                if hasattr(os, "posix_fallocate"):
                    # reserve the blocks now: a full disk is an OSError here, not a SIGBUS when a
                    # later chunk is written through the memory map into a sparse file
                    try:
                        os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
                    except OSError as exc:
                        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                            raise
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, self.data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _record_files(self) -> list[Path]:
        import glob as _glob

        return [Path(p) for p in _glob.glob(_glob.escape(str(self.final)) + ".rows-*")]

    def _remove_records(self) -> None:
        for p in self._record_files():
            p.unlink(missing_ok=True)

    def _records(self) -> list[tuple[int, int]]:
        """``(A, A + done)`` of every valid rows file; a torn, foreign or corrupt one counts
        as nothing done."""
        out = []
        for p in self._record_files():
            try:
                raw = p.read_bytes()[:_RECORD_BYTES].rstrip()
                digest, _, body = raw.partition(b" ")
                if hashlib.sha256(body).hexdigest()[:16].encode() != digest:
                    continue
                rec = json.loads(body)
                a, b, done = int(rec["start"]), int(rec["stop"]), int(rec["done"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if any(rec.get(k) != v for k, v in self.ident.items()) or p.name != self._record_name(a, b):
                continue
            if 0 <= a <= a + done <= b <= self.n and done > 0:
                out.append((a, a + done))
        return out

    # ---------------------------------------------------------------- every process
    def _record_name(self, a: int, b: int) -> str:
        return f"{self.final.name}.rows-{a}-{b}"

    def write(self, row: int, block: np.ndarray) -> None:
        """Rows ``row..`` of the partial file := ``block``, durable on return (``msync``).

        The file is mapped for this chunk only, so the pages written do not stay in this
        process's resident memory."""
        mm = np.lib.format.open_memmap(self.data, mode="r+")
        try:
            if mm.shape != (self.n, self.dim) or mm.dtype != np.float32:
                raise ValueError(f"{self.data} changed shape to {mm.shape} while being written")
            mm[row : row + len(block)] = block
            mm.flush()
        finally:
            del mm

    def record(self, a: int, b: int, done: int) -> None:
        """Rows ``a..a+done-1`` are on disk: this process's rows file, in place, ``fsync``-ed."""
        body = json.dumps({**self.ident, "start": int(a), "stop": int(b), "done": int(done)},
                          sort_keys=True, separators=(",", ":")).encode()
        line = hashlib.sha256(body).hexdigest()[:16].encode() + b" " + body
        assert len(line) < _RECORD_BYTES, line
        fd = os.open(self.root / self._record_name(a, b), os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            os.pwrite(fd, line.ljust(_RECORD_BYTES - 1) + b"\n", 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_rows(self, s: int, e: int, out: np.ndarray) -> bool:
        """``out`` := rows ``s..e-1`` of the partial file, read in bounded blocks (no memory map:
        nothing stays resident); ``False`` when any of them is not finite."""
        with open(self.data, "rb") as fh:
            shape, _, dtype, offset = _npy_layout(fh)
            if tuple(shape) != (self.n, self.dim) or dtype != np.float32:
                raise ValueError(f"{self.data} changed shape to {shape}")
            fh.seek(offset + s * self.dim * 4)
            step = max(1, _READ_BYTES // (4 * self.dim))
            for r in range(0, e - s, step):
                block = out[r : min(e - s, r + step)]
                if fh.readinto(memoryview(block).cast("B")) != block.nbytes:
                    raise ValueError(f"{self.data} is shorter than its header says")
                if not np.isfinite(block).all():
                    return False
        return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _merge(intervals) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        elif e > s:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _missing(a: int, b: int, done: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``a..b-1`` that the merged intervals ``done`` do not cover, in order."""
    segs, cur = [], a
    for s, e in done:
        if e <= cur:
            continue
        if s >= b:
            break
        if s > cur:
            segs.append((cur, s))
        cur = max(cur, e)
    if cur < b:
        segs.append((cur, b))
    return segs


class FeatureCache:
    """``.npy`` files under ``root``: one per (backbone key, data fingerprint). Writes are atomic.

    An entry that is not a float32 ``(n, d)`` array of finite values (a truncated or corrupt
    file, the wrong shape or dtype, NaN/inf, a pickle) is never used and never unpickled: it
    counts as a miss, a :class:`~transferkit.errors.TransferKitWarning` names the file, and the
    recomputed features replace it atomically. :class:`FeatureExtractor` streams a new entry
    to disk chunk by chunk (see :class:`_Partial` for the files of an entry being written).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or default_cache_dir())
        self.hits = 0
        self.misses = 0
        self.invalid = 0

    def path(self, bkey: str, fingerprint: str) -> Path:
        return self.root / f"{bkey}-{fingerprint}.npy"

    def get(self, bkey: str, fingerprint: str, n: int | None = None, dim: int | None = None) -> np.ndarray | None:
        """The cached features, or ``None`` (a miss) when absent or invalid.

        ``n`` and ``dim``, when given, are the expected number of samples and feature width.
        """
        p = self.path(bkey, fingerprint)
        if p.is_file():
            got = _read_entry(p, n, dim)
            if isinstance(got, np.ndarray):
                self.hits += 1
                return got
            self.invalid += 1
            _invalid(p, got)
        elif p.exists():  # a folder (or a socket...): put() says so and leaves it alone
            self.invalid += 1
        self.misses += 1
        return None

    def put(self, bkey: str, fingerprint: str, feats: np.ndarray) -> None:
        """Write ``feats`` atomically (a temporary file, then ``os.replace``), mode 0666 less the
        umask. A cache that cannot be written only warns: the features are still returned."""
        target = self.path(bkey, fingerprint)
        if target.is_dir():
            _is_dir(target)
            return
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, feats, allow_pickle=False)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            _not_written(target, exc)
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise


def _is_dir(target: Path) -> None:
    warnings.warn(f"feature cache entry {str(target)!r} is a directory; the features are not cached "
                  "(remove that folder).", TransferKitWarning, stacklevel=4)


def _not_written(target: Path, exc: BaseException) -> None:
    why = (exc.strerror if isinstance(exc, OSError) else None) or f"{type(exc).__name__}: {exc}"
    warnings.warn(f"cannot write the feature cache entry {str(target)!r} ({why}); the features are not cached.",
                  TransferKitWarning, stacklevel=4)


# ----------------------------------------------------------------------------- extraction
#: Rows per durable chunk of a cache entry being written (rounded down to whole batches): what a
#: killed extraction loses at most, and how often the progress is ``fsync``-ed.
CHUNK_ROWS = 4096


class _inference:
    """Eval mode, channels-last images and ``torch.inference_mode`` for the block; the
    backbone's train/eval mode is put back after it."""

    def __init__(self, backbone):
        self.backbone = backbone

    def __enter__(self):
        self.was_training = self.backbone.training
        self.backbone.eval()
        if self.backbone.spec.modality == "image":
            self.backbone.to(memory_format=torch.channels_last)
        self.mode = torch.inference_mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        self.backbone.train(self.was_training)
        return False


def _batch(inputs, s: int, e: int):
    """Inputs ``s..e-1``: a slice of an array (a view), else a list of items read one by one
    (a lazy sequence: only this batch is ever read and decoded)."""
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        return inputs[s:e]
    return [inputs[i] for i in range(s, e)]


def _batches(s: int, e: int, batch_size: int):
    """Bounds of the batches of rows ``s..e-1``: aligned to ``batch_size`` in the input's row
    numbers (``k * batch_size ..``), so that any split of the rows (chunks, shards, a resume) runs
    the very same batches as one pass over all of them (the same floating-point results)."""
    b0 = s
    while b0 < e:
        b1 = min(e, (b0 // batch_size + 1) * batch_size)
        yield b0, b1
        b0 = b1


class _Prefetch:
    """``((b0, b1), preprocessed batch)`` for each of ``bounds`` in order; the next batch is read
    and preprocessed in a background thread while the backbone runs on the current one (reading
    a lazy sequence, decoding, resizing: hidden behind the forward pass). At most two batches of
    inputs exist at a time. Inputs are read from that one thread only, in order."""

    def __init__(self, backbone, inputs, bounds):
        from concurrent.futures import ThreadPoolExecutor

        self.backbone, self.inputs, self.bounds = backbone, inputs, iter(bounds)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="transferkit-features")
        self.pending = None
        self._submit()

    def _load(self, b0: int, b1: int):
        x = self.backbone.preprocess(_batch(self.inputs, b0, b1))
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _submit(self) -> None:
        b = next(self.bounds, None)
        self.pending = None if b is None else (b, self.pool.submit(self._load, *b))

    def __iter__(self):
        return self

    def __next__(self):
        if self.pending is None:
            raise StopIteration
        b, fut = self.pending
        x = fut.result()
        self._submit()
        return b, x

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)
        return False


def _forward(backbone, x, device) -> np.ndarray:
    return backbone(backbone.move_inputs(x, device)).float().cpu().numpy()


def _n_batches(segs, batch_size: int) -> int:
    return sum(-(-e // batch_size) - s // batch_size for s, e in segs)


def _nonfinite(backbone, block: np.ndarray, first: int, of: str, desc: str) -> DataError | None:
    bad = ~np.isfinite(block)
    if not bad.any():
        return None
    rows = bad.any(1)
    return DataError(
        f"backbone {getattr(backbone, 'name', None) or backbone.spec.name!r} produced non-finite features (NaN or "
        f"inf in {int(rows.sum())} of {of}, first sample {first + int(np.flatnonzero(rows)[0])}) for {desc!r}; "
        "check the weights (finite but huge values overflow) and the inputs for huge values.")


def extract_features(backbone, inputs, batch_size: int = 64, device: str | torch.device = "cpu",
                     progress: bool = False, desc: str = "features") -> np.ndarray:
    """Run ``backbone`` in eval mode over ``inputs`` in batches; return float32 ``(n, d)``.

    In memory, in this process only (no cache, no sharding: see :class:`FeatureExtractor`).
    Only one batch of inputs is read and preprocessed at a time."""
    from tqdm.auto import tqdm

    batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    n = len(inputs)
    out = np.empty((n, backbone.feature_dim), dtype=np.float32)
    with _inference(backbone), tqdm(total=_n_batches([(0, n)], batch_size), desc=desc, leave=False, unit="batch",
                                     disable=None if progress else True) as bar, \
            _Prefetch(backbone, inputs, _batches(0, n, batch_size)) as batches:
        for (b0, b1), x in batches:
            out[b0:b1] = _forward(backbone, x, device)
            del x
            bar.update(1)
            fault_point("features.batch")
    err = _nonfinite(backbone, out, 0, f"{n} samples", desc)
    if err is not None:  # huge weights or inputs: every later fit would fail or learn nothing
        raise err
    return out


def _dist_initialized() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return False
    return dist.is_available() and dist.is_initialized()


class _Group:
    """The processes that extract one dataset together: ``torch.distributed`` when it is
    initialized with several processes, else this process alone."""

    def __init__(self, collective: bool):
        self.collective = collective and _dist.world_size() > 1 and _dist_initialized()
        self.rank = _dist.rank() if self.collective else 0
        self.size = _dist.world_size() if self.collective else 1

    def bcast(self, obj):
        return _dist.broadcast_object(obj) if self.collective else obj

    def gather(self, obj) -> list:
        if not self.collective:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def shard(self, n: int, batch_size: int) -> tuple[int, int]:
        """Rows ``a..b-1`` of this process: contiguous, whole batches, as even as batches allow."""
        nb = -(-n // batch_size)
        return (min(n, self.rank * nb // self.size * batch_size),
                min(n, (self.rank + 1) * nb // self.size * batch_size))


def _extract(backbone, inputs, group: _Group, part: _Partial | None, *, batch_size: int, chunk: int, device,
             progress: bool, desc: str = "features") -> np.ndarray:
    """Features of every input, each process of ``group`` computing its shard.

    With ``part`` (the main process holds its lock), rows already on disk are read back instead
    of recomputed, and every chunk computed is written to the partial file and recorded before
    the next one starts; the main process renames the complete file into place. Without it, or
    when the cache cannot be written, the shards are gathered in memory."""
    plan = None
    if group.rank == 0 and part is not None:
        if part.final.is_dir():
            _is_dir(part.final)
        else:
            try:
                if part.acquire():  # else another process writes this entry: extract without caching
                    plan = part.prepare()
            except (OSError, ValueError) as exc:
                _not_written(part.final, exc)
                part.discard()
    plan = group.bcast(plan)
    if plan is None:
        part = None
    try:
        return _extract_shards(backbone, inputs, group, part, plan, batch_size=batch_size, chunk=chunk,
                               device=device, progress=progress, desc=desc)
    finally:  # a no-op after finalize() or discard(); else (interrupted) the entry stays, resumable
        if part is not None and group.rank == 0:
            part.release()


def _extract_shards(backbone, inputs, group: _Group, part: _Partial | None, plan, *, batch_size: int, chunk: int,
                    device, progress: bool, desc: str) -> np.ndarray:
    """The body of :func:`_extract`, once the main process has prepared the entry (``plan``:
    the row intervals on disk, when ``part`` is written)."""
    from tqdm.auto import tqdm

    n, dim = len(inputs), backbone.feature_dim
    writing = part is not None
    a, b = group.shard(n, batch_size)
    shard = np.empty((b - a, dim), dtype=np.float32)
    status, error = None, None
    try:
        segs = [(a, b)]
        if writing:
            have = []
            for s, e in _merge((max(a, s), min(b, e)) for s, e in plan):
                try:
                    if part.read_rows(s, e, shard[s - a : e - a]):
                        have.append((s, e))
                except (OSError, ValueError):
                    pass  # recomputed and rewritten below
            segs = _missing(a, b, have)
        chunk = max(1, chunk // batch_size) * batch_size
        chunks = [c for s, e in segs for c in _batches(s, e, chunk)]  # aligned like the batches
        with _inference(backbone), tqdm(total=_n_batches(segs, batch_size), desc=desc, leave=False, unit="batch",
                                         disable=None if progress else True) as bar, \
                _Prefetch(backbone, inputs, (bo for c0, c1 in chunks for bo in _batches(c0, c1, batch_size))) as batches:
            k = 0
            for (b0, b1), x in batches:
                shard[b0 - a : b1 - a] = _forward(backbone, x, device)
                del x
                bar.update(1)
                fault_point("features.batch")
                c0, c1 = chunks[k]
                if b1 < c1:
                    continue
                k += 1  # chunk c0..c1-1 is complete
                err = _nonfinite(backbone, shard[c0 - a : c1 - a], c0, f"samples {c0}..{c1 - 1}", desc)
                if err is not None:
                    raise err
                if writing:
                    try:
                        part.write(c0, shard[c0 - a : c1 - a])
                        part.record(a, b, c1 - a)  # a..c1-1 are all on disk: read back or just written
                    except (OSError, ValueError) as exc:
                        writing = False
                        status = ("write", f"process {group.rank}: {exc}")
                        _not_written(part.final, exc)
                    else:
                        fault_point("features.chunk")
    except Exception as exc:  # every process hears of it (none is left waiting); this one re-raises it
        status, error = ("error", f"process {group.rank}: {type(exc).__name__}: {exc}"), exc
    statuses = group.gather(status)
    failed = [s[1] for s in statuses if s is not None and s[0] == "error"]
    if failed:
        if group.rank == 0 and part is not None:
            part.discard()
        if error is not None:
            raise error
        raise DataError(f"feature extraction for {desc!r} failed on another process ({failed[0]}); see its log.")
    complete = part is not None and all(s is None for s in statuses)
    if group.rank == 0 and part is not None:
        if complete:
            try:
                part.finalize()
            except OSError as exc:
                _not_written(part.final, exc)
                part.discard()
                complete = False
        else:
            part.discard()
    if group.size == 1:
        return shard
    if part is not None and group.bcast(complete):
        got = _read_entry(part.final, n, dim)
        if isinstance(got, np.ndarray):
            return got
        raise DataError(f"feature cache entry {str(part.final)!r}, just written by the main process, cannot be read "
                        f"by process {group.rank} ({got}); put cache_dir on a file system that every process sees.")
    return np.concatenate(group.gather(shard))


def _tabular_width(backbone) -> int | None:
    """The input width a tabular backbone declares (``spec.extra["in_features"]``), else ``None``."""
    spec = getattr(backbone, "spec", None)
    if spec is None or spec.modality != "tabular":
        return None
    width = (spec.extra or {}).get("in_features")
    return int(width) if width is not None else None


def _all_finite(A: np.ndarray) -> bool:
    """``np.isfinite(A).all()`` in blocks of rows: no temporary as large as ``A`` (a memory-mapped
    input much larger than memory is read once, a block at a time)."""
    step = max(1, _READ_BYTES // max(1, A[:1].nbytes))
    return all(np.isfinite(A[s : s + step]).all() for s in range(0, len(A), step))


def _check_inputs(X, width: int | None, who: str, backbone_name: str | None = None):
    """The inputs of ``X`` (a :class:`DomainDataset` or raw inputs), validated; one-line errors.

    Every input: not sparse, not empty, no NaN/inf in a float array. A tabular backbone with a
    known input ``width`` also needs a real 2-D numeric array with ``width`` columns (the
    messages carry the phrases scikit-learn's estimator checks look for).
    """
    name = getattr(X, "name", "the input")
    inputs = X.inputs if hasattr(X, "inputs") and hasattr(X, "fingerprint") else X
    if sparse.issparse(inputs):
        raise DataError(f"{who}: {name!r} is a scipy sparse matrix; pass a dense array (X.toarray()).")
    if width is not None and not isinstance(inputs, torch.Tensor):
        A = np.asarray(inputs)
        if np.iscomplexobj(A):
            raise DataError(f"{who}: Complex data not supported ({name!r} has dtype {A.dtype}); pass real features.")
        if A.dtype == object:
            try:
                A = A.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{who}: {name!r} must be numeric ({exc}); encode non-numeric columns first.") from None
        elif A.dtype.kind not in "biuf":
            raise DataError(f"{who}: {name!r} must be numeric, got dtype {A.dtype}; encode non-numeric columns first.")
        if A.ndim == 1 and len(A):
            raise DataError(
                f"{who}: {name!r} must be 2-D (n_samples, n_features), got a 1-D array of shape {A.shape}; "
                "Reshape your data with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample."
            )
        if A.ndim not in (1, 2):
            raise DataError(f"{who}: {name!r} must be 2-D (n_samples, n_features), got shape {A.shape}.")
        if A.ndim == 2 and A.shape[1] == 0:
            raise DataError(f"{who}: {name!r} has 0 feature(s) (shape=({A.shape[0]}, 0)) while a minimum of 1 is "
                            "required; pass at least one column.")
        if A.ndim == 2 and len(A) and A.shape[1] != width:
            raise DataError(
                f"X has {A.shape[1]} features, but FeatureExtractor is expecting {width} features as input (the "
                f"in_features of backbone {backbone_name!r}); pass rows with that many columns or use another backbone."
            )
        inputs = A
    if len(inputs) == 0:
        raise DataError(f"{who}: {name!r} has no samples; there is nothing to extract features from.")
    floating = isinstance(inputs, np.ndarray) and np.issubdtype(inputs.dtype, np.floating)
    if floating and not _all_finite(inputs):
        raise DataError(f"{who}: {name!r} holds NaN or infinite values; fill or drop them before extracting "
                        "features.")
    return inputs


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """Frozen backbone as a scikit-learn transformer: ``transform(inputs) -> (n, d)``.

    Parameters
    ----------
    backbone
        A backbone name (see :func:`transferkit.backbones.create_backbone`) or instance.
    image_size
        Input side for image backbones when ``backbone`` is a name.
    batch_size
        Inference batch size.
    cache_dir
        Feature cache directory; ``None`` uses ``$TRANSFERKIT_CACHE`` or
        ``~/.cache/transferkit/features``; ``False`` disables caching.
    progress
        Show a progress bar.
    device
        Where the backbone runs.
    chunk_size
        Rows per durable chunk of a cache entry being written (rounded down to whole batches):
        the most a killed extraction loses.
    distributed
        With several processes (``torch.distributed`` initialized, world size > 1): each one
        extracts a contiguous shard of the rows and every one returns all the features, so
        :meth:`transform` is then a collective call that every process makes with the same data.
        ``False``: each process extracts everything on its own (only the main one writes the
        cache). A launcher's ``WORLD_SIZE`` without an initialized process group counts as
        ``False``.

    Attributes
    ----------
    backbone_
        The backbone instance.
    cache_
        The :class:`FeatureCache` (``None`` when disabled).
    n_features_in_ : int
        Only for a tabular backbone that declares its input width (``tiny_mlp``, ``identity``):
        the number of columns ``X`` must have. Tabular inputs are validated like any
        scikit-learn transformer's (2-D, real, finite, that width); images and text are passed
        to the backbone as they are.

    Notes
    -----
    ``fit`` does not copy the backbone: ``backbone_`` is the instance given (moved to
    ``device``), so that a large model is not held twice.

    Memory: inputs are read (a lazy sequence item by item) and preprocessed one batch at a
    time; what grows with ``n`` is the float32 ``(n, d)`` result only. With a cache, a miss
    streams the features into ``<entry>.partial`` (a preallocated ``.npy`` written through a
    memory map, one chunk at a time, with a progress record ``fsync``-ed after each chunk): a
    process killed part way resumes from its last complete chunk, and the entry appears under
    its final name, atomically, only when complete. A hit returns an in-memory array
    (read and checked for NaN/inf in one pass).
    """

    def __init__(self, backbone="efficientnet_lite0", image_size=None, batch_size=64, cache_dir=None,
                 progress=False, device="cpu", chunk_size=CHUNK_ROWS, distributed=True):
        self.backbone = backbone
        self.image_size = image_size
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.progress = progress
        self.device = device
        self.chunk_size = chunk_size
        self.distributed = distributed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are float32 whatever the input
        return tags

    def fit(self, X=None, y=None):
        """Resolve the backbone (and the cache); ``X``, when given, is only validated.

        Parameters
        ----------
        X : optional
            Inputs like those of :meth:`transform`; for a tabular backbone, checked to be a
            finite 2-D array with the backbone's input width.
        y : ignored

        Returns
        -------
        self
        """
        if isinstance(self.backbone, str):
            from ..backbones import create_backbone

            backbone = create_backbone(self.backbone, image_size=self.image_size)
        else:
            backbone = self.backbone
        width = _tabular_width(backbone)
        if X is not None:
            _check_inputs(X, width, "FeatureExtractor.fit", getattr(backbone, "name", None) or backbone.spec.name)
        self.backbone_ = backbone
        self.backbone_.to(self.device)
        if width is not None:
            self.n_features_in_ = width
        self.cache_ = None if self.cache_dir is False else FeatureCache(self.cache_dir)
        self._bkey = backbone_key(self.backbone_) if self.cache_ is not None else None
        return self

    def transform(self, X) -> np.ndarray:
        """``X``: a :class:`DomainDataset` or raw inputs accepted by the backbone.

        Raises scikit-learn's ``NotFittedError`` before :meth:`fit`, and a
        :class:`~transferkit.errors.DataError` for no samples or non-finite numeric inputs."""
        if not hasattr(self, "backbone_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this FeatureExtractor is not fitted yet; call fit() first "
                                 "(FeatureExtractor(backbone).fit().transform(data)).")
        inputs = _check_inputs(X, _tabular_width(self.backbone_), "FeatureExtractor.transform",
                               self.backbone_.spec.name)
        bs = check_number("batch_size", self.batch_size, low=1, integer=True)
        chunk = check_number("chunk_size", self.chunk_size, low=1, integer=True)
        group = _Group(bool(self.distributed))
        kw = {"batch_size": bs, "chunk": chunk, "device": self.device, "progress": self.progress}
        if self.cache_ is None:
            if group.size == 1:
                return extract_features(self.backbone_, inputs, bs, self.device, self.progress)
            return _extract(self.backbone_, inputs, group, None, **kw)
        if hasattr(X, "fingerprint"):
            fp = X.fingerprint()
        else:
            from ..data import DomainDataset

            mod = self.backbone_.spec.modality
            fp = DomainDataset(inputs=inputs, labels=None, name="_", modality=mod if mod != "tabular" else "tabular").fingerprint()
        n, dim = len(inputs), self.backbone_.feature_dim
        if group.rank == 0:
            hit = self.cache_.get(self._bkey, fp, n=n, dim=dim)
        else:  # the main process has said what is wrong with an invalid entry
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TransferKitWarning)
                hit = self.cache_.get(self._bkey, fp, n=n, dim=dim)
        if all(group.gather(hit is not None)):
            return hit
        if group.size == 1 and not _dist.is_main_process():
            # a launcher's processes without a process group cannot share the writing: only
            # the main process writes (and deletes and renames) cache files
            return extract_features(self.backbone_, inputs, bs, self.device, self.progress)
        return _extract(self.backbone_, inputs, group, _Partial(self.cache_, self._bkey, fp, n, dim), **kw)
