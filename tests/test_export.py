"""transferkit export: a run's model as ONNX (checked in onnxruntime) or TorchScript.

The exported graph maps preprocessed inputs to logits; its softmax must be the loaded
strategy's ``predict_proba`` (so its argmax the run's predictions), ONNX must match PyTorch
within 1e-4, and a TorchScript file reloads to the same outputs.
"""

import json

import numpy as np
import pytest
import torch

import transferkit as tk
from _predict_runs import image_config, own_test_split, run, table_config, write_tables
from transferkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

STRATEGIES = [
    {"name": "finetune", "epochs": 1, "batch_size": 16, "seed": 1},
    {"name": "feature_extraction", "seed": 2},
    {"name": "feature_extraction", "label": "fe_linear", "head": "linear", "standardize": True, "epochs": 3, "seed": 2},
    {"name": "adapt", "method": "dan", "epochs": 1, "bottleneck": 16, "seed": 3},
    {"name": "source_only_lr", "seed": 9},
    {"name": "adapt", "label": "adapt_sa", "method": "sa", "seed": 12},
    {"name": "adapt", "label": "adapt_tca", "method": "tca", "seed": 12},
    {"name": "adapt", "label": "adapt_coral", "method": "coral", "seed": 12},
]
KEYS = [s.get("label") or s["name"] for s in STRATEGIES]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    cfg = image_config("export", STRATEGIES)
    out = tmp_path_factory.mktemp("runs") / "export"
    run(cfg, out)
    return cfg, out


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


@pytest.mark.parametrize("key", KEYS)
def test_onnx_matches_pytorch_and_the_loaded_model(image_run, key, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    cfg, out = image_run
    dest = tmp_path / "m.onnx"
    assert main(["export", str(out), "--strategy", key, "--out", str(dest)]) == 0
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["max_abs_diff"] <= 1e-4 and f"max |logit difference| = {side['max_abs_diff']:.2e}" in capsys.readouterr().out
    assert side["input_shape"] == [None, 3, 16, 16] and side["mean"] == [0.5] * 3 and side["std"] == [0.5] * 3
    assert side["classes"] == [str(i) for i in range(10)] and side["strategy"] == key
    # the graph on the run's test split, preprocessed as the sidecar says: the run's predictions
    model = tk.load_run(out, strategy=key)
    test = own_test_split(cfg, 0).subset(np.arange(40))
    pred = model.predict(test)  # builds a cached-feature strategy's frozen backbone too
    bb = model.model_.backbone if hasattr(model, "trainer_") else (
        model._extractor().backbone_ if hasattr(model, "_extractor") else model.extractor_.backbone_)
    x = bb.preprocess(test.inputs).numpy()
    sess = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    z = sess.run(None, {"input": x})[0]
    assert z.shape == (40, 10)
    assert np.array_equal(z.argmax(1), pred)
    assert np.abs(_softmax(z) - model.predict_proba(test)).max() < 1e-4


@pytest.mark.parametrize("key", ["finetune", "adapt_tca"])
def test_torchscript_reloads_to_the_same_outputs(image_run, key, tmp_path, capsys):
    cfg, out = image_run
    dest = tmp_path / "m.pt"
    assert main(["export", str(out), "--strategy", key, "--format", "torchscript", "--out", str(dest)]) == 0
    side = json.loads((tmp_path / "m.pt.json").read_text())
    assert side["format"] == "torchscript" and side["max_abs_diff"] <= 1e-6
    loaded = torch.jit.load(str(dest))
    model = tk.load_run(out, strategy=key)
    from transferkit.export import export_module

    module, bb = export_module(model)
    test = own_test_split(cfg, 0).subset(np.arange(16))
    x = bb.preprocess(test.inputs).float()
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))
        assert np.array_equal(loaded(x).numpy().argmax(1), model.predict(test))


def test_table_export_records_the_feature_columns(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    sp, tp, tgt = write_tables(tmp_path)
    cfg = table_config(sp, tp, [{"name": "feature_extraction", "standardize": True}])
    out = tmp_path / "run"
    run(cfg, out)
    assert main(["export", str(out), "--out", str(tmp_path / "t.onnx")]) == 0
    side = json.loads((tmp_path / "t.onnx.json").read_text())
    assert side["feature_columns"] == ["age", "income", "height", "score"] and side["input_shape"] == [None, 4]
    assert side["classes"] == ["cat", "dog", "eel"]
    x = tgt[side["feature_columns"]].to_numpy(np.float32)
    z = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    model = tk.load_run(out)
    ds = tk.load_dataset(f"{tp}:label=kind")
    assert np.array_equal(z.argmax(1), model.predict(ds))


def test_export_refuses_to_overwrite_or_write_into_the_run(image_run, tmp_path, capsys):
    cfg, out = image_run
    (tmp_path / "m.onnx").write_text("mine")
    for argv, word in ((["--out", str(tmp_path / "m.onnx")], "--overwrite"),
                       (["--out", str(out / "m.onnx")], "run directory"),
                       (["--format", "tflite"], "tflite")):
        capsys.readouterr()
        assert main(["export", str(out), "--strategy", "finetune", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err, err
    assert (tmp_path / "m.onnx").read_text() == "mine" and not (out / "m.onnx").exists()
