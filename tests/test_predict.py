"""Using a finished run: tk.load_run, transferkit predict, the model card.

A loaded model must reproduce what the run itself predicted: ``predictions.npz`` (the test
split's predictions, written while the fitted strategy was still in memory) exactly, for every
strategy ``transferkit run`` can train, and ``transferkit predict`` the run's test accuracy
exactly. Bad input (a missing column, the wrong feature count or modality, a folder that is not
a run, an unknown strategy, an --out that would overwrite something) is one line, exit code 2,
and no file written.
"""

import csv
import json

import numpy as np
import pytest

import transferkit as tk
from _predict_runs import CLOSED, DEEP, image_config, keys, own_test_split, run, table_config, write_tables
from transferkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds contention


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    cfg = image_config("deep", DEEP)
    out = tmp_path_factory.mktemp("runs") / "deep"
    run(cfg, out)
    return cfg, out


@pytest.fixture(scope="module")
def closed_run(tmp_path_factory):
    cfg = image_config("closed", CLOSED)
    out = tmp_path_factory.mktemp("runs") / "closed"
    run(cfg, out)
    return cfg, out


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    sp, tp, tgt = write_tables(d)
    cfg = table_config(sp, tp, [{"name": "feature_extraction", "standardize": True},
                                {"name": "adapt", "method": "coral"}, {"name": "target_only", "epochs": 3}])
    out = d / "run"
    run(cfg, out)
    return cfg, out, tgt, d


def test_every_strategy_that_run_trains_is_covered():
    from transferkit._registry import available

    # source_free needs a trained source model with its classifier (usps_cnn...), not these runs' random
    # tiny_cnn: tests/strategies/test_source_free.py runs, reloads and predicts it
    assert set(available("strategy")) - {"source_free"} <= {s["name"] for s in DEEP + CLOSED}


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_reproduces(cfg, out, key):
    test = own_test_split(cfg, 0)
    saved = np.load(out / key / "seed0" / "predictions.npz")
    model = tk.load_run(out, strategy=key)
    from transferkit._registry import get

    cls = get("strategy", next(s["name"] for s in cfg["strategies"] if (s.get("label") or s["name"]) == key))
    assert type(model) is cls, key
    pred = model.predict(test)
    assert np.array_equal(pred, saved["y_pred"]), f"{key}: {int((pred != saved['y_pred']).sum())} predictions differ"
    proba = model.predict_proba(test)
    assert proba.shape == (len(test), len(model.classes_)) and np.allclose(proba.sum(1), 1)
    assert np.array_equal(proba.argmax(1), pred)
    # open_set's outputs are the source's classes and "unknown" (a class the source never saw)
    assert list(model.classes_) == [str(i) for i in range(10)] + (["unknown"] if cls.name == "open_set" else [])
    return model


@pytest.mark.parametrize("key", keys(DEEP))
def test_load_run_reproduces_the_stored_test_predictions_deep(deep_run, key):
    cfg, out = deep_run
    _check_reproduces(cfg, out, key)


@pytest.mark.parametrize("key", keys(CLOSED))
def test_load_run_reproduces_the_stored_test_predictions_closed_form(closed_run, key):
    cfg, out = closed_run
    _check_reproduces(cfg, out, key)


def test_cli_predict_reproduces_the_test_accuracy_of_every_strategy(deep_run, closed_run, tmp_path, capsys):
    for cfg, out in (deep_run, closed_run):
        for key in keys(cfg["strategies"]):
            dest = tmp_path / f"{key}.csv"
            assert main(["predict", str(out), "--split", "test", "--strategy", key, "--out", str(dest)]) == 0
            rows = _read_csv(dest)
            acc = np.mean([r["predicted"] == r["true"] for r in rows])
            recorded = json.loads((out / key / "seed0" / "result.json").read_text())["accuracy"]
            assert acc == recorded, key  # exactly
            saved = np.load(out / key / "seed0" / "predictions.npz")
            index = {str(i): i for i in range(10)} | {"unknown": 10}  # open_set's extra output
            assert [index[r["predicted"]] for r in rows] == saved["y_pred"].tolist()
            assert f"accuracy {recorded:.4f}" in capsys.readouterr().out


def test_predict_on_a_data_file_and_on_a_seed_folder(deep_run, tmp_path, capsys):
    """DATA as a file (the test split saved as .npz) and RUN_DIR as a STRATEGY/seedN folder give
    the same predictions as the run; the CSV has one probability column per class."""
    cfg, out = deep_run
    test = own_test_split(cfg, 0)
    npz = tmp_path / "test.npz"
    np.savez(npz, x=test.inputs, y=test.labels)
    dest = tmp_path / "p.csv"
    assert main(["predict", str(out / "finetune" / "seed0"), str(npz), "--out", str(dest)]) == 0
    rows = _read_csv(dest)
    assert list(rows[0]) == ["row", "predicted", *[f"p_{i}" for i in range(10)], "true"]
    saved = np.load(out / "finetune" / "seed0" / "predictions.npz")
    assert [int(r["predicted"]) for r in rows] == saved["y_pred"].tolist()
    p = np.array([[float(r[f"p_{i}"]) for i in range(10)] for r in rows])
    assert np.allclose(p.sum(1), 1, atol=1e-6)
    assert "finetune (seed 0)" in capsys.readouterr().out


def test_default_strategy_is_the_best_validation_accuracy(deep_run):
    _, out = deep_run
    res = json.loads((out / "results.json").read_text())
    vals = {k: s["val_accuracy_mean"] for k, s in res["summary"].items() if s["val_accuracy_mean"] is not None}
    best = max(vals, key=vals.get)
    assert tk.load_run(out).run_["strategy"] == best
    assert json.loads((out / "model_card.json").read_text())["default_strategy"] == best


def test_a_table_is_read_by_column_name(table_run, tmp_path, capsys):
    """Columns shuffled, an extra column and no label: the same predictions as the table itself."""
    cfg, out, tgt, d = table_run
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["predict", str(out), str(d / "target.csv"), "--strategy", "adapt", "--out", str(a)]) == 0
    shuffled = tgt[["score", "kind", "height", "age", "income"]].assign(extra=1.0).drop(columns=["kind"])
    shuffled.to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(out), str(tmp_path / "new.csv"), "--strategy", "adapt", "--out", str(b)]) == 0
    ra, rb = _read_csv(a), _read_csv(b)
    assert [r["predicted"] for r in ra] == [r["predicted"] for r in rb]
    assert set(r["predicted"] for r in ra) <= {"cat", "dog", "eel"} and "true" in ra[0] and "true" not in rb[0]
    assert list(ra[0])[2:5] == ["p_cat", "p_dog", "p_eel"]
    assert np.mean([r["predicted"] == r["true"] for r in ra]) > 0.5
    # the run's own test split through the CLI: its recorded accuracy exactly
    for key in ("feature_extraction", "adapt", "target_only"):
        assert main(["predict", str(out), "--split", "test", "--strategy", key, "--out", str(tmp_path / "t.csv"),
                     "--overwrite"]) == 0
        acc = np.mean([r["predicted"] == r["true"] for r in _read_csv(tmp_path / "t.csv")])
        assert acc == json.loads((out / key / "seed0" / "result.json").read_text())["accuracy"], key


def test_true_labels_are_matched_by_class_name(table_run, tmp_path, capsys):
    """A table holding only two of the three classes: its labels 0/1 are 'dog'/'eel', not the
    run's classes 0/1 ('cat'/'dog')."""
    cfg, out, tgt, d = table_run
    part = tgt[tgt["kind"] != "cat"]
    part.to_csv(tmp_path / "part.csv", index=False)
    assert main(["predict", str(out), str(tmp_path / "part.csv"), "--strategy", "adapt",
                 "--out", str(tmp_path / "p.csv")]) == 0
    rows = _read_csv(tmp_path / "p.csv")
    assert [r["true"] for r in rows] == part["kind"].tolist()
    acc = np.mean([r["predicted"] == r["true"] for r in rows])
    assert f"accuracy {acc:.4f}" in capsys.readouterr().out


def test_demo_shaped_run_end_to_end(tmp_path, capsys):
    """digits source/target, scratch + feature_extraction + finetune on tiny_cnn, one seed: the run,
    its model card, predict on its test split (the run's accuracy exactly), and an export."""
    exp = tmp_path / "exp.yaml"
    exp.write_text("""
name: demo_small
seeds: 1
source: "digits:subset=0/2,size=16"
target: "digits:subset=1/2,size=16,rotate=22..45,translate=0.1,seed=0"
split: {labels_per_class: 5, val_fraction: 0.5}
backbone: {name: tiny_cnn, image_size: 16}
progress: false
strategies:
  - {name: scratch, epochs: 3, batch_size: 16, val_every: 1}
  - feature_extraction
  - {name: finetune, epochs: 3, batch_size: 16, val_every: 1}
""")
    out = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(out), "--no-report"]) == 0
    res = json.loads((out / "results.json").read_text())
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["classes"] == [str(i) for i in range(10)] and card["data"]["modality"] == "image"
    assert card["data"]["source"]["spec"] == "digits:subset=0/2,size=16"
    split = card["splits"]["per_seed"]["0"]
    row = res["runs"][0]
    assert split["train_labeled"] == 50 and split["train_unlabeled"] == 0
    assert split["val"] == row["n_val"] and split["test"] == row["n_test"]
    for k, s in res["summary"].items():
        assert card["metrics"][k]["test_accuracy_mean"] == s["accuracy_mean"]
        assert card["metrics"][k]["test_accuracy_std"] == s["accuracy_std"]
    assert card["backbone"]["licence"].startswith("n/a") and card["warnings"] == res["warnings"]
    md = (out / "MODEL_CARD.md").read_text()
    for text in ("## Data", "## Splits", "## Metrics", "± 0.000", "labeled target validation split",
                 "licence of the weights", "transferkit predict", "transferkit export", "tk.load_run"):
        assert text in md, text
    capsys.readouterr()
    dest = tmp_path / "pred.csv"
    assert main(["predict", str(out), "--split", "test", "--out", str(dest)]) == 0
    best = card["default_strategy"]
    recorded = json.loads((out / best / "seed0" / "result.json").read_text())["accuracy"]
    assert np.mean([r["predicted"] == r["true"] for r in _read_csv(dest)]) == recorded
    assert f"the run recorded {recorded:.4f}" in capsys.readouterr().out
    pytest.importorskip("onnxruntime")
    assert main(["export", str(out), "--strategy", "finetune", "--out", str(tmp_path / "m.onnx")]) == 0
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["max_abs_diff"] <= 1e-4 and side["input_shape"] == [None, 3, 16, 16]


def test_model_card_licences():
    from transferkit.modelcard import backbone_licence

    assert backbone_licence("efficientnet_lite0") == "Apache-2.0" == backbone_licence("minilm")
    from transferkit.backbones import available

    # every registered backbone with pretrained weights has a known licence
    for name in available("backbone"):
        assert not backbone_licence(name).startswith("unknown"), name
    assert backbone_licence("efficientnet_lite2") == "Apache-2.0" and "MIT" in backbone_licence("usps_cnn")
    assert backbone_licence("identity").startswith("n/a") and backbone_licence("tiny_cnn").startswith("n/a")
    assert backbone_licence("timm:resnet18") == "see the model's own card" == backbone_licence("hf:x")


# ---------------------------------------------------------------------------------- bad input
def _fails(argv, capsys, *words, tmp=None):
    before = sorted(p.name for p in tmp.iterdir()) if tmp is not None else None
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("transferkit: error:"), err
    for w in words:
        assert w in err, (w, err)
    if tmp is not None:
        assert sorted(p.name for p in tmp.iterdir()) == before  # nothing written
    return err


def test_bad_input_is_one_line_exit_2_and_writes_nothing(table_run, deep_run, tmp_path, capsys):
    cfg, out, tgt, d = table_run
    w = tmp_path / "work"
    w.mkdir()
    dest = str(w / "p.csv")
    tgt.drop(columns=["income"]).to_csv(w / "missing.csv", index=False)
    _fails(["predict", str(out), str(w / "missing.csv"), "--out", dest], capsys, "'income'", "add the column", tmp=w)
    np.savez(w / "three.npz", x=np.zeros((5, 3), dtype=np.float32))
    _fails(["predict", str(out), str(w / "three.npz"), "--out", dest], capsys, "3 feature columns", "takes 4", tmp=w)
    np.savez(w / "images.npz", x=np.zeros((5, 8, 8), dtype=np.float32))
    _fails(["predict", str(out), str(w / "images.npz"), "--out", dest], capsys, "image data", "tabular", tmp=w)
    _, img_out = deep_run
    _fails(["predict", str(img_out), str(d / "target.csv"), "--out", dest], capsys, "is a table", "images", tmp=w)
    _fails(["predict", str(w), str(d / "target.csv"), "--out", dest], capsys, "not a transferkit run directory", tmp=w)
    from PIL import Image

    for c in "ab":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / "ok.png")
    (tmp_path / "imgs" / "b" / "bad.png").write_bytes(b"not a png")
    _fails(["predict", str(img_out), str(tmp_path / "imgs"), "--out", dest], capsys, "bad.png", tmp=w)
    _fails(["predict", str(out), str(d / "target.csv"), "--strategy", "adapz", "--out", dest], capsys,
           "'adapz'", "'adapt'", tmp=w)
    _fails(["export", str(out), "--strategy", "nope", "--out", str(w / "m.onnx")], capsys, "'nope'", tmp=w)
    _fails(["predict", str(out), str(d / "target.csv"), "--seed", "7", "--out", dest], capsys, "seed 7", tmp=w)
    # --out: an existing file without --overwrite, the input itself, inside the run directory
    (w / "keep.csv").write_text("mine\n")
    _fails(["predict", str(out), str(d / "target.csv"), "--out", str(w / "keep.csv")], capsys, "--overwrite", tmp=w)
    assert (w / "keep.csv").read_text() == "mine\n"
    _fails(["predict", str(out), str(d / "target.csv"), "--out", str(d / "target.csv"), "--overwrite"], capsys,
           "is the input")
    before = sorted(p.name for p in out.rglob("*"))
    _fails(["predict", str(out), str(d / "target.csv"), "--out", str(out / "p.csv")], capsys, "run directory")
    _fails(["predict", str(out), str(d / "target.csv"), "--out", str(out / "adapt" / "seed0" / "p.csv")], capsys,
           "run directory")
    assert sorted(p.name for p in out.rglob("*")) == before
    _fails(["predict", str(out), "--out", dest], capsys, "needs DATA", tmp=w)


def test_a_run_without_validation_accuracy_asks_for_the_strategy(table_run, tmp_path, capsys):
    import shutil

    cfg, out, tgt, d = table_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    res = json.loads((copy / "results.json").read_text())
    for s in res["summary"].values():
        s["val_accuracy_mean"] = None
    (copy / "results.json").write_text(json.dumps(res))
    err = _fails(["predict", str(copy), str(d / "target.csv"), "--out", str(tmp_path / "p.csv")], capsys,
                 "--strategy", "feature_extraction, adapt, target_only")
    assert "several strategies" in err
    assert tk.load_run(copy, strategy="adapt").run_["strategy"] == "adapt"
