"""End-to-end CLI runs on a tiny backbone (seconds, not minutes)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from transferkit.cli import main

EXP = """
name: tiny
seeds: 2
source: "digits:subset=0/2,size=16"
target: "digits:subset=1/2,size=16,rotate=10..20,seed=0"
split: {labels_per_class: 5, val_fraction: 0.5}
backbone: {name: tiny_cnn, image_size: 16}
progress: false
strategies:
  - scratch
  - {name: feature_extraction}
  - {name: finetune, epochs: 3, lp_init: true, unfreeze: "last:2", layer_decay: 0.8}
"""


def test_run_end_to_end(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXP.replace("strategies:\n  - scratch", "strategies:\n  - {name: scratch, epochs: 3}"))
    out = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "finetune" in printed
    assert "accuracy over scratch (difference of means): feature_extraction " in printed
    res = json.loads((out / "results.json").read_text())
    assert set(res["summary"]) == {"scratch", "feature_extraction", "finetune"}
    assert len(res["runs"]) == 6
    for key, s in res["summary"].items():  # the summary is what its runs say
        accs = [r["accuracy"] for r in res["runs"] if r["strategy"] == key]
        assert s["n_seeds"] == 2 and s["accuracy_mean"] == pytest.approx(np.mean(accs))
        assert s["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert res["summary"]["finetune"]["accuracy_mean"] > 0.2  # it learned something (chance 0.1)
    # every run: no test-split leakage into training, metrics and weights on disk
    for r in res["runs"]:
        assert r["n_train"] == 50 and r["n_val"] + r["n_test"] == 896 - 50
    assert (out / "finetune" / "seed1" / "metrics.jsonl").read_text().count("\n") == 3
    assert (out / "finetune" / "seed0" / "model.safetensors").is_file()
    from safetensors.torch import load_file

    head = load_file(str(out / "feature_extraction" / "seed0" / "model.safetensors"))
    assert head["head.weight"].shape == (10, 64) and head["head.bias"].shape == (10,)
    assert (out / "config.yaml").is_file()
    env = json.loads((out / "environment.json").read_text())
    assert env["seeds"] == [0, 1] and env["packages"]["torch"]
    # a second run into the same directory is refused, and the first run is untouched
    before = (out / "results.json").read_bytes()
    assert main(["run", str(exp), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before


def test_config_typo_exits_2_with_suggestion(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXP.replace("split:", "splt:"))
    assert main(["run", str(exp), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'splt'" in err and "Did you mean 'split'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_list_commands(capsys):
    assert main(["list", "strategies"]) == 0
    out = capsys.readouterr().out
    assert all(k in out for k in ("finetune", "feature_extraction", "scratch"))
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    assert all(k in out for k in ("efficientnet_lite0", "minilm", "timm:", "hf:", "file:", "tiny_cnn"))
    assert main(["list", "datasets"]) == 0
    assert "digits" in capsys.readouterr().out


def test_console_script_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "transferkit", "list", "strategies"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "finetune" in out.stdout


@pytest.mark.parametrize("argv,match", [
    (["groups", "no_such_backbone"], "unknown backbone 'no_such_backbone'"),
    (["run", "missing.yaml"], "does not exist"),
])
def test_errors_are_one_line(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def test_text_csv_end_to_end(tmp_path):
    """The text path: a CSV with a text column, a tiny BERT, fine-tuning and feature extraction."""
    import csv

    rng = __import__("numpy").random.default_rng(0)
    pos = ["great", "good", "lovely", "excellent", "fine"]
    neg = ["awful", "bad", "poor", "terrible", "boring"]
    rows = []
    for i in range(120):
        lab = "pos" if i % 2 else "neg"
        words = rng.choice(pos if lab == "pos" else neg, size=3)
        rows.append({"review": "the film was " + " and ".join(words), "stars": lab})
    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["review", "stars"])
        w.writeheader()
        w.writerows(rows)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"""
target: "{tmp_path / 'reviews.csv'}:text=review,label=stars"
seeds: 1
split: {{labels_per_class: 20}}
backbone: tiny_text
progress: false
strategies:
  - feature_extraction
  - {{name: finetune, epochs: 8, lr: 0.01, backbone_lr_mult: 1.0}}
""")
    assert main(["run", str(exp), "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["summary"]["finetune"]["accuracy_mean"] > 0.8  # the words decide the label
    assert res["runs"][0]["n_train"] == 40


def test_tabular_npz_end_to_end(tmp_path):
    import numpy as np
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    np.savez(tmp_path / "wine.npz", x=((X - X.mean(0)) / X.std(0)).astype(np.float32), y=y)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"""
target: "{tmp_path / 'wine.npz'}"
seeds: 2
split: {{labels_per_class: 10}}
backbone: {{name: tiny_mlp, options: {{in_features: 13}}}}
progress: false
strategies:
  - {{name: scratch, epochs: 30, lr: 0.01}}
""")
    assert main(["run", str(exp), "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["summary"]["scratch"]["accuracy_mean"] > 0.85


@pytest.mark.parametrize("target,match", [
    ("no/such/folder", "no/such/folder"),
    ("digits:subset=1/2,size=16,rotat=5", "Did you mean 'rotate'"),
])
def test_bad_data_fails_before_anything_is_written(tmp_path, capsys, target, match):
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXP.replace('"digits:subset=1/2,size=16,rotate=10..20,seed=0"', f'"{target}"'))
    assert main(["run", str(exp), "--out", str(tmp_path / "o")]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_too_few_samples_per_class_names_the_class(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXP.replace("labels_per_class: 5", "labels_per_class: 200"))
    assert main(["run", str(exp), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "class 0 has only" in err and "labels_per_class=200" in err
    assert not (tmp_path / "o").exists()
