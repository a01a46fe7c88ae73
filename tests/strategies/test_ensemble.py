"""The ``ensemble`` strategy (issue 16, item 3): the weighted mixture of other strategies of the
same experiment, weights fitted on the labeled validation split only; the member checks before
anything is written; save/load, ``transferkit predict`` and resume of an ensemble run; and the
deep ensemble over a run's seeds (:func:`transferkit.inference.seed_ensemble`)."""

import json
import warnings

import numpy as np
import pytest

import transferkit as tk
from transferkit.config import config_from_dict
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError, DataError
from transferkit.experiment import run_experiment
from transferkit.metrics.uncertainty import negative_log_likelihood
from transferkit.strategies import Ensemble

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------- stub members
class Fixed:
    """A fitted 'strategy' predicting a fixed table per dataset name; it records what it saw."""

    def __init__(self, table):
        self.table, self.seen = table, []

    def predict_proba(self, ds):
        self.seen.append(ds.name)
        return self.table[ds.name]


def _ds(y, name):
    return DomainDataset(np.zeros((len(y), 1), np.float32), np.asarray(y), name, "tabular")


def _member(y, acc, conf, rng, K=4):
    """Probabilities that put ``conf`` on a guess that is right with probability ``acc``."""
    n = len(y)
    right = rng.random(n) < acc
    guess = np.where(right, y, (y + rng.integers(1, K, n)) % K)
    p = np.full((n, K), (1 - conf) / (K - 1))
    p[np.arange(n), guess] = conf
    return p


def _members(n=300, K=4, seed=0):
    """A good member (right 80% of the time, calibrated) and a useless one (confident random
    guesses that ignore x: negative transfer at its worst)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    return y, _member(y, 0.8, 0.8, rng), _member(y, 1 / K, 0.9, rng)


def test_weights_go_to_the_good_member_and_the_mixture_is_no_worse_than_either_on_val():
    y, good, useless = _members()
    val = _ds(y, "val")
    ens = Ensemble(members=["good", "useless"]).fit(None, val, members={
        "good": Fixed({"val": good}), "useless": Fixed({"val": useless})})
    assert ens.member_keys_ == ["good", "useless"]
    assert ens.weights_[0] > 0.95 and abs(ens.weights_.sum() - 1) < 1e-12, ens.weights_
    nll = ens.val_nll_
    assert nll["good"] == pytest.approx(negative_log_likelihood(good, y).value)
    assert nll["ensemble"] <= min(nll["good"], nll["useless"]) + 1e-9, nll
    # two overconfident members with independent errors: the mixture is better than both
    rng = np.random.default_rng(1)
    a, b = _member(y, 0.7, 0.95, rng), _member(y, 0.7, 0.95, rng)
    e2 = Ensemble(members=["a", "b"]).fit(None, val, members={"a": Fixed({"val": a}), "b": Fixed({"val": b})})
    assert 0.3 < e2.weights_[0] < 0.7
    assert e2.val_nll_["ensemble"] < min(e2.val_nll_["a"], e2.val_nll_["b"]) - 0.1, e2.val_nll_


def test_fit_reads_the_validation_split_only_and_predicts_the_weighted_mixture():
    y, good, useless = _members()
    yt, gt, ut = _members(n=50, seed=3)
    g, u = Fixed({"val": good, "test": gt}), Fixed({"val": useless, "test": ut})
    ens = Ensemble(members=["g", "u"]).fit(_ds(y[:10], "train"), _ds(y, "val"), members={"g": g, "u": u})
    assert g.seen == ["val"] and u.seen == ["val"]  # never train, never test
    test = _ds(yt, "test")
    w, t = ens.weights_, ens.temperatures_
    # each member at its validation temperature: softmax(log p / T)
    tg, tu = (np.exp(np.log(q) / T) / np.exp(np.log(q) / T).sum(1, keepdims=True) for q, T in ((gt, t[0]), (ut, t[1])))
    mix = w[0] * tg + w[1] * tu
    np.testing.assert_allclose(ens.predict_proba(test), mix, rtol=1e-10)
    np.testing.assert_allclose(ens.predict_logits(test), np.log(mix), rtol=1e-10)
    np.testing.assert_array_equal(ens.predict(test), mix.argmax(1))
    # combine=mean: the plain average, whatever the validation labels say
    mean = Ensemble(members=["g", "u"], combine="mean").fit(None, _ds(y, "val"), members={"g": g, "u": u})
    np.testing.assert_array_equal(mean.weights_, [0.5, 0.5])
    np.testing.assert_allclose(mean.predict_proba(test), (gt + ut) / 2, rtol=1e-12)
    assert mean.trainable_params_ == 0 and ens.trainable_params_ == 4  # 2 weights, 2 temperatures


def test_unlabeled_validation_rows_are_left_out_of_the_weights():
    y, good, useless = _members()
    yv = y.copy()
    yv[::3] = -1
    keep = yv >= 0
    members = {"g": Fixed({"val": good, "val/labeled": good[keep]}),
               "u": Fixed({"val": useless, "val/labeled": useless[keep]})}
    ens = Ensemble().fit(None, _ds(yv, "val"), members=members)
    ref = Ensemble().fit(None, _ds(y[keep], "val/labeled"), members=members)
    np.testing.assert_array_equal(ens.weights_, ref.weights_)


def test_python_api_errors():
    y, good, useless = _members()
    val = _ds(y, "val")
    two = {"g": Fixed({"val": good}), "u": Fixed({"val": useless})}
    with pytest.raises(ConfigError, match=r"needs members=\{key: fitted strategy\}"):
        Ensemble().fit(None, val)
    with pytest.raises(ConfigError, match="ensemble.members lists 'x', but members= has no fitted strategy"):
        Ensemble(members=["g", "x"]).fit(None, val, members=two)
    with pytest.raises(ConfigError, match="combine='weighted' fits the member weights on labeled validation data, "
                                          "but there is no validation split; use combine: mean"):
        Ensemble().fit(None, None, members=two)
    with pytest.raises(ConfigError, match="has 1 member; an ensemble combines at least two"):
        Ensemble(members=["g"]).validate()
    with pytest.raises(ConfigError, match="lists 'g' twice"):
        Ensemble(members=["g", "g"]).validate()
    with pytest.raises(ConfigError, match="combine='median' is not valid"):
        Ensemble(combine="median").validate()
    with pytest.raises(ConfigError, match="must be a list of strategy keys"):
        Ensemble(members="scratch").validate()
    wide = {"g": Fixed({"val": good}), "u": Fixed({"val": np.full((len(y), 5), 0.2)})}
    with pytest.raises(DataError, match="member 'u' predicts .* probabilities .* every member must predict the same"):
        Ensemble().fit(None, val, members=wide)
    ens = Ensemble().fit(None, val, members=two)
    with pytest.raises(ConfigError, match="load it with transferkit.load_run"):
        Ensemble().load_state(ens.state_dict(), ens.state_metadata())
    loaded = Ensemble().load_state(ens.state_dict(), ens.state_metadata(), members=two)
    np.testing.assert_array_equal(loaded.weights_, ens.weights_)


# ---------------------------------------------------------------------------------- experiments
TARGET = "digits:subset=1/8,size=16,rotate=10..30,seed=1"
MEMBERS = [{"name": "scratch", "epochs": 2, "batch_size": 16, "lr": 0.01},
           {"name": "finetune", "epochs": 2, "batch_size": 16, "lr": 0.01, "backbone_lr_mult": 1.0}]


def _cfg(strategies, seeds=(0,), **split):
    return {"name": "ens", "seeds": list(seeds), "target": TARGET,
            "split": {"labels_per_class": 5, "val_fraction": 0.5, **split},
            "backbone": {"name": "tiny_cnn", "image_size": 16, "pretrained": False}, "progress": False,
            "strategies": strategies}


def _run(cfg, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_experiment(config_from_dict(cfg), out, echo=lambda *a, **k: None, report_features=False, **kw)


@pytest.fixture(scope="module")
def ens_run(tmp_path_factory):
    """scratch + finetune + their ensemble, two seeds; the fitted ensembles kept from memory."""
    cfg = _cfg([*MEMBERS, {"name": "ensemble", "members": ["scratch", "finetune"]}], seeds=(0, 1))
    out = tmp_path_factory.mktemp("ens") / "run"
    kept = {}

    def on_run(strat, row, splits):
        kept[(row["strategy"], row["seed"])] = (strat, splits[2])

    res = _run(cfg, out, on_run=on_run)
    return cfg, out, res, kept


def test_an_experiment_records_the_weights_and_the_ensemble_hedges(ens_run):
    cfg, out, res, kept = ens_run
    for seed in (0, 1):
        row = json.loads((out / "ensemble" / f"seed{seed}" / "result.json").read_text())
        e = row["ensemble"]
        assert e["members"] == ["scratch", "finetune"] and e["combine"] == "weighted"
        assert abs(sum(e["weights"].values()) - 1) < 1e-9
        assert e["val_nll"]["ensemble"] <= min(e["val_nll"]["scratch"], e["val_nll"]["finetune"]) + 1e-9
        assert "weights minimising the labeled target validation split's NLL" in row["selection"]
        ens = kept[("ensemble", seed)][0]
        assert ens.members_["scratch"] is kept[("scratch", seed)][0]  # the same seed's fitted members
        assert ens.members_["finetune"] is kept[("finetune", seed)][0]
    assert set(res["summary"]) == {"scratch", "finetune", "ensemble"}


def test_load_run_rebuilds_the_members_and_reproduces_the_predictions(ens_run):
    cfg, out, _, kept = ens_run
    for seed in (0, 1):
        fitted, test = kept[("ensemble", seed)]
        model = tk.load_run(out, strategy="ensemble", seed=seed)
        assert type(model) is Ensemble and model.member_keys_ == ["scratch", "finetune"]
        assert all(m.run_["seed"] == seed for m in model.members_.values())
        np.testing.assert_array_equal(model.weights_, fitted.weights_)
        saved = np.load(out / "ensemble" / f"seed{seed}" / "predictions.npz")
        np.testing.assert_array_equal(model.predict(test), saved["y_pred"])
        np.testing.assert_allclose(model.predict_proba(test), fitted.predict_proba(test), rtol=0, atol=1e-12)
        assert list(model.classes_) == [str(i) for i in range(10)]


def test_transferkit_predict_on_an_ensemble_run(ens_run, tmp_path, capsys):
    import csv

    from transferkit.cli import main

    cfg, out, _, _ = ens_run
    dest = tmp_path / "ens.csv"
    assert main(["predict", str(out), "--split", "test", "--strategy", "ensemble", "--seed", "1",
                 "--out", str(dest)]) == 0
    with open(dest, newline="") as f:
        rows = list(csv.DictReader(f))
    recorded = json.loads((out / "ensemble" / "seed1" / "result.json").read_text())["accuracy"]
    assert np.mean([r["predicted"] == r["true"] for r in rows]) == recorded
    saved = np.load(out / "ensemble" / "seed1" / "predictions.npz")
    assert [int(r["predicted"]) for r in rows] == saved["y_pred"].tolist()
    assert f"accuracy {recorded:.4f}" in capsys.readouterr().out


def test_a_missing_member_model_is_a_one_line_error(ens_run, tmp_path):
    import shutil

    cfg, out, _, _ = ens_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "finetune" / "seed0" / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"the ensemble 'ensemble' \(seed 0\) combines 'finetune', but .* is missing; "
                                        "finish the run"):
        tk.load_run(copy, strategy="ensemble", seed=0)


def test_seed_ensemble_averages_the_seeds_of_one_strategy(ens_run):
    from transferkit.inference import seed_ensemble

    cfg, out, _, kept = ens_run
    test = kept[("finetune", 0)][1]
    P = seed_ensemble(out, "finetune", test)
    each = [tk.load_run(out, strategy="finetune", seed=s).predict_proba(test) for s in (0, 1)]
    np.testing.assert_allclose(P, (each[0] + each[1]) / 2, rtol=1e-10)
    assert P.shape == (len(test), 10) and np.allclose(P.sum(1), 1)
    with pytest.raises(ConfigError, match="has 1 trained seed"):
        seed_ensemble(out, "finetune", test, seeds=[0])
    with pytest.raises(ConfigError, match="seed 7 of strategy 'finetune' has no trained model"):
        seed_ensemble(out, "finetune", test, seeds=[0, 7])


def test_the_weights_never_see_the_test_labels(tmp_path):
    """The test split is a separate file; permuting its labels changes the test accuracy and
    nothing else: members and weights are fitted without it."""
    from transferkit.data.spec import load_dataset

    held = load_dataset("digits:subset=2/8,size=16,rotate=10..30,seed=1")
    rng = np.random.default_rng(0)
    weights, accs = [], []
    for i, y in enumerate((held.labels, rng.permutation(held.labels))):
        npz = tmp_path / f"test{i}.npz"
        np.savez(npz, x=held.inputs, y=y)
        cfg = _cfg([*MEMBERS, {"name": "ensemble"}], test=str(npz))
        _run(cfg, tmp_path / f"run{i}")
        row = json.loads((tmp_path / f"run{i}" / "ensemble" / "seed0" / "result.json").read_text())
        weights.append(row["ensemble"]["weights"])
        accs.append(row["accuracy"])
    assert weights[0] == weights[1] and accs[0] != accs[1]
    assert list(weights[0]) == ["scratch", "finetune"]  # members left out: every strategy before it


def test_a_resumed_run_reads_kept_members_from_disk(tmp_path):
    """Interrupted after the members: the resumed ensemble gets them from their run folders and
    fits the same weights as an uninterrupted run."""
    from transferkit.experiment import resume_experiment

    cfg = _cfg([*MEMBERS, {"name": "ensemble"}])
    full = _run(cfg, tmp_path / "full")

    def stop(strat, row, splits):
        if row["strategy"] == "finetune":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path / "cut", on_run=stop)
    assert not (tmp_path / "cut" / "ensemble").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = resume_experiment(tmp_path / "cut", echo=lambda *a, **k: None)
    got = {r["strategy"]: r for r in res["runs"]}
    ref = {r["strategy"]: r for r in full["runs"]}
    assert got["ensemble"]["ensemble"]["weights"] == ref["ensemble"]["ensemble"]["weights"]
    assert got["ensemble"]["accuracy"] == ref["ensemble"]["accuracy"]


BAD = {
    "unknown member": ([*MEMBERS, {"name": "ensemble", "members": ["scratch", "finetun"]}], {},
                       "ensemble.members lists 'finetun', which is not a strategy of this experiment. Did you mean "
                       "'finetune'?"),
    "member after the ensemble": ([MEMBERS[0], {"name": "ensemble", "members": ["scratch", "finetune"]}, MEMBERS[1]],
                                  {}, "lists 'finetune', which is listed after the ensemble 'ensemble' in "
                                      "'strategies'; members are fitted first: move 'finetune' above 'ensemble'"),
    "nested ensemble": ([*MEMBERS, {"name": "ensemble", "label": "e1"},
                         {"name": "ensemble", "label": "e2", "members": ["e1", "scratch"]}], {},
                        "strategy 'e2': ensemble.members lists 'e1', which is itself an ensemble; ensembles do not "
                        "nest"),
    "the ensemble itself": ([*MEMBERS, {"name": "ensemble", "members": ["scratch", "ensemble"]}], {},
                            "lists 'ensemble', the ensemble itself"),
    "one strategy before it": ([MEMBERS[0], {"name": "ensemble"}], {},
                               "combines the strategies listed before it, but there is 1 (scratch)"),
    "weighted without a validation split": ([*MEMBERS, {"name": "ensemble"}], {"val_fraction": 0},
                                            "ensemble.combine='weighted' fits the member weights on the labeled "
                                            "validation split, but the run has no labeled validation split; use "
                                            "combine: mean, or give split.val_fraction"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_members_fail_before_anything_is_written(case, tmp_path):
    strategies, split, fragment = BAD[case]
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        _run(_cfg(strategies, **split), out)
    msg = str(info.value)
    assert "\n" not in msg and fragment in msg, msg
    assert not out.exists()


def test_combine_mean_runs_without_a_validation_split(tmp_path):
    cfg = _cfg([*MEMBERS, {"name": "ensemble", "combine": "mean"}], val_fraction=0)
    res = _run(cfg, tmp_path / "run")
    row = next(r for r in res["runs"] if r["strategy"] == "ensemble")
    assert row["ensemble"]["weights"] == {"scratch": 0.5, "finetune": 0.5} and row["ensemble"]["val_nll"] is None
    assert row["selection"] == "equal member weights (no selection)"


def test_calibrating_each_member_first_stops_a_sharp_poor_member_deciding_the_class():
    """An under-confident good member and an over-confident poor one (the shuffled-label
    backbone of benchmarks/ensemble_hedge.py): the NLL-optimal weights of the raw members split,
    and the sharper, worse member decides most classes; temperature-scaling each member on the
    validation split first gives the ensemble the good member's accuracy."""
    rng = np.random.default_rng(0)
    K, n = 4, 2000
    y = rng.integers(0, K, n)
    good, poor = _member(y, 0.8, 0.32, rng), _member(y, 0.45, 0.99, rng)
    yt = rng.integers(0, K, n)
    good_t, poor_t = _member(yt, 0.8, 0.32, rng), _member(yt, 0.45, 0.99, rng)
    members = {"good": Fixed({"val": good, "test": good_t}), "poor": Fixed({"val": poor, "test": poor_t})}
    acc = lambda e: float((e.predict_proba(_ds(yt, "test")).argmax(1) == yt).mean())  # noqa: E731
    good_acc = float((good_t.argmax(1) == yt).mean())
    raw = Ensemble(members=["good", "poor"], calibrate=False).fit(None, _ds(y, "val"), members=members)
    cal = Ensemble(members=["good", "poor"]).fit(None, _ds(y, "val"), members=members)
    assert acc(raw) < good_acc - 0.05, (acc(raw), good_acc, raw.weights_)
    assert acc(cal) >= good_acc - 0.01, (acc(cal), good_acc, cal.weights_, cal.temperatures_)
    assert cal.temperatures_[0] < 1 < cal.temperatures_[1]  # the good one sharpened, the poor one softened
    assert cal.ensemble_["temperatures"] == {"good": cal.temperatures_[0], "poor": cal.temperatures_[1]}
    with pytest.raises(ConfigError, match="calibrate='yes' is not a boolean"):
        Ensemble(members=["good", "poor"], calibrate="yes").validate()
