"""``transferkit benchmark label-spaces``: arguments, a tiny run of every part, resume, tables."""

import json

import numpy as np
import pytest

from transferkit import labelspaces as L
from transferkit.cli import main
from transferkit.errors import ConfigError


@pytest.mark.parametrize("kw, msg", [
    ({"parts": ["partial", "opne_set"]}, r"unknown part 'opne_set'.*Did you mean 'open_set'"),
    ({"parts": []}, "at least one part"),
    ({"seeds": 0}, "seeds"),
    ({"epochs": 0}, "epochs"),
])
def test_bad_arguments_fail_before_any_work(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        L.check_label_space_args(**kw)


def test_cli_refuses_options_the_suite_fixes(tmp_path, capsys):
    assert main(["benchmark", "label-spaces", "--backbone", "tiny_cnn", "--out", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err
    assert "--backbone is fixed by the suite" in err and not (tmp_path / "x").exists()


@pytest.fixture
def tiny(monkeypatch):
    """The suite on tiny data: a random tiny_cnn at 16 px, small digit domains."""
    monkeypatch.setattr(L, "IMAGE_BACKBONE", "tiny_cnn")
    monkeypatch.setattr(L, "IMAGE_SIZE", 16)
    monkeypatch.setattr(L, "_FEATURES", {})
    src, tgt = "digits:subset=0/4,size=16", "digits:subset=1/4,size=16,rotate=20,seed=0"
    monkeypatch.setattr(L, "PARTIAL_TASKS", {"digits": {"source": src, "target": f"{tgt},{L._FIRST_FIVE}"}})
    monkeypatch.setattr(L, "OPEN_SET_TASKS", {"digits": {"source": f"{src},{L._FIRST_SIX}", "target": tgt,
                                                         "n_known": 6}})
    monkeypatch.setattr(L, "DOMAIN_TASKS", {"rot": {"modality": "image", "domains": {
        f"rot{r}": f"digits:subset={k}/6,size=16,rotate={r}" for k, r in enumerate((0, 30, 60))},
        "targets": ["rot60"]}})
    monkeypatch.setattr(L, "PARTIAL_METHODS", ["source_only", "pada"])
    monkeypatch.setattr(L, "MULTI_SOURCE_METHODS", ["single", "pooled", "m3sda"])
    monkeypatch.setattr(L, "DG_METHODS", ["erm", "vrex"])
    monkeypatch.setattr(L, "WEIGHT_GRID", [1.0])


def test_a_tiny_run_of_the_label_space_parts_resumes_and_tabulates(tiny, tmp_path, one_thread):
    out = tmp_path / "ls"
    parts = ["partial", "multi_source", "dg"]
    res = L.run_label_spaces_dir(out, parts=parts, seeds=1, epochs=1, echo=lambda *a: None)
    assert {r["method"] for r in res["partial"]} == {"source_only", "pada"}
    single = next(r for r in res["multi_source"] if r["method"] == "single")
    assert len(single["per_source"]) == 2 and single["best"] == max(single["per_source"])
    assert all(0 <= r["accuracy"] <= 1 for part in parts for r in res[part])
    md = (out / "results.md").read_text()
    assert "## Partial" in md and "## Multi-source" in md and "## Domain generalisation" in md and "Protocol:" in md
    n_cells = len(list((out / "cells").iterdir()))
    assert n_cells == 2 + 3 + 2
    seen = []
    again = L.run_label_spaces_dir(out, parts=parts, seeds=1, epochs=1, echo=seen.append)
    assert sum("complete, kept" in s for s in seen) == n_cells
    assert again["summary"] == res["summary"]
    with pytest.raises(ConfigError, match="other arguments"):
        L.run_label_spaces_dir(out, parts=parts, seeds=2, epochs=1, echo=lambda *a: None)


def test_partial_cells_never_read_the_target_pool_labels(tiny, monkeypatch, one_thread):
    """The pool handed to a method is label-free; only the test split is scored."""
    pool_labels = []
    real = L._pool_test

    def spy(ds, seed):
        pool, test = real(ds, seed)
        pool_labels.append(pool.labels.copy())
        return pool, test

    monkeypatch.setattr(L, "_pool_test", spy)
    L._partial_cell("digits", "pada", 0, 1)
    assert (pool_labels[0] == -1).all()


def test_summary_and_markdown_on_synthetic_cells():
    res = {"partial": [{"task": "digits", "method": m, "seed": s, "accuracy": a}
                       for m, acc in (("source_only", [0.5, 0.7]), ("pada", [0.6, 0.8])) for s, a in enumerate(acc)],
           "zero_shot": [{"task": "fashion", "method": "eszsl", "embedding": "glove", "seed": 0, "unseen_accuracy": 0.4,
                          "gzsl_seen": 0.6, "gzsl_unseen": 0.1, "gzsl_h": 0.17, "cs_seen": 0.4, "cs_unseen": 0.3,
                          "cs_h": 0.34}]}
    s = L.summarize(res)
    po = next(r for r in s["partial"] if r["method"] == "pada")
    assert po["accuracy"]["mean"] == pytest.approx(0.7) and po["n_seeds"] == 2
    md = L.markdown(res)
    assert "| digits | 0.600 ± " in md and "0.700 ± " in md and "| fashion | eszsl | glove | 0.400" in md
    json.dumps(s)  # the summary is what results.json holds


def test_zero_shot_class_splits_are_five_and_five_and_differ_by_seed():
    splits = [L._class_split(s) for s in range(3)]
    for seen, unseen in splits:
        assert len(seen) == len(unseen) == 5 and sorted(seen + unseen) == list(range(10))
    assert len({tuple(s) for s, _ in splits}) == 3
    assert np.array_equal(L._class_split(0)[0], L._class_split(0)[0])
