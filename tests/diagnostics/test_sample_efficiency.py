"""Sample-efficiency curve, labels saved (log-k interpolation) and steps to accuracy."""

import math

import numpy as np
import pytest
import torch

from transferkit.diagnostics.sample_efficiency import (
    convergence_speed,
    format_curve,
    headline,
    labels_saved,
    run_sample_efficiency,
    scratch_equivalent,
    steps_per_epoch,
    steps_to_accuracy,
)
from transferkit.errors import DataError


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds contention


KS = [1, 2, 5, 10, 20, 50]


def _loglinear(k):
    return 0.3 + 0.1 * np.log2(k)


def test_interpolation_is_exact_on_a_log_linear_curve():
    """On a curve linear in log k, log-k interpolation recovers k* exactly: a = 0.65 is reached
    at log2 k = 3.5."""
    acc = [_loglinear(k) for k in KS]
    eq = scratch_equivalent(KS, acc, 0.65)
    assert eq["bound"] == "=" and eq["value"] == pytest.approx(2**3.5, rel=1e-12)
    # grid points map to themselves; order of the input does not matter
    assert scratch_equivalent(KS[::-1], acc[::-1], _loglinear(20))["value"] == pytest.approx(20)


def test_interpolation_between_two_points_by_hand():
    # between (5, 0.5) and (10, 0.7): a = 0.6 is halfway in accuracy -> sqrt(5 * 10) in k
    eq = scratch_equivalent([1, 5, 10], [0.2, 0.5, 0.7], 0.6)
    assert eq["value"] == pytest.approx(math.sqrt(50))
    assert eq["display"] == f"{math.sqrt(50):.1f}"


def test_bounds_and_non_monotone_curves():
    assert scratch_equivalent(KS, [0.5] * 6, 0.9) == {"value": None, "bound": ">", "display": ">50"}
    assert scratch_equivalent(KS, [0.95] * 6, 0.9) == {"value": 1.0, "bound": "<=", "display": "<=1"}
    # the first crossing counts, even if the curve dips again later
    eq = scratch_equivalent([1, 2, 5, 10], [0.1, 0.8, 0.4, 0.9], 0.45)
    assert 1 < eq["value"] < 2
    with pytest.raises(DataError, match="one accuracy per k"):
        scratch_equivalent([1, 2], [0.5], 0.5)


def _curve(t_acc, s_acc, ks=KS):
    return [{"label": str(k), "labels_per_class": float(k), "n_train": 10 * k,
             "accuracy": {"finetune": {"mean": a, "std": 0.0}, "scratch": {"mean": b, "std": 0.0}}}
            for k, a, b in zip(ks, t_acc, s_acc)]


def test_labels_saved_and_headline():
    """Transfer at k equals scratch at 4k on a log-linear curve: log2(4k) = log2 k + 2, i.e.
    transfer's accuracy is scratch's + 0.2."""
    s = [_loglinear(k) for k in KS]
    t = [_loglinear(4 * k) for k in KS]
    saved = labels_saved(_curve(t, s), "finetune", "scratch")
    by_k = {r["k"]: r for r in saved}
    for k in (1, 2, 5, 10):
        assert by_k[k]["scratch_equivalent"] == pytest.approx(4 * k)
        assert by_k[k]["labels_saved_per_class"] == pytest.approx(3 * k)
        assert by_k[k]["ratio"] == pytest.approx(4)
    assert by_k[20]["display"] == ">50" and by_k[20]["labels_saved_per_class"] is None
    line = headline(saved, 10, "finetune", "scratch")
    assert line.startswith("finetune with 10 labels per class") and "equals scratch with 40 labels per class" in line
    line = headline(saved, 20, "finetune", "scratch")  # scratch never gets there on the grid
    assert line.endswith("is not reached by scratch with up to 50 labels per class (the largest on the grid)")
    table = format_curve({"transfer": "finetune", "baseline": "scratch", "curve": _curve(t, s), "labels_saved": saved})
    assert table.count("\n") == 1 + len(KS) and "| 10 | 100 |" in table


def test_steps_per_epoch_matches_the_trainer(monkeypatch):
    """Count the optimizer's steps in a real fit: 21 samples in batches of 10 -> 10, 10 and a
    skipped batch of one = 2 steps per epoch."""
    from transferkit.backbones import create_backbone
    from transferkit.data import DomainDataset
    from transferkit.strategies import Scratch

    assert steps_per_epoch(21, 10) == 2 and steps_per_epoch(22, 10) == 3 and steps_per_epoch(20, 10) == 2
    assert steps_per_epoch(1, 32) == 1
    calls = []
    orig = torch.optim.AdamW.step

    def counting(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting)
    rng = np.random.default_rng(0)
    ds = DomainDataset(rng.normal(size=(21, 4)).astype(np.float32), np.arange(21) % 3, "toy", "tabular")
    Scratch(backbone=lambda pretrained=True: create_backbone("tiny_mlp", in_features=4, width=4), epochs=3,
            batch_size=10, augment="none").fit(ds)
    assert len(calls) == 3 * steps_per_epoch(21, 10)


def test_steps_to_accuracy_and_convergence_speed():
    h_fast = [{"epoch": e, "val_accuracy": a} for e, a in enumerate([0.5, 0.8, 0.9, 0.9])]
    h_slow = [{"epoch": e, "val_accuracy": a} for e, a in enumerate([0.2, 0.4, 0.6, 0.85])]
    assert steps_to_accuracy(h_fast, 0.8, 4) == 8
    assert steps_to_accuracy(h_slow, 0.8, 4) == 16
    assert steps_to_accuracy(h_slow, 0.95, 4) is None
    t = [{"history": h_fast, "n_train": 40, "batch_size": 10}] * 2
    b = [{"history": h_slow, "n_train": 40, "batch_size": 10}] * 2
    res = convergence_speed(t, b, threshold=0.8)
    assert res["transfer"]["steps"] == [8, 8] and res["baseline"]["steps"] == [16, 16]
    assert res["speedup"] == pytest.approx(2.0)
    # default threshold: 0.9 x the lowest best validation accuracy of any run (0.85) = 0.765
    auto = convergence_speed(t, b)
    assert auto["threshold"] == pytest.approx(0.765) and auto["baseline"]["steps_mean"] == 16
    h_weak = [{"epoch": e, "val_accuracy": a} for e, a in enumerate([0.2, 0.5, 0.6, 0.6])]
    mixed = convergence_speed(t, [b[0], {"history": h_weak, "n_train": 40, "batch_size": 10}])
    assert mixed["threshold"] == pytest.approx(0.54) and mixed["baseline"]["steps"] == [12, 12]
    assert mixed["transfer"]["steps"] == [8, 8] and mixed["speedup"] == pytest.approx(12 / 8)
    never = convergence_speed(t, b, threshold=0.88)
    assert never["baseline"]["reached"] == 0 and never["speedup"] is None
    # transfer reaches 0.88 after 3 epochs (12 steps); the baseline's whole budget is 4 epochs
    # x 4 steps = 16 steps: speed-up at least 16 / 12
    assert never["transfer"]["steps"] == [12, 12] and never["speedup_at_least"] == pytest.approx(16 / 12)


def test_run_sample_efficiency_on_a_tiny_table(tmp_path):
    from sklearn.datasets import make_classification

    from transferkit.config import config_from_dict

    X, y = make_classification(n_samples=240, n_features=8, n_informative=4, n_redundant=0, n_classes=3,
                               n_clusters_per_class=1, class_sep=2.0, random_state=0)
    np.savez(tmp_path / "t.npz", x=X.astype(np.float32), y=y)
    cfg = config_from_dict({
        "target": str(tmp_path / "t.npz"), "seeds": 2, "split": {"labels_per_class": 5, "train_fraction": 0.5},
        "backbone": {"name": "tiny_mlp", "options": {"in_features": 8, "width": 16}}, "progress": False,
        "strategies": [{"name": "scratch", "epochs": 5, "lr": 0.01, "label": "transfer_stub"},
                       {"name": "scratch", "epochs": 5, "lr": 0.001}]})
    res = run_sample_efficiency(cfg, tmp_path / "se", transfer="transfer_stub", baseline="scratch",
                                labels_per_class=[5, 1, "all", 500], echo=lambda *a: None)
    assert [r["label"] for r in res["curve"]] == ["1", "5", "all"]  # sorted by k; 500 cannot be sampled
    assert res["skipped"][0]["label"] == "500" and "labels_per_class=500" in res["skipped"][0]["reason"]
    all_row = res["curve"][-1]
    assert all_row["labels_per_class"] == pytest.approx(all_row["n_train"] / 3) and all_row["n_train"] == 120
    for r in res["curve"]:
        assert set(r["accuracy"]) == {"transfer_stub", "scratch"} and len(r["accuracy"]["scratch"]["runs"]) == 2
    assert [r["k"] for r in res["labels_saved"]] == [r["labels_per_class"] for r in res["curve"]]
    assert res["headline"].startswith("transfer_stub with 5 labels per class")
    assert (tmp_path / "se" / "k1" / "results.json").is_file()
