"""benchmarks/ensemble_hedge.py's pieces on tiny settings: the shuffled-label source, the
pretrained backbone file it writes, the two experiment configs, and the verdict's rule."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from transferkit.backbones import create_backbone
from transferkit.config import config_from_dict
from transferkit.data import DomainDataset

_ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = _ROOT / "benchmarks" / "ensemble_hedge.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ensemble_hedge_bench", _SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _images(n=60, side=16, seed=0):
    """``n`` random images in [0, 1] with balanced labels 0..9 (no data set to load)."""
    rng = np.random.default_rng(seed)
    return DomainDataset(rng.random((n, side, side), dtype=np.float32), np.arange(n) % 10, "noise", "image")


def test_shuffled_labels_are_a_seeded_permutation_that_breaks_the_image_label_relation(bench):
    y = np.random.default_rng(5).permutation(np.repeat(np.arange(10), 90))  # 900 labels, as the digits half
    a, b, c = bench.shuffled_labels(y, 0), bench.shuffled_labels(y, 0), bench.shuffled_labels(y, 1)
    np.testing.assert_array_equal(a, b)  # a fixed seed gives the same labels
    assert not np.array_equal(a, c)  # another seed, others
    np.testing.assert_array_equal(np.sort(a), np.sort(y))  # a permutation: the class counts stay
    # about 1 - sum_k p_k^2 = 0.9 of the labels change, and the new label says nothing about the
    # old one: each true class's new labels spread over every class (0.1 each expected)
    changed = np.mean(a != y)
    assert 0.85 < changed < 0.95, changed
    table = np.zeros((10, 10), int)
    np.add.at(table, (y, a), 1)
    share = table / table.sum(1, keepdims=True)  # the identity would give 1.0, a shift by one 0 and 1
    assert (table > 0).all() and share.max() < 0.3, share.max()
    src = _images()
    ds = bench.shuffled_dataset(src, 0)
    assert ds.inputs is src.inputs and ds.meta["shuffle_seed"] == 0
    np.testing.assert_array_equal(ds.labels, bench.shuffled_labels(src.labels, 0))
    np.testing.assert_array_equal(src.labels, np.arange(60) % 10)  # the source itself is not touched


def test_pretrained_file_loads_as_the_tiny_cnn_backbone_weights(bench, tmp_path, one_thread, monkeypatch):
    from transferkit.strategies import Scratch

    seen, fit = [], Scratch.fit

    def spy(self, train, *a, **k):  # what the one Trainer is given to learn
        seen.append((train.inputs, train.labels.copy(), self.pretrained, self.epochs))
        return fit(self, train, *a, **k)

    monkeypatch.setattr(Scratch, "fit", spy)
    src = _images()
    path = tmp_path / "pre" / "backbone.safetensors"
    info = bench.pretrain_shuffled(src, path, epochs=2, seed=3, image_size=16, width=4)
    (inputs, labels, pretrained, epochs), = seen
    assert inputs is src.inputs and not pretrained and epochs == 2  # from random init, on the source images
    np.testing.assert_array_equal(labels, bench.shuffled_labels(src.labels, 3))  # with the permuted labels
    assert info["shuffle_seed"] == 3 and info["epochs"] == 2 and info["n"] == len(src)
    assert info["fraction_relabeled"] == pytest.approx(np.mean(bench.shuffled_labels(src.labels, 3) != src.labels))
    assert 0 <= info["train_accuracy_shuffled"] <= 1 and np.isfinite(info["final_train_loss"])
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["transferkit.pretrain"])
    assert meta["epochs"] == 2
    loaded = create_backbone("tiny_cnn", image_size=16, width=4, weights=str(path))
    fresh = create_backbone("tiny_cnn", image_size=16, width=4, seed=0)
    own = loaded.state_dict()
    assert set(own) == set(saved)
    for k, v in saved.items():
        torch.testing.assert_close(own[k], v)
    # the weights moved away from an initialisation (trained, not a random net saved as is)
    assert any(not torch.equal(own[k], fresh.state_dict()[k]) for k in own if k.endswith("running_mean"))
    # the same file again whatever the global random state (the init is seeded too)
    torch.manual_seed(123)
    bench.pretrain_shuffled(src, tmp_path / "again.safetensors", epochs=2, seed=3, image_size=16, width=4)
    with safe_open(str(tmp_path / "again.safetensors"), "pt") as f:
        for k in saved:
            torch.testing.assert_close(f.get_tensor(k), saved[k], rtol=0, atol=0)


def test_configs_are_valid_experiments_with_the_ensemble_after_its_members(bench, tmp_path):
    demo = bench.demo_config(3)
    packaged = yaml.safe_load((_ROOT / "transferkit" / "configs" / "demo.yaml").read_text())
    for k in ("source", "target", "split", "backbone"):
        assert demo[k] == packaged[k]
    assert demo["strategies"] == [{"name": "scratch", "val_every": 1}, {"name": "finetune", "val_every": 1},
                                  {"name": "ensemble", "members": ["scratch", "finetune"]}]
    assert "feature_extraction" in bench.demo_config(3, feature_extraction=True)["strategies"]
    shuf = bench.shuffled_config(tmp_path / "w.safetensors", 3)
    assert shuf["target"] == packaged["target"] and shuf["split"] == packaged["split"]
    assert shuf["backbone"]["weights"] == str(tmp_path / "w.safetensors")
    for cfg in (demo, shuf):
        keys = [s.key for s in config_from_dict(cfg).strategies]
        assert keys == ["scratch", "finetune", "ensemble"]
    example = yaml.safe_load((_ROOT / "examples" / "ensemble_hedge.yaml").read_text())
    ex = config_from_dict(example)
    assert [s.key for s in ex.strategies] == ["scratch", "feature_extraction", "finetune", "ensemble"]
    assert {k: example[k] for k in ("source", "target", "split", "backbone", "seeds")} == \
        {k: packaged[k] for k in ("source", "target", "split", "backbone", "seeds")}


def test_verdict_uses_the_better_members_sample_std(bench):
    members = {"scratch": [0.50, 0.54, 0.52], "finetune": [0.90, 0.92, 0.88]}  # finetune: mean 0.90, std 0.02
    hold = bench.verdict(members, [0.885, 0.885, 0.885])
    assert hold["better_member"] == "finetune" and hold["better_mean"] == pytest.approx(0.90)
    assert hold["spread"] == pytest.approx(0.02)  # ddof=1 (ddof=0 would be 0.0163)
    assert hold["bound"] == pytest.approx(0.88) and hold["margin"] == pytest.approx(0.005) and hold["holds"]
    fail = bench.verdict(members, [0.87, 0.88, 0.88])  # mean 0.8767 < 0.88
    assert not fail["holds"] and fail["margin"] == pytest.approx(0.8766667 - 0.88, abs=1e-6)
    # between the ddof=0 bound (0.8837) and the ddof=1 bound (0.88): only the stated rule holds
    assert bench.verdict(members, [0.882] * 3)["holds"]
    # the spread is the better member's, not the worse one's (scratch's std is 0.02 too: change it)
    wide = {"scratch": [0.3, 0.7, 0.5], "finetune": [0.90, 0.90, 0.90]}
    v = bench.verdict(wide, [0.899] * 3)
    assert v["spread"] == 0.0 and not v["holds"]
    assert bench.verdict({"a": [0.6], "b": [0.5]}, [0.6])["spread"] == 0.0  # one seed: no spread


def test_case_rows_summarise_runs_and_ensemble_weights(bench):
    runs = []
    for seed, (s, f, e) in enumerate([(0.5, 0.9, 0.91), (0.6, 0.8, 0.8), (0.4, 0.7, 0.72)]):
        runs += [{"strategy": "scratch", "seed": seed, "accuracy": s},
                 {"strategy": "finetune", "seed": seed, "accuracy": f},
                 {"strategy": "ensemble", "seed": seed, "accuracy": e,
                  "ensemble": {"members": ["scratch", "finetune"], "weights": {"scratch": 0.1 * seed, "finetune":
                                                                               1 - 0.1 * seed},
                               "val_nll": {"scratch": 2.0, "finetune": 1.0 + seed, "ensemble": 0.9}}}]
    rows = bench.case_rows(runs)
    assert rows["finetune"]["mean"] == pytest.approx(0.8) and rows["finetune"]["std"] == pytest.approx(0.1)
    assert rows["scratch"]["min"] == 0.4 and rows["scratch"]["max"] == 0.6
    assert rows["ensemble"]["weights_mean"] == pytest.approx({"scratch": 0.1, "finetune": 0.9})
    assert rows["finetune"]["val_nll_mean"] == pytest.approx(2.0) and rows["ensemble"]["val_nll_mean"] == 0.9
    md = bench.markdown("x", "t", rows, bench.verdict({m: rows[m]["accuracies"] for m in bench.MEMBERS},
                                                      rows["ensemble"]["accuracies"]))
    assert "| ensemble | 0.810 ± 0.095 | 0.720 | 0.910 | 0.900 | scratch 0.100, finetune 0.900 |" in md
    assert "**holds**" in md
