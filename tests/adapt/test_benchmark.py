import pytest

from transferkit.adapt.benchmark import markdown_table, run_benchmark
from transferkit.errors import ConfigError


def test_benchmark_rows_and_protocol():
    res = run_benchmark(["invert"], ["source_only", "coral", "target_only"], seeds=2, backbone="tiny_cnn",
                        image_size=16, epochs=2, echo=lambda *a: None)
    assert [r["method"] for r in res["rows"]] == ["source_only", "coral", "target_only"]
    for r in res["rows"]:
        assert set(r) == {"task", "method", "accuracy_mean", "accuracy_std", "n_seeds", "selection"}
        assert r["n_seeds"] == 2 and 0 <= r["accuracy_mean"] <= 1
    assert res["rows"][0]["selection"] == "dev"
    assert "oracle" in res["rows"][2]["selection"]
    assert "| source_only |" in markdown_table(res)


def test_unknown_task_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'invert'"):
        run_benchmark(["invrt"], ["source_only"], seeds=1)


def test_the_same_run_from_yaml_gives_the_same_accuracy(tmp_path):
    """``split: {labels_per_class: 0, unlabeled_fraction: 0.5, val_fraction: 0}`` is the
    benchmark's protocol: a YAML experiment reproduces a benchmark cell exactly."""
    from transferkit.adapt.benchmark import SOURCE, TASKS
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
    assert run["n_train"] + run["n_test"] == 896 and run["selection"] == "dev"
    assert run["train_accuracy"] is None  # the training split has no visible labels
