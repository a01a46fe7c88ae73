"""A new user's CSV path, as the README tells it: assess, run with coral, jan and the
label-shift correction, diagnose, predict; on a generated table with a known shift (two
non-informative columns offset and rescaled in the target) and a known prior change (20% ->
60% of the positive class), where the prior correction measurably recovers accuracy."""

import json
import runpy
from pathlib import Path

import pytest

from transferkit.cli import main

pd = pytest.importorskip("pandas")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tables"
_churn = runpy.run_path(str(EXAMPLE / "make_churn.py"))  # the README's generator, not a copy of it
SOURCE_POS, TARGET_POS = _churn["SOURCE_POS"], _churn["TARGET_POS"]


#: examples/tables/churn.yaml with 2 seeds and 4 epochs for jan (the README runs the file itself)
EXPERIMENT = """name: churn
seeds: 2
source: source.csv
target: target.csv
split: {test: target_test.csv}
strategies:
  - source_only_lr
  - {name: adapt, method: source_only_lr, label_shift: mlls, label: lr+mlls}
  - {name: adapt, method: coral, label: coral}
  - {name: adapt, method: coral, label_shift: mlls, label: coral+mlls}
  - {name: adapt, method: jan, epochs: 4, label: jan}
  - {name: adapt, method: jan, epochs: 4, label_shift: mlls, label: jan+mlls}
"""


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    d = tmp_path_factory.mktemp("csv")
    _churn["write"](d)
    (d / "exp.yaml").write_text(EXPERIMENT)
    return d


@pytest.fixture(scope="module")
def run_dir(churn):
    import os

    old = os.getcwd()
    os.chdir(churn)
    try:
        assert main(["run", "exp.yaml", "--out", "runs/churn", "--no-report", "--threads", "1"]) == 0
    finally:
        os.chdir(old)
    return churn / "runs" / "churn"


def test_assess_needs_no_backbone_for_a_table(churn, capsys, one_thread):
    out = churn / "assess"
    assert main(["assess", "--source", str(churn / "source.csv"), "--target", str(churn / "target.csv"),
                 "--out", str(out), "--no-report"]) == 0
    res = json.loads((out / "assess.json").read_text())
    text = capsys.readouterr().out
    assert "BatchNorm" not in text.split("verdict:")[1]  # a table's columns have none
    est = res["label_shift_estimate"]
    assert est["source_priors"][0] == pytest.approx(SOURCE_POS, abs=0.04)  # class 0 = 'churn'
    assert est["priors"][0] > SOURCE_POS + 0.15  # the estimate sees the prior move, without target labels


def test_run_with_coral_jan_and_the_prior_correction(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    acc = {k: s["accuracy_mean"] for k, s in res["summary"].items()}
    # measured: source_only_lr 0.630 -> 0.794 with the correction; coral 0.506 -> 0.524; jan ~0.49 -> ~0.56
    assert acc["lr+mlls"] > acc["source_only_lr"] + 0.10
    assert acc["coral+mlls"] > acc["coral"]
    assert acc["jan+mlls"] > acc["jan"]
    est = next(r["label_shift"] for r in res["runs"] if r["strategy"] == "lr+mlls")
    assert abs(est["priors"][0] - TARGET_POS) < 0.1  # MLLS finds the target's 60% without its labels
    assert res["baselines"]["majority_class"]["from"] == "source labels"
    assert res["baselines"]["majority_class"]["accuracy_mean"] == pytest.approx(1 - TARGET_POS, abs=0.04)
    assert set(res["label_free"]) == set(res["summary"])  # the unlabeled target rows, seen without labels
    row = res["runs"][0]
    assert row["n_train"] == 0 and row["n_unlabeled"] == 800  # n_train counts labeled rows only
    assert (run_dir / "MODEL_CARD.md").is_file()


def test_diagnose_and_predict(run_dir, churn, capsys, one_thread):
    import os

    old = os.getcwd()
    os.chdir(churn)
    try:
        assert main(["diagnose", "exp.yaml", "--out", "runs/diag", "--no-report"]) == 0
        nt = json.loads((churn / "runs" / "diag" / "diagnose.json").read_text())["negative_transfer"]
        assert nt["verdict"] == "positive transfer" and nt["delta_mean"] > 0.1
        capsys.readouterr()
        assert main(["predict", "runs/churn", "target_test.csv", "--strategy", "lr+mlls", "--out", "p.csv"]) == 0
        out = capsys.readouterr().out
    finally:
        os.chdir(old)
    res = json.loads((run_dir / "results.json").read_text())
    recorded = next(r["accuracy"] for r in res["runs"] if r["strategy"] == "lr+mlls" and r["seed"] == 0)
    assert f"accuracy {recorded:.4f}" in out  # the saved model, its preprocessing and its prior correction
    p = pd.read_csv(churn / "p.csv")
    assert list(p.columns) == ["row", "predicted", "p_churn", "p_stay", "true"]


def test_onnx_export_keeps_the_prior_correction(run_dir, tmp_path, one_thread):
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    import transferkit as tk

    out = tmp_path / "churn.onnx"
    assert main(["export", str(run_dir), "--strategy", "lr+mlls", "--out", str(out)]) == 0
    model = tk.load_run(run_dir, strategy="lr+mlls")
    test = tk.load_dataset(str(run_dir.parent.parent / "target_test.csv"))
    sess = ort.InferenceSession(str(out))
    z = sess.run(None, {sess.get_inputs()[0].name: np.asarray(test.inputs, dtype=np.float32)})[0]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.abs(p - model.predict_proba(test)).max() < 1e-4  # without the correction: 0.39


def test_label_none_makes_a_labeled_table_unlabeled_and_python_gives_the_yaml_numbers(churn, run_dir, one_thread):
    import transferkit as tk

    test = tk.load_dataset(str(churn / "target_test.csv"))
    hidden = tk.load_dataset(f"{churn / 'target_test.csv'}:label=none")
    assert hidden.labels is None and (test.labels >= 0).all()
    source, target = tk.load_dataset(str(churn / "source.csv")), tk.load_dataset(str(churn / "target.csv"))
    train, _, _ = tk.make_splits(target, test=str(churn / "target_test.csv"), load=tk.load_dataset)
    m = tk.Adapt(backbone="identity", method="coral", label_shift="mlls").fit(train, source=source)
    res = json.loads((run_dir / "results.json").read_text())
    assert m.score(test) == next(r["accuracy"] for r in res["runs"] if r["strategy"] == "coral+mlls")
