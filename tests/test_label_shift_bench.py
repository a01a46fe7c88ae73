"""benchmarks/label_shift.py's core on tiny settings, and the label-shift rows of the digits-shift suite."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from transferkit.benchmark import (
    check_benchmark_args,
    markdown_table,
    prior_error,
    prior_subsample,
    run_benchmark,
    split_label_shift,
    target_priors,
)
from transferkit.errors import ConfigError

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "label_shift.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("label_shift_bench", _SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_core_runs_every_row_on_a_tiny_table(bench, one_thread):
    Xs, ys, Xt, yt = bench.load_task("table_label_cov", 0, n_table=300)
    cells = bench.run_cell(Xs, ys, Xt, yt, 0, bench.METHODS, epochs=2, task="t")
    assert [c["method"] for c in cells] == bench.METHODS
    for c in cells:
        assert 0 <= c["accuracy"] <= 1
        corrected = split_label_shift(c["method"])[1] is not None
        assert ("prior_error" in c) == corrected
        if corrected:
            err = prior_error(c["priors_estimated"], c["priors_true"])
            assert c["prior_error"] == pytest.approx(err)
            assert err["tv"] == pytest.approx(0.5 * np.abs(np.subtract(c["priors_estimated"], c["priors_true"])).sum())
    # the pool's true priors are the target's (stratified split), not the source's
    true = next(c for c in cells if c["method"] == "source_only_lr")
    assert true["priors_true"][1] == pytest.approx(np.mean(yt), abs=0.01)
    assert true["priors_source"][1] == pytest.approx(np.mean(ys))
    res = bench.run(["table_label"], ["majority_class", "source_only_lr", "source_only_lr+mlls"], seeds=2,
                    n_table=200, echo=lambda *a: None)
    rows = {r["method"]: r for r in res["rows"]}
    accs = [c["accuracy"] for c in res["runs"] if c["method"] == "source_only_lr+mlls"]
    assert rows["source_only_lr+mlls"]["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert rows["source_only_lr+mlls"]["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert "prior_tv_mean" in rows["source_only_lr+mlls"] and "prior_tv_mean" in rows["source priors (no estimate)"]
    md = bench.markdown(res)
    assert "| source_only_lr+mlls |" in md and "| source priors (no estimate) |" in md


def test_mlls_recovers_accuracy_on_pure_label_shift(bench, one_thread):
    """Positives 19% -> 42%, same class-conditionals: in every seed the MLLS correction lifts the
    source-only logistic regression (0.802 -> 0.829, 0.811 -> 0.838, 0.804 -> 0.844 on the test halves),
    and its prior estimate is within 0.05 of the pool's (TV 0.003, 0.002, 0.035; no estimate: 0.23)."""
    for seed in range(3):
        Xs, ys, Xt, yt = bench.load_task("table_label", seed)
        plain, mlls = bench.run_cell(Xs, ys, Xt, yt, seed, ["source_only_lr", "source_only_lr+mlls"])
        assert mlls["accuracy"] > plain["accuracy"] + 0.015, (seed, plain["accuracy"], mlls["accuracy"])
        assert mlls["prior_error"]["tv"] < 0.05
        assert prior_error(plain["priors_source"], plain["priors_true"])["tv"] > 0.2


def test_prior_subsample_draws_the_stated_priors():
    y = np.repeat(np.arange(10), 90)
    idx, q = prior_subsample(y, seed=0)
    assert len(np.unique(idx)) == len(idx) and np.all(np.diff(idx) > 0)
    assert np.sort(q)[-3:] == pytest.approx([0.7 / 3] * 3) and q.sum() == pytest.approx(1)
    freq = np.bincount(y[idx], minlength=10) / len(idx)
    assert np.abs(freq - q).max() < 2 / len(idx)  # largest-remainder rounding
    assert len(idx) == 385  # the largest subsample: 90 rows / (0.7 / 3) per major class
    assert np.array_equal(prior_subsample(y, seed=0)[0], idx)
    assert not np.array_equal(target_priors(10, 1), q)
    d = target_priors(10, 0, "dirichlet")
    assert d.sum() == pytest.approx(1) and (d > 0).all()
    with pytest.raises(ConfigError, match="pattern='top3' needs more than 3 classes"):
        target_priors(3, 0)


def test_label_shift_methods_and_tasks_are_checked():
    a = check_benchmark_args(["priors", "rot30"], ["coral+mlls", "jan+mcc+bbse", "adabn+bbse_soft",
                                                    "majority_class"], backbone="tiny_cnn", image_size=16)
    assert a["tasks"] == ["priors", "rot30"]
    assert split_label_shift("jan+mcc+bbse") == ("jan+mcc", "bbse")
    assert split_label_shift("jan+mcc") == ("jan+mcc", None)
    for bad, match in [("source_only+mlls", "source_only takes no label-shift correction"),
                       ("target_only+bbse", "target_only takes no label-shift correction"),
                       ("coral+mlss", "unknown benchmark method 'coral\\+mlss'")]:
        with pytest.raises(ConfigError, match=match):
            check_benchmark_args(["priors"], [bad], backbone="tiny_cnn", image_size=16)
    with pytest.raises(ConfigError, match="Did you mean 'priors'"):
        check_benchmark_args(["prior"], ["coral"], backbone="tiny_cnn", image_size=16)


def test_suite_label_shift_rows(one_thread):
    res = run_benchmark(["priors"], ["majority_class", "source_only_lr", "source_only_lr+mlls"], seeds=1,
                        backbone="tiny_cnn", image_size=16, epochs=1, echo=lambda *a: None)
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows["source_only_lr"]) == {"task", "method", "accuracy_mean", "accuracy_std", "n_seeds", "selection"}
    assert {"prior_tv_mean", "prior_max_abs_mean"} <= set(rows["source_only_lr+mlls"])
    cell = next(r for r in res["runs"] if r["method"] == "source_only_lr+mlls")
    assert 0 <= cell["prior_error"]["max_abs"] <= cell["prior_error"]["tv"] * 2 + 1e-12
    # the source's most frequent class (3) is a minor class of seed 0's target (0.3 / 7 of it)
    assert rows["majority_class"]["accuracy_mean"] == pytest.approx(0.3 / 7, abs=0.01)
    assert "top3" in res["target_priors"]["priors"] and "label-shift tasks (priors)" in res["protocol"]
    md = markdown_table(res)
    assert "| source_only_lr+mlls |" in md and "total variation" in md
