"""``sources: [...]`` in an experiment, and the label-space rules of closed-set strategies."""

import numpy as np
import pytest

from transferkit.config import config_from_dict
from transferkit.data import DomainDataset, concat_datasets
from transferkit.errors import ConfigError, DataError
from transferkit.experiment import run_experiment, source_datasets, validate_run

BASE = {"split": {"labels_per_class": 0, "unlabeled_fraction": 0.5, "val_fraction": 0},
        "backbone": {"name": "tiny_cnn", "image_size": 16}, "seeds": [0]}


def _cfg(**kw):
    return config_from_dict({**BASE, **kw})


def test_sources_are_pooled_for_single_source_strategies_and_listed_for_multi_source_ones():
    cfg = _cfg(target="digits:subset=1/2,rotate=40",
               sources=["digits:subset=0/4,rotate=0", "digits:subset=1/4,rotate=20"],
               strategies=[{"name": "source_only", "epochs": 1}])
    target, source, _, _ = validate_run(cfg)
    parts = source_datasets(source)
    assert len(parts) == 2 and len(source) == sum(map(len, parts))
    assert source.meta["attributes"]["domain"].tolist() == [0] * len(parts[0]) + [1] * len(parts[1])
    assert np.array_equal(source.labels, np.concatenate([p.labels for p in parts]))
    assert source_datasets(parts[0]) == [parts[0]]


def test_pooled_sources_run_end_to_end(tmp_path, one_thread):
    cfg = _cfg(target="digits:subset=1/2,rotate=40", sources=["digits:subset=0/4", "digits:subset=1/4,rotate=20"],
               strategies=[{"name": "source_only", "epochs": 1}])
    out = run_experiment(cfg, tmp_path / "run", echo=lambda *a: None)
    assert 0 <= out["runs"][0]["accuracy"] <= 1
    import json

    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["source"] == "digits:subset=0/4 + digits:subset=1/4,rotate=20"


def test_sources_of_different_widths_are_one_error():
    cfg = _cfg(target="digits:rotate=40", sources=["digits:size=16", "digits:size=24"],
               strategies=[{"name": "source_only", "epochs": 1}])
    with pytest.raises(DataError, match=r"sources\[1\].*shape.*sources\[0\]") as e:
        validate_run(cfg)
    assert "\n" not in str(e.value)


def test_a_target_class_outside_the_source_label_space_names_open_set_and_partial():
    cfg = _cfg(target="digits:subset=1/2", source="digits:subset=0/2,keep_classes=[0,1,2,3,4,5]",
               strategies=[{"name": "adapt", "method": "dann", "epochs": 1}])
    with pytest.raises(DataError, match=r"closed-set.*4 class\(es\).*\(6, 7, 8, 9\).*open_set.*pada") as e:
        validate_run(cfg)
    assert "\n" not in str(e.value)
    # a partial target (a subset of the source's classes) is allowed
    ok = _cfg(target="digits:subset=1/2,keep_classes=[0,1,2]", source="digits:subset=0/2",
              strategies=[{"name": "adapt", "method": "dann", "epochs": 1}])
    validate_run(ok)
    # fine-tuning from a source task with other classes is ordinary transfer: not checked
    ft = _cfg(target="digits:subset=1/2", source="digits:subset=0/2,keep_classes=[0,1]",
              split={"labels_per_class": 5}, strategies=[{"name": "finetune", "epochs": 1}])
    validate_run(ft)


def test_source_and_sources_together_is_an_error():
    with pytest.raises(ConfigError, match="either 'source'.*or 'sources'"):
        _cfg(target="digits", source="digits", sources=["digits"])


def test_concat_datasets_checks_and_keeps_domains_through_subset():
    a = DomainDataset(np.zeros((3, 2), np.float32), np.array([0, 1, 0]), "a", "tabular", classes=["x", "y"])
    b = DomainDataset(np.ones((2, 2), np.float32), np.array([1, 1]), "b", "tabular", classes=["x", "y"])
    p = concat_datasets([a, b])
    assert p.name == "a+b" and p.subset([4, 0]).meta["attributes"]["domain"].tolist() == [1, 0]
    with pytest.raises(DataError, match="same class list"):
        concat_datasets([a, DomainDataset(np.zeros((1, 2), np.float32), np.array([0]), "c", "tabular",
                                          classes=["x", "z"])])


def test_an_open_set_run_records_its_open_set_scores(tmp_path, one_thread):
    """``open_set`` from a source that shows classes 0-5 to a target holding all ten: the run
    passes the label-space check, and result.json holds OS, OS*, UNK and the H-score of the test
    split (classes 6-9 the unknown), consistent with its recorded accuracy."""
    import json

    cfg = _cfg(target="digits:subset=1/2", source="digits:subset=0/2,keep_classes=[0,1,2,3,4,5]",
               strategies=[{"name": "open_set", "method": "osbp", "epochs": 2, "bottleneck": 16}])
    run_experiment(cfg, tmp_path / "run", echo=lambda *a: None)
    res = json.loads((tmp_path / "run" / "open_set" / "seed0" / "result.json").read_text())
    o = res["open_set"]
    assert set(o) == {"h_score", "os", "os_star", "unk", "n_unknown"}
    assert o["n_unknown"] > 0 and all(0 <= o[k] <= 1 for k in ("h_score", "os", "os_star", "unk"))
    h = 2 * o["os_star"] * o["unk"] / (o["os_star"] + o["unk"]) if o["os_star"] + o["unk"] > 0 else 0.0
    assert o["h_score"] == pytest.approx(h)


@pytest.mark.parametrize("name", ["partial_digits", "open_set_fashion", "multi_source_rotations"])
def test_the_label_space_examples_validate(name):
    """examples/label_spaces/*.yaml pass every check a run makes before training (on tiny_cnn,
    so the test stays fast; the files themselves name EfficientNet-Lite0)."""
    from pathlib import Path

    from transferkit.config import load_config

    from transferkit.data import real

    path = Path(__file__).resolve().parents[1] / "examples" / "label_spaces" / f"{name}.yaml"
    fashion = Path(real.FASHION_MNIST_DIR)
    if "fashion_mnist" in path.read_text() and not all((fashion / f).is_file() for f in real.FASHION_MNIST_SHA256):
        pytest.skip("Fashion-MNIST files absent: the Debian package dataset-fashion-mnist is not installed")
    cfg = load_config(path, overrides=["backbone.name=tiny_cnn", "backbone.image_size=16"])
    target, source, _, strategies = validate_run(cfg)
    assert source is not None and len(strategies) >= 3
