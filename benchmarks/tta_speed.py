"""What test-time adaptation costs per batch, as a ratio to the plain forward pass of the same model.

    python benchmarks/tta_speed.py [--batch 64] [--batches 30] [--repeats 5] [--threads 1]

Models: the digit CNNs of the ``ccexam`` package (``usps_cnn`` 16x16, ``svhn_cnn`` 32x32, with
their source classifiers; skipped when the package is missing) and ``tiny_cnn`` (width 32, 28x28,
the drift benchmark's Fashion-MNIST architecture, random weights: the cost does not depend on
them). Per model, each of ``bn_adapt``, ``tent``, ``t3a`` and ``eata`` runs over the same stream of
``--batches`` batches of ``--batch`` random inputs, alternating with the plain forward pass
(``model.eval()`` under ``torch.inference_mode``) so the machine's drift hits both; the median
seconds per batch over ``--repeats`` rounds and the ratio method / plain are printed.

The issue's budget: TENT at most 2x a plain forward, T3A at most 1.2x.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


def models():
    from transferkit.backbones import create_backbone
    from transferkit.nn import TransferModel

    out = []
    for name in ("usps_cnn", "svhn_cnn"):
        try:
            bb = create_backbone(name)
        except Exception as exc:  # noqa: BLE001 - the package may be missing
            print(f"skip {name}: {str(exc).splitlines()[0][:120]}")
            continue
        w, b = bb.source_head
        head = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            head.weight.copy_(w)
            head.bias.copy_(b)
        out.append((name, nn.Sequential(bb, head).eval(), bb.spec.input_size))
    torch.manual_seed(0)
    bb = create_backbone("tiny_cnn", image_size=28, width=32)
    out.append(("tiny_cnn-32 (fashion)", TransferModel(bb, 10).eval(), bb.spec.input_size))
    return out


def time_stream(fn, xs) -> float:
    t0 = time.perf_counter()
    for x in xs:
        fn(x)
    return (time.perf_counter() - t0) / len(xs)


def main(argv=None) -> None:
    import transferkit as tk

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"batch {a.batch}, {a.batches} batches per stream, {a.repeats} rounds, {a.threads} thread(s)")
    print(f"{'model':<22} {'method':<9} {'plain ms':>9} {'method ms':>10} {'ratio':>6}")
    for name, model, shape in models():
        g = torch.Generator().manual_seed(0)
        xs = [torch.randn(a.batch, *shape, generator=g) for _ in range(a.batches)]

        def plain(x, model=model):
            with torch.inference_mode():
                return model(x)

        for method in ("bn_adapt", "tent", "t3a", "eata"):
            adapter = tk.tta.wrap(model, method)
            time_stream(plain, xs[:3])
            time_stream(adapter, xs[:3])  # warm-up
            p, m = [], []
            for _ in range(a.repeats):
                p.append(time_stream(plain, xs))
                adapter.reset()
                m.append(time_stream(adapter, xs))
            ratios = [mi / pi for mi, pi in zip(m, p)]
            print(f"{name:<22} {method:<9} {1e3 * statistics.median(p):9.2f} {1e3 * statistics.median(m):10.2f} "
                  f"{statistics.median(ratios):6.2f}")


if __name__ == "__main__":
    main()
