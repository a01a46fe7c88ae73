"""``transferkit benchmark few-shot``: the suite's code paths on small subsets (a few steps and
episodes, two methods), its fixed class splits, the SimpleShot comparison, resume and the CLI."""

import functools
import json

import numpy as np
import pytest

from transferkit.errors import ConfigError

SMALL = dict(methods=["protonet", "simpleshot"], test_episodes=12, steps=2, rows_per_class=20, val_episodes=4)


def _have(spec):
    from transferkit.data import load_dataset

    try:
        load_dataset(spec)
    except Exception:  # noqa: BLE001 - an offline data package not installed
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on one torch thread (a second one only spins on a busy 2-core machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, _one_thread):
    """Flavia, the conv4 and the Lite0 image tasks, two methods, tiny budgets."""
    from transferkit.fewshot.bench import run_fewshot_bench

    tasks = ["flavia"] + (["fashion_animal_conv4", "fashion_animal_lite0"]
                          if _have("fashion_mnist:split=test") and _have("animal_mnist") else [])
    out = tmp_path_factory.mktemp("bench") / "b"
    lines = []
    res = run_fewshot_bench(out, tasks, echo=lines.append, **SMALL)
    return out, res, lines


def test_fixed_class_splits_match_the_data():
    """The class lists in the code name real classes, are disjoint and have the documented sizes."""
    from transferkit.fewshot.bench import TASKS, check_bench_args, task_config
    from transferkit.fewshot.run import config_from_dict, prepare

    tasks = [t for t in TASKS if t == "flavia" or (t.startswith("fashion") and _have("animal_mnist")
                                                    and _have("fashion_mnist:split=test"))
             or (t == "drug_conditions" and _have("drug_reviews"))]
    args = check_bench_args(tasks, ["protonet", "simpleshot"])
    preps = {t: prepare(config_from_dict(task_config(t, args)), check_backbone=False) for t in tasks}  # labels only
    sizes = {t: {k: len(v) for k, v in p.plan.splits.items()} for t, p in preps.items()}
    assert sizes["flavia"] == {"train": 16, "val": 6, "test": 10}
    if "fashion_animal_conv4" in sizes:
        assert sizes["fashion_animal_conv4"] == {"train": 6, "val": 4, "test": 10}
        p = preps["fashion_animal_conv4"].plan
        assert all(n in ("Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra")
                   for n in (p.class_names[c] for c in p.splits["test"]))
    if "drug_conditions" in sizes:
        assert sizes["drug_conditions"] == {"train": 8, "val": 5, "test": 7}
        assert min(np.bincount(preps["drug_conditions"].plan.labels)) >= 10
    for p in preps.values():
        vals = list(p.plan.splits.values())
        assert sum(map(len, vals)) == len(set(np.concatenate(vals)))


def test_small_run_results(small_run):
    out, res, lines = small_run
    assert res["kind"] == "fewshot-benchmark" and res["reduced"].startswith("12 test episodes")
    for task, tres in res["tasks"].items():
        assert {(r["method"], r["setting"]) for r in tres["table"]} == {
            (m, s) for m in ("protonet", "simpleshot") for s in ("5way1shot", "5way5shot")}
        for r in tres["table"]:
            assert r["episodes"] == 12 and 0 <= r["accuracy_mean"] <= 1 and r["ci95"] > 0
            assert r["meta_train_seconds_mean"] >= 0
        assert tres["default_method"]["label"] in ("protonet", "simpleshot")
    cells = sorted(p.name for p in (out / "cells").glob("*.json"))
    assert len(cells) == 4 * len(res["tasks"]) and "flavia--protonet--5way1shot--seed0.json" in cells
    if "fashion_animal_lite0" in res["tasks"]:
        assert res["tasks"]["fashion_animal_lite0"]["inputs"]["feature_dim"] == 1280
        assert res["tasks"]["fashion_animal_conv4"]["inputs"]["shape"] == [1, 28, 28]
        assert any((out / "feature-cache").rglob("*.npy"))
    md = (out / "results.md").read_text()
    assert "Beat SimpleShot with non-overlapping 95% intervals" in md and "Reduced run" in md
    assert "learn2learn" in md and "99.1%" in md
    assert json.loads((out / "benchmark.json").read_text())["suite"] == "few-shot"


def test_report_of_the_benchmark(small_run):
    from transferkit.reports.fewshot import write_fewshot_report

    out, res, _ = small_run
    paths = write_fewshot_report(out)
    md = paths["md"].read_text()
    for task in res["tasks"]:
        assert f"Task {task}" in md and f"{task.replace('_', '-')}-accuracy-vs-shots" in md
    assert "Against SimpleShot" in md


def test_resume_keeps_cells(small_run, tmp_path):
    """An interrupted benchmark (results gone, one cell lost) continues: the other cells are kept."""
    import shutil

    from transferkit.fewshot.bench import run_fewshot_bench

    out, res, _ = small_run
    d = tmp_path / "b"
    shutil.copytree(out, d)
    (d / "results.json").unlink()
    (d / ".incomplete").write_text("")
    lost = d / "cells" / "flavia--simpleshot--5way5shot--seed0.json"
    lost.unlink()
    lines = []
    again = run_fewshot_bench(d, resume=True, echo=lines.append)
    n = sum(len(t["cells"]) for t in res["tasks"].values())
    assert sum("(complete, kept)" in x for x in lines) == n - 1 and lost.is_file()
    for task in res["tasks"]:
        assert [r["accuracy_mean"] for r in again["tasks"][task]["table"]] == \
            [r["accuracy_mean"] for r in res["tasks"][task]["table"]]


def test_worker_processes_give_the_same_results(small_run, tmp_path):
    """Two spawned worker processes (one thread each) reproduce the in-process cells exactly."""
    from transferkit.fewshot.bench import run_fewshot_bench

    _, res, _ = small_run
    par = run_fewshot_bench(tmp_path / "p", ["flavia"], jobs=2, echo=None, **SMALL)
    assert par["jobs"] == 2 and not (tmp_path / "p" / "inputs").exists()
    key = ("method", "setting", "accuracy_mean", "ci95", "val_accuracy_mean")
    assert [tuple(r[k] for k in key) for r in par["tasks"]["flavia"]["table"]] == \
        [tuple(r[k] for k in key) for r in res["tasks"]["flavia"]["table"]]


def test_versus_simpleshot_and_overall_default():
    from transferkit.fewshot.bench import overall_default, versus_simpleshot

    def row(m, acc, ci, val):
        return {"method": m, "setting": "5way1shot", "title": "5-way 1-shot", "accuracy_mean": acc, "ci95": ci,
                "val_accuracy_mean": val}

    tasks = {"t": {"table": [row("simpleshot", 0.50, 0.01, 0.6), row("a", 0.53, 0.01, 0.5),
                             row("b", 0.515, 0.01, 0.7), row("c", 0.47, 0.01, 0.4)]}}
    v = {r["method"]: r["verdict"] for r in versus_simpleshot(tasks)}
    assert v == {"a": "above", "b": "overlap", "c": "below"}  # 0.52 > 0.51; 0.505 < 0.51; 0.48 < 0.49
    d = overall_default(tasks, ["simpleshot", "a", "b", "c"])
    assert d["label"] == "b"  # the best meta-val accuracy, although "a" has the best test accuracy


@pytest.mark.parametrize("kw, fragments", [
    ({"tasks": ["flavai"]}, ["unknown few-shot task 'flavai'", "Did you mean 'flavia'"]),
    ({"methods": ["protonett"]}, ["unknown few-shot method 'protonett'", "Did you mean 'protonet'"]),
    ({"methods": ["maml", "maml"]}, ["method 'maml' is given twice"]),
    ({"seeds": 0}, ["seeds must be >= 1"]),
])
def test_bad_arguments(kw, fragments, tmp_path):
    from transferkit.fewshot.bench import run_fewshot_bench

    with pytest.raises(ConfigError) as e:
        run_fewshot_bench(tmp_path / "o", echo=None, **kw)
    for f in fragments:
        assert f in str(e.value)
    assert not (tmp_path / "o").exists()


def test_resume_refuses_other_directories(tmp_path):
    from transferkit.fewshot.bench import is_fewshot_bench_dir, run_fewshot_bench

    d = tmp_path / "d"
    d.mkdir()
    (d / "benchmark.json").write_text(json.dumps({"suite": "digits-shift", "tasks": ["rot30"]}))
    assert not is_fewshot_bench_dir(d)
    with pytest.raises(ConfigError, match="not a few-shot benchmark's arguments file"):
        run_fewshot_bench(d, resume=True, echo=None)


def test_cli_benchmark_few_shot(tmp_path, capsys, monkeypatch):
    """``transferkit benchmark few-shot`` end to end (budgets shrunk), then ``--resume`` of the
    complete directory."""
    from transferkit.cli import main
    from transferkit.fewshot import bench

    small = {k: v for k, v in SMALL.items() if k != "methods"}
    monkeypatch.setattr(bench, "run_fewshot_bench", functools.partial(bench.run_fewshot_bench, **small))
    out = tmp_path / "o"
    code = main(["benchmark", "few-shot", "--tasks", "flavia", "--methods", "protonet", "simpleshot", "--out",
                 str(out), "--threads", "1"])
    cap = capsys.readouterr()
    assert code == 0, cap.err[-2000:]
    assert "Beat SimpleShot" in cap.out and (out / "report.html").is_file()
    assert main(["benchmark", "--resume", str(out), "--no-report"]) == 0
    assert "nothing to resume" in capsys.readouterr().err


def test_methods_with_a_learned_head_get_a_zero_head_where_meta_val_has_another_n_way():
    from transferkit.fewshot.bench import check_bench_args, task_config

    args = check_bench_args(methods=["reptile", "maml", "protonet"])
    for task, want in (("fashion_animal_conv4", "zero"), ("flavia", None)):
        ms = {m["name"]: m for m in task_config(task, args)["methods"]}
        assert ms["reptile"].get("head_init") == want, task
        assert "head_init" not in ms["maml"] and "head_init" not in ms["protonet"]  # maml's default is zero
