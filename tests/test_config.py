import pytest

from transferkit.config import config_from_dict, load_config
from transferkit.errors import ConfigError

BASE = {"target": "digits", "strategies": ["finetune"]}


def test_defaults_resolve():
    cfg = config_from_dict(dict(BASE))
    assert cfg.seeds == [0, 1, 2]
    assert cfg.backbone.name == "efficientnet_lite0"
    assert cfg.strategies[0].name == "finetune"


@pytest.mark.parametrize(
    "data,match",
    [
        ({**BASE, "seedz": 3}, r"unknown key 'seedz'.*Did you mean 'seeds'"),
        ({**BASE, "split": {"labels_per_clas": 5}}, r"split\.'labels_per_clas'.*'labels_per_class'"),
        ({**BASE, "backbone": {"nme": "tiny_cnn"}}, r"backbone\.'nme'.*'name'"),
        ({**BASE, "strategies": ["finetuen"]}, r"unknown strategy 'finetuen'.*'finetune'"),
        ({**BASE, "strategies": [{"name": "finetune", "backbone_lr_mul": 0.1}]}, r"'backbone_lr_mul'.*'backbone_lr_mult'"),
        ({**BASE, "seeds": 0}, r"seeds must be >= 1"),
        ({**BASE, "seeds": "three"}, r"seeds="),
        ({"strategies": ["finetune"]}, r"needs a 'target'"),
        ({**BASE, "split": {"labels_per_class": 0}}, r"labels_per_class=0 leaves no training data"),
        ({**BASE, "split": {"labels_per_class": -1}}, r"labels_per_class must be >= 0"),
        ({**BASE, "strategies": ["finetune", "finetune"]}, r"appears twice"),
    ],
)
def test_bad_configs_fail_with_suggestions(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_yaml_typo_names_file_and_suggests(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("target: digits\nstrategies: [finetune]\nbakbone: tiny_cnn\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: unknown key 'bakbone'.*Did you mean 'backbone'"):
        load_config(p)


def test_yaml_syntax_error_gives_line(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("target: digits\nstrategies: [finetune\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line"):
        load_config(p)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(tmp_path / "e.yaml")


def test_overrides(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("target: digits\nstrategies: [finetune]\n")
    cfg = load_config(p, ["split.labels_per_class=5", "backbone.name=tiny_cnn", "seeds=2"])
    assert cfg.split.labels_per_class == 5 and cfg.backbone.name == "tiny_cnn" and cfg.seeds == [0, 1]
    with pytest.raises(ConfigError, match="key=value"):
        load_config(p, ["nonsense"])
