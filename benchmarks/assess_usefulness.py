"""Do the shift measures and transferability scores mean something on real features?

    python benchmarks/assess_usefulness.py [--seeds 3] [--part shift|rank|both]

Part 1 (shift family): source = digits:subset=0/2; targets = digits:subset=1/2 rotated by 0,
15, 30, 45, 60 degrees, and contrast-inverted. In EfficientNet-Lite0 feature space (64x64) each
divergence is computed, and a source-only logistic regression is scored on each target. The
table reports Spearman rho between each divergence and the source-only accuracy drop.

Part 2 (ranking backbones): on the demo target (10 labels per class), LogME, LEEP (N-LEEP for
backbones without a source classifier) and H-scores are computed from the 100 labeled training
samples of each backbone, and each backbone is fine-tuned (the `finetune` defaults; `scratch`
recipe for randomly initialized ones) over the given seeds. Kendall tau and Spearman rho compare
the score ranking with the actual mean test accuracy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from transferkit._registry import get
from transferkit.backbones import create_backbone
from transferkit.data.spec import load_dataset
from transferkit.features import FeatureExtractor

SHIFTS = [("rot0", "rotate=0"), ("rot15", "rotate=15"), ("rot30", "rotate=30"), ("rot45", "rotate=45"),
          ("rot60", "rotate=60"), ("invert", "invert=true")]
DIVS = ["mmd", "a_distance", "a_distance_C1e-4", "kl_gaussian", "js_gaussian", "wasserstein",
        "sliced_wasserstein", "coral_distance", "ks_features"]
# exploratory row, added after seeing the default A-distance saturate at 2 for every rotation
# >= 15 degrees: the same estimator with a heavily regularized (restricted) linear class
EXTRA = {"a_distance_C1e-4": ("a_distance", {"C": 1e-4})}


def part_shift(seed: int = 0):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    bb = create_backbone("efficientnet_lite0", image_size=64)
    fe = FeatureExtractor(bb).fit()
    src = load_dataset("digits:subset=0/2")
    Fs = fe.transform(src)
    clf = LogisticRegression(max_iter=3000).fit(Fs, src.labels)
    rows = []
    for name, opt in SHIFTS:
        tgt = load_dataset(f"digits:subset=1/2,{opt},seed={seed}")
        Ft = fe.transform(tgt)
        acc = float((clf.predict(Ft) == tgt.labels).mean())
        pca = PCA(32, random_state=seed).fit(np.vstack([Fs, Ft]))
        row = {"task": name, "source_only": acc}
        for d in DIVS:
            a, b = (pca.transform(Fs), pca.transform(Ft)) if d in ("kl_gaussian", "js_gaussian") else (Fs, Ft)
            opts = {"n_permutations": 100} if d == "mmd" else {}
            reg, extra = EXTRA.get(d, (d, {}))
            row[d] = float(get("divergence", reg)(a, b, seed=seed, **opts, **extra).value)
        rows.append(row)
        print(f"  {name:<7} source-only {acc:.3f}  " + "  ".join(f"{d}={row[d]:.3g}" for d in DIVS), flush=True)
    base = rows[0]["source_only"]
    drop = np.array([base - r["source_only"] for r in rows])
    print("\n| divergence | " + " | ".join(r["task"] for r in rows) + " | Spearman rho vs accuracy drop |")
    print("|---|" + "---|" * len(rows) + "---|")
    print("| source-only accuracy | " + " | ".join(f"{r['source_only']:.3f}" for r in rows) + " | |")
    for d in DIVS:
        rho = stats.spearmanr([r[d] for r in rows], drop).statistic
        print(f"| {d} | " + " | ".join(f"{r[d]:.3g}" for r in rows) + f" | {rho:+.2f} |")


CANDIDATES = [
    # (label, backbone name, kwargs, pretrained)
    ("efficientnet_lite0 (ImageNet)", "efficientnet_lite0", {"image_size": 64}, True),
    ("efficientnet_lite0 (ImageNet) @32px", "efficientnet_lite0", {"image_size": 32}, True),
    ("efficientnet_lite0 (random init)", "efficientnet_lite0", {"image_size": 64}, False),
    ("timm:resnet18 (random init)", "timm:resnet18", {"image_size": 64}, False),
    ("tiny_cnn (random init)", "tiny_cnn", {"image_size": 32}, False),
]


def part_rank(seeds: int):
    from transferkit.experiment import make_splits
    from transferkit.assess import backbone_scores
    from transferkit.strategies import FineTune, Scratch

    target = load_dataset("digits:subset=1/2,rotate=22..45,translate=0.1,seed=0")
    scores, accs = {}, {}
    for label, name, kw, pre in CANDIDATES:
        accs_l, sc = [], None
        for seed in range(seeds):
            train, val, test = make_splits(target, labels_per_class=10, val_fraction=0.5, seed=seed)
            if seed == 0:
                bb = create_backbone(name, pretrained=pre, **kw)
                F = FeatureExtractor(bb).fit().transform(train)
                sc = backbone_scores(bb, F, train.labels, seed=0, always_nleep=True)
            cls = FineTune if pre else Scratch

            def factory(pretrained=True, name=name, kw=kw, pre=pre):
                return create_backbone(name, pretrained=pre, **kw)

            accs_l.append(cls(backbone=factory, seed=seed).fit(train, val).score(test))
        scores[label] = {k: v.value for k, v in sc.items()}
        accs[label] = float(np.mean(accs_l))
        print(f"  {label:<38} fine-tune acc {accs[label]:.3f} ± {np.std(accs_l, ddof=1) if seeds > 1 else 0:.3f}  "
              + "  ".join(f"{k}={v:.4g}" for k, v in scores[label].items()), flush=True)
    names = sorted({k for s in scores.values() for k in s})
    print(f"\n| backbone | fine-tuning accuracy (mean of {seeds}) | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label in scores:
        print(f"| {label} | {accs[label]:.3f} | " + " | ".join(f"{scores[label].get(n, float('nan')):.4g}" for n in names) + " |")
    print("\n| score | Kendall tau | Spearman rho |\n|---|---|---|")
    labels = list(scores)
    for n in names:
        have = [lb for lb in labels if n in scores[lb]]
        if len(have) < 3:
            continue
        x, y = [scores[lb][n] for lb in have], [accs[lb] for lb in have]
        print(f"| {n} ({len(have)} backbones) | {stats.kendalltau(x, y).statistic:+.2f} | {stats.spearmanr(x, y).statistic:+.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--part", choices=["shift", "rank", "both"], default="both")
    a = ap.parse_args()
    t = time.perf_counter()
    if a.part in ("shift", "both"):
        print("Part 1: digits shift family in EfficientNet-Lite0 feature space (seed 0)")
        part_shift()
    if a.part in ("rank", "both"):
        print(f"\nPart 2: ranking backbones on the demo target, {a.seeds} seeds")
        part_rank(a.seeds)
    print(f"\nwall time {time.perf_counter() - t:.0f}s")


if __name__ == "__main__":
    main()
