"""Bad input to ``transferkit compress`` and ``predict`` of a compressed folder, and a distill
student that cannot take the data: one line, exit 2, nothing on disk changed (``_badinput``)."""

import json

import pytest
import yaml

from _badinput import BASE, _cfg, _npz, _run, check_case, existing  # noqa: F401


def _unfinished(t):
    """A run folder whose seed has a model but no result.json (killed before it finished)."""
    d = t / "killed"
    (d / "scratch" / "seed0").mkdir(parents=True)
    (d / ".transferkit-run").write_text('{"kind": "run"}\n')
    (d / "config.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    (d / "scratch" / "seed0" / "model.safetensors").write_bytes(b"weights")
    return str(d)


def _finished(t):
    d = _unfinished(t)
    (t / "killed" / "scratch" / "seed0" / "result.json").write_text('{"accuracy": 0.5}\n')
    return d


def _compressed(t, run_dir):
    d = t / "small"
    d.mkdir()
    (d / "compress.json").write_text(json.dumps({"method": "int8", "source": {"run_dir": run_dir,
                                                                              "strategy": "scratch", "seed": 0}}))
    (d / "model.pt2").write_bytes(b"not an archive")
    return str(d)


def _compress(t, *extra, run=None):
    return ["compress", run or _finished(t), "--out", str(t / "existing"), "--overwrite", *extra]


CASES = {
    "compress a run that is not finished": lambda t: (
        ["compress", _unfinished(t), "--method", "int8", "--out", str(t / "existing"), "--overwrite"],
        ["is not finished", "transferkit run --resume"]),
    "compress a folder that is not a run": lambda t: (
        _compress(t, "--method", "prune", run=str(t)), ["is not a transferkit run directory"]),
    "compress --ratio out of range": lambda t: (
        _compress(t, "--method", "prune", "--ratio", "1.5"), ["--ratio", "1.5"]),
    "compress --importance misspelt": lambda t: (
        _compress(t, "--method", "prune", "--importance", "taylr"), ["--importance", "'taylor'"]),
    "compress int8 with --onnx": lambda t: (
        _compress(t, "--method", "int8", "--onnx"), ["--onnx exports FP32 graphs", "drop --onnx"]),
    "compress --qat misspelt": lambda t: (
        _compress(t, "--method", "int8", "--qat", "sometimes"), ["--qat", "'auto'"]),
    "compress --out inside the run": lambda t: (
        ["compress", _finished(t), "--method", "int8", "--out", str(t / "killed" / "small")],
        ["overlap", "a folder of its own"]),
    "predict a compressed folder whose run is gone": lambda t: (
        ["predict", _compressed(t, str(t / "gone")), "--split", "test", "--out", str(t / "p.csv")],
        ["is gone", "--onnx"]),
    "predict a compressed folder with --seed": lambda t: (
        ["predict", _compressed(t, _finished(t)), "--split", "test", "--seed", "1", "--out", str(t / "p.csv")],
        ["--seed does not apply to a compressed model folder"]),
    "predict --compile on a run that is not compressed": lambda t: (
        ["predict", _finished(t), "--split", "test", "--compile", "--out", str(t / "p.csv")],
        ["--compile applies to a 'transferkit compress' folder", "drop --compile"]),
    "distill student input width differs from the data": lambda t: (
        _run(t, _cfg(t, target=_npz(t), backbone={"name": "tiny_mlp", "options": {"in_features": 4}},
                     split={"labels_per_class": 3, "val_fraction": 0.5},
                     strategies=[{"name": "scratch", "epochs": 1},
                                 {"name": "distill", "teacher": "scratch",
                                  "student": {"name": "tiny_mlp", "options": {"in_features": 6}}}])),
        ["has 4 feature columns but backbone 'distill.student=tiny_mlp' takes in_features=6"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_compress_one_line_exit_2_nothing_damaged(case, tmp_path, existing, capsys, monkeypatch):
    check_case(CASES, case, tmp_path, capsys, monkeypatch)


def test_an_unsupported_quantization_backend_is_one_line_before_anything(tmp_path, existing, capsys, monkeypatch):
    """A CPU/torch build without the x86 quantized engines (an ARM board): refused before the run is read."""
    from transferkit.compress import quantize

    monkeypatch.setattr(quantize, "_supported_engines", lambda: ["qnnpack", "none"])
    CASES_ONE = {"int8 on a CPU without x86 engines": lambda t: (
        _compress(t, "--method", "int8"), ["static INT8 needs a quantized engine", "qnnpack", "x86 CPU"])}
    check_case(CASES_ONE, "int8 on a CPU without x86 engines", tmp_path, capsys, monkeypatch)
