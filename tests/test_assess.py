"""`transferkit assess` end to end on small data (digits pixels as table columns and a tiny
backbone: seconds). ``identity`` (alias ``none``) reads a table's columns, so the digits are
given as tables of their pixels (``_assess_data.digits_table``)."""

import json
import sys
from pathlib import Path

import pytest

from transferkit.assess import assess, make_verdict
from transferkit.cli import main
from transferkit.config import BackboneConfig

sys.path.insert(0, str(Path(__file__).parent))
from _assess_data import digits_npz, digits_table  # noqa: E402


@pytest.fixture(scope="module")
def shifted():
    mlp = BackboneConfig(name="tiny_mlp", pretrained=False, options={"in_features": 144})  # 12 x 12 pixels
    return assess(digits_table("digits:subset=0/2,size=12"), digits_table("digits:subset=1/2,size=12,rotate=60,seed=0"),
                  backbones=["none", mlp], n_permutations=50, max_samples=300, seed=0)


def test_assess_reports_every_part(shifted):
    r = shifted
    for k in ("mmd", "a_distance", "kl_gaussian", "js_gaussian", "kl_knn", "wasserstein", "sliced_wasserstein",
              "coral_distance", "ks_features", "mannwhitney_features"):
        assert k in r["divergences"] and "value" in r["divergences"][k]
    assert "p_value" in r["divergences"]["mmd"]
    assert r["backbones"] == ["identity", "tiny_mlp"]  # none is identity's alias: one name in the output
    assert set(r["transferability"]) == {"identity", "tiny_mlp"}
    assert "logme" in r["transferability"]["identity"]
    assert r["bound"]["kind"] == "estimate" and r["bound"]["estimate"] > 0
    # a 60-degree rotation breaks a source-only linear model on raw pixels (0.11 here; 0.96 on
    # an unrotated target, see test_no_shift_between_two_halves_of_the_same_domain)
    assert r["source_only_accuracy"] < 0.3


def test_a_60_degree_rotation_is_a_significant_shift(shifted):
    v = shifted["verdict"]
    assert v["shift_significant"] and shifted["divergences"]["mmd"]["p_value"] < 0.05
    assert "shift is significant" in v["text"] and "MMD p = 0.02, the smallest possible with 50 permutations" in v["text"]


def test_no_shift_between_two_halves_of_the_same_domain():
    r = assess(digits_table("digits:subset=0/2,size=12"), digits_table("digits:subset=1/2,size=12"), backbones=["none"],
               divergences=("mmd", "a_distance"), n_permutations=100, max_samples=300, seed=0)
    assert r["divergences"]["mmd"]["p_value"] > 0.05
    assert not r["verdict"]["shift_significant"]
    assert r["divergences"]["a_distance"]["value"] < 0.5
    assert r["source_only_accuracy"] > 0.9  # no shift: the source-only model works on the target


def test_verdict_rules():
    div = {"mmd": {"value": 0.1, "p_value": 0.001}, "a_distance": {"value": 1.8}}
    cnn = {"modality": "image", "backbone": "tiny_cnn", "raw_columns": False, "norm": "batchnorm"}
    v = make_verdict(div, {}, 0.3, 10, 100, context=cnn)
    assert v["shift_size"] == "large"
    assert "a source-only model will likely fail" in v["text"]
    assert "prefer fine-tuning (LP-FT, lower backbone rate, frozen BatchNorm)" in v["text"]
    assert "domain adaptation on the unlabeled target" in v["text"]
    assert "no target labels" in make_verdict(div, {}, None, None, 0, context=cnn)["text"]
    assert "feature extraction" in make_verdict(div, {}, None, 3, 30, context=cnn)["text"]
    # the same rules without a BatchNorm backbone: no BatchNorm advice
    vit = {**cnn, "backbone": "vit", "norm": "layernorm"}
    assert "prefer fine-tuning (LP-FT, lower backbone rate)" in make_verdict(div, {}, 0.3, 10, 100, context=vit)["text"]
    assert "BatchNorm" not in make_verdict(div, {}, 0.3, 10, 100, context=vit)["text"]


def test_assess_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "a"
    src = digits_npz(tmp_path, "digits:subset=0/2,size=12", "src")
    tgt = digits_npz(tmp_path, "digits:subset=1/2,size=12,invert=true", "tgt")
    argv = ["assess", "--source", src, "--target", tgt,
            "--backbone", "none", "--permutations", "20", "--max-samples", "200", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "verdict:" in printed and "logme" in printed
    res = json.loads((out / "assess.json").read_text())
    assert {"divergences", "transferability", "bound", "verdict"} <= set(res)
    assert res["divergences"]["mmd"]["p_value"] <= 1
    assert main(argv) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_rank_backbones_sorts_by_the_chosen_score():
    from transferkit.assess import rank_backbones

    table = digits_table("digits:size=8")  # 64 pixel columns: tiny_mlp's default width
    ranked = rank_backbones(table, ["tiny_mlp", "none"], score="logme")
    assert {r["backbone"] for r in ranked} == {"tiny_mlp", "identity"}
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert all(r["score"] == r["scores"]["logme"] for r in ranked)
    assert {"logme", "hscore", "hscore_shrinkage", "nleep"} <= set(ranked[0]["scores"])
    by_nleep = rank_backbones(table, ["tiny_mlp", "none"], score="nleep")
    assert [r["score"] for r in by_nleep] == sorted((r["score"] for r in by_nleep), reverse=True)
    with pytest.raises(Exception, match="applies to none"):
        rank_backbones(table, ["none"], score="leep")  # no source classifier anywhere


@pytest.mark.parametrize("kwargs,match", [
    ({"max_samples": 0}, r"max_samples\) must be >= 2, got 0"),
    ({"max_samples": 1}, r"max_samples\) must be >= 2"),
    ({"max_samples": 2.5}, r"max_samples\) must be an integer"),
    ({"n_permutations": 0}, r"n_permutations\) must be >= 1, got 0"),
    ({"n_permutations": 10**9}, r"n_permutations\) must be <= 100000"),
    ({"image_size": 0}, r"image_size\) must be >= 8, got 0"),
    ({"image_size": 10**5}, r"image_size\) must be <= 1024"),
    ({"seed": -1}, r"seed\)=-1 is out of range; a seed is a whole number 0 <= seed < 2\*\*32"),
    ({"seed": 2**32}, r"out of range"),
    ({"seed": True}, r"seed\)=True must be a whole number"),
    ({"backbones": []}, r"give at least one backbone"),
    ({"backbones": [""]}, r"must be a non-empty name"),
])
def test_assess_arguments_are_checked_before_any_data_is_loaded(kwargs, match, monkeypatch):
    import transferkit.data.spec as spec
    from transferkit.errors import ConfigError

    monkeypatch.setattr(spec, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the arguments were checked"))
    args = {"backbones": ["none"], **kwargs}
    with pytest.raises(ConfigError, match=match):
        assess("digits:size=8", "digits:size=8", **args)


def test_assess_with_a_random_init_backbone_is_deterministic(tmp_path):
    """tiny_cnn is randomly initialized: built from the seed, two runs give the same numbers, and
    a different global torch state (what ran before) does not change them."""
    import torch

    kw = dict(backbones=["tiny_cnn"], image_size=16, divergences=("mmd", "coral_distance"), n_permutations=10,
              max_samples=60, seed=3, cache_dir=False)
    torch.manual_seed(0)
    a = assess("digits:subset=0/2,size=8", "digits:subset=1/2,size=8,rotate=30", **kw)
    torch.manual_seed(12345)
    torch.rand(1000)
    b = assess("digits:subset=0/2,size=8", "digits:subset=1/2,size=8,rotate=30", **kw)
    for name in ("mmd", "coral_distance"):
        assert a["divergences"][name]["value"] == b["divergences"][name]["value"]
    assert a["transferability"] == b["transferability"]
    c = assess("digits:subset=0/2,size=8", "digits:subset=1/2,size=8,rotate=30", **{**kw, "seed": 4})
    assert c["divergences"]["coral_distance"]["value"] != a["divergences"]["coral_distance"]["value"]


def test_rank_backbones_is_deterministic_and_checks_its_arguments():
    from transferkit.assess import rank_backbones
    from transferkit.errors import ConfigError

    a = rank_backbones("digits:size=8", ["tiny_cnn"], image_size=16, seed=1)
    b = rank_backbones("digits:size=8", ["tiny_cnn"], image_size=16, seed=1)
    assert a == b
    with pytest.raises(ConfigError, match=r"seed\)=-2 is out of range"):
        rank_backbones("digits:size=8", ["tiny_cnn"], seed=-2)
