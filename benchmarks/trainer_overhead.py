"""What the Trainer costs per optimiser step against a hand-written AdamW loop, on the demo task.

    python benchmarks/trainer_overhead.py [--epochs 30] [--repeats 3] [--threads N]

Both train EfficientNet-Lite0 at 64x64 (pretrained, the ``finetune`` strategy's recipe: a new
linear head, every group trained, the backbone at 0.1x the head's rate, frozen BatchNorm
statistics, light augmentation, gradient clipping, a cosine schedule) on the demo's 100 labeled
target images, batch 32. The hand loop preprocesses the images once and runs only the steps;
the Trainer runs as ``FineTune``'s defaults configure it inside ``transferkit run`` (a run
directory, so checkpoints; per-epoch selection on the labeled validation split, ~400 images),
timed around ``Trainer.fit``. The ratio is (Trainer seconds per optimiser step) / (seconds per
step of the hand loop run just before it, in the same process: pairs cancel the machine's drift),
mean ± std over ``--repeats``.
Also printed: the same Trainer with validation every epoch on every row (the old default) and
without a run directory, to show where the time goes.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F


def demo_splits(seed: int = 0):
    from importlib import resources

    from transferkit.config import config_from_dict, safe_load_yaml
    from transferkit.data.spec import load_dataset
    from transferkit.experiment import make_splits

    text = resources.files("transferkit.configs").joinpath("demo.yaml").read_text()
    cfg = config_from_dict(safe_load_yaml(text, "demo.yaml"))
    target = load_dataset(cfg.target)
    train, val, test = make_splits(target, cfg.split, seed, load=load_dataset)
    return train, val


def hand_loop(train, epochs: int, seed: int = 0) -> tuple[float, int]:
    """Seconds and optimiser steps of a plain loop doing the finetune recipe's work."""
    from transferkit.backbones import create_backbone
    from transferkit.finetune import build_param_groups, frozen_bn_modules, make_schedule
    from transferkit.nn import TransferModel
    from transferkit.train import make_augment

    torch.manual_seed(seed)
    model = TransferModel(create_backbone("efficientnet_lite0", image_size=64), train.n_classes)
    groups = build_param_groups(model, 1e-3, backbone_lr_mult=0.1, weight_decay=0.01)
    opt = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(train) / 32)
    sched = make_schedule(opt, epochs * steps_per_epoch, schedule="cosine", warmup_steps=steps_per_epoch)
    aug = make_augment("light")
    model.to(memory_format=torch.channels_last)
    X = model.preprocess(train.inputs).contiguous(memory_format=torch.channels_last)
    y = torch.as_tensor(train.labels)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    steps = 0
    for _ in range(epochs):
        model.train()
        for m in frozen_bn_modules(model, "all"):
            m.eval()
        perm = torch.randperm(len(X), generator=gen)
        for s in range(0, len(perm), 32):
            idx = perm[s : s + 32]
            if len(idx) < 2:
                continue
            xb = aug(X[idx], gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            steps += 1
    return time.perf_counter() - t0, steps


def trainer_fit(train, val, epochs: int, run_dir: bool, **overrides) -> tuple[float, int]:
    """Seconds inside ``Trainer.fit`` and optimiser steps of ``FineTune`` (its defaults)."""
    from transferkit.strategies.finetune import FineTune
    from transferkit.train import trainer as trainer_mod

    timed = {}
    real_fit = trainer_mod.Trainer.fit

    def fit(self, *a, **k):
        t = time.perf_counter()
        try:
            return real_fit(self, *a, **k)
        finally:
            timed["s"], timed["steps"] = time.perf_counter() - t, self.step

    trainer_mod.Trainer.fit = fit
    try:
        s = FineTune(image_size=64, epochs=epochs, **overrides)
        with tempfile.TemporaryDirectory() as d:
            s.fit(train, val, run_dir=d if run_dir else None)
    finally:
        trainer_mod.Trainer.fit = real_fit
    return timed["s"], timed["steps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30, help="FineTune's default budget")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    train, val = demo_splits()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); demo task: {len(train)} training, "
          f"{len(val)} validation images; {a.epochs} epochs, {a.repeats} repeats (mean ± std)")
    variants = {
        "Trainer, finetune defaults (run dir)": dict(run_dir=True),
        "  validation every epoch on every row": dict(run_dir=True, val_every=1, val_max_samples=None),
        "  no run directory (no checkpoints)": dict(run_dir=False),
    }
    ratios: dict[str, list[float]] = {k: [] for k in variants}
    hand_rates = []
    hand_loop(train, 1)  # warm-up (allocator, kernels), not timed
    for r in range(a.repeats):
        for name, kw in variants.items():
            hs, hn = hand_loop(train, a.epochs, seed=r)
            hand_rates.append(hs / hn)
            ts, tn = trainer_fit(train, val, a.epochs, **kw)
            ratios[name].append((ts / tn) / (hs / hn))
    hand = np.array(hand_rates)
    print(f"{'hand-written AdamW loop':<42} {hand.mean() * 1e3:8.1f} ± {hand.std(ddof=1) * 1e3 if len(hand) > 1 else 0:.1f} ms/step  1.00x")
    for name, rs in ratios.items():
        v = np.array(rs)
        print(f"{name:<42} {'':>19}  {v.mean():.2f}x ± {v.std(ddof=1) if len(v) > 1 else 0:.2f}")


if __name__ == "__main__":
    main()
