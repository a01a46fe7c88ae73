"""`transferkit diagnose` end to end on a tiny table (seconds)."""

import json

import numpy as np
import pytest

from transferkit.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds contention


EXP = """
name: tiny_diag
seeds: 3
target: "{target}"
split: {{labels_per_class: 5}}
backbone: {{name: tiny_mlp, options: {{in_features: 8, width: 16}}}}
progress: false
strategies:
  - {{name: scratch, epochs: 4, lr: 0.01}}
  - {{name: finetune, epochs: 4, lr: 0.01, pretrained: false, lp_init: false}}
diagnose:
  transfer: finetune
  baseline: scratch
  labels_per_class: [2, 5, all]
  sharpness: true
  sharpness_samples: 12
"""


@pytest.fixture
def exp(tmp_path):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=150, n_features=8, n_informative=4, n_redundant=0, n_classes=3,
                               n_clusters_per_class=1, class_sep=2.0, random_state=0)
    np.savez(tmp_path / "t.npz", x=X.astype(np.float32), y=y)
    p = tmp_path / "exp.yaml"
    p.write_text(EXP.format(target=tmp_path / "t.npz"))
    return p


def test_diagnose_writes_json_and_markdown(exp, tmp_path, capsys):
    out = tmp_path / "diag"
    assert main(["diagnose", str(exp), "--out", str(out), "--seeds", "2", "--no-report"]) == 0
    printed = capsys.readouterr().out
    assert "negative transfer:" in printed and "diagnose.json" in printed
    res = json.loads((out / "diagnose.json").read_text())
    for key in ("negative_transfer", "sample_efficiency", "forgetting", "sharpness", "convergence"):
        assert key in res
    nt = res["negative_transfer"]
    assert {"verdict", "delta_mean", "ci_low", "ci_high", "n_seeds", "p_value", "method"} <= set(nt)
    assert nt["n_seeds"] == 2 and nt["ci_low"] <= nt["delta_mean"] <= nt["ci_high"]
    assert nt["verdict"] in ("positive transfer", "no significant difference", "negative transfer")
    assert res["forgetting"] is None  # off by default
    assert [r["label"] for r in res["sample_efficiency"]["curve"]] == ["2", "5", "all"]
    sh = res["sharpness"]
    assert sh["finetune"]["n_samples"] == 12 and len(sh["scratch"]["per_seed"]) == 2
    assert all(v > 0 for v in sh["scratch"]["per_seed"])  # cross-entropy is convex in the logits
    conv = res["convergence"]
    assert conv["transfer"]["n_seeds"] == 2 and 0 < conv["threshold"] <= 1
    md = (out / "diagnose.md").read_text()
    assert "## Negative transfer" in md and "## Sample efficiency" in md and "## Sharpness" in md
    assert (out / "negative_transfer" / "results.json").is_file()
    assert (out / "sample_efficiency" / "k2" / "results.json").is_file()
    # a second run into the same directory is refused
    assert main(["diagnose", str(exp), "--out", str(out), "--no-report"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("old,bad,match", [
    ("  sharpness_samples: 12", "  sharpnes: true", "unknown key diagnose.'sharpnes'. Did you mean 'sharpness'"),
    ("  sharpness_samples: 12", "  method: welsh", "Did you mean 'welch'"),
    ("  labels_per_class: [2, 5, all]", "  labels_per_class: [0, 5]", "labels_per_class"),
    ("  baseline: scratch", "  baseline: scrach", "Did you mean 'scratch'"),
    ("seeds: 3", "seeds: [0]", "needs at least 2 seeds"),  # checked before any training
    ("name: tiny_mlp,", "name: tiny_mpl,", "tiny_mlp"),  # a backbone typo: before any training or write
])
def test_diagnose_config_errors_exit_2(exp, tmp_path, capsys, old, bad, match):
    assert old in exp.read_text()
    text = exp.read_text().replace(old, bad)
    exp.write_text(text)
    assert main(["diagnose", str(exp), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def _strip(obj):
    """diagnose.json without what differs between two identical runs (times, paths)."""
    drop = {"wall_time", "output_dir", "train_time", "train_time_mean", "run_dir", "run_dirs"}
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_killed_diagnose_resumes_to_the_same_results(exp, tmp_path, capsys):
    """SIGKILL right after a compared run is complete but before its diagnostics record is
    written, then again as the sample-efficiency curve starts, then after diagnose.json:
    ``transferkit diagnose --resume DIR`` (the stored config) gives what an uninterrupted run gives."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the third run (finetune, seed 1) of negative_transfer/; then the first new experiment of the
    # resumed process (sample_efficiency/k2); then the end
    for i, fault in enumerate(["experiment.run_complete@3", "experiment.start@1", "diagnose.written"]):
        argv = ["diagnose", str(exp), "--out", str(out), "--seeds", "2"] if i == 0 else ["diagnose", "--resume", str(out)]
        proc = subprocess.run([sys.executable, "-m", "transferkit", *argv, "--no-report"],
                              env={**env, "TRANSFERKIT_FAULT": fault}, capture_output=True, text=True, timeout=600)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.stdout[-1500:], proc.stderr[-1500:])
        if i == 0:  # finished, its record not written: the resumed diagnose must run it again
            run = out / "negative_transfer" / "finetune" / "seed1"
            assert (run / "result.json").is_file() and not (run / "diagnostics.json").exists()
        if i == 1:
            assert (out / "sample_efficiency" / "k2" / "config.yaml").is_file()
            assert not (out / "sample_efficiency" / "k2" / "results.json").exists()
    assert (out / ".incomplete").exists()
    assert main(["diagnose", "--resume", str(out), "--seeds", "3"]) == 2
    assert "drop --seeds" in capsys.readouterr().err
    assert main(["diagnose", "--resume", str(out), "--no-report"]) == 0
    assert "kept" in capsys.readouterr().out
    ref = tmp_path / "ref"
    assert main(["diagnose", str(exp), "--out", str(ref), "--seeds", "2", "--no-report"]) == 0
    a, b = (json.loads((d / "diagnose.json").read_text()) for d in (out, ref))
    assert _strip(a) == _strip(b)
    assert a["sharpness"]["finetune"]["per_seed"] == b["sharpness"]["finetune"]["per_seed"]
    assert not (out / ".incomplete").exists()
    capsys.readouterr()
    assert main(["diagnose", "--resume", str(out), "--no-report"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
