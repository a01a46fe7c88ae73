"""transferkit pretrain: a run directory whose backbone strategies load as file:RUN_DIR."""

import json

import pytest
import yaml

from transferkit.backbones import create_backbone, list_backbones
from transferkit.cli.main import main
from transferkit.errors import ConfigError, DataError
from transferkit.pretrain.run import config_from_dict, run_pretrain

BB = {"name": "tiny_cnn", "image_size": 16, "options": {"width": 4}}


def _cfg(**kw):
    cfg = {"name": "t", "data": "digits:size=16,subset=0/4", "backbone": BB, "pretext": "rotation", "epochs": 1,
           "batch_size": 64, "eval": {"train": "digits:size=16,subset=1/4", "test": "digits:size=16,subset=2/4",
                                      "k": 5}}
    cfg.update(kw)
    return cfg


def test_a_pretrain_run_writes_a_backbone_that_loads_lists_and_assesses(tmp_path, one_thread, monkeypatch):
    out = tmp_path / "runs" / "ssl"
    res = run_pretrain(_cfg(), out, echo=None)
    for f in ("pretrain.yaml", "environment.json", "pretrain.log", "metrics.jsonl", "backbone.safetensors",
              "result.json"):
        assert (out / f).is_file(), f
    assert json.loads((out / "result.json").read_text())["pretext"] == "rotation"
    ev, floor = res["eval"], res["eval_random_init"]
    assert 0 <= ev["knn_accuracy"] <= 1 and 0 <= floor["linear_probe_accuracy"] <= 1
    assert "epoch 1/1" in (out / "pretrain.log").read_text()  # progress in the log, not only on a terminal
    bb = create_backbone(f"file:{out}")
    assert bb.feature_dim == 16 and [g for g, _ in bb.layer_groups()] == ["stem", "stage1", "stage2"]
    assert f"file:{out}" in list_backbones(runs=str(tmp_path / "runs"))
    # the stored config reloads as it was written
    again = config_from_dict(yaml.safe_load((out / "pretrain.yaml").read_text()))
    assert again.pretext_name == "rotation" and again.backbone.options == {"width": 4}
    # a complete run has nothing to resume
    assert run_pretrain(None, out, resume=True, echo=None)["pretext"] == "rotation"
    # assess ranks it beside another backbone
    from transferkit.assess import assess

    a = assess("digits:size=16,subset=0/2", "digits:size=16,subset=1/2,rotate=30", [f"file:{out}", "tiny_cnn"],
               image_size=16, n_permutations=10, max_samples=200)
    assert set(a["transferability"]) == {f"file:{out}", "tiny_cnn"}
    assert all(isinstance(v, dict) and v for v in a["transferability"].values())


def test_a_pretrain_run_used_by_a_strategy(tmp_path, one_thread):
    out = tmp_path / "ssl"
    run_pretrain(_cfg(eval=None), out, echo=None)
    from transferkit.experiment import run_experiment
    from transferkit.config import config_from_dict as exp_config

    cfg = exp_config({"name": "ft", "source": None, "target": "digits:size=16,subset=1/2",
                      "backbone": {"name": f"file:{out}"},
                      "strategies": [{"name": "finetune", "epochs": 1}], "seeds": 1})
    res = run_experiment(cfg, tmp_path / "run", echo=lambda *a: None)
    assert 0 <= res["summary"]["finetune"]["accuracy_mean"] <= 1


def test_bad_pretrain_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="unknown pretext 'simclear'.*simclr"):
        run_pretrain(_cfg(pretext="simclear"), out, echo=None)
    with pytest.raises(ConfigError, match="unknown key 'epoch'.*epochs"):
        run_pretrain({**_cfg(), "epoch": 3}, out, echo=None)
    # a two-view pretext on a table: the image transforms cannot make its views
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tab.npz", X=rng.normal(size=(40, 5)).astype("float32"), y=np.arange(40) % 2)
    with pytest.raises((DataError, ConfigError), match="pretext 'simclr' pretrains image backbones.*tabular"):
        run_pretrain(_cfg(data=str(tmp_path / "tab.npz"), backbone={"name": "tiny_mlp", "options": {"in_features": 5}},
                          pretext="simclr", eval=None), out, echo=None)
    with pytest.raises(ConfigError, match="takes image inputs but the pretrain data .* is tabular"):
        run_pretrain(_cfg(data=str(tmp_path / "tab.npz"), eval=None), out, echo=None)
    assert not out.exists()
    code = main(["pretrain", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing.yaml" in err


@pytest.mark.parametrize("name", ["fashion_simclr", "digits_rotation"])
def test_the_examples_pass_every_check_before_training(name):
    from pathlib import Path

    from transferkit.pretrain.run import load_pretrain_config, prepare

    path = Path(__file__).resolve().parents[2] / "examples" / "pretrain" / f"{name}.yaml"
    cfg = load_pretrain_config(path)
    if "fashion" in name:
        from transferkit.data.real import fashion_mnist_files

        try:
            fashion_mnist_files("train")
        except Exception:
            pytest.skip("Fashion-MNIST (Debian dataset-fashion-mnist) is not installed")
    ds, bb, pretext = prepare(cfg)
    assert len(ds) > 0 and (ds.labels is None or (ds.labels < 0).all())
    assert bb.spec.modality == "image"


def test_an_eval_section_without_labels_fails_before_anything_is_written(tmp_path):
    import numpy as np

    np.savez(tmp_path / "u.npz", x=np.random.default_rng(0).random((40, 16, 16)).astype("float32"))
    cfg = _cfg(eval={"train": f"{tmp_path / 'u.npz'}:y=none", "test": "digits:size=16,subset=2/4"})
    with pytest.raises(ConfigError, match=r"eval.train .* has no labels"):
        run_pretrain(cfg, tmp_path / "never", echo=None)
    assert not (tmp_path / "never").exists()  # checked with the config, not after training
