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

ABLATIONS = [
    "scratch",
    "feature_extraction",
    "finetune",
    {"name": "finetune", "label": "finetune_no_lp_init", "lp_init": False},
    {"name": "finetune", "label": "finetune_bn_stats_update", "freeze_bn": "frozen_groups"},
    {"name": "finetune", "label": "finetune_same_lr", "backbone_lr_mult": 1.0},
    {"name": "finetune", "label": "finetune_no_augment", "augment": "none"},
    {"name": "finetune", "label": "finetune_last2", "unfreeze": "last:2"},
    {"name": "finetune", "label": "finetune_progressive", "unfreeze": "none", "progressive_unfreeze": 3},
    {"name": "finetune", "label": "finetune_layer_decay", "layer_decay": 0.7},
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=f"runs/bench-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    ap.add_argument("--only-demo", action="store_true", help="only the demo's three strategies")
    a = ap.parse_args()
    data = yaml.safe_load(resources.files("transferkit.configs").joinpath("demo.yaml").read_text())
    data["seeds"] = a.seeds
    data["progress"] = False
    data["strategies"] = ABLATIONS[:3] if a.only_demo else ABLATIONS
    res = run_experiment(config_from_dict(data), a.out, echo=lambda *_: None)
    print(f"demo target, EfficientNet-Lite0 at 64x64, 10 labels/class, {a.seeds} seeds (mean ± std, ddof=1)\n")
    print(format_table(res["summary"], markdown=True))
    print(f"\nwall time {res['wall_time']:.0f}s; results in {res['output_dir']}")


if __name__ == "__main__":
    main()
