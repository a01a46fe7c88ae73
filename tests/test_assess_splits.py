"""`transferkit assess` reads the labels of the run's training split only (issue 11, item 2).

The split is the run's own: the indices assess uses are the ones ``run`` trains on for the same
config and seed (recorded here from the run's own ``make_splits`` call), test labels never move
its numbers, and the output says how many labels it read. Raw pixels read as table columns
(``backbone none``, identity's alias, on ``_assess_data.digits_table``) keep every test to seconds.
"""

import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml

from transferkit.assess import assess, target_split
from transferkit.cli import main
from transferkit.config import SplitConfig, config_from_dict, safe_load_yaml
from transferkit.data import DomainDataset
from transferkit.data.spec import load_dataset
from transferkit.experiment import make_splits

sys.path.insert(0, str(Path(__file__).parent / "cli"))
sys.path.insert(0, str(Path(__file__).parent))
from _assess_data import digits_npz, digits_table  # noqa: E402
from _badinput import check_case  # noqa: E402

SMALL = dict(divergences=("mmd", "a_distance", "coral_distance"), n_permutations=20, max_samples=2000)


def _demo():
    text = resources.files("transferkit.configs").joinpath("demo.yaml").read_text()
    return config_from_dict(safe_load_yaml(text, "demo.yaml"))


def _run_split(target, split, seed, monkeypatch):
    """The indices of the run's train/val/test datasets: ``make_splits`` called as
    ``_run_experiment`` calls it, with ``DomainDataset.subset`` recording what it takes."""
    taken = {}
    orig = DomainDataset.subset

    def subset(self, indices, name=None):
        if self is target:
            taken[(name or "").rsplit("/", 1)[-1]] = np.asarray(indices, dtype=np.int64)
        return orig(self, indices, name)

    with monkeypatch.context() as m:
        m.setattr(DomainDataset, "subset", subset)
        train, val, test = make_splits(target, split, seed, load=load_dataset)
    assert set(taken) == {"train", "val", "test"}
    return taken


@pytest.fixture(scope="module")
def demo_target():
    return load_dataset(_demo().target)


@pytest.fixture(scope="module")
def small_demo(demo_target):
    """The demo's source and target at 8x8 pixels, as tables of their 64 pixels (seconds, not
    minutes): the same samples and labels, hence the same splits."""
    src, tgt = digits_table("digits:subset=0/2,size=8"), digits_table(_demo().target + ",size=8")
    np.testing.assert_array_equal(tgt.labels, demo_target.labels)
    return src, tgt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_split_is_the_runs_training_split_of_the_demo(seed, demo_target, monkeypatch):
    cfg = _demo()
    run = _run_split(demo_target, cfg.split, seed, monkeypatch)
    sp = target_split(demo_target, cfg.split, seed=seed)
    np.testing.assert_array_equal(sp.train_labeled, np.sort(run["train"]))
    np.testing.assert_array_equal(sp.test, np.sort(run["test"]))
    np.testing.assert_array_equal(sp.val, np.sort(run["val"]))
    assert len(sp.train_labeled) == 100 and len(sp.train_unlabeled) == 0
    assert not np.intersect1d(sp.train_labeled, run["test"]).size
    assert not np.intersect1d(sp.train_labeled, run["val"]).size
    assert not np.intersect1d(sp.pool, run["test"]).size  # test inputs are not used, even unlabeled
    np.testing.assert_array_equal(sp.pool, np.sort(np.r_[run["train"], run["val"]]))


def _indexed(target, extra=3, seed=0):
    """A tabular stand-in for ``target``: its labels, and inputs whose first column is the
    sample's index (so the rows assess passes on say which samples they are)."""
    rng = np.random.default_rng(seed)
    X = np.c_[np.arange(len(target)), rng.normal(size=(len(target), extra))].astype(np.float32)
    return DomainDataset(X, target.labels.copy(), name="indexed", modality="tabular", classes=target.classes)


def test_assess_computes_label_based_numbers_on_exactly_the_runs_training_samples(demo_target, monkeypatch):
    """Spy on what assess hands to the transferability scores and the bound: the rows are the
    run's training samples of the demo split, with their labels, and no other."""
    import transferkit.assess as A
    import transferkit.diagnostics as D

    cfg = _demo()
    tgt = _indexed(demo_target)
    rng = np.random.default_rng(1)
    src = DomainDataset(rng.normal(size=(300, 4)).astype(np.float32), rng.integers(0, 10, 300), name="src",
                        modality="tabular")
    seen = {}
    real_scores, real_bound = A.backbone_scores, D.ben_david_bound

    def scores(model, F, labels, **kw):
        seen["scores"] = (F[:, 0].astype(np.int64), np.asarray(labels))
        return real_scores(model, F, labels, **kw)

    def bound(Fs, ys, Ft, yt, **kw):
        seen["bound"] = (Ft[:, 0].astype(np.int64), np.asarray(yt))
        return real_bound(Fs, ys, Ft, yt, **kw)

    monkeypatch.setattr(A, "backbone_scores", scores)
    monkeypatch.setattr(D, "ben_david_bound", bound)
    res = assess(src, tgt, backbones=["none"], split=cfg.split, seed=0, return_features=True, **SMALL)
    monkeypatch.undo()
    run = _run_split(demo_target, cfg.split, 0, monkeypatch)
    for key in ("scores", "bound"):
        rows, labels = seen[key]
        np.testing.assert_array_equal(np.sort(rows), np.sort(run["train"]))
        np.testing.assert_array_equal(labels, demo_target.labels[rows])
    used = res["features"]["target"][:, 0].astype(np.int64)  # every pooled input (max_samples > pool)
    assert not np.intersect1d(used, run["test"]).size and len(used) == len(run["train"]) + len(run["val"])
    y = res["features"]["y_target"]  # the t-SNE colours show only the training labels
    assert set(used[y >= 0]) == set(run["train"]) and (y[~np.isin(used, run["train"])] == -1).all()
    assert res["target_split"]["n_labels_used"] == 100


def _swap_within(labels, members):
    """Swap the labels of consecutive samples ``i, i+1`` that are both in ``members`` and differ
    (disjoint pairs). No sample lies between them, so every class keeps its size and the
    samples' ranks inside their classes: the run's split is unchanged (checked by the caller)."""
    y, inside, i, n = labels.copy(), np.zeros(len(labels), bool), 0, 0
    inside[members] = True
    while i < len(y) - 1:
        if inside[i] and inside[i + 1] and y[i] != y[i + 1]:
            y[i], y[i + 1] = y[i + 1], y[i]
            n += 1
            i += 2
        else:
            i += 1
    return y, n


def _with_labels(ds, labels):
    return DomainDataset(ds.inputs, labels, name=ds.name, modality=ds.modality, classes=ds.classes, spec=ds.spec)


def _timeless(obj):
    """``obj`` without the divergences' ``seconds`` (timings differ between two runs)."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if k != "seconds"}
    return obj


LABEL_BASED = ("transferability", "source_only_accuracy", "target_oracle", "label_shift_estimate", "bound", "verdict",
               "divergences", "target_split")


@pytest.mark.parametrize("split", [{"labels_per_class": 10, "val_fraction": 0.5},  # the demo's split
                                   {}])  # run's default split (train_fraction 0.6)
def test_poisoned_validation_and_test_labels_do_not_move_any_number(split, small_demo, monkeypatch):
    """Swap labels all over the validation and test splits (keeping the split itself, which is
    checked): assess gives the same numbers. Swapping training labels does move them."""
    sp_cfg = SplitConfig(**split)
    src, demo_target = small_demo
    run = _run_split(demo_target, sp_cfg, 0, monkeypatch)
    y, n_test = _swap_within(demo_target.labels, run["test"])
    y, n_val = _swap_within(y, run["val"])
    poisoned = _with_labels(demo_target, y)
    assert n_test >= 20 and n_val >= 20 and (y != demo_target.labels).sum() >= 80
    after = _run_split(poisoned, sp_cfg, 0, monkeypatch)
    for k in run:
        np.testing.assert_array_equal(after[k], run[k])  # the poison left the split as it was

    kw = dict(backbones=["none"], split=split, seed=0, **SMALL)
    clean, dirty = assess(src, demo_target, **kw), assess(src, poisoned, **kw)
    for key in LABEL_BASED:
        assert _timeless(clean[key]) == _timeless(dirty[key]), key
    assert clean["bound"]["estimate"] is not None and clean["transferability"]
    if "labels_per_class" not in split:  # a stratified draw: label shift from the training labels alone
        from transferkit.metrics.divergence import label_shift

        want = label_shift(src.labels, demo_target.labels[run["train"]], 10).to_dict()
        assert _timeless(clean["divergences"]["label_shift"]) == _timeless(want)

    y_train, n_train = _swap_within(demo_target.labels, run["train"])  # the test has power
    assert n_train >= 2
    assert _run_split(_with_labels(demo_target, y_train), sp_cfg, 0, monkeypatch)["train"].tolist() == \
        run["train"].tolist()
    moved = assess(src, _with_labels(demo_target, y_train), **kw)
    assert moved["transferability"] != clean["transferability"]


def test_the_output_counts_the_labels_it_used(small_demo):
    src, demo_target = small_demo
    res = assess(src, demo_target, backbones=["none"], labels_per_class=10, seed=0, **SMALL)
    sp = res["target_split"]
    assert sp["n_labels_used"] == 100 and set(sp["labels_per_class_used"].values()) == {10}
    assert sp["split"]["labels_per_class"] == 10 and sp["seed"] == 0
    assert sp["n_val_held_out"] + sp["n_test_held_out"] == 796 and sp["n_test_held_out"] > 0
    assert sp["n_unlabeled_inputs"] == 896 - sp["n_test_held_out"]
    assert res["n_target_labeled"] == 896  # what the target holds; n_labels_used is what assess read
    assert "with 10 labels per class" in res["verdict"]["text"]  # not 87: the test split is not counted
    assert "target's 100 training labels" in res["verdict"]["text"]
    assert "label_shift" not in res["divergences"]  # a per-class draw says nothing about frequencies
    assert any("label_shift not measured" in n for n in sp["notes"])

    default = assess(src, demo_target, backbones=["none"], seed=0, **SMALL)["target_split"]
    run_train = make_splits(demo_target, SplitConfig(), 0)[0]
    assert default["n_labels_used"] == len(run_train) and default["from"].startswith("the default split")
    assert default["n_test_held_out"] > 0


def test_an_unlabeled_target_is_assessed_on_all_its_inputs(tmp_path):
    p = tmp_path / "u.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x=rng.normal(size=(60, 4)), y=np.full(60, -1))
    src = DomainDataset(rng.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3, name="s", modality="tabular")
    res = assess(src, str(p), backbones=["none"], **SMALL)
    sp = res["target_split"]
    assert sp["n_labels_used"] == 0 and sp["n_unlabeled_inputs"] == 60 and sp["n_test_held_out"] == 0
    assert "no target labels" in res["verdict"]["text"] and not res["transferability"]
    from transferkit.errors import DataError

    with pytest.raises(DataError, match="has no labels, so there is no split"):
        assess(src, str(p), backbones=["none"], labels_per_class=2, **SMALL)


def test_split_options_are_checked_before_any_data_is_loaded(monkeypatch):
    import transferkit.data.spec as spec
    from transferkit.errors import ConfigError

    monkeypatch.setattr(spec, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the split was checked"))
    for kw, match in (({"labels_per_class": 0}, r"--labels-per-class \(labels_per_class\) must be >= 1, got 0"),
                      ({"labels_per_class": 2.5}, r"labels_per_class\) must be an integer"),
                      ({"split": {"val_fraction": 1.5}}, r"split.val_fraction"),
                      ({"split": {"labels_per_clas": 3}}, r"unknown key split.'labels_per_clas'.*labels_per_class"),
                      ({"split": "ten"}, r"split='ten' must be a SplitConfig or a mapping")):
        with pytest.raises(ConfigError, match=match):
            assess("digits:size=8", "digits:size=8", backbones=["none"], **kw)


# ---------------------------------------------------------------------------- the command line
def _tables(tmp: Path) -> tuple[str, str]:
    """The experiment's source and target: 8x8 digits as tables of their pixels (npz files)."""
    return (digits_npz(tmp, "digits:subset=0/2,size=8", "src"),
            digits_npz(tmp, "digits:subset=1/2,size=8,rotate=30", "tgt"))


def _exp(tmp: Path, **changes) -> str:
    source, target = _tables(tmp)
    data = {"name": "a", "seeds": [3, 4], "source": source,
            "target": target, "split": {"labels_per_class": 5, "val_fraction": 0.5},
            "backbone": {"name": "none"}, "strategies": ["scratch"], **changes}
    data = {k: v for k, v in data.items() if v is not None}
    p = tmp / "exp.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(p)


FAST = ["--permutations", "20", "--max-samples", "300", "--no-report"]


def test_cli_config_takes_the_runs_split_of_its_first_seed(tmp_path, capsys):
    cfg_path = _exp(tmp_path)
    assert main(["assess", "--config", cfg_path, "--out", str(tmp_path / "a"), *FAST]) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "a" / "assess.json").read_text())
    tgt = load_dataset("digits:subset=1/2,size=8,rotate=30")
    want = target_split(tgt, SplitConfig(labels_per_class=5, val_fraction=0.5), seed=3)
    sp = res["target_split"]
    assert res["seed"] == 3 and sp["seed"] == 3 and sp["from"] == cfg_path
    assert sp["n_labels_used"] == 50 == len(want.train_labeled) and sp["n_test_held_out"] == len(want.test)
    assert "target labels used: 50 (5 per class)" in printed and "seed 3 (from" in printed
    assert "test samples (inputs and labels)" in printed
    md = (tmp_path / "a" / "assess.md").read_text()
    assert "target labels used: 50 (5 per class)" in md

    from transferkit.reports import write_report

    write_report(tmp_path / "a", formats=["md"])
    report = (tmp_path / "a" / "report.md").read_text()
    assert "**target labels used**: 50 (5 per class)" in report and "training labels" in report

    # --labels-per-class and --seed override the file's; --backbone adds a candidate after its own
    assert main(["assess", "--config", cfg_path, "--labels-per-class", "3", "--seed", "4", "--backbone", "tiny_mlp",
                 "--out", str(tmp_path / "b"), *FAST]) == 0
    res = json.loads((tmp_path / "b" / "assess.json").read_text())
    want = target_split(tgt, SplitConfig(labels_per_class=3, val_fraction=0.5), seed=4)
    assert res["target_split"]["n_labels_used"] == 30 == len(want.train_labeled) and res["seed"] == 4
    assert res["backbones"] == ["identity", "tiny_mlp"] and res["feature_space"] == "identity"
    assert res["target_split"]["from"] == f"{cfg_path} with --labels-per-class 3"


def test_cli_labels_per_class_without_a_config(tmp_path, capsys):
    argv = ["assess", "--source", digits_npz(tmp_path, "digits:subset=0/2,size=8", "src"),
            "--target", digits_npz(tmp_path, "digits:subset=1/2,size=8,invert=true", "tgt"),
            "--backbone", "none", "--labels-per-class", "7", "--seed", "2", "--out", str(tmp_path / "a"), *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "a" / "assess.json").read_text())
    assert res["target_split"]["n_labels_used"] == 70 and res["target_split"]["from"] == "--labels-per-class 7"
    assert "target labels used: 70 (7 per class)" in printed
    tgt = load_dataset("digits:subset=1/2,size=8,invert=true")
    assert res["target_split"]["n_test_held_out"] == len(target_split(tgt, SplitConfig(labels_per_class=7),
                                                                      seed=2).test)
    # no split option: run's default split, said so
    assert main(argv[:7] + ["--out", str(tmp_path / "b"), *FAST]) == 0
    res = json.loads((tmp_path / "b" / "assess.json").read_text())
    assert res["target_split"]["from"] == "the default split of 'transferkit run' (no split given)"
    assert res["target_split"]["split"]["train_fraction"] == 0.6 and res["target_split"]["n_test_held_out"] > 0
    assert res["seed"] == 0 and "split: train_fraction=0.6, val_fraction=0.5, seed 0" in capsys.readouterr().out


def _assess(t, *extra) -> list:
    return ["assess", "--source", digits_npz(t, "digits:subset=0/2,size=8", "src"),
            "--target", digits_npz(t, "digits:subset=1/2,size=8", "tgt"),
            "--backbone", "none", "--out", str(t / "assess-out"), "--no-report", *extra]


def _cfg_assess(t, *extra, **changes) -> list:
    return ["assess", "--config", _exp(t, **changes), "--out", str(t / "assess-out"), "--no-report", *extra]


def _unlabeled(t) -> str:
    np.savez(t / "u.npz", x=np.random.default_rng(0).random((30, 64)).astype(np.float32), y=np.full(30, -1))
    return str(t / "u.npz")


CASES = {
    "assess --labels-per-class 0": lambda t: (
        _assess(t, "--labels-per-class", "0"), ["--labels-per-class", "between 1 and", "got 0"]),
    "assess --labels-per-class -3": lambda t: (
        _assess(t, "--labels-per-class", "-3"), ["--labels-per-class", "got -3"]),
    "assess --labels-per-class 2.5": lambda t: (
        _assess(t, "--labels-per-class", "2.5"), ["--labels-per-class", "'2.5' is not a whole number"]),
    "assess --labels-per-class 10^9": lambda t: (
        _assess(t, "--labels-per-class", str(10**9)), ["--labels-per-class", "10000000", "got 1000000000"]),
    "assess --labels-per-class more than a class has": lambda t: (
        _assess(t, "--labels-per-class", "500"),
        ["the target split (labels_per_class=500", "fewer than labels_per_class=500", "lower labels_per_class"]),
    "assess --labels-per-class on an unlabeled target": lambda t: (
        ["assess", "--source", digits_npz(t, "digits:subset=0/2,size=8", "src"), "--target", _unlabeled(t),
         "--backbone", "none",
         "--labels-per-class", "3", "--out", str(t / "assess-out"), "--no-report"],
        ["has no labels", "leave out --labels-per-class"]),
    "assess --seed 2**32": lambda t: (
        _assess(t, "--seed", str(2**32)), ["--seed", "4294967295", "got 4294967296"]),
    "assess without --source": lambda t: (
        ["assess", "--target", "digits", "--out", str(t / "assess-out")], ["assess needs --source", "--config FILE"]),
    "assess without --source and --target": lambda t: (
        ["assess", "--out", str(t / "assess-out")], ["assess needs --source and --target", "--config FILE"]),
    "assess --config with --source": lambda t: (
        _cfg_assess(t, "--source", "digits"), ["--config", "drop --source", "or drop --config"]),
    "assess --config with --target": lambda t: (
        _cfg_assess(t, "--target", "digits"), ["drop --target"]),
    "assess --config missing file": lambda t: (
        ["assess", "--config", str(t / "nope.yaml"), "--out", str(t / "assess-out")], ["nope.yaml"]),
    "assess --config without a source": lambda t: (
        _cfg_assess(t, source=None), ["no 'source' dataset", "add source:"]),
    "assess --config with a bad split": lambda t: (
        _cfg_assess(t, split={"labels_per_class": -1}), ["exp.yaml", "split.labels_per_class", "-1"]),
    "assess --config with an unknown split key": lambda t: (
        _cfg_assess(t, split={"labels_per_clas": 3}), ["unknown key split.'labels_per_clas'", "labels_per_class"]),
    "assess --config whose split.test is the target": lambda t: (
        _cfg_assess(t, split={"labels_per_class": 3, "test": str(t / "tgt.npz")}),
        ["split.test is the target itself"]),
    "assess --config --labels-per-class more than a class has": lambda t: (
        _cfg_assess(t, "--labels-per-class", "500"),
        ["the target split (labels_per_class=500", "seed 3; from ", "exp.yaml with --labels-per-class 500",
         "fewer than labels_per_class=500"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_split_options(case, tmp_path, capsys, monkeypatch):
    check_case(CASES, case, tmp_path, capsys, monkeypatch)
