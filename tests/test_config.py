import pytest

from transferkit.config import config_from_dict, load_config
from transferkit.errors import ConfigError

BASE = {"target": "digits", "strategies": ["finetune"]}


def test_defaults_resolve():
    cfg = config_from_dict(dict(BASE))
    assert cfg.seeds == [0, 1, 2]
    assert cfg.backbone.name == "auto"  # made concrete from the data: images get EfficientNet-Lite0
    assert cfg.strategies[0].name == "finetune"


def test_auto_backbone_follows_the_modality_and_none_is_identity():
    import numpy as np

    from transferkit.config import BackboneConfig
    from transferkit.data import DomainDataset
    from transferkit.errors import ConfigError

    table = DomainDataset(inputs=np.zeros((4, 6), np.float32), labels=np.array([0, 1, 0, 1]), name="t",
                          modality="tabular")
    text = DomainDataset(inputs=["a", "b"], labels=np.array([0, 1]), name="x", modality="text")
    image = DomainDataset(inputs=np.zeros((2, 8, 8), np.float32), labels=np.array([0, 1]), name="i", modality="image")
    auto = BackboneConfig()
    assert auto.resolved(table).name == "identity" and auto.resolved(table).options == {"in_features": 6}
    assert auto.resolved(text).name == "minilm"
    assert auto.resolved(image).name == "efficientnet_lite0"
    assert auto.options == {}  # a copy: the section itself is not changed
    cfg = config_from_dict({**BASE, "backbone": {"name": "none"}})
    assert cfg.backbone.name == "identity"
    assert cfg.backbone.resolved(table).options == {"in_features": 6}
    assert BackboneConfig("identity", options={"in_features": 3}).resolved(table).options == {"in_features": 3}
    with pytest.raises(ConfigError, match="uses the columns of a table.*'x' is text"):
        cfg.backbone.resolved(text)


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


# ----------------------------------------------------------------------------- safe YAML
def _write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_alias_bomb_fails_fast(tmp_path):
    import time

    lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x]'] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    p = _write(tmp_path, "\n".join(lines) + "\ntarget: digits\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"exp\.yaml: expands to more than 100,000 values"):
        load_config(p)
    assert time.perf_counter() - t0 < 5


def test_many_aliases_are_refused(tmp_path):
    p = _write(tmp_path, "a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\ntarget: digits\n")
    with pytest.raises(ConfigError, match=r"more than 100 YAML aliases"):
        load_config(p)


def test_a_few_aliases_and_merge_keys_still_work(tmp_path):
    from transferkit.config import safe_load_yaml

    data = safe_load_yaml("base: &b {lr: 0.1, epochs: 2}\nft: {<<: *b, lr: 0.01}\nboth: [*b, *b]\n", "x")
    assert data["ft"] == {"lr": 0.01, "epochs": 2} and data["both"] == [data["base"]] * 2


@pytest.mark.parametrize("opening,closing", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_one_config_error(tmp_path, opening, closing):
    p = _write(tmp_path, "target: digits\nsplit: " + opening * 50_000 + ("1" if "{" in opening else "")
               + closing * 50_000 + "\n")
    with pytest.raises(ConfigError, match=r"nested deeper than 64 levels at line 2; .*flatten it"):
        load_config(p)


def test_a_value_containing_itself_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"alias \*s at line 1 is inside the value it names"):
        load_config(_write(tmp_path, "strategies: &s [scratch, *s]\ntarget: digits\n"))


@pytest.mark.parametrize("text,match", [
    ("target: digits\nseeds: [0]\nseeds: [1]\n", r"duplicate key 'seeds' at line 3 \(first at line 2\)"),
    ("target: digits\nsplit:\n  val_fraction: 0.5\n  val_fraction: 0.2\n", r"duplicate key 'val_fraction' at line 4"),
    ("target: digits\nstrategies: [{name: finetune, lr: 0.1, lr: 0.2}]\n", r"duplicate key 'lr' at line 2"),
])
def test_duplicate_keys_are_named_with_their_line(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match + r".*keep one of them"):
        load_config(_write(tmp_path, text))


def test_non_utf8_directory_and_oversized_files(tmp_path):
    with pytest.raises(ConfigError, match=r"exp\.yaml' is not UTF-8 text \(byte 0xe9 at offset 20\); save it as UTF-8"):
        load_config(_write(tmp_path, "target: digits\n# caf\xe9\n".encode("latin-1")))
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"d\.yaml' is a directory, not a file"):
        load_config(tmp_path / "d.yaml")
    with pytest.raises(ConfigError, match=r"at most 1,048,576 bytes"):
        load_config(_write(tmp_path, "target: digits\n" + "#" * (1 << 20)))
    assert load_config(_write(tmp_path, "\ufefftarget: digits\nstrategies: [finetune]\n")).target == "digits"  # BOM


def test_python_tags_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"only plain YAML data"):
        load_config(_write(tmp_path, "target: !!python/object/apply:os.system ['true']\n"))


@pytest.mark.parametrize("override,match", [
    ("lr=[1", r"--set 'lr=\[1': YAML syntax error at line 1.*fix the value after '='"),
    ("x=@a", r"--set 'x=@a': YAML syntax error"),
    ("a..b=1", r"--set 'a..b=1': the key 'a..b' has an empty part"),
    ("novalue", r"--set 'novalue' must look like key=value"),
    ("seeds.x=1", r"'seeds' is not a mapping"),
    ("x=" + "[" * 100 + "]" * 100, r"nested deeper than 64"),
])
def test_set_errors_name_the_item(override, match):
    from transferkit.config import apply_override

    with pytest.raises(ConfigError, match=match):
        apply_override({"target": "digits", "seeds": [0]}, override)


def test_resume_config_and_report_use_the_one_loader():
    """No module reads YAML with yaml.load/yaml.safe_load except through safe_load_yaml."""
    import pathlib
    import re

    import transferkit

    root = pathlib.Path(transferkit.__file__).parent
    mine = ["config.py", "reports/build.py", "assess.py", "backbones/__init__.py"]
    for rel in mine:
        text = (root / rel).read_text()
        assert not re.search(r"yaml\.(safe_)?load\(", text.replace("yaml.load(text, Loader=_LOADER)", "")), rel


# ----------------------------------------------------------------------------- config values
@pytest.mark.parametrize("seeds,match", [
    ([-1], r"seeds\[0\]=-1 is out of range; a seed is a whole number 0 <= seed < 2\*\*32"),
    ([0, 0], r"seeds lists seed 0 more than once; .*distinct seeds"),
    ([True], r"seeds\[0\]=True must be a whole number"),
    ([1.5], r"seeds\[0\]=1.5 must be a whole number"),
    ([2**32], r"out of range"),
    (True, r"seeds=True must be a positive count"),
    (-2, r"seeds must be >= 1"),
    (10**6, r"seeds must be <= 10000"),
    ([], r"non-empty list"),
])
def test_bad_seeds(seeds, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({**BASE, "seeds": seeds})


def test_good_seeds():
    assert config_from_dict({**BASE, "seeds": [0, 2**32 - 1]}).seeds == [0, 2**32 - 1]
    assert config_from_dict({**BASE, "seeds": 2}).seeds == [0, 1]


@pytest.mark.parametrize("label", ["../..", "/abs", "a/b", "a\\b", ".hidden", "..", ".", "-rf", "", "x" * 101,
                                   "a\x00b", "tab\there", "café", 7])
def test_unsafe_labels(label):
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.label.*(letters, digits|must be a string)"):
        config_from_dict({**BASE, "strategies": [{"name": "finetune", "label": label}]})


@pytest.mark.parametrize("label", ["jan+mcc", "finetune_no_lp_init", "v1.2", "A-b_c", "x" * 100])
def test_safe_labels(label):
    assert config_from_dict({**BASE, "strategies": [{"name": "finetune", "label": label}]}).strategies[0].key == label


def test_check_name_messages():
    from transferkit._validation import check_name

    with pytest.raises(ConfigError, match=r"name='a/b' is not a safe name: it contains '/'"):
        check_name("name", "a/b")
    with pytest.raises(ConfigError, match=r"starts with '-'"):
        check_name("name", "-x")
    assert check_name("name", "diagnose-demo") == "diagnose-demo"


@pytest.mark.parametrize("change,match", [
    ({"name": "../x"}, r"^name='../x' is not a safe name"),
    ({"name": ""}, r"^name is empty"),
    ({"backbone": {"name": "tiny_cnn", "pretrained": "no"}}, r"backbone\.pretrained='no' must be true or false"),
    ({"backbone": {"name": "tiny_cnn", "options": [1]}}, r"backbone\.options=\[1\] must be a mapping"),
    ({"backbone": {"name": "tiny_cnn", "options": {"pretrained": True}}}, r"duplicates backbone\.pretrained"),
    ({"backbone": {"name": "tiny_cnn", "weights": 3}}, r"backbone\.weights=3 must be a non-empty string"),
    ({"backbone": {"name": ""}}, r"backbone\.name='' must be a non-empty string"),
    ({"backbone": {"name": "tiny_cnn", "image_size": True}}, r"image_size must be a number, got True"),
    ({"backbone": {"name": "tiny_cnn", "image_size": float("inf")}}, r"not a finite number"),
    ({"device": 1}, r"device=1 must be a non-empty string"),
    ({"output_dir": "a\x00b"}, r"output_dir='a\\x00b' must be a non-empty string"),
    ({"cache_dir": []}, r"cache_dir=\[\] must be a non-empty string"),
    ({"progress": "yes please"}, r"progress='yes please' must be true or false"),
    ({"target": ""}, r"target='' must be a dataset spec"),
    ({"source": 5}, r"source=5 must be a dataset spec"),
    ({"split": {"val": 3}}, r"split\.val=3 must be a dataset spec"),
    ({"strategies": [{"name": "finetune", "lr": float("inf")}]}, r"strategies\[0\]\.lr=inf is not a finite number"),
    ({"strategies": [{"name": "finetune", "lr": "1e400"}]}, r"lr must be a finite number, got inf"),
    ({"strategies": [{"name": "finetune", "epochs": True}]}, r"epochs must be a number, got True"),
    ({"strategies": [{"name": "finetune", "seed": -1}]}, r"seed must be >= 0"),
    ({"strategies": [{"name": "finetune", "params": [1]}]}, r"params=\[1\] must be a mapping"),
    ({"strategies": [{"name": 3}]}, r"strategies\[0\]\.name=3 must be a strategy name"),
    ({"backbone": {"name": "tiny_cnn", "options": {"width": float("nan")}}}, r"backbone\.options\.width=nan"),
    ({"diagnose": {"n_resamples": 10**9}}, r"n_resamples must be <= 1000000"),
])
def test_every_field_is_checked(change, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({**BASE, **change})


def test_check_number_refuses_bools_and_non_finite_values():
    from transferkit._validation import check_number

    for bad in (True, float("inf"), float("-inf"), float("nan"), "inf", "nan", "1e400"):
        with pytest.raises(ConfigError, match="must be a (finite )?number"):
            check_number("p", bad)
        with pytest.raises(ConfigError, match="must be a (finite )?number"):
            check_number("p", bad, integer=True)  # int(inf) raised OverflowError before
    assert check_number("p", "1e3", integer=True) == 1000 and check_number("p", "1e-3") == 0.001


def test_suggestions_list_equally_close_names_in_their_natural_order():
    from transferkit._validation import suggest

    names = ["efficientnet_lite2", "efficientnet_lite0", "tiny_cnn", "efficientnet_lite1"]
    assert suggest("efficientnet_lite9", names) == (
        " Did you mean 'efficientnet_lite0', 'efficientnet_lite1' or 'efficientnet_lite2'?")
    # the closest comes first whatever the order of the choices
    assert suggest("tiny_cn", ["tiny_mlp", "tiny_cnn"]).startswith(" Did you mean 'tiny_cnn'")
    assert suggest("zzz", names) == "" and suggest("tiny_cnm", names) == " Did you mean 'tiny_cnn'?"
