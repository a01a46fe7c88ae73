"""Feature extraction at scale: overhead against a hand-written loop, and time and memory as n grows.

    python benchmarks/extraction_scale.py [--quick] [--backbone efficientnet_lite0] [--size 64]

1. **Overhead.** ``FeatureExtractor(...).transform`` (a cache miss streamed to disk chunk by
   chunk, inputs read and preprocessed per batch; and without a cache) against a hand-written
   ``torch.inference_mode()`` loop over the same backbone (channels-last, as the extractor runs
   it) on inputs preprocessed once, before the clock starts. Same images, same batch size, in
   one process; the runs alternate (hand, cached, hand, no cache, hand, ...) and each extractor
   run is compared with the mean of the hand runs just before and after it (a drift of the
   machine's speed cancels); the ratio printed is the median of those, with the ratio of the
   best times beside it. Target: >= 0.95. The time of a cache hit is printed too. The fit of
   ``FeatureExtractor`` (hashing the weights for the cache key) is done once, off the clock.
2. **Scale.** n = 12,500 / 25,000 / 50,000 / 100,000 images, each in a fresh subprocess: the
   1,797 scikit-learn digits cycled, each with its own seeded rotation and translation
   (:class:`transferkit.data.transforms.Shift`), made on access by a lazy sequence (the inputs
   never exist in memory all at once), streamed into a fresh cache. Each child reports the
   extraction's wall time, its CPU time (all threads) and its peak resident memory
   (``resource.getrusage``); ``time ~ n^k`` is fitted by least squares on log-log, for both.
   Target: peak RSS < 2 GB at 100k (the float32 result alone is n x d x 4 bytes, 488 MiB at
   100k x 1,280).

``--quick``: a smoke run (fewer images, n = 1k..4k). The scale children run with the parent's
thread settings (``OMP_NUM_THREADS``); on a shared machine, read the ratios rather than the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch


class ShiftedDigits(Sequence):
    """``n`` images: digit ``i % 1797`` at ``size x size``, rotated (±15°) and shifted (±10%)
    with a seed of its own; made when read, never held all at once."""

    def __init__(self, n: int, size: int = 32, seed: int = 0):
        from transferkit.data import load_digits_domain
        from transferkit.data.transforms import Shift

        self.base = load_digits_domain(size=size).inputs
        self.shift = Shift(rotate=(-15.0, 15.0), translate=0.1)
        self.n, self.size, self.seed = int(n), int(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        i = int(i)
        if not 0 <= i < self.n:
            raise IndexError(i)
        img = self.base[i % len(self.base)][None]
        return self.shift.apply(img, seed=(self.seed * 1_000_003 + i) % 2**32)[0]

    def fingerprint(self) -> str:
        return f"shifted-digits-n{self.n}-s{self.size}-seed{self.seed}"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def overhead(backbone: str, size: int, n: int, batch: int, repeats: int) -> None:
    from transferkit.backbones import create_backbone
    from transferkit.data import load_digits_domain
    from transferkit.features import FeatureExtractor

    bb = create_backbone(backbone, image_size=size)
    base = load_digits_domain(size=32).inputs
    X = np.ascontiguousarray(base[np.arange(n) % len(base)])  # in memory, 32x32 -> resized per batch
    bb.eval()
    bb.to(memory_format=torch.channels_last)
    pre = bb.preprocess(X).contiguous(memory_format=torch.channels_last)  # once, off the clock

    def hand():
        out = np.empty((n, bb.feature_dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, n, batch):
                out[s : s + batch] = bb(pre[s : s + batch]).float().numpy()
        return out

    cache_dir = tempfile.mkdtemp(prefix="tk-bench-")
    fitted = {True: FeatureExtractor(bb, batch_size=batch, cache_dir=cache_dir).fit(),  # fit (weights hash) once
              False: FeatureExtractor(bb, batch_size=batch, cache_dir=False).fit()}

    def extractor(cache):
        def run():
            if cache:  # every run a miss: the entry of the last one removed, off the clock
                for p in os.listdir(cache_dir):
                    os.unlink(os.path.join(cache_dir, p))
            t = time.perf_counter()
            fitted[cache].transform(X)
            return time.perf_counter() - t
        return run

    ref = hand()  # warm-up too
    extractor(True)()
    np.testing.assert_allclose(fitted[True].transform(X), ref, rtol=1e-4, atol=1e-5)  # a hit: the same features
    # hand, cached, hand, no cache, hand, ...: each extractor run against the mean of the hand
    # runs just before and after it, which cancels a slow drift of the machine's speed
    order = [k for _ in range(repeats) for k in ("hand", "cached", "hand", "nocache")] + ["hand"]
    seq = []
    for k in order:
        if k == "hand":
            t = time.perf_counter()
            hand()
            seq.append((k, time.perf_counter() - t))
        else:
            seq.append((k, extractor(k == "cached")()))
    timings = {k: [t for kk, t in seq if kk == k] for k in ("hand", "cached", "nocache")}
    pairs = {"cached": [], "nocache": []}
    for i, (k, t) in enumerate(seq):
        if k != "hand":
            pairs[k].append((seq[i - 1][1] + seq[i + 1][1]) / 2 / t)
    hands = timings["hand"]
    fitted[True].transform(X)  # the entry of the last miss is there: a hit
    t = time.perf_counter()
    fitted[True].transform(X)
    hit = time.perf_counter() - t
    shutil.rmtree(cache_dir)
    print(f"\n1. overhead: {backbone} at {size}x{size}, {n} images, batch {batch}, {repeats} pairs, "
          f"{torch.get_num_threads()} torch threads")
    print(f"   hand inference_mode loop, preprocessed once: {n / statistics.median(hands):7.0f} img/s (median)")
    for k, label in (("cached", "FeatureExtractor, cache miss (streamed)"), ("nocache", "FeatureExtractor, no cache")):
        r = pairs[k]
        best = min(hands) / min(timings[k])
        print(f"   {label:<44} {n / statistics.median(timings[k]):7.0f} img/s   ratio to hand "
              f"{statistics.median(r):.3f} (median of {len(r)}; range {min(r):.3f}..{max(r):.3f}; best-of ratio "
              f"{best:.3f})  {'ok' if statistics.median(r) >= 0.95 else 'BELOW 0.95'}")
    print(f"   cache hit: {hit * 1e3:.1f} ms ({n / hit:,.0f} rows/s)")


def child(n: int, backbone: str, size: int, batch: int, cache: str) -> None:
    """One scale point, in a fresh process: prints one JSON line."""
    from transferkit.backbones import create_backbone
    from transferkit.data import DomainDataset
    from transferkit.features import FeatureExtractor

    torch.manual_seed(0)
    bb = create_backbone(backbone, image_size=size)
    ds = DomainDataset(ShiftedDigits(n), None, f"shifted-digits-{n}", "image")
    fe = FeatureExtractor(bb, batch_size=batch, cache_dir=cache).fit()
    before = _rss_mb()
    t, c = time.perf_counter(), time.process_time()
    F = fe.transform(ds)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    assert F.shape == (n, bb.feature_dim) and fe.cache_.misses == 1
    print(json.dumps({"n": n, "time": wall, "cpu": cpu, "peak_rss_mb": _rss_mb(), "rss_before_mb": before,
                      "result_mb": F.nbytes / 2**20}), flush=True)


def scale(ns: list[int], backbone: str, size: int, batch: int) -> None:
    print(f"\n2. scale: {backbone} at {size}x{size}, batch {batch}, lazy shifted digits, a fresh process per n, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"   {'n':>8} {'time s':>9} {'cpu s':>8} {'img/s':>8} {'peak RSS MB':>12} {'RSS before MB':>14} {'result MB':>10}")
    rows = []
    for n in ns:
        cache = tempfile.mkdtemp(prefix="tk-scale-")
        try:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--backbone", backbone,
                                  "--size", str(size), "--batch", str(batch), "--cache", cache],
                                 capture_output=True, text=True, check=False)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        if out.returncode != 0:
            print(out.stdout[-2000:], out.stderr[-4000:])
            raise SystemExit(f"the child for n={n} failed (exit {out.returncode})")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"   {n:>8,} {r['time']:>9.1f} {r['cpu']:>8.1f} {n / r['time']:>8.0f} {r['peak_rss_mb']:>12.0f} "
              f"{r['rss_before_mb']:>14.0f} {r['result_mb']:>10.0f}", flush=True)
    logn = np.log([r["n"] for r in rows])
    k, _ = np.polyfit(logn, np.log([r["time"] for r in rows]), 1)
    kc, _ = np.polyfit(logn, np.log([r["cpu"] for r in rows]), 1)
    peak = rows[-1]["peak_rss_mb"]
    print(f"   time ~ n^{k:.3f}, CPU time ~ n^{kc:.3f} (least squares on log-log, {len(rows)} points; CPU time "
          "(both threads) is less sensitive to other work on the machine)")
    print(f"   peak RSS at n={rows[-1]['n']:,}: {peak:.0f} MB ({'< 2 GB: ok' if peak < 2048 else '>= 2 GB: TOO MUCH'}); "
          f"above the result itself: {peak - rows[-1]['result_mb']:.0f} MB")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a fast smoke run")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ratio-images", type=int, default=None, help="images of the overhead measurement")
    ap.add_argument("--repeats", type=int, default=None, help="pairs of the overhead measurement")
    ap.add_argument("--ns", type=int, nargs="*", default=None, help="scale points")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        return child(a.child, a.backbone, a.size, a.batch, a.cache)
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} cpus, {torch.get_num_threads()} torch threads")
    if not a.skip_overhead:
        overhead(a.backbone, a.size, a.ratio_images or (256 if a.quick else 2048), a.batch,
                 a.repeats or (2 if a.quick else 5))
    if not a.skip_scale:
        scale(a.ns or ([1000, 2000, 4000] if a.quick else [12_500, 25_000, 50_000, 100_000]), a.backbone, a.size, a.batch)


if __name__ == "__main__":
    main()
