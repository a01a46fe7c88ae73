"""transferkit benchmark compress: the plumbing on tiny data and models (the real run is a benchmark),
the splits, the round-robin timing, and the summary's arithmetic on hand-made cells."""

import json

import numpy as np
import pytest

from transferkit import compression as C
from transferkit.cli.main import main
from transferkit.errors import ConfigError

pytest.importorskip("torchao")
pytest.importorskip("torch_pruning")


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(C, "TEACHER", {"name": "tiny_cnn", "image_size": 16})
    monkeypatch.setattr(C, "STUDENT", {"name": "tiny_cnn", "image_size": 16, "width": 4})
    monkeypatch.setattr(C, "TASKS", {"tiny": {"pool": "digits:size=16,rotate=0..30,seed={draw}", "test": 200,
                                              "unlabeled": 150, "shift_draws": 2}})
    monkeypatch.setattr(C, "PARTS", ("tiny",))
    monkeypatch.setattr(C, "LATENCY_REPEATS", {1: 3, 64: 2})
    monkeypatch.setattr(C, "CALIBRATION_ROWS", 64)
    monkeypatch.setattr(C, "STUDENT_STEPS", 2)
    monkeypatch.setattr(C, "_DATA", {})


def test_the_benchmark_runs_measures_every_model_and_keeps_its_cell(tmp_path, tiny, one_thread):
    import torch

    from transferkit.backbones import create_backbone
    from transferkit.compress.prune import count_macs_params

    out = tmp_path / "b"
    res = C.run_compression_dir(out, seeds=1, epochs=1, echo=lambda *a: None)
    rows = {r["method"]: r for r in res["cells"]}
    assert list(rows) == list(C.METHODS)
    assert rows["teacher_fp32"]["ratio_b1"] == 1.0 and rows["teacher_fp32"]["ratio_b64"] == 1.0
    # file sizes are the bytes on disk of the saved models (FP32 safetensors, INT8 .pt2)
    folder = out / "models" / "tiny-seed0"
    for m, r in rows.items():
        suffix = ".pt2" if m in C.INT8_OF else ".safetensors"
        assert r["file_bytes"] == (folder / f"{m}{suffix}").stat().st_size
    # MACs are counted: the student's equal a fresh tiny_cnn's, the pruned teacher's are at most half
    student = create_backbone("tiny_cnn", num_classes=10, image_size=16, width=4, seed=0)
    want = count_macs_params(student, torch.zeros(2, 3, 16, 16))
    assert (rows["student_kd"]["macs"], rows["student_kd"]["params"]) == want
    # tiny_cnn width 4 at 16 px, by hand: 3x3 convs 3->4 @16x16, 4->8 @8x8, 8->16 @4x4, then Linear(16, 10)
    assert want[0] == 9 * (3 * 4 * 256 + 4 * 8 * 64 + 8 * 16 * 16) + 16 * 10
    assert rows["teacher_pruned50"]["macs"] <= C.PRUNE_RATIO * rows["teacher_fp32"]["macs"]
    info = res["info"][0]
    assert info["prune"]["macs_ratio"] <= C.PRUNE_RATIO and 0 <= info["prune"]["accuracy_before_finetune"] <= 1
    assert info["sizes"] == {"labeled": 100, "val": 100, "unlabeled": 300, "test": 200}
    for m, src in C.INT8_OF.items():  # the INT8 models keep their originals' counts and mostly their argmax
        assert rows[m]["macs"] == rows[src]["macs"] and 0.5 <= rows[m]["agreement"] <= 1
        assert info["int8_graph"][m]["int8_conv"] == 3
    md = (out / "results.md").read_text()
    assert "| teacher_int8 |" in md and "## Goals" in md and "INT8 teacher" in md
    assert json.loads((out / "benchmark.json").read_text())["suite"] == "compress"
    seen = []  # a rerun keeps the cell
    again = C.run_compression_dir(out, seeds=1, epochs=1, echo=seen.append)
    assert sum("complete, kept" in line for line in seen) == 1 and again["cells"] == res["cells"]


def test_the_splits_are_disjoint_and_sized_as_the_protocol_says():
    y = np.repeat(np.arange(10), 60)
    s = C.split_rows(y, seed=3, n_test=200, n_unlabeled=150)
    assert [len(s[k]) for k in ("labeled", "val", "test", "unlabeled")] == [100, 100, 200, 150]
    assert np.bincount(y[s["labeled"]]).tolist() == [10] * 10 and np.bincount(y[s["val"]]).tolist() == [10] * 10
    allrows = np.concatenate(list(s.values()))
    assert len(np.unique(allrows)) == len(allrows)
    rest = C.split_rows(y, seed=3)  # an external test split: every row left is unlabeled
    assert len(rest["test"]) == 0 and len(rest["unlabeled"]) == 600 - 200
    assert not np.array_equal(C.split_rows(y, seed=4)["labeled"], s["labeled"])


def test_the_dataset_of_a_task_has_unlabeled_rows_once_per_shift_draw(tiny):
    d = C.task_data("tiny", 0)
    assert (d["unlabeled"].labels == -1).all() and len(d["unlabeled"]) == 2 * 150
    a, b = d["unlabeled"].inputs[:150], d["unlabeled"].inputs[150:]
    assert not np.allclose(a, b)  # the same images under another draw of the shift
    assert len(d["test"]) == 200 and (d["test"].labels >= 0).all()


def test_latency_is_timed_round_robin_and_the_median_is_kept(monkeypatch):
    clock, calls = [0.0], []

    def model(cost):
        def f(x):
            calls.append((cost, int(x)))
            clock[0] += cost * x
        return f

    monkeypatch.setattr(C.time, "perf_counter", lambda: clock[0])
    lat = C.measure_latency({"a": model(1.0), "b": model(3.0)}, {"a": {1: 1, 64: 64}, "b": {1: 1, 64: 64}},
                            repeats={1: 3, 64: 2})
    assert lat == {"a": {1: 1.0, 64: 64.0}, "b": {1: 3.0, 64: 192.0}}
    # one warm-up per model and batch, then rounds that alternate the models
    assert calls[4:10] == [(1.0, 1), (3.0, 1)] * 3 and calls[10:] == [(1.0, 64), (3.0, 64)] * 2


def _cells():
    acc = {"teacher_fp32": (0.80, 0.82), "student_scratch": (0.60, 0.62), "student_kd": (0.62, 0.62),
           "student_kd_unlabeled": (0.64, 0.66), "teacher_pruned50": (0.79, 0.80), "teacher_int8": (0.80, 0.80),
           "student_kd_int8": (0.63, 0.66)}
    ratio = {"teacher_pruned50": (0.6, 0.8), "teacher_int8": (0.9, 0.8)}
    rows = []
    for task in ("fashion", "digits"):
        for m, accs in acc.items():
            for seed, a in enumerate(accs):
                r64 = 1.0 if m == "teacher_fp32" else ratio.get(m, (0.05, 0.05))[seed]
                if task == "digits" and m == "teacher_pruned50" and seed == 1:
                    r64 = 1.05  # slower than the teacher on one seed
                rows.append({"task": task, "method": m, "seed": seed, "accuracy": a - (0.03 if task == "digits" and
                                                                                       m.startswith("student_kd")
                                                                                       else 0),
                             "params": 1000, "file_bytes": 4000, "macs": 500 if m == "teacher_pruned50" else 1000,
                             "ratio_b1": 1.0, "ratio_b64": r64, "latency_b1": 0.01, "latency_b64": 0.1 * r64,
                             **({"agreement": 0.95} if "int8" in m else {})})
    info = [{"task": t, "seed": s, "int8_reference_ratio_b64": 1.6, "fp32_contiguous_ratio_b64": 1.4,
             "int8_vs_contiguous_b64": 1.65, "prune": {"accuracy_before_finetune": 0.1 + 0.1 * s},
             "int8_graph": {"teacher_int8": {"int8_conv": 44, "quantize_ops": 33, "graph_ops": 126}}}
            for t in ("fashion", "digits") for s in (0, 1)]
    return {"suite": "compress", "cells": rows, "info": info, "protocol": C.PROTOCOL,
            "arguments": {"parts": ["fashion", "digits"], "seeds": 2, "epochs": 1}}


def test_summary_and_goals_on_hand_made_cells():
    res = _cells()
    s = C.summarize(res)
    t = {(r["task"], r["method"]): r for r in s["table"]}
    assert [r["method"] for r in s["table"] if r["task"] == "fashion"] == list(C.METHODS)
    kdu = t[("fashion", "student_kd_unlabeled")]["accuracy"]
    assert kdu["mean"] == pytest.approx(0.65) and kdu["std"] == pytest.approx(0.01 * np.sqrt(2))
    g = {x["task"]: x for x in s["goals"]}
    f = g["fashion"]
    assert f["kd"]["best"] == "student_kd_unlabeled" and f["kd"]["gain"] == pytest.approx(0.04) and f["kd"]["met"]
    assert f["int8"]["drop"] == pytest.approx(0.01) and f["int8"]["accuracy_met"]  # (0 + 0.02) / 2, at the bound
    assert f["int8"]["speedup_b64"] == pytest.approx((1 / 0.9 + 1 / 0.8) / 2) and not f["int8"]["speed_met"]
    assert f["pruned"]["drop"] == pytest.approx(0.015) and f["pruned"]["met"] and f["pruned"]["macs_ratio"] == 0.5
    d = g["digits"]
    assert d["kd"]["gain"] == pytest.approx(0.01) and not d["kd"]["met"]
    assert not d["pruned"]["faster_every_seed"] and not d["pruned"]["met"] and d["pruned"]["accuracy_met"]
    res["summary"] = s
    md = C.markdown(res)
    assert "| student_kd_unlabeled | 0.650 ± 0.014 |" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("- ")]
    assert any(ln.startswith("- fashion, KD:") and "+4.0 points" in ln and ln.endswith("**met**.") for ln in lines)
    assert any(ln.startswith("- digits, KD:") and "+1.0 points" in ln and "**not met**" in ln for ln in lines)
    int8 = next(ln for ln in lines if ln.startswith("- fashion, INT8"))
    assert "-1.0 points" in int8 and "1.18x" in int8 and "Not on this machine" in int8 and "1.65x faster" in int8
    pruned = next(ln for ln in lines if ln.startswith("- digits, pruned"))
    assert "50% of the teacher's MACs" in pruned and "15.0% right after pruning" in pruned
    assert "not faster on every seed" in pruned and pruned.endswith("both: **not met**.")


def test_bad_compression_arguments_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown part 'fahsion'.*fashion"):
        C.check_compression_args(["fahsion"])
    with pytest.raises(ConfigError, match="seeds"):
        C.check_compression_args(seeds=0)
    assert C.check_compression_args() == {"parts": ["fashion", "digits"], "seeds": 3, "epochs": 30}
    code = main(["benchmark", "compress", "--backbone", "x", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--backbone is fixed by the suite" in err and not (tmp_path / "x").exists()
