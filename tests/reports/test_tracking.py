"""The optional ``tracking:`` config section and :class:`transferkit.train.tracking.Tracker`
(the end-to-end run with MLflow and TensorBoard is in test_report_run.py)."""

import importlib.util

import pytest

from transferkit.config import config_from_dict
from transferkit.errors import ConfigError, MissingDependencyError
from transferkit.train.tracking import Tracker

BASE = {"target": "digits:subset=1/2", "strategies": ["feature_extraction"]}


def test_tracking_is_off_by_default(tmp_path):
    cfg = config_from_dict(dict(BASE))
    assert cfg.tracking is None
    t = Tracker(tmp_path)
    assert not t.enabled
    assert t.log_experiment_run(cfg, cfg.strategies[0], 0, object(), {"accuracy": 0.5}) == {}
    assert list(tmp_path.iterdir()) == []


def test_tracking_keys_are_strict():
    with pytest.raises(ConfigError, match="unknown key tracking.'mlfow'.*Did you mean 'mlflow'"):
        config_from_dict({**BASE, "tracking": {"mlfow": True}})
    with pytest.raises(ConfigError, match="tracking.tensorboard='yes' must be true or false"):
        config_from_dict({**BASE, "tracking": {"tensorboard": "yes"}})
    with pytest.raises(ConfigError, match="'tracking' must be a mapping"):
        config_from_dict({**BASE, "tracking": True})
    cfg = config_from_dict({**BASE, "tracking": {"tracking_uri": "http://localhost:5000"}})
    assert cfg.tracking.tracking_uri == "http://localhost:5000" and not cfg.tracking.mlflow
    assert cfg.to_dict()["tracking"]["tracking_uri"] == "http://localhost:5000"  # stored in config.yaml


def test_missing_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install \"transferkit\[tracking\]\""):
        config_from_dict({**BASE, "tracking": {"mlflow": True}})


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_logs_numbers_only(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = Tracker(tmp_path, tensorboard=True)
    hist = [{"epoch": 0, "train_loss": 1.5, "note": "x", "flag": True, "val_loss": float("nan")},
            {"epoch": 1, "train_loss": 0.75, "val_loss": 0.9}]
    out = t.log_run("finetune/seed0", {"lr": 0.1}, hist, {"test_accuracy": 0.8, "missing": None})
    ev = EventAccumulator(out["tensorboard_dir"]).Reload()
    tags = set(ev.Tags()["scalars"])
    assert tags == {"epoch/train_loss", "epoch/val_loss", "final/test_accuracy"}
    assert [(s.step, s.value) for s in ev.Scalars("epoch/train_loss")] == [(0, 1.5), (1, 0.75)]
    assert [(s.step, s.value) for s in ev.Scalars("epoch/val_loss")] == [(1, pytest.approx(0.9))]
    assert out["tensorboard_dir"] == str(tmp_path / "tensorboard" / "finetune" / "seed0")
