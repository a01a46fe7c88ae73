"""Small finished runs for the predict / export tests (tiny_cnn on 16-pixel digits, tables)."""

from __future__ import annotations

import numpy as np

# every strategy `transferkit run` can train (tests/test_predict.py checks the registry), with the
# feature-extraction heads and every shallow adapter; 1-2 epochs, tiny networks
DEEP = [
    {"name": "scratch", "epochs": 2, "batch_size": 16, "lr": 0.01},
    {"name": "finetune", "epochs": 2, "batch_size": 16, "seed": 1},
    {"name": "feature_extraction", "seed": 2},
    {"name": "feature_extraction", "label": "fe_linear", "head": "linear", "standardize": True, "epochs": 5, "seed": 2},
    {"name": "adapt", "method": "dan", "epochs": 2, "bottleneck": 16, "seed": 3},
    {"name": "adapt", "label": "adapt_backbone", "level": "backbone", "method": "dan", "epochs": 1, "batch_size": 32,
     "seed": 4},
    {"name": "two_stage", "epochs": 2, "stage2_epochs": 2, "bottleneck": 16, "seed": 5},
    {"name": "source_only", "epochs": 2, "bottleneck": 16, "seed": 6},
    {"name": "source_only_adabn", "epochs": 2, "bottleneck": 16, "seed": 7},
    {"name": "target_only", "epochs": 2, "bottleneck": 16, "seed": 8},
    {"name": "fixmatch", "epochs": 1, "batch_size": 32, "seed": 11},
    {"name": "multi_source", "epochs": 2, "bottleneck": 16, "seed": 13},
    {"name": "domain_generalization", "method": "coral", "epochs": 2, "bottleneck": 16, "seed": 14},
    {"name": "open_set", "epochs": 2, "bottleneck": 16, "seed": 15},
    {"name": "multitask", "epochs": 2, "batch_size": 16, "seed": 16},
    {"name": "distill", "teacher": "finetune", "student": {"name": "tiny_cnn", "image_size": 16,
                                                            "options": {"width": 4}}, "epochs": 2, "seed": 17},
    {"name": "ensemble", "members": ["scratch", "finetune"]},  # after its members: it combines them
]
CLOSED = [
    {"name": "source_only_lr", "seed": 9},
    {"name": "self_training", "seed": 10},
    *({"name": "adapt", "label": f"adapt_{m}", "method": m, "seed": 12} for m in
      ("coral", "sa", "tca", "kmm", "kliep", "ot_mapping")),
]


def keys(strategies) -> list[str]:
    return [s.get("label") or s["name"] for s in strategies]


def image_config(name: str, strategies, seeds=(0,)) -> dict:
    return {"name": name, "seeds": list(seeds), "source": "digits:subset=0/16,size=16",
            "target": "digits:subset=1/8,size=16,rotate=10..30,seed=1",
            "split": {"labels_per_class": 5, "val_fraction": 0.5},
            "backbone": {"name": "tiny_cnn", "image_size": 16, "pretrained": False},
            "progress": False, "strategies": strategies}


def run(cfg_dict: dict, out) -> dict:
    import warnings

    from transferkit.config import config_from_dict
    from transferkit.experiment import run_experiment

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_experiment(config_from_dict(cfg_dict), out, echo=lambda *a, **k: None, report_features=False)


def own_test_split(cfg_dict: dict, seed: int):
    """The run's own test split of ``seed`` (as the run cut it)."""
    from transferkit.config import config_from_dict
    from transferkit.data.spec import load_dataset
    from transferkit.experiment import make_splits

    cfg = config_from_dict(cfg_dict)
    return make_splits(load_dataset(cfg.target), cfg.split, seed, load=load_dataset)[2]


def write_tables(folder, n: int = 240, seed: int = 0):
    """Source and target CSV tables: four named numeric columns, a string label with three
    classes, the target shifted; returns ``(source_path, target_path, target_frame)``."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = np.array(["cat", "dog", "eel"])

    def frame(shift):
        y = rng.integers(0, 3, n)
        X = rng.normal(size=(n, 4)) + np.eye(4)[y % 4] * 2.5 + shift
        df = pd.DataFrame(X, columns=["age", "income", "height", "score"])
        df["kind"] = names[y]
        return df

    src, tgt = frame(0.0), frame(0.7)
    sp, tp = folder / "source.csv", folder / "target.csv"
    src.to_csv(sp, index=False)
    tgt.to_csv(tp, index=False)
    return sp, tp, tgt


def table_config(sp, tp, strategies) -> dict:
    return {"name": "table", "seeds": [0], "source": f"{sp}:label=kind", "target": f"{tp}:label=kind",
            "split": {"labels_per_class": 10, "val_fraction": 0.5},
            "backbone": {"name": "identity", "options": {"in_features": 4}}, "progress": False,
            "strategies": strategies}
