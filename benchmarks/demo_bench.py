"""The demo's comparison plus fine-tuning ablations: what each default of `finetune` buys.

    python benchmarks/demo_bench.py [--seeds 3] [--out runs/bench-demo]

Every row is mean ± sample std over seeds on the demo target's test split; every choice
(best epoch, C) is made on the validation split. Nothing here is tuned on the test split.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources

import yaml

from transferkit.config import config_from_dict
from transferkit.experiment import format_table, run_experiment

# each row changes one thing of the demo's finetune (general defaults, every epoch scored on the
# validation split, as in the demo); the last row is the general default's validation schedule
# (every 15th epoch here)
EVERY_EPOCH = {"val_every": 1}
ABLATIONS = [
    {"name": "scratch", **EVERY_EPOCH},
    "feature_extraction",
    {"name": "finetune", **EVERY_EPOCH},
    *({"name": "finetune", "label": label, **change, **EVERY_EPOCH} for label, change in [
        ("finetune_no_lp_init", {"lp_init": False}),
        ("finetune_bn_stats_update", {"freeze_bn": "frozen_groups"}),
        ("finetune_same_lr", {"backbone_lr_mult": 1.0}),
        ("finetune_no_augment", {"augment": "none"}),
        ("finetune_last2", {"unfreeze": "last:2"}),
        ("finetune_progressive", {"unfreeze": "none", "progressive_unfreeze": 3}),
        ("finetune_layer_decay", {"layer_decay": 0.7}),
    ]),
    {"name": "finetune", "label": "finetune_val_auto", "val_every": "auto"},
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=f"runs/bench-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    ap.add_argument("--only-demo", action="store_true", help="only the demo's three strategies")
    ap.add_argument("--only", nargs="+", metavar="LABEL", help="only these rows (labels as in the table)")
    a = ap.parse_args()
    data = yaml.safe_load(resources.files("transferkit.configs").joinpath("demo.yaml").read_text())
    data["seeds"] = a.seeds
    data["progress"] = False
    rows = ABLATIONS[:3] if a.only_demo else ABLATIONS
    if a.only:
        label = {(r if isinstance(r, str) else r.get("label", r["name"])): r for r in ABLATIONS}
        unknown = sorted(set(a.only) - set(label))
        if unknown:
            ap.error(f"--only {' '.join(unknown)}: not a row; choose from {', '.join(label)}")
        rows = [label[x] for x in a.only]
    data["strategies"] = rows
    res = run_experiment(config_from_dict(data), a.out, echo=lambda *_: None)
    print(f"demo target, EfficientNet-Lite0 at 64x64, 10 labels/class, {a.seeds} seeds (mean ± std, ddof=1)\n")
    print(format_table(res["summary"], markdown=True))
    print(f"\nwall time {res['wall_time']:.0f}s; results in {res['output_dir']}")


if __name__ == "__main__":
    main()
