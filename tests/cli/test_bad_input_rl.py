"""Bad input to ``transferkit rl`` and ``benchmark rl-transfer``: one line, exit 2, nothing on disk changed."""

import pytest
import yaml

from _badinput import check_case, existing  # noqa: F401

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")


def _rl(t, **changes):
    data = {"name": "rl", "algo": "ppo", "source": "cartpole", "targets": ["cartpole:length=1.0"],
            "methods": ["scratch", "zero_shot"], "source_steps": 256, "steps": 256, "eval_every": 128,
            "eval_episodes": 1, "seeds": 1, **changes}
    (t / "rl.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return ["rl", str(t / "rl.yaml"), "--out", str(t / "existing"), "--overwrite"]


CASES = {
    "rl: unknown physics parameter": lambda t: (
        _rl(t, targets=["cartpole:lenght=1.0"]), ["unknown cartpole parameter 'lenght'", "'length'"]),
    "rl: negative pole length": lambda t: (
        _rl(t, targets=["cartpole:length=-1"]), ["length=-1", "must be > 0"]),
    "rl: negative mass": lambda t: (
        _rl(t, targets=["acrobot:link_mass_2=-1.5"], source="acrobot"), ["link_mass_2=-1.5", "must be > 0"]),
    "rl: a range with lo > hi": lambda t: (
        _rl(t, randomized_source="cartpole:length=1.5..0.25", methods=["randomized"]),
        ["length=1.5..0.25", "low end"]),
    "rl: target action space differs from the source's": lambda t: (
        _rl(t, targets=["pendulum:g=15"]), ["action space"]),
    "rl: unknown environment": lambda t: (
        _rl(t, source="cartpol"), ["unknown environment 'cartpol'", "'cartpole'"]),
    "benchmark rl-transfer --epochs": lambda t: (
        ["benchmark", "rl-transfer", "--epochs", "5", "--out", str(t / "existing"), "--overwrite"],
        ["--epochs"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_rl_one_line_exit_2_nothing_damaged(case, tmp_path, existing, capsys, monkeypatch):
    check_case(CASES, case, tmp_path, capsys, monkeypatch)
