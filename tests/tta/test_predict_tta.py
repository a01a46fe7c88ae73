"""``transferkit predict --tta METHOD``: a finished run's network adapted over the data's rows."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from _predict_runs import image_config, run
from transferkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SHIFTED = "digits:subset=1/8,size=16,rotate=10..30,seed=1,corrupt=contrast,severity=5"


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tta-run") / "run"
    run(image_config("tta", [{"name": "scratch", "epochs": 2, "batch_size": 16, "lr": 0.01},
                             {"name": "feature_extraction", "seed": 2}]), out)
    return out


def _probs(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])


@pytest.mark.parametrize("method", ["tent", "bn_adapt", "t3a", "eata"])
def test_predict_with_tta_changes_the_predictions_not_the_run(scratch_run, tmp_path, capsys, method):
    before = {p: p.stat().st_mtime_ns for p in scratch_run.rglob("*") if p.is_file()}
    plain, adapted = tmp_path / "plain.csv", tmp_path / "tta.csv"
    assert main(["predict", str(scratch_run), SHIFTED, "--strategy", "scratch", "--out", str(plain)]) == 0
    assert main(["predict", str(scratch_run), SHIFTED, "--strategy", "scratch", "--tta", method, "--tta-batch-size",
                 "32", "--out", str(adapted)]) == 0
    out = capsys.readouterr().out
    assert f"test-time adaptation: {method} (online)" in out and "accuracy" in out
    p, q = _probs(plain), _probs(adapted)
    assert p.shape == q.shape and np.allclose(q.sum(1), 1, atol=1e-5)
    assert not np.allclose(p, q, atol=1e-4)  # the adapted model predicts otherwise
    after = {p: p.stat().st_mtime_ns for p in scratch_run.rglob("*") if p.is_file()}
    assert after == before  # the run directory is only read


def test_predict_tta_on_a_frozen_feature_model_and_bad_input(scratch_run, tmp_path, capsys):
    out = tmp_path / "fe.csv"
    assert main(["predict", str(scratch_run), SHIFTED, "--strategy", "feature_extraction", "--tta", "t3a",
                 "--out", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["predict", str(scratch_run), SHIFTED, "--tta", "tnet", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "unknown tta 'tnet'" in err and "tent" in err and len(err.strip().splitlines()) == 1
    assert main(["predict", str(scratch_run), SHIFTED, "--tta", "tent", "--tta-option", "learning_rate=1",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "no option 'learning_rate'" in capsys.readouterr().err
    assert main(["predict", str(scratch_run), SHIFTED, "--tta-option", "lr=1", "--out", str(tmp_path / "x.csv")]) == 2
    assert "--tta-option needs --tta" in capsys.readouterr().err
    assert main(["predict", str(scratch_run), SHIFTED, "--tta", "tent", "--tta-batch-size", "1",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "batch of 1 sample" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
