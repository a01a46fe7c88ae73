"""A saved backbone keeps its options (a width) and a pretrain run directory loads as file:DIR."""

import pytest
import torch

from transferkit.backbones import create_backbone, list_backbones, pretrained_runs, save_backbone
from transferkit.errors import WeightsError


def test_a_saved_backbone_with_options_reloads_the_same_architecture(tmp_path):
    bb = create_backbone("tiny_cnn", image_size=16, width=6, seed=0)
    save_backbone(bb, tmp_path / "w.safetensors")
    back = create_backbone(f"file:{tmp_path / 'w.safetensors'}")
    assert back.feature_dim == 24 and back.spec.input_size == (3, 16, 16)
    x = torch.rand(2, 3, 16, 16)
    bb.eval(), back.eval()
    assert torch.equal(bb(x), back(x))
    assert [g for g, _ in back.layer_groups()] == [g for g, _ in bb.layer_groups()]
    # re-saved from the file backbone: still the real architecture and its options
    save_backbone(back, tmp_path / "w2.safetensors")
    assert create_backbone(f"file:{tmp_path / 'w2.safetensors'}").feature_dim == 24


def test_a_pretrain_run_directory_loads_and_is_listed(tmp_path):
    run = tmp_path / "runs" / "ssl-a"
    run.mkdir(parents=True)
    bb = create_backbone("tiny_cnn", image_size=16, width=4, seed=1)
    save_backbone(bb, run / "backbone.safetensors", metadata={"transferkit.pretext": "simclr",
                                                              "transferkit.data": "digits"})
    other = tmp_path / "runs" / "plain"
    other.mkdir()
    save_backbone(bb, other / "backbone.safetensors")  # not written by pretrain: not listed
    back = create_backbone(f"file:{run}")
    assert back.feature_dim == 16
    found = pretrained_runs(tmp_path / "runs")
    assert list(found) == [f"file:{run}"] and "simclr" in found[f"file:{run}"] and "digits" in found[f"file:{run}"]
    assert f"file:{run}" in list_backbones(runs=str(tmp_path / "runs"))
    assert pretrained_runs(tmp_path / "nowhere") == {}
    with pytest.raises(WeightsError, match="is a directory without backbone.safetensors"):
        create_backbone(f"file:{tmp_path}")
