"""Warnings for results that may not mean what their accuracy suggests (transferkit.train.health):
in the output, results.json and the report."""

import json

import numpy as np
import pytest

from transferkit.cli import main
from transferkit.train import health

pd = pytest.importorskip("pandas")


def test_collapse_warning_in_output_results_and_report(tmp_path, capsys, monkeypatch, one_thread):
    r = np.random.default_rng(0)
    ys = (r.random(600) < 0.05).astype(int)  # 5% positives, a weak signal: logistic regression says "no" to all
    Xs = r.normal(size=(600, 3)) + 0.3 * ys[:, None]
    yt = (r.random(400) < 0.5).astype(int)  # an imbalanced source, a balanced target
    Xt = r.normal(size=(400, 3)) + 0.3 * yt[:, None]
    for name, X, y in (("src.csv", Xs, ys), ("tgt.csv", Xt, yt)):
        df = pd.DataFrame(X, columns=["a", "b", "c"])
        df["label"] = np.where(y == 1, "yes", "no")
        df.to_csv(tmp_path / name, index=False)
    (tmp_path / "exp.yaml").write_text(
        "name: collapse\nseeds: 2\nsource: src.csv\ntarget: tgt.csv\n"
        "split: {labels_per_class: 0, unlabeled_fraction: 0.5, val_fraction: 0}\nstrategies: [source_only_lr]\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "exp.yaml", "--out", "out"]) == 0
    cap = capsys.readouterr()
    line = "source_only_lr (seed 0) predicts class 'no' for 100% of the test samples (the class is 49% of them)"
    assert any(line in w for w in cap.err.splitlines())
    assert "not above always predicting the majority class of the source labels" in cap.err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert any(line in w for w in res["warnings"])
    assert res["runs"][0]["warnings"] and line in res["runs"][0]["warnings"][0]
    assert line in (tmp_path / "out" / "report.md").read_text()
    assert "majority_class (baseline)" in cap.out and "class_prior (baseline)" in cap.out


def test_collapse_needs_a_lopsided_prediction_the_data_does_not_explain():
    assert health.collapsed_prediction([0] * 96 + [1] * 4, 2) == (0, 0.96)
    assert health.collapsed_prediction([0] * 90 + [1] * 10, 2) is None
    assert health.collapsed_prediction([0] * 99 + [1], 2, true_share=0.97) is None  # the data is that lopsided
    assert health.collapsed_prediction([2] * 100, 3) == (2, 1.0)
    assert health.collapsed_prediction([0, 0, 0], 1) is None


def _h(val):
    return [{"epoch": i, "val_loss": v} for i, v in enumerate(val)]


def test_rising_validation_loss():
    down_up = [1.0, 0.8, 0.7, 0.75, 0.8, 0.9, 0.95, 1.0, 1.1]  # the minimum at epoch 2, then 6 rises
    msg = health.rising_validation_loss(_h(down_up))
    assert msg and "rose from 0.7 at epoch 2 to 1.1 at epoch 8" in msg and "6 validated epochs" in msg
    assert health.rising_validation_loss(_h([1.0, 0.8, 0.7, 0.69, 0.7, 0.68, 0.7, 0.69])) is None  # a plateau
    assert health.rising_validation_loss(_h([1.0, 0.8, 0.7, 0.8, 0.9])) is None  # too few epochs past the minimum
    noisy = [1.0, 0.5, 0.9, 0.55, 0.85, 0.6, 0.8, 0.6]  # ends 20% above the minimum, but as often down as up
    assert health.rising_validation_loss(_h(noisy)) is None


def test_first_epoch_selected_and_idle_adaptation_loss():
    hist = [{"epoch": e, "train_loss": 0.5, "jan": 0.003, "mcc": 0.2} for e in range(5)]
    assert health.first_epoch_selected(hist, 0) == "checkpoint selection kept epoch 0, the first of 5"
    assert health.first_epoch_selected(hist, 3) is None
    assert health.first_epoch_selected(hist[:2], 0) is None
    assert health.idle_adaptation_loss(hist, "jan") and "jan at most 0.003" in health.idle_adaptation_loss(hist, "jan")
    assert health.idle_adaptation_loss(hist, "jan+mcc") is None  # mcc works
    assert health.idle_adaptation_loss(hist, None) is None
    assert health.idle_adaptation_loss(hist, "dann") is None  # not logged: nothing to say
