"""A real (tiny) experiment writes what its report needs, and the CLI writes the report."""

import importlib.util
import json
import re

import numpy as np
import pytest

from transferkit.artifacts import load_npz, strategy_features

HAS_TB = importlib.util.find_spec("tensorboard") is not None
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None

EXP = """
name: tiny-report
seeds: 2
source: "digits:subset=0/2,size=16"
target: "digits:subset=1/2,size=16,rotate=10..20,seed=0"
split: {labels_per_class: 5, val_fraction: 0.5}
backbone: {name: tiny_cnn, image_size: 16}
progress: false
strategies:
  - {name: scratch, epochs: 2}
  - feature_extraction
  - {name: finetune, epochs: 2}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from transferkit.cli import main

    d = tmp_path_factory.mktemp("tiny")
    exp = d / "exp.yaml"
    text = EXP
    if HAS_TB or HAS_MLFLOW:
        text += f"tracking: {{tensorboard: {str(HAS_TB).lower()}, mlflow: {str(HAS_MLFLOW).lower()}}}\n"
    exp.write_text(text)
    assert main(["run", str(exp), "--out", str(d / "run")]) == 0
    return d / "run"


def test_runs_keep_predictions_and_features(tiny_run):
    res = json.loads((tiny_run / "results.json").read_text())
    for r in res["runs"]:
        rd = tiny_run / r["strategy"] / f"seed{r['seed']}"
        z = load_npz(rd / "predictions.npz")
        # the saved predictions are the ones that were scored
        assert float((z["y_pred"] == z["y_true"]).mean()) == pytest.approx(r["accuracy"])
        assert len(z["y_true"]) == r["n_test"] and list(z["classes"]) == [str(i) for i in range(10)]
        assert (rd / "features.npz").is_file() == (r["seed"] == 0)
    stages = {k: sorted(x for x in load_npz(tiny_run / k / "seed0" / "features.npz")
                        if x.endswith("_target") and not x.startswith("y_"))
              for k in res["summary"]}
    assert stages == {"scratch": ["after_target"], "feature_extraction": ["before_target"],
                      "finetune": ["after_target", "before_target"]}
    z = load_npz(tiny_run / "finetune" / "seed0" / "features.npz")
    assert z["after_source"].shape == (300, 50) and z["after_target"].shape == (300, 50)
    assert z["y_source"].shape == (300,) and z["y_target"].min() >= 0


def test_run_writes_the_report(tiny_run):
    md = (tiny_run / "report.md").read_text()
    figs = re.findall(r"!\[[^\]]*\]\(report_files/([a-z0-9-]+)\.png\)", md)
    assert figs[:6] == ["accuracy", "curves-scratch", "curves-finetune", "confusion-scratch",
                        "confusion-feature-extraction", "confusion-finetune"]
    # t-SNE: before for feature_extraction and finetune (one figure when their backbones agree;
    # tiny_cnn is randomly initialized, so here they may differ), after for scratch and finetune
    tsne = figs[6:]
    assert all(f.startswith("tsne-") for f in tsne) and len(tsne) in (3, 4)
    assert sum(f.startswith("tsne-after") for f in tsne) == 2
    assert (tiny_run / "report.html").read_text().count("<img ") == len(figs)
    res = json.loads((tiny_run / "results.json").read_text())
    for k, s in res["summary"].items():
        assert f"| {k} | {s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f} |" in md


@pytest.mark.skipif(not HAS_TB, reason="tensorboard is not installed (pip install 'transferkit[tracking]')")
def test_tensorboard_scalars_match_the_history(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = json.loads((tiny_run / "results.json").read_text())
    for r in res["runs"]:
        rd = tiny_run / r["strategy"] / f"seed{r['seed']}"
        ev = EventAccumulator(r["tensorboard_dir"]).Reload()
        final = ev.Scalars("final/test_accuracy")
        assert final[0].value == pytest.approx(r["accuracy"], abs=1e-6)
        if r["strategy"] == "feature_extraction":
            continue  # closed-form head: no epochs
        hist = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
        got = ev.Scalars("epoch/train_loss")
        assert [s.step for s in got] == [h["epoch"] for h in hist]
        np.testing.assert_allclose([s.value for s in got], [h["train_loss"] for h in hist], rtol=1e-6)


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed (pip install 'transferkit[tracking]')")
def test_mlflow_store_holds_every_run(tiny_run):
    from mlflow.tracking import MlflowClient

    res = json.loads((tiny_run / "results.json").read_text())
    c = MlflowClient(tracking_uri=f"sqlite:///{tiny_run / 'mlflow.db'}")
    exp = c.get_experiment_by_name("tiny-report")
    runs = {r.info.run_name: r for r in c.search_runs([exp.experiment_id])}
    assert sorted(runs) == sorted(f"{r['strategy']}/seed{r['seed']}" for r in res["runs"])
    for r in res["runs"]:
        m = runs[f"{r['strategy']}/seed{r['seed']}"]
        assert m.info.run_id == r["mlflow_run_id"] and m.info.status == "FINISHED"
        assert m.data.metrics["test_accuracy"] == pytest.approx(r["accuracy"])
        assert m.data.params["seed"] == str(r["seed"]) and m.data.params["strategy"] == r["method"]
        if r["strategy"] == "finetune":
            rd = tiny_run / r["strategy"] / f"seed{r['seed']}"
            hist = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
            got = sorted(c.get_metric_history(m.info.run_id, "val_accuracy"), key=lambda x: x.step)
            scored = [h["val_accuracy"] for h in hist if "val_accuracy" in h]  # the epochs validated (val_every)
            assert scored and [x.step for x in got] == [h["epoch"] for h in hist if "val_accuracy" in h]
            np.testing.assert_allclose([x.value for x in got], scored)


def test_adapter_features_are_the_bottleneck():
    """For a cached-feature adapter, 'before' is the backbone features and 'after' the
    bottleneck's output on them (checked against the module itself)."""
    import torch

    from transferkit.adapt.features import BottleneckClassifier

    F = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)

    class Extractor:
        def transform(self, ds):
            return F

    class Strat:
        extractor_ = Extractor()
        model_ = BottleneckClassifier(8, 3, bottleneck=4, dropout=0.5)

    Strat.model_.train()
    before, after, bdesc, adesc = strategy_features(Strat(), None)
    np.testing.assert_array_equal(before, F)
    assert Strat.model_.training is True  # the mode it had is restored
    Strat.model_.eval()  # the features are eval-mode ones (BatchNorm running stats, no dropout)
    with torch.no_grad():
        expected = Strat.model_.bottleneck(torch.from_numpy(F)).numpy()
    np.testing.assert_allclose(after, expected, rtol=1e-6)
    assert adesc == "adapter bottleneck features"
    # without an adapter (feature extraction) there is no "after"
    Strat.model_ = None
    assert strategy_features(Strat(), None)[1] is None
