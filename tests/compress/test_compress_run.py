"""``transferkit compress``: a finished run pruned / quantized, measured, saved, and predicted again."""

from __future__ import annotations

import csv
import json
import os
import zipfile

import numpy as np
import pytest

from transferkit.cli import main
from transferkit.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from _predict_runs import run

    out = tmp_path_factory.mktemp("compress") / "run"
    run({"name": "c", "seeds": [0], "target": "digits:size=16,subset=0/2",
         "split": {"labels_per_class": 20, "val_fraction": 0.3},
         "backbone": {"name": "tiny_cnn", "image_size": 16, "pretrained": False, "options": {"width": 16}},
         "progress": False, "strategies": [{"name": "scratch", "epochs": 4, "lr": 0.01}]}, out)
    return out


def _accuracy_of(csv_path) -> float:
    rows = list(csv.DictReader(open(csv_path)))
    return float(np.mean([r["predicted"] == r["true"] for r in rows]))


def _compress(run, out, *args):
    assert main(["compress", str(run), "--out", str(out), *args]) == 0
    return json.loads((out / "compress.json").read_text())


def test_prune_counts_the_macs_fine_tunes_exports_and_predicts(trained, tmp_path, capsys):
    info = _compress(trained, tmp_path / "p", "--method", "prune", "--epochs", "1", "--onnx")
    assert info["compressed"]["macs"] <= 0.5 * info["fp32"]["macs"] * 1.05  # counted after pruning, not assumed
    assert info["compressed"]["params"] < info["fp32"]["params"]
    assert info["pruning"]["macs_ratio"] == pytest.approx(info["compressed"]["macs"] / info["fp32"]["macs"])
    assert info["onnx_max_abs_diff"] <= 1e-4 and (tmp_path / "p" / "model.onnx").is_file()
    assert set(info["speedup"]) == {"batch1", "batch64"} and all(v > 0 for v in info["speedup"].values())
    assert not (tmp_path / "p" / ".incomplete").exists() and (tmp_path / "p" / "compress.log").is_file()
    assert main(["predict", str(tmp_path / "p"), "--split", "test", "--out", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert _accuracy_of(tmp_path / "p.csv") == pytest.approx(info["compressed"]["test_accuracy"])
    assert f"recorded {info['compressed']['test_accuracy']:.4f}" in out


def test_int8_stays_close_to_fp32_and_its_archive_reloads(trained, tmp_path):
    info = _compress(trained, tmp_path / "q", "--method", "int8", "--calibration", "64")
    q = info["quantization"]
    assert q["kind"] == "static" and q["calibration_rows"] == 64 and q["ptq_val_loss_points"] is not None
    assert info["test_argmax_agreement"] >= 0.95
    assert abs(info["compressed"]["test_accuracy"] - info["fp32"]["test_accuracy"]) <= 0.03
    assert main(["predict", str(tmp_path / "q"), "--split", "test", "--out", str(tmp_path / "q.csv")]) == 0
    assert _accuracy_of(tmp_path / "q.csv") == pytest.approx(info["compressed"]["test_accuracy"], abs=2e-3)
    # compiled by inductor: the same predictions (it lowers the q/dq graph itself)
    assert main(["predict", str(tmp_path / "q"), "--split", "test", "--compile", "--out", str(tmp_path / "c.csv")]) == 0
    same = [a["predicted"] == b["predicted"] for a, b in zip(csv.DictReader(open(tmp_path / "q.csv")),
                                                            csv.DictReader(open(tmp_path / "c.csv")))]
    assert np.mean(same) >= 0.99


def test_sparsify_reports_the_sparsity_and_claims_no_speed(trained, tmp_path):
    info = _compress(trained, tmp_path / "s", "--method", "sparsify", "--ratio", "0.6")
    assert info["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert info["compressed"]["params"] == info["fp32"]["params"]  # dense tensors, zeros inside
    from transferkit.compress.quantize import load_quantized

    m = load_quantized(tmp_path / "s" / "model.pt2")
    w = [t for n, t in m.state_dict().items() if n.endswith("weight") and t.ndim > 1]
    zeros = sum(int((t == 0).sum()) for t in w) / sum(t.numel() for t in w)
    assert zeros == pytest.approx(info["sparsity"], abs=0.01)  # the saved model holds the zeros


def test_qat_runs_when_asked_and_records_its_losses(trained, tmp_path):
    info = _compress(trained, tmp_path / "qat", "--method", "int8", "--qat", "always", "--qat-epochs", "1",
                     "--calibration", "32")
    q = info["quantization"]
    assert q["kind"] == "qat" and len(q["qat"]["losses"]) == 1 and np.isfinite(q["qat"]["losses"][0])
    assert info["test_argmax_agreement"] >= 0.9


def test_qat_auto_follows_the_validation_budget(trained, tmp_path):
    """A budget of 100 points never triggers QAT; the decision reads the validation split only."""
    info = _compress(trained, tmp_path / "b", "--method", "int8", "--budget", "100", "--calibration", "32")
    assert info["quantization"]["qat"] is None


def test_an_archive_that_needs_pickle_is_refused(trained, tmp_path):
    """torch.export.load falls back to pickle when a weights-only read fails; ours never does."""
    import torch

    from transferkit.compress.quantize import load_quantized

    _compress(trained, tmp_path / "q", "--method", "int8", "--calibration", "32")
    src, bad = tmp_path / "q" / "model.pt2", tmp_path / "bad.pt2"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {tmp_path / 'pwned.txt'}",))

    torch.save(Evil(), tmp_path / "evil.pt")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("sample_inputs/model.pt"):
                data = (tmp_path / "evil.pt").read_bytes()
            zout.writestr(item, data)
    with pytest.raises(DataError, match="not a safe torch.export archive"):
        load_quantized(bad)
    assert not (tmp_path / "pwned.txt").exists()
    load_quantized(src)  # the untouched archive loads


def test_prune_refuses_a_frozen_feature_strategy(tmp_path, capsys):
    from _predict_runs import run, table_config, write_tables

    sp, tp, _ = write_tables(tmp_path)
    run(table_config(sp, tp, [{"name": "feature_extraction"}]), tmp_path / "fe")
    assert main(["compress", str(tmp_path / "fe"), "--method", "prune", "--out", str(tmp_path / "x")]) == 2
    assert "needs a network trained end to end" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    info = _compress(tmp_path / "fe", tmp_path / "d", "--method", "dynamic-int8")
    assert info["test_argmax_agreement"] >= 0.9
