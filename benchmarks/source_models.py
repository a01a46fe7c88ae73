"""What the digit CNNs of ccexam (``mnist_cnn``, ``usps_cnn``, ``svhn_cnn``) get on scikit-learn's digits.

    make data                                   # or: pip install --no-deps ccexam
    python benchmarks/source_models.py [--threads 1]

The 1,797 8x8 digits are upsampled (bilinear) to each net's input side and, for the SVHN net,
repeated to three channels; each net's own source classifier (``source_probs``) predicts the
10 digits, no training and no target labels. ``adabn``: the same net with its BatchNorm
statistics recomputed on the digits (a cumulative average over all 1,797 images, no labels;
the MNIST net has no BatchNorm, so nothing changes). This is not the nets' own data (MNIST, USPS,
SVHN do not ship offline), so the figures are what they get, not a reproduction of their
training accuracy. Deterministic: no seeds.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from transferkit.backbones import create_backbone
    from transferkit.data.spec import load_dataset

    torch.set_num_threads(args.threads)
    print(f"{'model':<10} {'input':>6} {'source-only':>12} {'adabn':>7} {'images/s':>9}")
    for name in ("mnist_cnn", "usps_cnn", "svhn_cnn"):
        bb = create_backbone(name).eval()
        side = bb.spec.input_size[1]
        d = load_dataset(f"digits:size={side}")
        x = bb.preprocess(d.inputs)
        t0 = time.perf_counter()
        with torch.inference_mode():
            acc = float((bb.source_probs(bb(x)).argmax(1) == d.labels).mean())
        rate = len(d) / (time.perf_counter() - t0)
        bns = [m for m in bb.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
            m.train()
        with torch.inference_mode():
            bb(x)
        bb.eval()
        with torch.inference_mode():
            ada = float((bb.source_probs(bb(x)).argmax(1) == d.labels).mean())
        print(f"{name:<10} {side:>4}px {acc:>12.3f} {ada:>7.3f}{'' if bns else ' (no BN)'} {rate:>9.0f}")


if __name__ == "__main__":
    main()
