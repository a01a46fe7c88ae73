"""A pruned model to ONNX: the file's outputs match PyTorch within 1e-4 (FP32), or nothing is written."""

import pytest
import torch

from transferkit.backbones import create_backbone
from transferkit.compress.deploy import export_onnx
from transferkit.compress.prune import prune_structured
from transferkit.errors import DataError

pytest.importorskip("onnxruntime")
pytest.importorskip("torch_pruning")


def test_a_pruned_model_exports_to_onnx_and_matches_pytorch(tmp_path, one_thread):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_backbone("tiny_cnn", num_classes=3, image_size=16, width=8, seed=0)
    x = torch.rand(6, 3, 16, 16)
    pruned, report = prune_structured(model, x[:2], target_macs_ratio=0.5)
    assert report["macs_ratio"] <= 0.5
    diff = export_onnx(pruned, x, tmp_path / "m.onnx")
    assert diff <= 1e-4 and (tmp_path / "m.onnx").is_file()
    # the batch axis is dynamic: another batch size runs and matches too
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    y = torch.rand(3, 3, 16, 16)
    pruned.eval()
    with torch.no_grad():
        ref = pruned(y).numpy()
    assert abs(sess.run(None, {"input": y.numpy()})[0] - ref).max() <= 1e-4


def test_an_export_over_the_tolerance_writes_nothing(tmp_path, one_thread):
    model = create_backbone("tiny_cnn", num_classes=3, image_size=16, width=4, seed=0)
    (tmp_path / "old.onnx").write_bytes(b"old")
    with pytest.raises(DataError, match="differs from PyTorch by .* nothing was written"):
        export_onnx(model, torch.rand(2, 3, 16, 16), tmp_path / "old.onnx", tolerance=-1.0)
    assert (tmp_path / "old.onnx").read_bytes() == b"old"
    with pytest.raises(DataError, match="example_input must be a batch tensor"):
        export_onnx(model, torch.rand(3), tmp_path / "x.onnx")
