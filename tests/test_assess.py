"""`transferkit assess` end to end on small data (raw pixels and a tiny backbone: seconds)."""

import json

import pytest

from transferkit.assess import assess, make_verdict
from transferkit.cli import main


@pytest.fixture(scope="module")
def shifted():
    return assess("digits:subset=0/2,size=12", "digits:subset=1/2,size=12,rotate=60,seed=0",
                  backbones=["none", "tiny_cnn"], image_size=16, n_permutations=50, max_samples=300, seed=0)


def test_assess_reports_every_part(shifted):
    r = shifted
    for k in ("mmd", "a_distance", "kl_gaussian", "js_gaussian", "kl_knn", "wasserstein", "sliced_wasserstein",
              "coral_distance", "ks_features", "mannwhitney_features"):
        assert k in r["divergences"] and "value" in r["divergences"][k]
    assert "p_value" in r["divergences"]["mmd"]
    assert set(r["transferability"]) == {"none", "tiny_cnn"}
    assert "logme" in r["transferability"]["none"]
    assert r["bound"]["kind"] == "estimate" and r["bound"]["estimate"] > 0
    assert 0 <= r["source_only_accuracy"] <= 1


def test_a_60_degree_rotation_is_a_significant_shift(shifted):
    v = shifted["verdict"]
    assert v["shift_significant"] and shifted["divergences"]["mmd"]["p_value"] < 0.05
    assert "shift is significant" in v["text"] and "MMD p = 0.02, the smallest possible with 50 permutations" in v["text"]


def test_no_shift_between_two_halves_of_the_same_domain():
    r = assess("digits:subset=0/2,size=12", "digits:subset=1/2,size=12", backbones=["none"],
               divergences=("mmd", "a_distance"), n_permutations=100, max_samples=300, seed=0)
    assert r["divergences"]["mmd"]["p_value"] > 0.05
    assert not r["verdict"]["shift_significant"]
    assert r["divergences"]["a_distance"]["value"] < 0.5


def test_verdict_rules():
    div = {"mmd": {"value": 0.1, "p_value": 0.001}, "a_distance": {"value": 1.8}}
    v = make_verdict(div, {}, 0.3, 10, 100)
    assert v["shift_size"] == "large"
    assert "a source-only model will likely fail" in v["text"]
    assert "prefer fine-tuning" in v["text"] and "domain adaptation on the unlabeled target" in v["text"]
    assert "no target labels" in make_verdict(div, {}, None, None, 0)["text"]
    assert "feature extraction" in make_verdict(div, {}, None, 3, 30)["text"]


def test_assess_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "a"
    argv = ["assess", "--source", "digits:subset=0/2,size=12", "--target", "digits:subset=1/2,size=12,invert=true",
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

    ranked = rank_backbones("digits:size=12", ["tiny_cnn", "none"], image_size=16, score="logme")
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert all(r["score"] == r["scores"]["logme"] for r in ranked)
    assert {"logme", "hscore", "hscore_shrinkage", "nleep"} <= set(ranked[0]["scores"])
    by_nleep = rank_backbones("digits:size=12", ["tiny_cnn", "none"], image_size=16, score="nleep")
    assert [r["score"] for r in by_nleep] == sorted((r["score"] for r in by_nleep), reverse=True)
    with pytest.raises(Exception, match="applies to none"):
        rank_backbones("digits:size=12", ["none"], score="leep")  # no source classifier anywhere
