import pytest

from transferkit.benchmark import markdown_table, run_benchmark
from transferkit.errors import ConfigError


def test_benchmark_rows_and_protocol():
    res = run_benchmark(["invert"], ["source_only", "coral", "target_only"], seeds=2, backbone="tiny_cnn",
                        image_size=16, epochs=2, echo=lambda *a: None)
    assert [r["method"] for r in res["rows"]] == ["source_only", "coral", "target_only"]
    for r in res["rows"]:
        assert set(r) == {"task", "method", "accuracy_mean", "accuracy_std", "n_seeds", "selection"}
        accs = [c["accuracy"] for c in res["runs"] if c["method"] == r["method"]]
        assert r["n_seeds"] == 2 and r["accuracy_mean"] == pytest.approx(sum(accs) / 2)
        assert r["accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    # source_only uses no target input, not even to select its checkpoint
    assert res["rows"][0]["selection"] == "source_val (labeled source validation loss; no target input)"
    assert res["rows"][1]["selection"].startswith("none")  # coral: closed form
    assert "oracle" in res["rows"][2]["selection"]
    assert "source_only: labeled source validation loss" in res["protocol"]
    assert "| source_only |" in markdown_table(res)


def test_unknown_task_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'invert'"):
        run_benchmark(["invrt"], ["source_only"], seeds=1)


def test_the_same_run_from_yaml_gives_the_same_accuracy(tmp_path):
    """``split: {labels_per_class: 0, unlabeled_fraction: 0.5, val_fraction: 0}`` is the
    benchmark's protocol: a YAML experiment reproduces a benchmark cell exactly."""
    from transferkit.benchmark import SOURCE, TASKS
    from transferkit.config import load_config
    from transferkit.experiment import run_experiment

    res = run_benchmark(["rot45_trans"], ["mcc"], seeds=1, backbone="tiny_cnn", image_size=16, epochs=2,
                        echo=lambda *a: None)
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(
        f'name: t\nseeds: 1\nsource: "{SOURCE}"\ntarget: "{TASKS["rot45_trans"]}"\n'
        "split: {labels_per_class: 0, unlabeled_fraction: 0.5, val_fraction: 0}\n"
        "backbone: {name: tiny_cnn, image_size: 16}\n"
        "strategies:\n  - {name: adapt, method: mcc, epochs: 2}\n")
    out = run_experiment(load_config(cfg_file), tmp_path / "run", echo=lambda *a: None)
    run = out["runs"][0]
    assert run["accuracy"] == pytest.approx(res["rows"][0]["accuracy_mean"], abs=1e-9)
    assert run["n_unlabeled"] + run["n_test"] == 896 and run["n_train"] == 0 and run["selection"] == "dev"
    assert run["train_accuracy"] is None  # the training split has no visible labels


def test_killed_benchmark_resumes_cell_by_cell_to_the_same_results(tmp_path, one_thread, capsys):
    """Each (task, method, seed) cell is on disk once done; a SIGKILLed benchmark continues with
    ``--resume DIR`` (its stored arguments, finished cells kept) and ends as an uninterrupted one."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from transferkit.cli import main

    args = ["benchmark", "digits-shift", "--tasks", "invert", "--methods", "source_only", "coral", "--seeds", "2",
            "--epochs", "1", "--backbone", "tiny_cnn", "--image-size", "16", "--no-report"]
    out = tmp_path / "killed"
    # cells run seed by seed: source_only, coral (seed 0), source_only (seed 1; killed after its epoch), coral
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERKIT_FAULT": "adapt.epoch@2"}
    proc = subprocess.run([sys.executable, "-m", "transferkit", *args, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["invert--coral--seed0.json",
                                                                  "invert--source_only--seed0.json"]
    assert not (out / "results.json").exists()
    assert main([*args, "--out", str(out)]) == 2  # not restarted over the interrupted one by mistake
    assert main(["benchmark", "--resume", str(out), "--seeds", "3"]) == 2
    assert "drop --seeds" in capsys.readouterr().err
    assert main(["benchmark", "--resume", str(out), "--no-report"]) == 0
    assert capsys.readouterr().out.count("(complete, kept)") == 2
    ref = tmp_path / "ref"
    assert main([*args, "--out", str(ref)]) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, ref))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in a["runs"]] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in b["runs"]]
    assert a["rows"] == b["rows"] and a["arguments"] == b["arguments"]
    assert a["arguments"]["seeds"] == 2 and a["arguments"]["backbone"] == "tiny_cnn"
    assert not (out / ".incomplete").exists() and not list(out.rglob("*.tmp"))
    assert main(["benchmark", "--resume", str(out), "--no-report"]) == 0
    assert "nothing to resume" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["--methods", "dann", "dnn"], "unknown benchmark method 'dnn'"),
    (["--methods", "coral", "coral"], "given twice"),
    (["--selection", "target_val"], "selection='target_val'"),
])
def test_bad_benchmark_arguments_fail_before_any_work(tmp_path, capsys, argv, match):
    from transferkit.cli import main

    out = tmp_path / "o"
    assert main(["benchmark", "digits-shift", "--tasks", "invert", *argv, "--out", str(out)]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()
