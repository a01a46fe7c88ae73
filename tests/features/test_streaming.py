"""Feature extraction streamed into the cache: chunk by chunk, resumable after a kill, one
batch of inputs in memory at a time, sharded across processes.

The kills are real (``TRANSFERKIT_FAULT=name@k`` SIGKILLs a subprocess, see
:mod:`transferkit._faults`); interruptions in this process raise from a forward hook. Every run
uses the same seeded ``tiny_cnn`` on 16x16 digits, one torch thread, ``batch_size=8`` and
``chunk_size=16`` (two batches per durable chunk), so that results can be compared bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.backbones import create_backbone
from transferkit.data import DomainDataset, load_digits_domain
from transferkit.errors import DataError
from transferkit.features import FeatureExtractor, extract_features

N, BS, CHUNK = 120, 8, 16
ROOT = Path(__file__).resolve().parents[2]

# one process of a run: the same seeded backbone and data as _backbone()/_data() below
WORKER = r"""
import json, os, sys
import numpy as np
import torch
torch.set_num_threads(1)
from transferkit.backbones import create_backbone
from transferkit.data import load_digits_domain
from transferkit.features import FeatureExtractor

cfg = json.loads(sys.argv[1])
if cfg.get("world", 1) > 1:
    from datetime import timedelta
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{cfg['port']}", rank=int(os.environ["RANK"]),
                            world_size=cfg["world"], timeout=timedelta(seconds=60))
torch.manual_seed(0)
bb = create_backbone("tiny_cnn", image_size=16)
rows = []
bb.register_forward_hook(lambda m, i, o: rows.append(len(o)))
ds = load_digits_domain(size=16).subset(np.arange(cfg["n"]))
out = {}
fe = FeatureExtractor(bb, cache_dir=cfg["cache"], batch_size=8, chunk_size=16).fit()
np.save(cfg["out"] + ".miss.npy", fe.transform(ds))
out["miss_rows"] = sum(rows)
if cfg.get("again"):
    rows.clear()
    np.save(cfg["out"] + ".hit.npy", fe.transform(ds))
    out["hit_rows"], out["hits"] = sum(rows), fe.cache_.hits
    rows.clear()
    np.save(cfg["out"] + ".nocache.npy", FeatureExtractor(bb, cache_dir=False, batch_size=8).fit().transform(ds))
    out["nocache_rows"] = sum(rows)
with open(cfg["out"] + ".json", "w") as f:
    json.dump(out, f)
if cfg.get("world", 1) > 1:
    dist.destroy_process_group()
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANSFERKIT_FAULT", "RANK", "WORLD_SIZE",
                                                                     "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


def _worker(tmp_path: Path, cache: Path, name: str, env: dict, **cfg) -> subprocess.Popen:
    cfg = {"n": N, "cache": str(cache), "out": str(tmp_path / name), **cfg}
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(cfg)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(procs, timeout=60) -> list[tuple[int, str]]:
    out = []
    try:
        for p in procs:
            log, _ = p.communicate(timeout=timeout)
            out.append((p.returncode, log))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _backbone():
    torch.manual_seed(0)
    return create_backbone("tiny_cnn", image_size=16)


def _data(n=N):
    return load_digits_domain(size=16).subset(np.arange(n))


def _rows_counter(bb) -> list[int]:
    rows: list[int] = []
    bb.register_forward_hook(lambda m, i, o: rows.append(len(o)))
    return rows


def _extractor(bb, cache, **kw):
    return FeatureExtractor(bb, cache_dir=cache, batch_size=BS, chunk_size=CHUNK, **kw).fit()


def _files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _record(cache: Path, entry: Path, a: int, b: int) -> dict:
    raw = (cache / f"{entry.name}.rows-{a}-{b}").read_bytes()
    return json.loads(raw.rstrip().partition(b" ")[2])


@pytest.fixture()
def reference(tmp_path_factory, one_thread):
    """Features of an uninterrupted extraction (its own cache) and the entry's name."""
    fe = _extractor(_backbone(), tmp_path_factory.mktemp("ref_cache"))
    F = fe.transform(_data())
    entry = fe.cache_.path(fe._bkey, _data().fingerprint())
    return F, entry.name


# ----------------------------------------------------------------------------- kill and resume
def test_sigkill_part_way_then_resume_computes_only_the_missing_rows(tmp_path, reference):
    """SIGKILL after the 3rd durable chunk (48 rows on disk). The next run reads those rows
    back, computes only the others and returns exactly the uninterrupted run's features; the
    final entry appears only then. (A kill inside a chunk: the next test.)"""
    ref, name = reference
    fault, done = "features.chunk@3", 48
    cache = tmp_path / "cache"
    [(rc, log)] = _wait([_worker(tmp_path, cache, "killed", _env(TRANSFERKIT_FAULT=fault))])
    assert rc == -signal.SIGKILL, log
    entry = cache / name
    assert not entry.exists() and (cache / f"{name}.partial").is_file(), _files(cache)
    assert not list(cache.glob("*.npy")) and not list(cache.glob("*.tmp")), _files(cache)
    assert _record(cache, entry, 0, N)["done"] == done

    bb = _backbone()
    rows = _rows_counter(bb)
    fe = _extractor(bb, cache)
    got = fe.transform(_data())
    assert sum(rows) == N - done, rows  # only the missing rows
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert _files(cache) == [name]  # renamed into place; progress record and lock gone
    np.testing.assert_array_equal(np.load(entry), ref)
    rows.clear()
    np.testing.assert_array_equal(_extractor(bb, cache).transform(_data()), ref)
    assert rows == []  # a hit


class _Interrupt(BaseException):
    pass


def _interrupt_after(bb, batches: int):
    calls = []

    def hook(m, i, o):
        calls.append(len(o))
        if len(calls) == batches:
            raise _Interrupt

    return bb.register_forward_hook(hook), calls


def test_interrupted_in_process_resumes_and_releases_the_lock(tmp_path, reference):
    """Interrupted inside a chunk by an exception that is not an error (KeyboardInterrupt...):
    the rows of the complete chunks stay for a resume and the lock is released, so the same
    process can resume at once."""
    ref, name = reference
    bb = _backbone()
    handle, calls = _interrupt_after(bb, 5)  # 2 chunks durable, the 3rd's first batch computed
    with pytest.raises(_Interrupt):
        _extractor(bb, tmp_path).transform(_data())
    handle.remove()
    assert _files(tmp_path) == [f"{name}.partial", f"{name}.rows-0-{N}"]
    rows = _rows_counter(bb)
    np.testing.assert_array_equal(_extractor(bb, tmp_path).transform(_data()), ref)
    assert sum(rows) == N - 2 * CHUNK
    assert _files(tmp_path) == [name]


def test_resume_ignores_progress_records_that_do_not_match(tmp_path, reference):
    """A torn or edited record, or one of another entry, counts as nothing done; a partial
    file with a wrong header is recreated. The result is right either way."""
    ref, name = reference
    bb = _backbone()
    for spoil in ("torn", "other key", "bad header"):
        cache = tmp_path / spoil.replace(" ", "_")
        handle, _ = _interrupt_after(bb, 7)
        with pytest.raises(_Interrupt):
            _extractor(bb, cache).transform(_data())
        handle.remove()
        rec = cache / f"{name}.rows-0-{N}"
        if spoil == "torn":
            rec.write_bytes(rec.read_bytes()[:40])
        elif spoil == "other key":
            body = json.loads(rec.read_bytes().rstrip().partition(b" ")[2])
            body["fingerprint"] = "0" * 20
            import hashlib

            raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            rec.write_bytes(hashlib.sha256(raw).hexdigest()[:16].encode() + b" " + raw)
        else:
            (cache / f"{name}.partial").write_bytes(b"\x93NUMPY garbage")
        rows = _rows_counter(bb)
        np.testing.assert_array_equal(_extractor(bb, cache).transform(_data()), ref)
        assert sum(rows) == N, (spoil, rows)  # nothing trusted: everything recomputed
        assert _files(cache) == [name], spoil
        bb._forward_hooks.clear()


def test_entry_locked_by_another_process_is_not_written(tmp_path, reference):
    """Another process holding the entry's lock is writing it: extract without caching."""
    import fcntl

    ref, name = reference
    tmp_path.mkdir(exist_ok=True)
    fd = os.open(tmp_path / f"{name}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        np.testing.assert_array_equal(_extractor(_backbone(), tmp_path).transform(_data()), ref)
        assert _files(tmp_path) == [f"{name}.lock"]
    finally:
        os.close(fd)
    np.testing.assert_array_equal(_extractor(_backbone(), tmp_path).transform(_data()), ref)
    assert _files(tmp_path) == [name]


def test_non_finite_features_fail_and_leave_no_partial_entry(tmp_path):
    bb = _backbone()
    with torch.no_grad():
        for p in bb.parameters():
            p.mul_(1e30)
    with pytest.raises(DataError, match=r"produced non-finite features .*samples 0\.\.15.*check the weights"):
        _extractor(bb, tmp_path).transform(_data())
    assert _files(tmp_path) == []


# ----------------------------------------------------------------------------- bounded memory
class LazyImages(Sequence):
    """``n`` 32x32 images made on access (digits, cycled); counts how many are alive at once."""

    def __init__(self, n: int):
        self.base = load_digits_domain(size=32).inputs
        self.n = n
        self.alive = 0
        self.max_alive = 0
        self.reads = 0

    def __len__(self):
        return self.n

    def _gone(self):
        self.alive -= 1

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        img = self.base[i % len(self.base)] * np.float32(1.0)  # a new array each time
        self.reads += 1
        self.alive += 1
        self.max_alive = max(self.max_alive, self.alive)
        weakref.finalize(img, self._gone)
        return img

    def fingerprint(self):
        return f"lazy-digits-{self.n}"


def test_inputs_are_read_and_preprocessed_one_batch_at_a_time(tmp_path, one_thread):
    """2,000 lazy images (8 MB as float32, 24 MB preprocessed to 3x32x32) with a 256-row chunk:
    never more than one batch of images alive, each read once; the numpy memory traced at the
    peak is a small part of the inputs (the (n, 64) result is 0.5 MB)."""
    import tracemalloc

    n = 2000
    lazy = LazyImages(n)
    bb = create_backbone("tiny_cnn", image_size=32)
    fe = FeatureExtractor(bb, cache_dir=tmp_path, batch_size=16, chunk_size=256).fit()
    tracemalloc.start()
    try:
        got = fe.transform(DomainDataset(lazy, None, "lazy", "image"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lazy.max_alive <= 16 and lazy.reads == n, (lazy.max_alive, lazy.reads)
    inputs_bytes = n * 32 * 32 * 4
    assert peak < inputs_bytes / 4, (peak, inputs_bytes)
    assert got.shape == (n, 64) and len(list(tmp_path.glob("*.npy"))) == 1
    full = np.stack([lazy.base[i % len(lazy.base)] for i in range(n)])
    np.testing.assert_array_equal(got, extract_features(bb, full, batch_size=16))


def test_memory_mapped_inputs_are_checked_for_nan_in_blocks(tmp_path):
    X = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(50, 16, 16))
    X[:] = 0.5
    X[41, 3, 3] = np.nan
    X.flush()
    fe = FeatureExtractor(_backbone(), cache_dir=False).fit()
    with pytest.raises(DataError, match="NaN or infinite"):
        fe.transform(np.load(tmp_path / "x.npy", mmap_mode="r"))


# ----------------------------------------------------------------------------- several processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp_path, cache, tag, fault=None, **cfg):
    port = _free_port()
    procs = []
    for r in range(2):
        env = _env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **({"TRANSFERKIT_FAULT": fault} if fault else {}))
        procs.append(_worker(tmp_path, cache, f"{tag}{r}", env, world=2, port=port, **cfg))
    return _wait(procs)


def test_two_processes_shard_one_cache_entry_and_return_the_same_features(tmp_path, reference):
    """torchrun-style environment, gloo on 127.0.0.1: each rank computes its contiguous shard
    into the shared partial file, the main rank renames it; both return all the features, equal
    to one process's. Then both hit the entry, and without a cache the shards are gathered."""
    ref, name = reference
    cache = tmp_path / "cache"
    res = _two_ranks(tmp_path, cache, "rank", again=True)
    assert [rc for rc, _ in res] == [0, 0], "\n".join(log[-3000:] for _, log in res)
    stats = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # 15 batches: rank 0 has 7 (56 rows), rank 1 has 8 (64 rows)
    assert [s["miss_rows"] for s in stats] == [56, 64], stats
    assert [s["hit_rows"] for s in stats] == [0, 0] and [s["hits"] for s in stats] == [1, 1], stats
    assert [s["nocache_rows"] for s in stats] == [56, 64], stats
    for r in range(2):
        for what in ("miss", "hit", "nocache"):
            np.testing.assert_array_equal(np.load(tmp_path / f"rank{r}.{what}.npy"), ref, err_msg=f"{r} {what}")
    assert _files(cache) == [name]
    np.testing.assert_array_equal(np.load(cache / name), ref)


def test_two_processes_killed_part_way_resume_in_one(tmp_path, reference):
    """Both ranks SIGKILLed after their 2nd durable chunk: the entry keeps one progress record
    per shard; a single process then computes only the rows that neither shard had finished."""
    ref, name = reference
    cache = tmp_path / "cache"
    res = _two_ranks(tmp_path, cache, "killed", fault="features.chunk@2")
    assert [rc for rc, _ in res] == [-signal.SIGKILL] * 2, "\n".join(log[-3000:] for _, log in res)
    entry = cache / name
    # rank 0: rows 0..55, chunks 0..15, 16..31; rank 1: rows 56..119, chunks 56..63, 64..79
    assert _record(cache, entry, 0, 56)["done"] == 32 and _record(cache, entry, 56, N)["done"] == 24
    bb = _backbone()
    rows = _rows_counter(bb)
    np.testing.assert_array_equal(_extractor(bb, cache).transform(_data()), ref)
    assert sum(rows) == (56 - 32) + (N - 80), rows
    assert _files(cache) == [name]
