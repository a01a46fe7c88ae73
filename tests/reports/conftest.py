"""Synthetic run directories shaped like what ``run``, ``assess``, ``benchmark`` and ``diagnose``
write (no training: the report tests take seconds)."""

import json

import numpy as np
import pytest

from transferkit.artifacts import _save_npz

STRATEGIES = {"scratch": (0.512, 0.037), "feature_extraction": (0.8105, 0.0231), "finetune": (0.9049, 0.0042)}
CLASSES = [str(i) for i in range(4)]


def _history(seed: int, n: int = 5, with_val: bool = True) -> list[dict]:
    rows = []
    for e in range(n):
        r = {"epoch": e, "train_loss": 2.0 / (e + 1) + 0.01 * seed, "train_accuracy": 0.5 + 0.08 * e, "lr": 1e-3,
             "epoch_time": 0.1}
        if with_val:
            r.update({"val_loss": 2.2 / (e + 1), "val_accuracy": 0.45 + 0.07 * e})
        rows.append(r)
    return rows


def make_experiment_dir(d, seeds=(0, 1, 2), n_test: int = 60, n_feat: int = 60):
    rng = np.random.default_rng(0)
    runs = []
    for key, (mean, std) in STRATEGIES.items():
        for s in seeds:
            rd = d / key / f"seed{s}"
            rd.mkdir(parents=True)
            acc = float(mean + std * (s - 1))
            y = rng.integers(0, len(CLASSES), n_test)
            pred = np.where(rng.random(n_test) < acc, y, (y + 1) % len(CLASSES))
            _save_npz(rd / "predictions.npz", y_true=y, y_pred=pred, classes=np.array(CLASSES))
            if key != "feature_extraction":
                (rd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _history(s)))
            if s == seeds[0]:
                stages = {"scratch": ["after"], "feature_extraction": ["before"], "finetune": ["before", "after"]}[key]
                feats = {}
                rb = np.random.default_rng(1)  # one pretrained backbone: the same "before" for FE and finetune
                ys, yt = rb.integers(0, 4, n_feat), rb.integers(0, 4, n_feat)
                centers = rb.normal(size=(len(CLASSES), 50)) * 4
                if "before" in stages:
                    feats["before_source"] = (centers[ys] + rb.normal(size=(n_feat, 50))).astype(np.float32)
                    feats["before_target"] = (centers[yt] + 3.0 + rb.normal(size=(n_feat, 50))).astype(np.float32)
                    feats["before_desc"] = np.array("pretrained backbone features")
                if "after" in stages:
                    ra = np.random.default_rng(len(key))
                    feats["after_source"] = (centers[ys] + ra.normal(size=(n_feat, 50))).astype(np.float32)
                    feats["after_target"] = (centers[yt] + 0.5 + ra.normal(size=(n_feat, 50))).astype(np.float32)
                    feats["after_desc"] = np.array("fine-tuned backbone features")
                _save_npz(rd / "features.npz", **feats, y_source=ys, y_target=yt, classes=np.array(CLASSES))
            runs.append({"strategy": key, "method": key, "seed": s, "accuracy": acc, "val_accuracy": acc - 0.01,
                         "train_accuracy": 1.0, "train_time": 1.5, "trainable_params": 1000, "n_train": 40,
                         "n_val": 60, "n_test": n_test, "best_epoch": 4, "selection": "val",
                         "run_dir": str(rd)})
    summary = {}
    for key in STRATEGIES:
        a = np.array([r["accuracy"] for r in runs if r["strategy"] == key])
        summary[key] = {"accuracy_mean": float(a.mean()), "accuracy_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                        "n_seeds": len(a), "val_accuracy_mean": float(a.mean() - 0.01), "train_time_mean": 1.5,
                        "trainable_params": 1000}
    res = {"name": "synthetic", "target": "digits:subset=1/2,rotate=22..45", "source": "digits:subset=0/2",
           "backbone": "tiny_cnn", "seeds": list(seeds), "selection": "labeled target validation split",
           "summary": summary, "runs": runs, "output_dir": str(d), "wall_time": 12.0}
    (d / "results.json").write_text(json.dumps(res))
    (d / "config.yaml").write_text("name: synthetic\ntarget: digits:subset=1/2\nstrategies: [scratch, finetune]\n"
                                   "split: {labels_per_class: 10, val_fraction: 0.5}\nbackbone: {name: tiny_cnn}\n")
    (d / "environment.json").write_text(json.dumps({"python": "3.11", "platform": "linux",
                                                    "packages": {"torch": "2", "transferkit": "0.1"}}))
    return res


ASSESS = {
    "source": "digits:subset=0/2", "target": "digits:subset=1/2,rotate=30", "n_source": 901, "n_target": 896,
    "n_target_labeled": 896, "backbones": ["tiny_cnn"], "feature_space": "tiny_cnn", "seed": 0,
    "divergences": {"mmd": {"value": 0.1643, "p_value": 0.00498}, "a_distance": {"value": 1.9911},
                    "wasserstein": {"value": 43.52}, "coral_distance": {"value": -0.000263},
                    "ks_features": {"value": 0.6219, "p_value": 0.0}},
    "transferability": {"tiny_cnn": {"logme": {"value": 0.0551}, "hscore": {"value": 9.0}}},
    "source_only_accuracy": 0.411,
    "bound": {"estimate": 1.24, "source_error": 0.059, "half_a_distance": 1.0, "lambda_hat": 0.181},
    "verdict": {"text": "shift is significant and large", "reasons": ["MMD p = 0.005"], "advice": ["fine-tune"]},
}

DIAGNOSE = {
    "negative_transfer": {"verdict": "positive transfer", "delta_mean": 0.3929, "ci_low": 0.301, "ci_high": 0.4848,
                          "n_seeds": 3, "p_value": 0.002, "method": "paired t", "confidence": 0.95,
                          "transfer": "finetune", "baseline": "scratch",
                          "source_only": {"verdict": "negative transfer", "delta_mean": -0.0777, "ci_low": -0.12,
                                          "ci_high": -0.03, "n_seeds": 3, "p_value": 0.01}},
    "sample_efficiency": {
        "transfer": "finetune", "baseline": "scratch", "headline": "finetune with 10 labels per class equals scratch "
                                                                   "with 37.2 labels per class",
        "curve": [{"label": str(k), "labels_per_class": float(k), "n_train": 10.0 * k,
                   "accuracy": {"finetune": {"mean": 0.5 + 0.04 * i, "std": 0.02},
                                "scratch": {"mean": 0.2 + 0.06 * i, "std": 0.03}}}
                  for i, k in enumerate([1, 2, 5, 10, 20])],
        "labels_saved": [{"label": "10", "display": "37.2"}]},
    "forgetting": {"source_accuracy_before": 0.95, "source_accuracy_after": 0.71, "forgetting": 0.24},
    "sharpness": {"quantity": "top Hessian eigenvalue of the mean training cross-entropy",
                  "finetune": {"mean": 12.5, "std": 1.0, "per_seed": [11.5, 12.5, 13.5], "converged": True},
                  "scratch": {"mean": 80.1, "std": 5.0, "per_seed": [75.1, 80.1, 85.1], "converged": False}},
    "convergence": {"threshold": 0.6, "speedup": 3.5, "transfer": {"steps_mean": 20.0, "steps": [18, 20, 22]}},
    "notes": ["only 3 seeds"],
}

BENCHMARK = {
    "rows": [{"task": t, "method": m, "accuracy_mean": a, "accuracy_std": 0.01 * (i + 1), "n_seeds": 3,
              "selection": "dev"}
             for i, (t, m, a) in enumerate([("rot30", "source_only", 0.441), ("rot30", "dann", 0.5207),
                                            ("invert", "source_only", 0.789), ("invert", "dann", 0.8703)])],
    "runs": [], "source": "digits:subset=0/2", "tasks": {"rot30": "digits:rotate=30", "invert": "digits:invert=true"},
    "protocol": "unlabeled pool / test split",
}


@pytest.fixture(scope="session")
def experiment_dir(tmp_path_factory):
    """An experiment directory with its report written once (tests only read it)."""
    from transferkit.reports import write_report

    d = tmp_path_factory.mktemp("run")
    make_experiment_dir(d)
    write_report(d)
    return d


@pytest.fixture(scope="session")
def full_dir(tmp_path_factory):
    """An experiment directory that also holds assess.json and diagnose.json (every section),
    its report written once."""
    from transferkit.reports import write_report

    d = tmp_path_factory.mktemp("full")
    make_experiment_dir(d)
    (d / "assess.json").write_text(json.dumps(ASSESS))
    (d / "diagnose.json").write_text(json.dumps(DIAGNOSE))
    write_report(d)
    return d


@pytest.fixture
def assess_dir(tmp_path):
    d = tmp_path / "assess"
    d.mkdir()
    (d / "assess.json").write_text(json.dumps(ASSESS))
    return d
