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
