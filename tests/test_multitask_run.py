"""A multi-task run end to end: each head's metric in the results and in the report."""

from transferkit.config import config_from_dict
from transferkit.experiment import run_experiment
from transferkit.reports import write_report


def test_a_multitask_run_records_and_reports_every_head(tmp_path, one_thread):
    cfg = config_from_dict({
        "name": "mtl", "seeds": 1, "target": "digits_multitask:n=300,size=16",
        "split": {"labels_per_class": 15, "val_fraction": 0.2},
        "backbone": {"name": "tiny_cnn", "image_size": 16, "pretrained": False},
        "strategies": [{"name": "multitask", "epochs": 2, "batch_size": 32, "weighting": "uncertainty",
                        "heads": {"digit": "classification", "parity": "classification", "angle": "regression"}}],
    })
    res = run_experiment(cfg, tmp_path / "run", echo=lambda *a: None)
    tasks = res["runs"][0]["tasks"]
    assert set(tasks) == {"digit", "parity", "angle"}
    assert 0 <= tasks["digit"]["accuracy"] <= 1 and tasks["angle"]["mse"] >= 0 and "r2" in tasks["angle"]
    assert res["runs"][0]["accuracy"] == tasks["digit"]["accuracy"]  # the first head is the run's accuracy
    r2 = tasks["angle"]["r2"]
    assert any("regression head 'angle' has R^2" in w for w in res["runs"][0]["warnings"]) == (r2 < 0)
    md = (write_report(tmp_path / "run", formats=("md",))["md"]).read_text()
    assert "| multitask | angle |" in md and "R^2" in md
