"""transferkit rl: a run directory of cells; reproducible, resumable, checked before anything is written."""

import json
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")

from transferkit.errors import ConfigError  # noqa: E402
from transferkit.rl.benchmark import PARTS, check_rl_args, part_config  # noqa: E402
from transferkit.rl.run import config_from_dict, load_rl_config, prepare, run_cells, run_rl  # noqa: E402

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "rl").glob("*.yaml"))
TINY = {"n_steps": 32, "n_envs": 2, "batch_size": 32, "n_epochs": 2}  # 64 steps a rollout


def _cfg(**kw):
    cfg = {"name": "t", "source": "cartpole", "randomized_source": "cartpole:length=0.25..1.5",
           "targets": ["cartpole:length=1.0"], "source_steps": 128, "steps": 128, "eval_every": 64,
           "eval_episodes": 2, "seeds": 2, "hyperparams": TINY,
           "methods": ["scratch", "zero_shot", "finetune", "randomized",
                       {"name": "distill", "iterations": 2, "steps_per_iteration": 40, "epochs": 2},
                       {"name": "distill", "key": "distill_multi", "teachers": ["finetune", "source"],
                        "iterations": 1, "steps_per_iteration": 40, "epochs": 1}]}
    cfg.update(kw)
    return cfg


def _curves(rows):
    return {(r["method"], r["seed"]): r["curve"]["returns"] for r in rows}


def test_a_seeded_run_is_reproducible(one_thread):
    cfg = config_from_dict(_cfg(seeds=[3], methods=["scratch", "finetune", {"name": "distill", "iterations": 1,
                                                                           "steps_per_iteration": 40, "epochs": 1}]))
    hp = prepare(cfg)
    a, b = (run_cells(cfg, hp, None, lambda _: None, prefix="t") for _ in range(2))
    assert _curves(a) == _curves(b)
    assert [r["student_return"] for r in a if r["method"] == "distill"] == \
           [r["student_return"] for r in b if r["method"] == "distill"]
    assert len(a[0]["curve"]["steps"]) == 3 and a[0]["curve"]["steps"][0] == 0  # points at 0, 64, 128 steps
    # another seed is another run
    c = run_cells(config_from_dict(_cfg(seeds=[4], methods=["scratch"])), hp, None, lambda _: None, prefix="t")
    assert c[0]["curve"]["returns"] != a[0]["curve"]["returns"]


def test_a_run_writes_its_directory_and_resumes_from_its_cells(tmp_path, one_thread):
    out = tmp_path / "run"
    lines = []
    res = run_rl(_cfg(), out, echo=lines.append)
    for f in ("rl.yaml", "environment.json", "rl.log", "metrics.jsonl", "result.json"):
        assert (out / f).is_file(), f
    assert len(list((out / "cells").glob("*.json"))) == 12 and list((out / "policies").glob("*.zip"))
    rows = {(r["method"], r["seed"]): r for r in res["cells"]}
    # fine-tuning starts where the source agent is: its first point is the zero-shot evaluation
    for s in (0, 1):
        assert rows["finetune", s]["curve"]["returns"][0] == rows["zero_shot", s]["curve"]["returns"][0]
    dm = rows["distill_multi", 0]
    assert [t["teacher"] for t in dm["teachers"]] == ["finetune", "source"]
    assert dm["teachers"][1]["env"] == "cartpole" and dm["student_params"] < dm["teacher_params"]
    summ = {r["method"]: r for r in res["summary"]}
    assert summ["finetune"]["vs_scratch"]["verdict"]["n_seeds"] == 2 and "retention" in summ["distill"]
    pts = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {p["method"] for p in pts} >= {"scratch", "finetune", "distill"} and len(pts) > 20
    log = (out / "rl.log").read_text()
    assert "training the source cartpole" in log and "[12/12]" in log
    # the stored config reloads as it was written
    again = load_rl_config(out / "rl.yaml")
    assert list(again.methods) == list(config_from_dict(_cfg()).methods)
    assert str(again.targets[0]) == "cartpole:length=1"
    # a complete run has nothing to resume; an interrupted one keeps its finished cells
    assert run_rl(None, out, resume=True, echo=None)["summary"] == res["summary"]
    (out / "result.json").unlink()
    (out / ".incomplete").write_text("")
    (out / "cells" / "t--cartpole_length=1--scratch--seed1.json").unlink()
    lines.clear()
    res2 = run_rl(None, out, resume=True, echo=lines.append)
    assert sum("complete, kept" in x for x in lines) == 11
    assert _curves(res2["cells"]) == _curves(res["cells"])  # the recomputed cell is the same run
    from transferkit.reports.rl import write_rl_report

    paths = write_rl_report(out)
    assert paths["html"].is_file() and "learning curves" in paths["md"].read_text() + "learning curves"
    assert list((out / "report_files").glob("curves-*.png"))


def test_a_continuous_task_distils_into_a_gaussian_student(one_thread):
    cfg = config_from_dict({"source": "pendulum", "targets": ["pendulum:g=15,m=1.2"], "source_steps": 128,
                            "steps": 128, "eval_every": 128, "eval_episodes": 1, "seeds": [0],
                            "hyperparams": {"n_envs": 1, "n_steps": 64, "batch_size": 32, "n_epochs": 1},
                            "methods": ["finetune", {"name": "distill", "iterations": 1, "steps_per_iteration": 30,
                                                     "epochs": 1}]})
    rows = run_cells(cfg, prepare(cfg), None, lambda _: None, prefix="p")
    d = rows[1]
    assert d["kind"] == "gaussian" and d["teacher_return"] < 0 and d["retention"] is not None


@pytest.mark.parametrize("change, match", [
    ({"targets": ["acrobot:link_mass_2=1.5"]}, r"action space Discrete\(3\) but the source policy \('cartpole'\) "
                                                r"acts in Discrete\(2\)"),
    ({"targets": ["cartpole:lenght=1.0"]}, r"targets\[0\]:.*unknown cartpole parameter 'lenght'\. Did you mean "
                                           r"'length'"),
    ({"targets": ["cartpole:masscart=-1"]}, r"masscart=-1 is negative"),
    ({"randomized_source": "cartpole:length=1.5..0.25"}, r"low end 1\.5 above its high end 0\.25"),
    ({"randomized_source": "cartpole:length=1.0"}, r"randomized_source .* has no range"),
    ({"source": "cartpole:length=0.25..1.5"}, r"source .* holds a range"),
    ({"methods": ["scratch", "finetuen"]}, r"methods\[1\]: unknown rl_transfer 'finetuen'\. Did you mean 'finetune'"),
    ({"methods": [{"name": "finetune", "lr_scael": 0.1}]}, r"unknown option 'lr_scael'\. Did you mean 'lr_scale'"),
    ({"methods": [{"name": "distill", "teachers": ["fine_tune"]}, "finetune"]}, r"teacher 'fine_tune' is not a "
                                                                              r"method of this run"),
    ({"methods": ["randomized"], "randomized_source": None}, r"method randomized needs randomized_source"),
    ({"hyperparams": {"n_step": 64}}, r"ppo has no argument 'n_step'\. Did you mean 'n_steps'"),
    ({"hyperparams": {"batch_size": 0}}, r"refused by stable-baselines3's PPO"),
    ({"algo": "sac", "methods": ["scratch"], "hyperparams": {}}, r"algo 'sac' needs continuous actions"),
    ({"stepz": 10}, r"unknown key 'stepz'.*Did you mean 'steps'"),
    ({"eval_every": 1000}, r"eval_every"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, change, match):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=match) as e:
        run_rl(_cfg(**change), out, echo=None)
    assert "\n" not in str(e.value)
    assert not out.exists()


def test_the_cli_refuses_a_bad_file_before_writing(tmp_path, capsys):
    from transferkit.cli.main import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("source: cartpole\ntargets: ['mountaincar']\n")
    assert main(["rl", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "action space Discrete(3)" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_examples_pass_every_check_before_training(path):
    cfg = load_rl_config(path)
    prepare(cfg)  # spaces, algorithm, hyperparameters: everything but the training
    assert cfg.targets and cfg.methods


def test_the_benchmark_arguments_and_variants_check():
    assert check_rl_args()["parts"] == list(PARTS)
    with pytest.raises(ConfigError, match="--epochs 5 does not apply; its budgets are environment steps"):
        check_rl_args(epochs=5)
    with pytest.raises(ConfigError, match="unknown part 'cartpole_gravity'.*cartpole_gravity_19.6"):
        check_rl_args(["cartpole_gravity"])
    with pytest.raises(ConfigError, match="--seeds 1 leaves the negative-transfer verdict"):
        check_rl_args(seeds=1)
    for p in PARTS:
        prepare(part_config(p, 3))


def test_finetuning_copies_the_source_with_a_lower_rate_and_optionally_a_new_value_head(one_thread):
    import numpy as np
    import torch

    from transferkit.rl.agents import Linear, copy_agent, new_agent

    src = new_agent("ppo", "cartpole", 0, {**TINY, "learning_rate": "lin_0.001"})
    src.learn(64)
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    for reinit in (False, True):
        ft = copy_agent(src, "cartpole:length=1.0", 1, n_envs=2, learning_rate=Linear(0.0003), reinit_value=reinit)
        assert ft.lr_schedule(1.0) == pytest.approx(0.0003) and ft.lr_schedule(0.5) == pytest.approx(0.00015)
        assert ft.policy.optimizer.param_groups[0]["lr"] == pytest.approx(0.0003)
        np.testing.assert_array_equal(ft.predict(obs, deterministic=True)[0], src.predict(obs, deterministic=True)[0])
        same = torch.equal(ft.policy.value_net.weight, src.policy.value_net.weight)
        assert same is (not reinit)
        assert ft.policy.value_net.weight is not src.policy.value_net.weight  # a copy, not shared
    with pytest.raises(ConfigError, match="reinit_value=true re-draws PPO's value head; DQN has none"):
        copy_agent(new_agent("dqn", "cartpole", 0, {"learning_starts": 0}), "cartpole", 0, n_envs=1,
                   reinit_value=True)


def test_dqn_agents_transfer_and_distil_from_their_q_values(one_thread):
    cfg = config_from_dict({"algo": "dqn", "source": "cartpole", "targets": ["cartpole:length=1.0"],
                            "source_steps": 128, "steps": 128, "eval_every": 128, "eval_episodes": 1, "seeds": [0],
                            "hyperparams": {"learning_starts": 0, "buffer_size": 1000, "train_freq": 16,
                                            "gradient_steps": 1, "batch_size": 16, "net_arch": [16]},
                            "methods": ["scratch", "finetune", {"name": "distill", "iterations": 1,
                                                                "steps_per_iteration": 30, "epochs": 1}]})
    rows = run_cells(cfg, prepare(cfg), None, lambda _: None, prefix="d")
    d = rows[2]
    assert d["kind"] == "q" and d["temperature"] == 0.01  # Rusu et al.'s softened Q-values
    assert rows[1]["curve"]["steps"][-1] >= 128
