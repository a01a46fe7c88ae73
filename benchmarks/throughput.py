"""Throughput of EfficientNet-Lite0 on this machine: inference and training, NCHW vs channels_last,
and the feature cache (first extraction vs a cache hit).

    python benchmarks/throughput.py [--size 64] [--batch 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from transferkit.backbones import create_backbone
from transferkit.data import load_digits_domain
from transferkit.features import FeatureExtractor


def rate(fn, n_images, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    r = n_images / np.array(ts)
    return r.mean(), r.std(ddof=1) if len(r) > 1 else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.size}x{a.size}, batch {a.batch}, "
          f"{a.repeats} repeats (mean ± std)")
    bb = create_backbone("efficientnet_lite0", image_size=a.size)
    x = torch.randn(a.batch, 3, a.size, a.size)
    print(f"{'what':<34}{'NCHW img/s':>18}{'channels_last img/s':>24}")
    for what in ("inference", "train step (AdamW)"):
        row = []
        for cl in (False, True):
            m = bb.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            xb = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
            if what == "inference":
                m.eval()

                def fn():
                    with torch.inference_mode():
                        m(xb)
            else:
                m.train()
                opt = torch.optim.AdamW(m.parameters(), 1e-4)

                def fn():
                    loss = m(xb[:32]).square().mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            n = a.batch if what == "inference" else 32
            mu, sd = rate(fn, n, a.repeats)
            row.append(f"{mu:8.0f} ± {sd:<5.0f}")
        print(f"{what:<34}{row[0]:>18}{row[1]:>24}")
    d = load_digits_domain(size=32)
    with tempfile.TemporaryDirectory() as tmp:
        fe = FeatureExtractor(bb, cache_dir=tmp).fit()
        t = time.perf_counter()
        fe.transform(d)
        first = time.perf_counter() - t
        t = time.perf_counter()
        fe.transform(d)
        hit = time.perf_counter() - t
    print(f"feature extraction, {len(d)} digits: first {first:.2f}s ({len(d) / first:.0f} img/s), cache hit {hit:.3f}s")


if __name__ == "__main__":
    main()
