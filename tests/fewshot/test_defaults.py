"""The ``fewshot`` command's default method is the benchmark's best on meta-validation, nothing else."""

from __future__ import annotations

import pytest

from transferkit._registry import available
from transferkit.fewshot import defaults
from transferkit.fewshot.bench import overall_default
from transferkit.fewshot.run import config_from_dict


def test_the_shipped_default_is_the_argmax_of_the_benchmark_table():
    table = defaults.BENCHMARK_VAL_ACCURACY
    assert table, "fill BENCHMARK_VAL_ACCURACY from a benchmark run's default_method.scores"
    assert set(table) == set(available("fewshot")), "every registered method is scored by the benchmark"
    assert all(0.0 < v < 1.0 for v in table.values())
    best = defaults.default_method()
    assert table[best] == max(table.values())
    # the benchmark's own rule (overall_default) names the same method from the same scores
    tasks = {"t": {"table": [{"method": m, "val_accuracy_mean": v} for m, v in table.items()]}}
    assert overall_default(tasks, sorted(table))["label"] == best


def test_an_experiment_without_methods_runs_the_default():
    cfg = config_from_dict({"data": "flavia", "classes": {"train": 0.5, "val": 0.2, "test": 0.3}})
    assert [m.name for m in cfg.methods] == [defaults.default_method()]


def test_default_follows_the_table(monkeypatch):
    monkeypatch.setattr(defaults, "BENCHMARK_VAL_ACCURACY", {"protonet": 0.5, "simpleshot": 0.7, "maml": 0.6})
    assert defaults.default_method() == "simpleshot"
    assert defaults.compare_with_run({"protonet": 0.5, "simpleshot": 0.7}) is None
    line = defaults.compare_with_run({"protonet": 0.9, "simpleshot": 0.7})
    assert "'protonet'" in line and "'simpleshot'" in line and "BENCHMARK_VAL_ACCURACY" in line
    cfg = config_from_dict({"data": "flavia"})
    assert [m.name for m in cfg.methods] == ["simpleshot"]


@pytest.mark.parametrize("scores", [{}, {"maml": 0.4}])
def test_compare_with_run_edge_cases(monkeypatch, scores):
    monkeypatch.setattr(defaults, "BENCHMARK_VAL_ACCURACY", {"maml": 0.4})
    assert defaults.compare_with_run(scores) is None
