"""``transferkit fewshot``: the config, the one-pass checks, the data plans, the cells and resume.

The runner is tested with two tiny methods defined here (registered for each test, removed after)
so that what is checked is the runner, not a method: a nearest-centroid rule (optionally with
seeded noise on its logits, a worse method) and one that "meta-trains" and records what it saw.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from transferkit.errors import ConfigError, DataError
from transferkit.fewshot.base import FewShotMethod

HERE = Path(__file__).resolve().parent


class ToyCentroid(FewShotMethod):
    """toy: nearest centroid of the encoder's features (plus seeded noise on the logits)."""

    def __init__(self, noise: float = 0.0):
        self.noise = noise

    def _check_params(self):
        if not isinstance(self.noise, (int, float)) or self.noise < 0:
            raise ConfigError(f"noise={self.noise!r} must be a number >= 0.")

    def predict_episode(self, xs, ys, xq, n_way):
        with torch.no_grad():
            self.encoder_.eval()
            zs, zq = self.encoder_(xs), self.encoder_(xq)
            c = torch.stack([zs[ys == j].mean(0) for j in range(n_way)])
            logits = -torch.cdist(zq, c) ** 2
            if self.noise:
                g = torch.Generator().manual_seed(int(1000 * float(xq.sum())) % (2**31))
                logits = logits + self.noise * torch.randn(logits.shape, generator=g)
            return logits


class ToyMeta(ToyCentroid):
    """toy: needs meta-training; records what meta_train was given."""

    needs_meta_training = True
    seen: list = []

    def meta_train(self, data, *, steps, log=None, eval_every=100, val_episodes=100):
        self._check_meta_train_data(data)
        ToyMeta.seen.append({"test": data.test, "val": data.val, "train": data.train, "steps": steps})
        self.meta_trained_ = True
        return [{"step": steps, "val_accuracy": 0.5}]


def register_toys():
    from transferkit._registry import _REGISTRY, register

    for name, cls in (("toy_centroid", ToyCentroid), ("toy_meta", ToyMeta)):
        if _REGISTRY["fewshot"].get(name) is not cls:
            register("fewshot", name)(cls)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models on one torch thread (the conftest's fixture)."""


@pytest.fixture(autouse=True)
def toys():
    from transferkit._registry import _DOCS, _REGISTRY, available

    available("fewshot")  # the real methods first
    register_toys()
    ToyMeta.seen = []
    yield
    for name in ("toy_centroid", "toy_meta"):
        _REGISTRY["fewshot"].pop(name, None)
        _DOCS["fewshot"].pop(name, None)


def _table(tmp_path, n_classes=12, per_class=25, d=6, name="t.npz", shift=0.0):
    """Separable Gaussian classes; class c's rows centred at 3 e_(c mod d) (+ c/10 on every column)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), per_class)
    centres = np.stack([3 * np.eye(d)[c % d] + c / 10 for c in range(n_classes)])
    x = (centres[y] + rng.normal(size=(len(y), d)) + shift).astype(np.float32)
    p = tmp_path / name
    np.savez(p, x=x, y=y, classes=np.array([f"c{i}" for i in range(n_classes)]))
    return str(p)


def _cfg(data, **kw):
    base = {"name": "t", "data": data, "classes": {"train": 0.5, "val": 0.25, "test": 0.25}, "encoder": "identity",
            "methods": ["toy_centroid"], "settings": [{"n_way": 3, "k_shot": 1}, {"n_way": 3, "k_shot": 5}],
            "q_query": 5, "val_episodes": 20, "meta_train_steps": 3}
    base.update(kw)
    return base


def _nothing_written(tmp_path, out):
    assert not Path(out).exists(), sorted(p.name for p in Path(out).iterdir())


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("change, fragments", [
    ({"setings": []}, ["unknown key 'setings'", "Did you mean 'settings'"]),
    ({"methods": [{"name": "toy_centroid", "nois": 1}]}, ["methods[0].'nois'", "Did you mean 'noise'"]),
    ({"methods": ["protonett"]}, ["unknown fewshot 'protonett'", "Did you mean 'protonet'"]),
    ({"encoder": "conv5"}, ["unknown encoder 'conv5'", "Did you mean 'conv4'"]),
    ({"encoder": {"name": "mlp", "hiden": 3}}, ["unknown key encoder.'hiden'", "Did you mean 'hidden'"]),
    ({"settings": [{"n_way": 5, "kshot": 1}]}, ["settings[0].'kshot'", "Did you mean 'k_shot'"]),
    ({"settings": [{"n_way": 5, "k_shot": 1}, {"n_way": 5, "k_shot": 1}]}, ["5way1shot appears twice"]),
    ({"test_episodes": 100}, ["test_episodes must be >= 600, got 100"]),
    ({"methods": ["toy_centroid", "toy_centroid"]}, ["'toy_centroid' appears twice", "label"]),
    ({"methods": [{"name": "toy_centroid", "label": "../x"}]}, ["methods[0].label='../x' is not a safe name"]),
    ({"data": {"spec": "flavia", "min_row": 3}}, ["unknown key data.'min_row'", "Did you mean 'min_rows'"]),
    ({"data": {"source": "flavia"}}, ["needs both source and target", "data.target is missing"]),
    ({"q_query": float("nan")}, ["q_query=nan is not a finite number"]),
])
def test_config_is_strict(change, fragments):
    from transferkit.fewshot.run import config_from_dict

    with pytest.raises(ConfigError) as e:
        config_from_dict({**_cfg("flavia"), **change})
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    for f in fragments:
        assert f in msg, (f, msg)


def test_resolved_config_round_trips():
    from transferkit.fewshot.run import config_from_dict

    cfg = config_from_dict(_cfg({"spec": "flavia", "rows_per_class": 30},
                                methods=["toy_centroid", {"name": "toy_centroid", "label": "noisy", "noise": 2.0,
                                                          "meta_train_steps": 7}]))
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()
    assert cfg.steps_of(cfg.methods[1]) == 7 and cfg.steps_of(cfg.methods[0]) == 3


# ------------------------------------------------------------------------------------------------ the four errors
@pytest.mark.parametrize("change, fragments", [
    ({"settings": [{"n_way": 4, "k_shot": 1}]}, ["settings[0] (4-way 1-shot)", "n_way=4 is larger than the 3 meta-val",
                                                 "classes.val"]),
    ({"settings": [{"n_way": 3, "k_shot": 21}]}, ["k_shot + q_query = 21 + 5 = 26 is larger than the 25 rows",
                                                  "lower k_shot or q_query"]),
    ({"classes": {"train": ["c0", "c1", "c2", "c3"], "val": ["c3", "c4", "c5"], "test": ["c6", "c7", "c8"]}},
     ["classes.train and classes.val overlap ('c3')", "disjoint"]),
    ({"classes": {"val": ["c3", "c4", "c5"], "test": ["c6", "c7", "c8"]}, "methods": ["toy_centroid", "toy_meta"]},
     ["method 'toy_meta' needs meta-training but classes has no train split", "simpleshot"]),
    ({"classes": {"train": 0.5, "val": 0.5}}, ["no test split"]),
    ({"methods": ["reptile"], "encoder": "mlp", "val_n_way": 2},
     ["'reptile' has head_init='learned'", "val_n_way=2 differs from the settings' n_way [3]", "head_init: zero"]),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, change, fragments):
    from transferkit.fewshot.run import run_fewshot

    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        run_fewshot(_cfg(_table(tmp_path), **change), out, echo=None)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    for f in fragments:
        assert f in msg, (f, msg)
    _nothing_written(tmp_path, out)


def test_no_meta_train_classes_is_fine_for_methods_that_need_none(tmp_path):
    from transferkit.fewshot.run import config_from_dict, prepare

    prep = prepare(config_from_dict(_cfg(_table(tmp_path), classes={"val": ["c3", "c4", "c5"],
                                                                    "test": ["c6", "c7", "c8"]})))
    assert "train" not in prep.plan.splits and prep.trains == {"toy_centroid": False}


def test_a_small_train_split_is_fine_when_nothing_meta_trains(tmp_path):
    """Two meta-train classes cannot make a 3-way episode; with no method that trains, that is no
    error (and the run uses no meta-train sampler)."""
    from transferkit.fewshot.run import config_from_dict, prepare, run_fewshot

    cfg = _cfg(_table(tmp_path), classes={"train": ["c0", "c1"], "val": ["c3", "c4", "c5"],
                                          "test": ["c6", "c7", "c8"]}, settings=[{"n_way": 3, "k_shot": 1}])
    assert prepare(config_from_dict(cfg)).trains == {"toy_centroid": False}
    run_fewshot(cfg, tmp_path / "o", echo=None)
    with pytest.raises(ConfigError, match="n_way=3 is larger than the 2 meta-train classes"):
        prepare(config_from_dict({**cfg, "methods": ["toy_meta"]}))


def test_modality_mismatch(tmp_path):
    from transferkit.fewshot.run import config_from_dict, prepare

    with pytest.raises(ConfigError, match="encoder conv4 takes raw images but the data is tabular"):
        prepare(config_from_dict(_cfg(_table(tmp_path), encoder="conv4")))


# ------------------------------------------------------------------------------------------------ data plans
def test_tables_standardized_on_meta_train_rows_only(tmp_path):
    from transferkit.fewshot.data import parse_data, plan_meta_data

    plan = plan_meta_data(parse_data(_table(tmp_path)), {"train": 0.5, "val": 0.25, "test": 0.25})
    x, info = plan.materialize("identity")
    tr = np.isin(plan.labels, plan.splits["train"])
    np.testing.assert_allclose(x[tr].mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(x[tr].std(0, unbiased=False).numpy(), 1, atol=1e-4)
    te = np.isin(plan.labels, plan.splits["test"])
    assert np.abs(x[te].mean(0).numpy()).max() > 0.1  # not the test rows' statistics
    assert info["standardized_on"] == "meta-train"


def test_class_splits_are_disjoint_and_episodes_stay_inside(tmp_path):
    from transferkit.fewshot.data import parse_data, plan_meta_data

    plan = plan_meta_data(parse_data(_table(tmp_path)), {"train": 0.5, "val": 0.25, "test": 0.25})
    s = plan.splits
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    assert not set(s["val"]) & set(s["test"])
    md = plan.meta_data(torch.zeros(len(plan.labels), 1), n_way=3, k_shot=2, q_query=3, seed=4, train_episodes=30)
    for sampler, split in ((md.train, "train"), (md.val, "val"), (md.test, "test")):
        for ep in sampler:
            assert set(plan.labels[ep.support]) <= set(s[split]) and set(plan.labels[ep.query]) <= set(s[split])
    # the same seed gives the same episodes; the three splits' episode seeds differ
    again = plan.meta_data(torch.zeros(len(plan.labels), 1), n_way=3, k_shot=2, q_query=3, seed=4)
    assert np.array_equal(again.test.episode(7).query, md.test.episode(7).query)
    assert len({md.train.seed, md.val.seed, md.test.seed}) == 3


def test_cross_domain_offsets_target_labels(tmp_path):
    from transferkit.fewshot.data import parse_data, plan_meta_data

    src, tgt = _table(tmp_path, 8, name="s.npz"), _table(tmp_path, 5, name="g.npz", shift=5.0)
    plan = plan_meta_data(parse_data({"source": src, "target": {"spec": tgt, "rows_per_class": 10}}),
                          {"train": ["c0", "c1", "c2", "c3"], "val": ["c4", "c5", "c6"]})
    assert plan.cross_domain and plan.class_names == [f"c{i}" for i in range(8)] + [f"c{i}" for i in range(5)]
    assert plan.splits["test"].tolist() == list(range(8, 13))  # every target class, offset by 8
    assert len(plan.labels) == 7 * 25 + 5 * 10  # the unused source class c7 is dropped; 10 rows per target class
    x, _ = plan.materialize("identity")
    te = np.isin(plan.labels, plan.splits["test"])
    assert float(x[te].mean()) > 2  # the target's shift is kept: standardized with source meta-train rows
    with pytest.raises(ConfigError, match="cross-domain run the meta-test classes are the target's"):
        plan_meta_data(parse_data({"source": src, "target": tgt}), {"train": 0.5, "test": 0.5})


def test_attribute_classes_drug_reviews():
    from transferkit.fewshot.data import parse_data, plan_meta_data

    try:
        plan = plan_meta_data(parse_data({"spec": "drug_reviews", "class_attribute": "condition", "min_rows": 10,
                                          "drop_classes": ["(unknown)"]}), {"train": 0.4, "val": 0.25, "test": 0.35})
    except Exception as exc:  # noqa: BLE001 - the offline data package may be missing
        pytest.skip(f"drug_reviews not installed: {exc}")
    counts = np.bincount(plan.labels)
    assert len(plan.class_names) == 20 and "(unknown)" not in plan.class_names and counts.min() >= 10
    assert {k: len(v) for k, v in plan.splits.items()} == {"train": 8, "val": 5, "test": 7}
    with pytest.raises(ConfigError, match="class_attribute='conditon'.*Did you mean 'condition'"):
        plan_meta_data(parse_data({"spec": "drug_reviews", "class_attribute": "conditon"}))


# ------------------------------------------------------------------------------------------------ the run
def test_run_writes_results_and_chooses_the_default_on_meta_val(tmp_path):
    from transferkit.fewshot.run import CELLS_DIR, CONFIG_FILE, LOG_FILE, run_fewshot

    lines = []
    cfg = _cfg(_table(tmp_path), methods=[{"name": "toy_centroid", "label": "noisy", "noise": 30.0}, "toy_centroid",
                                          "toy_meta"])
    res = run_fewshot(cfg, tmp_path / "out", echo=lines.append)
    d = tmp_path / "out"
    for f in (CONFIG_FILE, LOG_FILE, "results.json", "results.md", "environment.json"):
        assert (d / f).is_file(), f
    assert len(list((d / CELLS_DIR).glob("*.json"))) == 3 * 2
    assert any("toy_meta--3way5shot--seed0" in x for x in lines)
    assert (d / LOG_FILE).read_text().count("\n") >= len(lines)
    by = {(r["method"], r["setting"]): r for r in res["table"]}
    assert by[("toy_centroid", "3way1shot")]["episodes"] == 600
    # the two identical rules see the same episodes (paired); the noisy one is worse on meta-val
    assert by[("toy_centroid", "3way5shot")]["accuracy_mean"] == by[("toy_meta", "3way5shot")]["accuracy_mean"]
    assert by[("noisy", "3way1shot")]["val_accuracy_mean"] < by[("toy_centroid", "3way1shot")]["val_accuracy_mean"]
    d_ = res["default_method"]
    assert d_["label"] == "toy_centroid" and "meta-validation" in d_["how"]
    assert d_["label"] == max(d_["scores"], key=d_["scores"].get)
    # meta-training never sees a meta-test sampler
    assert len(ToyMeta.seen) == 2 and all(s["test"] is None and s["val"] is not None for s in ToyMeta.seen)
    assert all(s["steps"] == 3 for s in ToyMeta.seen)
    conf = res["confusion"][0]
    assert conf["method"] == "toy_centroid" and np.asarray(conf["matrix"]).sum() == 600 * 3 * 5
    stored = json.loads((d / "results.json").read_text())
    assert stored["table"] == json.loads(json.dumps(res["table"]))


def _default_is_chosen_without_test(res):
    """Reordering the test accuracies cannot change the default (only meta-val decides)."""
    from transferkit.fewshot.run import Setting, choose_default

    table = [dict(r) for r in res["table"]]
    for r in table:
        r["accuracy_mean"] = 1.0 - r["accuracy_mean"]
    settings = [Setting(**s) for s in res["settings"]]
    return choose_default(table, res["methods"], settings)["label"] == res["default_method"]["label"]


def test_resume_after_a_kill_keeps_finished_cells(tmp_path):
    """A run killed (SIGKILL) right after its second cell file; --resume keeps both cells as they
    are, runs the rest, and ends with the results of an uninterrupted run."""
    from transferkit.fewshot.run import run_fewshot

    cfg = _cfg(_table(tmp_path), methods=["toy_centroid", {"name": "toy_centroid", "label": "noisy", "noise": 5.0}])
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    script = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_run; test_run.register_toys(); "
              "from transferkit.fewshot.run import run_fewshot; "
              f"run_fewshot({str(tmp_path / 'exp.yaml')!r}, {str(tmp_path / 'out')!r}, echo=None)")
    env = {**os.environ, "TRANSFERKIT_FAULT": "fewshot.cell@2", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    d = tmp_path / "out"
    cells = sorted((d / "cells").glob("*.json"))
    assert len(cells) == 2 and (d / ".incomplete").exists() and not (d / "results.json").exists()
    before = {c.name: (c.read_bytes(), c.stat().st_mtime_ns) for c in cells}
    lines = []
    res = run_fewshot(None, d, resume=True, echo=lines.append)
    assert sum("(complete, kept)" in x for x in lines) == 2
    for c in cells:
        assert (c.read_bytes(), c.stat().st_mtime_ns) == before[c.name]
    assert len(list((d / "cells").glob("*.json"))) == 4 and not (d / ".incomplete").exists()
    fresh = run_fewshot(tmp_path / "exp.yaml", tmp_path / "fresh", echo=None)
    assert [(r["method"], r["setting"], r["accuracy_mean"]) for r in res["table"]] == \
        [(r["method"], r["setting"], r["accuracy_mean"]) for r in fresh["table"]]
    assert _default_is_chosen_without_test(res)
    # complete: resuming again changes nothing
    assert run_fewshot(None, d, resume=True, echo=None)["table"] == json.loads(json.dumps(res["table"]))


def test_a_damaged_cell_is_run_again(tmp_path):
    from transferkit.fewshot.run import run_fewshot

    cfg = _cfg(_table(tmp_path), settings=[{"n_way": 3, "k_shot": 1}])
    res = run_fewshot(cfg, tmp_path / "out", echo=None)
    cell = next((tmp_path / "out" / "cells").glob("*.json"))
    row = json.loads(cell.read_text())
    row["accuracy"] = 7.0  # not an accuracy
    cell.write_text(json.dumps(row))
    (tmp_path / "out" / ".incomplete").write_text("")
    lines = []
    again = run_fewshot(None, tmp_path / "out", resume=True, echo=lines.append)
    assert not any("kept" in x for x in lines)
    assert again["table"][0]["accuracy_mean"] == res["table"][0]["accuracy_mean"]


def test_a_cell_of_another_definition_is_run_again(tmp_path):
    """Cells record what defined them (data, classes, encoder, episodes, the method's parameters and
    budget): a stored cell measured under other parameters is not reused."""
    from transferkit.fewshot.run import config_from_dict, prepare, run_cells

    cfg = _cfg(_table(tmp_path), settings=[{"n_way": 3, "k_shot": 1}], test_episodes=600)
    prep = prepare(config_from_dict(cfg))
    x, info = prep.materialize(None)
    run_cells(prep, x, info, tmp_path / "cells", log=lambda _: None)
    lines = []
    run_cells(prep, x, info, tmp_path / "cells", log=lines.append)
    assert any("kept" in x for x in lines)
    for change in ({"methods": [{"name": "toy_centroid", "noise": 1.0}]}, {"q_query": 4}, {"val_episodes": 21}):
        other = prepare(config_from_dict({**cfg, **change}))
        lines = []
        run_cells(other, x, info, tmp_path / "cells", log=lines.append)
        assert not any("kept" in x for x in lines), change
        run_cells(prep, x, info, tmp_path / "cells", log=lambda _: None)  # back to the first definition


def test_existing_output_needs_overwrite(tmp_path):
    from transferkit.fewshot.run import run_fewshot

    cfg = _cfg(_table(tmp_path), settings=[{"n_way": 3, "k_shot": 1}])
    run_fewshot(cfg, tmp_path / "out", echo=None)
    with pytest.raises(ConfigError, match="already holds a run"):
        run_fewshot(cfg, tmp_path / "out", echo=None)
    run_fewshot(cfg, tmp_path / "out", overwrite=True, echo=None)


# ------------------------------------------------------------------------------------------------ the CLI
def test_cli_fewshot_writes_results_and_report(tmp_path, capsys):
    from transferkit.cli import main

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(_cfg(_table(tmp_path), settings=[{"n_way": 3, "k_shot": 1},
                                                                                         {"n_way": 3, "k_shot": 3}])))
    code = main(["fewshot", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "o"), "--threads", "1",
                 "--set", "q_query=4"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    assert "default method: toy_centroid" in out.out and "report:" in out.out
    assert "toy_centroid--3way3shot--seed0" in out.err  # progress lines on stderr
    assert (tmp_path / "o" / "report.html").is_file() and (tmp_path / "o" / "report.md").is_file()
    md = (tmp_path / "o" / "report.md").read_text()
    assert "accuracy-vs-shots" in md and "confusion" in md
    assert json.loads((tmp_path / "o" / "results.json").read_text())["q_query"] == 4


def test_cli_list_fewshot(capsys):
    from transferkit.cli import main

    assert main(["list", "fewshot"]) == 0
    assert "toy_centroid" in capsys.readouterr().out


def test_example_config_is_valid():
    from transferkit.fewshot.run import load_fewshot_config, prepare

    root = HERE.parent.parent
    cfg = load_fewshot_config(root / "examples" / "fewshot" / "flavia.yaml")
    prep = prepare(cfg)
    assert {k: len(v) for k, v in prep.plan.splits.items()} == {"train": 16, "val": 6, "test": 10}
