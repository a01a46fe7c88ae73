"""Forgetting diagnostic: structure, and plain fine-tuning forgets more than a strong prior."""

import numpy as np
import pytest

from transferkit.diagnostics.forgetting import format_forgetting_table, run_forgetting, two_task_digits
from transferkit.errors import ConfigError


def test_two_task_split_is_disjoint_and_relabeled():
    d = two_task_digits(size=8, seed=0)
    for task in ("source", "target"):
        tr, va, te = d[task]
        for part in (tr, va, te):
            assert set(np.unique(part.labels)) == set(range(5)) and part.n_classes == 5
        fp = [p.fingerprint() for p in (tr, va, te)]
        assert len(set(fp)) == 3
    assert d["source"][0].classes == ["0", "1", "2", "3", "4"] and d["target"][0].classes[0] == "5"


def test_plain_finetuning_forgets_more_than_strong_priors():
    pens = ("none", {"label": "l2sp_strong", "penalty": "l2sp", "options": {"alpha": 10.0}},
            {"label": "ewc_strong", "penalty": "ewc", "options": {"lam": 1e6, "n_samples": 200}})
    res = run_forgetting(seeds=[0], epochs=6, source_epochs=10, image_size=12, penalties=pens, lr=3e-3)
    rows = {r["penalty"]: r for r in res["rows"]}
    assert list(rows) == ["none", "l2sp_strong", "ewc_strong"]
    for r in rows.values():
        assert r["n_seeds"] == 1 and r["forgetting_std"] == 0.0
        assert r["forgetting"] == pytest.approx(r["source_acc_before"] - r["source_acc_after"])
        assert r["target_acc"] > 0.4 and r["train_time"] > 0  # the target task was learned (chance 0.2)
    assert rows["none"]["source_acc_before"] > 0.8  # the source task was learned
    assert rows["none"]["forgetting"] > 0.2  # a conflicting task overwrites the shared trunk
    assert rows["l2sp_strong"]["forgetting"] < rows["none"]["forgetting"] - 0.05
    assert rows["ewc_strong"]["forgetting"] < rows["none"]["forgetting"] - 0.05
    assert len(res["runs"]) == 3 and res["setup"]["seeds"] == [0]
    table = format_forgetting_table(res)
    assert table.count("\n") == 4 and "| l2sp_strong |" in table and "±" in table


def test_bad_penalty_names_fail_early():
    with pytest.raises(ConfigError, match="Did you mean 'lwf'"):
        run_forgetting(seeds=1, penalties=("none", "lwff"))
    with pytest.raises(ConfigError, match="penalties entry"):
        run_forgetting(seeds=1, penalties=(3,))
