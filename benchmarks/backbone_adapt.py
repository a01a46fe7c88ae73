"""Full-backbone adaptation (``adapt(level="backbone")``) on one digits-shift task.

    python benchmarks/backbone_adapt.py [--task rot45_trans] [--methods source_only mcc target_only]
                                        [--seeds 3] [--epochs 10]

The same protocol as ``transferkit benchmark digits-shift`` (target split 50/50 per seed into an
unlabeled pool and a test split; DEV selection; ``target_only`` trains on the pool's labels),
but the whole EfficientNet-Lite0 trains (backbone at 0.1 x lr, BatchNorm statistics frozen)
with an MLP head whose bottleneck carries the DA loss. Slow on a CPU (minutes per run): the
option is meant for GPUs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    from transferkit.benchmark import SOURCE, TASKS
    from transferkit.data import stratified_split
    from transferkit.data.spec import load_dataset
    from transferkit.strategies import Adapt, SourceOnly

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="rot45_trans", choices=list(TASKS))
    ap.add_argument("--methods", nargs="+", default=["source_only", "mcc", "target_only"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args(argv)
    src, tgt = load_dataset(SOURCE), load_dataset(TASKS[args.task])
    res = {m: [] for m in args.methods}
    t_all = time.perf_counter()
    for seed in range(args.seeds):
        pool, test_idx = stratified_split(tgt.labels, [0.5, 0.5], seed=seed)
        labeled, test = tgt.subset(pool), tgt.subset(test_idx)
        unl = labeled.without_labels()
        for m in args.methods:
            t0 = time.perf_counter()
            kw = dict(backbone="efficientnet_lite0", image_size=64, seed=seed, epochs=args.epochs, batch_size=32,
                      level="backbone")
            if m == "target_only":  # the oracle: the labeled pool as its source
                s = Adapt(**kw, method=None).fit(unl, source=labeled)
            elif m == "source_only":  # labeled source only, selected on source validation loss
                s = SourceOnly(**kw).fit(None, source=src)
            elif m == "adabn":  # the same with DEV selection and the target in its BatchNorm statistics
                s = Adapt(**kw, method=None).fit(unl, source=src)
            else:
                s = Adapt(**kw, method=m).fit(unl, source=src)
            acc = s.score(test)
            res[m].append(acc)
            print(f"  seed {seed}  {m:<12} {acc:.3f}  ({time.perf_counter() - t0:.0f}s, best epoch {s.best_epoch_})",
                  flush=True)
    print(f"\n{args.task}, level=backbone, {args.epochs} epochs, {args.seeds} seeds, DEV selection (source_only: "
          "source validation loss) "
          f"({time.perf_counter() - t_all:.0f}s)")
    print("| method | test accuracy |\n|---|---|")
    for m, a in res.items():
        print(f"| {m} | {np.mean(a):.3f} ± {np.std(a, ddof=1) if len(a) > 1 else 0:.3f} |")


if __name__ == "__main__":
    main()
