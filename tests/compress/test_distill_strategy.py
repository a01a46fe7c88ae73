"""The ``distill`` strategy in a run: a teacher by key or by run directory, unlabeled rows, reload."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferkit.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")

STUDENT = {"name": "tiny_cnn", "image_size": 16, "options": {"width": 4}}


def _cfg(strategies, **split):
    return {"name": "kd", "seeds": [0], "target": "digits:subset=1/8,size=16",
            "split": {"labels_per_class": 5, "val_fraction": 0.5, **split},
            "backbone": {"name": "tiny_cnn", "image_size": 16, "pretrained": False, "options": {"width": 8}},
            "progress": False, "strategies": strategies}


def _run(cfg, out):
    from _predict_runs import run

    return run(cfg, out)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    _run(_cfg([{"name": "scratch", "epochs": 3, "batch_size": 16, "lr": 0.01},
               {"name": "distill", "teacher": "scratch", "student": STUDENT, "epochs": 2,
                "temperature": 2.0, "alpha": 0.7}], unlabeled_fraction=0.5), out)
    return out


def test_a_teacher_by_key_trains_the_student_on_labeled_and_unlabeled_rows(teacher_run):
    res = json.loads((teacher_run / "distill" / "seed0" / "result.json").read_text())
    assert res["n_unlabeled"] > 0 and res["accuracy"] is not None
    hist = [json.loads(line) for line in (teacher_run / "distill" / "seed0" / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    assert any("kd" in h for h in hist)  # the distillation term was the training loss


def test_the_saved_student_reloads_alone_and_reproduces_its_predictions(teacher_run):
    import transferkit as tk
    from _predict_runs import own_test_split

    model = tk.load_run(teacher_run, strategy="distill")
    assert type(model).__name__ == "Distill"
    assert model.model_.backbone.spec.name == "tiny_cnn"
    n_student = sum(p.numel() for p in model.model_.parameters())
    n_teacher = sum(p.numel() for p in tk.load_run(teacher_run, strategy="scratch").model_.parameters())
    assert n_student < n_teacher  # the width-4 student, not the run's width-8 backbone
    test = own_test_split(_cfg([{"name": "scratch"}], unlabeled_fraction=0.5), 0)
    stored = json.loads((teacher_run / "distill" / "seed0" / "result.json").read_text())["accuracy"]
    assert model.score(test) == pytest.approx(stored)


def test_a_teacher_run_directory_and_the_class_order(teacher_run, tmp_path):
    from transferkit.compress.strategy import Distill
    from transferkit.data.spec import load_dataset

    ds = load_dataset("digits:subset=1/8,size=16")
    d = Distill(teacher=str(teacher_run / "scratch" / "seed0"), student=STUDENT, epochs=1)
    logits, _, what = d.teacher_logits(ds)
    import transferkit as tk

    ref = tk.load_run(teacher_run, strategy="scratch").predict_logits(ds)
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
    assert "scratch" in what
    # a dataset whose classes come in another order gets the teacher's columns reordered by name
    rev = ds.subset(np.arange(len(ds)))
    order = d._class_order([str(c) for c in ds.classes][::-1], rev)
    assert (order == np.arange(len(ds.classes))[::-1]).all()
    with pytest.raises(ConfigError, match="not the target's class"):
        d._class_order(["0", "1"], ds)


def test_bad_teachers_are_one_line_errors_before_anything_is_written(teacher_run, tmp_path):
    from transferkit.config import config_from_dict
    from transferkit.experiment import validate_run

    def fails(strategies, match, exc=ConfigError, **split):
        with pytest.raises(exc, match=match):
            validate_run(config_from_dict(_cfg(strategies, **split)))

    fails([{"name": "distill", "student": STUDENT}], "distill.teacher is required")
    fails([{"name": "distill", "teacher": "scrach"}, {"name": "scratch"}], "neither a strategy")
    fails([{"name": "distill", "teacher": "scratch"}, {"name": "scratch"}], "listed after")
    fails([{"name": "distill", "teacher": "distill"}], "itself")
    fails([{"name": "distill", "teacher": str(teacher_run), "temperature": 0}], "distill.temperature must be > 0")
    fails([{"name": "distill", "teacher": str(teacher_run), "alpha": 1.5}], "distill.alpha")
    fails([{"name": "distill", "teacher": str(teacher_run), "augment": "light"}], "does not augment")
    fails([{"name": "distill", "teacher": str(teacher_run), "student": {"name": "tiny_cn"}}], "tiny_cnn")
    # an unfinished teacher run: its result.json is missing
    import shutil

    unfinished = tmp_path / "unfinished"
    shutil.copytree(teacher_run, unfinished)
    (unfinished / "scratch" / "seed0" / "result.json").unlink()
    fails([{"name": "distill", "teacher": str(unfinished / "scratch" / "seed0")}], "not finished", DataError)
    # a teacher trained on other classes than the target's (matched by name)
    from _predict_runs import table_config, write_tables

    sp, tp, frame = write_tables(tmp_path)
    other = tmp_path / "other"
    _run(table_config(sp, tp, [{"name": "feature_extraction"}]), other)
    frame["kind"] = frame["kind"].replace({"cat": "ant"})
    renamed = tmp_path / "renamed.csv"
    frame.to_csv(renamed, index=False)
    cfg = table_config(sp, renamed, [{"name": "distill", "teacher": str(other),
                                      "student": {"name": "tiny_mlp", "options": {"in_features": 4}}}])
    with pytest.raises(ConfigError, match="not the target's class.*ant"):
        validate_run(config_from_dict(cfg))


def test_the_compress_example_validates():
    """examples/compress/kd_fashion.yaml passes every check a run makes before training (a teacher
    by key listed before its students, the student backbones built on real rows)."""
    from pathlib import Path

    from transferkit.config import load_config
    from transferkit.data import real
    from transferkit.experiment import validate_run

    fashion = Path(real.FASHION_MNIST_DIR)
    if not all((fashion / f).is_file() for f in real.FASHION_MNIST_SHA256):
        pytest.skip("Fashion-MNIST files absent: the Debian package dataset-fashion-mnist is not installed")
    path = Path(__file__).resolve().parents[2] / "examples" / "compress" / "kd_fashion.yaml"
    cfg = load_config(path, overrides=["backbone.name=tiny_cnn", "backbone.image_size=16"])
    _, _, _, strategies = validate_run(cfg)
    assert [c.name for c, _ in strategies] == ["finetune", "distill", "distill"]
