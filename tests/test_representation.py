"""transferkit benchmark representation: the plumbing on tiny data (the real run is a benchmark)."""

import json

import pytest

from transferkit import representation as rep
from transferkit.cli.main import main
from transferkit.errors import ConfigError


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(rep, "SSL_BACKBONE", {"name": "tiny_cnn", "image_size": 16, "width": 4})
    monkeypatch.setattr(rep, "SSL_DATA", "digits:size=16,subset=0/4")
    monkeypatch.setattr(rep, "SSL_BANK", "digits:size=16,subset=1/4")
    monkeypatch.setattr(rep, "SSL_TEST", "digits:size=16,subset=2/4")
    monkeypatch.setattr(rep, "SSL_TARGETS", {"digits": "digits:size=16,subset=3/4"})
    monkeypatch.setattr(rep, "PRETEXTS", ("rotation",))
    monkeypatch.setattr(rep, "SSL_INITS", ("random", "supervised", "rotation"))
    monkeypatch.setattr(rep, "BANK_ROWS", 300)
    monkeypatch.setattr(rep, "DRAWS", 2)
    monkeypatch.setattr(rep, "_DATA", {})


def test_the_ssl_part_runs_keeps_its_cells_and_states_the_goals(tmp_path, tiny, one_thread):
    out = tmp_path / "b"
    res = rep.run_representation_dir(out, parts=["ssl"], seeds=2, epochs=1, echo=lambda *a: None)
    assert len(res["ssl"]) == 6 and {r["init"] for r in res["ssl"]} == {"random", "supervised", "rotation"}
    s = {r["init"]: r for r in res["summary"]["ssl"]}
    assert s["random"]["train_seconds"]["mean"] == 0 and s["rotation"]["n_seeds"] == 2
    assert all(0 <= s[i]["fashion_knn"]["mean"] <= 1 for i in s)
    goal = res["summary"]["ssl_goals"][0]
    assert goal["pretext"] == "rotation" and set(goal["order_holds"]) == set(goal["above_random"]) == {"digits"}
    assert goal["order_holds"]["digits"] == (goal["above_random"]["digits"] and goal["at_most_supervised"]["digits"])
    md = (out / "results.md").read_text()
    assert "random-to-supervised gap" in md and "| rotation |" in md
    assert (out / "backbones" / "rotation-seed1.safetensors").is_file()
    assert json.loads((out / "benchmark.json").read_text())["suite"] == "representation"
    from transferkit.reports.representation import write_representation_report

    paths = write_representation_report(out)
    text = paths["md"].read_text()
    assert "Self-supervised pretraining" in text and "report_files/ssl-accuracy" in text
    # a rerun keeps every cell
    seen = []
    rep.run_representation_dir(out, parts=["ssl"], seeds=2, epochs=1, echo=seen.append)
    assert sum("complete, kept" in line for line in seen) == 6


def test_bad_representation_arguments_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown part 'sll'.*ssl"):
        rep.check_representation_args(["sll"])
    code = main(["benchmark", "representation", "--backbone", "x", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--backbone is fixed by the suite" in err and not (tmp_path / "x").exists()


def test_the_cross_modal_part_on_synthetic_features(tmp_path, monkeypatch, one_thread):
    import numpy as np

    from transferkit.data import DomainDataset
    from transferkit.data.real import FASHION_MNIST_CLASSES
    from transferkit import representation as bench

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 16))

    def fake(spec):
        y = np.repeat(np.arange(10), 30)
        X = (centers[y] + 0.3 * rng.normal(size=(300, 16))).astype(np.float32)
        return DomainDataset(X, y, spec, "tabular", classes=list(FASHION_MNIST_CLASSES))

    monkeypatch.setattr(bench, "_features", fake)
    monkeypatch.setattr(bench, "CROSS_MODAL_TASKS", {"fashion": {"train": "a", "test": "b"}})
    monkeypatch.setattr(bench, "CROSS_MODAL_METHODS", ("lit_glove", "probe_10"))
    res = rep.run_representation_dir(tmp_path / "c", parts=["cross_modal"], seeds=1, epochs=1, echo=lambda *a: None)
    by = {r["method"]: r for r in res["cross_modal"]}
    assert by["probe_10"]["unseen_accuracy"] > 0.9  # separable classes: ten labels each suffice
    lit = by["lit_glove"]
    assert 0 <= lit["unseen_accuracy"] <= 1 and 0 <= lit["i2t_recall1"] <= lit["i2t_recall5"] <= lit["i2t_recall10"]
    assert lit["seen"] == bench.class_split(0)[0]
    md = (tmp_path / "c" / "results.md").read_text()
    assert "zero-shot on 5 held-out classes" in md and "the goal of 2x chance" in md
    seen = []  # a rerun keeps every cell (their definitions survive the JSON round trip)
    rep.run_representation_dir(tmp_path / "c", parts=["cross_modal"], seeds=1, epochs=1, echo=seen.append)
    assert sum("complete, kept" in line for line in seen) == 2


def test_the_mtl_part_computes_delta_m_against_single_task_models(tmp_path, monkeypatch, one_thread):
    from transferkit import representation as bench

    t = dict(bench.MTL_TASKS["digits"], train="digits_multitask:seed=0,n=240", image_size=16, epochs=None)
    monkeypatch.setattr(bench, "MTL_TASKS", {"digits": t})
    monkeypatch.setattr(bench, "MTL_METHODS", ("single", "equal", "pcgrad"))
    res = rep.run_representation_dir(tmp_path / "m", parts=["mtl"], seeds=1, epochs=1, echo=lambda *a: None)
    by = {r["method"]: r for r in res["mtl"]}
    assert set(by["single"]) >= {"digit_accuracy", "parity_accuracy", "angle_mae"}
    from transferkit.pretrain.multitask import delta_m

    want = delta_m([by["equal"][k] for k in ("digit_accuracy", "parity_accuracy", "angle_mae")],
                   [by["single"][k] for k in ("digit_accuracy", "parity_accuracy", "angle_mae")], [True, True, False])
    assert by["equal"]["delta_m"] == pytest.approx(want)
    goal = res["summary"]["mtl_goals"][0]
    assert goal["task"] == "digits" and goal["equal_delta_m"] == pytest.approx(want)
    assert "Delta-m%" in (tmp_path / "m" / "results.md").read_text()
    assert main(["report", str(tmp_path / "m"), "--format", "md"]) == 0
    assert "Multi-task learning" in (tmp_path / "m" / "report.md").read_text()
