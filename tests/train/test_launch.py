"""relaunch(): N processes through torch's elastic launcher, and `--num-processes` on the CLI.

The real multi-process training run is tested elsewhere; here the children are a tiny module
that writes what it was started with."""

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from transferkit.cli import main as cli
from transferkit.errors import ConfigError
from transferkit.train.launch import check_num_processes, child_threads, strip_parent_options

CHILD = textwrap.dedent("""
    import json, os, sys
    from transferkit._threads import default_threads

    out = sys.argv[1]
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS", "ACCELERATE_USE_CPU",
            "MASTER_ADDR", "MASTER_PORT")
    seen = {k: os.environ.get(k) for k in keys}
    seen.update(argv=sys.argv[1:], threads=default_threads())
    with open(os.path.join(out, f"rank{seen['RANK']}.json"), "w") as f:
        json.dump(seen, f)
    if "--fail-rank" in sys.argv and os.environ["RANK"] == sys.argv[sys.argv.index("--fail-rank") + 1]:
        print("transferkit: error: failing on purpose", file=sys.stderr)
        sys.exit(3)
""")


def _relaunch(tmp_path, argv, n, threads):
    """relaunch(...) in a fresh process (torch's launcher installs signal handlers; keep them out of
    pytest's), with a hard 60 s limit that stops the whole process group."""
    (tmp_path / "mods").mkdir(exist_ok=True)
    (tmp_path / "mods" / "tk_print_rank.py").write_text(CHILD)
    code = ("import json, sys; from transferkit.train.launch import relaunch; "
            "sys.exit(relaunch(json.loads(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), "
            "module='tk_print_rank'))")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                                            "OMP_NUM_THREADS", "ACCELERATE_USE_CPU")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "mods"), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(argv), str(n), json.dumps(threads)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("relaunch did not finish within 60 s")
    return proc.returncode, out, err


def test_relaunch_starts_two_ranks_with_one_thread_each(tmp_path):
    import torch

    seen_dir = tmp_path / "seen"
    seen_dir.mkdir()
    code, out, err = _relaunch(tmp_path, [str(seen_dir), "--num-processes", "2", "--threads=2", "x"], 2, 2)
    assert code == 0, err
    ranks = {int(p.stem[4:]): json.loads(p.read_text()) for p in seen_dir.glob("rank*.json")}
    assert sorted(ranks) == [0, 1]
    for r, seen in ranks.items():
        assert seen["RANK"] == str(r) and seen["LOCAL_RANK"] == str(r)
        assert seen["WORLD_SIZE"] == "2" and seen["LOCAL_WORLD_SIZE"] == "2"
        assert seen["OMP_NUM_THREADS"] == "1" and seen["threads"] == 1  # 2 threads // 2 processes
        assert seen["MASTER_ADDR"] == "127.0.0.1" and int(seen["MASTER_PORT"]) > 0
        assert seen["argv"] == [str(seen_dir), "x"]  # the parent's own options are not passed on
        assert seen["ACCELERATE_USE_CPU"] == (None if torch.cuda.is_available() else "true")
    assert "error" not in err.lower()  # the launcher's own logging stays out of the way


def test_relaunch_child_failure_is_one_line_and_its_exit_code(tmp_path):
    seen_dir = tmp_path / "seen"
    seen_dir.mkdir()
    code, out, err = _relaunch(tmp_path, [str(seen_dir), "--fail-rank", "1"], 2, 1)
    assert code == 3
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "transferkit: error: failing on purpose" in lines  # the child's own message
    ours = [ln for ln in lines if "processes failed" in ln]
    assert len(ours) == 1 and ours[0].startswith("transferkit: error: 1 of 2 processes failed (rank 1 exited with 3")
    assert "Traceback" not in err and "ChildFailedError" not in err


def test_strip_parent_options():
    argv = ["--debug", "run", "exp.yaml", "--num-processes", "2", "--threads=4", "--seeds", "2", "--threads", "1"]
    assert strip_parent_options(argv) == ["--debug", "run", "exp.yaml", "--seeds", "2"]
    assert strip_parent_options(["run", "--out", "a", "--out=b", "--outer"], ("--out",)) == ["run", "--outer"]


def test_child_threads(monkeypatch):
    assert child_threads(2, 4) == 2
    assert child_threads(4, 2) == 1  # never below 1
    monkeypatch.setattr("transferkit.train.launch.default_threads", lambda local_processes=None: 6)
    assert child_threads(2) == 3  # the machine's default for one process, shared
    with pytest.raises(ConfigError, match="--threads"):
        child_threads(2, 0)


@pytest.mark.parametrize("bad", [0, -1, 2.0, "2", True])
def test_check_num_processes(bad):
    with pytest.raises(ConfigError, match=r"^--num-processes=.* must be a whole number >= 1"):
        check_num_processes(bad)
    assert check_num_processes(3) == 3


# ---------------------------------------------------------------------------- the CLI
EXP = """
name: tiny
seeds: 1
source: "digits:subset=0/2,size=16"
target: "digits:subset=1/2,size=16,rotate=10..20,seed=0"
split: {labels_per_class: 5, val_fraction: 0.5}
backbone: {name: tiny_cnn, image_size: 16}
progress: false
strategies: [scratch]
"""


@pytest.fixture
def calls(monkeypatch):
    """relaunch replaced by a recorder (no processes start)."""
    seen = []
    monkeypatch.setattr("transferkit.train.launch.relaunch",
                        lambda argv, n, threads: seen.append((list(argv), n, threads)) or 0)
    return seen


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_cli_bad_num_processes_is_one_line_exit_2(bad, capsys, calls):
    assert cli(["run", "exp.yaml", "--num-processes", bad]) == 2
    err = capsys.readouterr().err
    assert "--num-processes" in err and err.count("\n") == 1
    assert calls == []


def test_cli_run_num_processes_relaunches_with_one_out_dir(tmp_path, monkeypatch, calls, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text(EXP)
    assert cli(["run", "exp.yaml", "--num-processes", "2", "--threads", "4", "--seeds", "1"]) == 0
    (argv, n, threads), = calls
    assert (n, threads) == (2, 4)
    assert argv[:-2] == ["run", "exp.yaml", "--num-processes", "2", "--threads", "4", "--seeds", "1"]
    assert argv[-2] == "--out" and argv[-1].startswith("runs/tiny-")  # chosen once, for every process
    assert "2 processes, 2 torch thread(s) each" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()  # the parent writes nothing
    calls.clear()
    assert cli(["run", "exp.yaml", "--num-processes=2", "--out", "mine"]) == 0
    assert calls[0][0] == ["run", "exp.yaml", "--num-processes=2", "--out", "mine"]


def test_cli_run_num_processes_checks_before_it_starts(tmp_path, monkeypatch, calls, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text(EXP.replace("split:", "splt:"))
    assert cli(["run", "exp.yaml", "--num-processes", "2"]) == 2  # a bad config fails once, in the parent
    assert "unknown key 'splt'" in capsys.readouterr().err
    (tmp_path / "exp.yaml").write_text(EXP)
    assert cli(["run", "exp.yaml", "--num-processes", "2", "--out", "."]) == 2  # and so does a bad --out
    assert "current directory" in capsys.readouterr().err
    assert calls == []


def test_cli_run_num_processes_1_runs_in_this_process(monkeypatch, calls):
    cli_main = importlib.import_module("transferkit.cli.main")
    ran = []
    monkeypatch.setattr(cli_main, "_run", lambda cfg, args: ran.append(args.num_processes) or 0)
    monkeypatch.setattr("transferkit.config.load_config", lambda path, overrides=(): object())
    assert cli(["run", "exp.yaml", "--num-processes", "1"]) == 0
    assert ran == [1] and calls == []


def test_cli_demo_and_resume_relaunch(tmp_path, monkeypatch, calls):
    monkeypatch.chdir(tmp_path)
    assert cli(["demo", "--num-processes", "2", "--seeds", "1"]) == 0
    argv = calls[-1][0]
    assert argv[:-2] == ["demo", "--num-processes", "2", "--seeds", "1"] and argv[-2] == "--out"
    assert argv[-1].startswith("runs/demo-")
    assert cli(["run", "--resume", "runs/old", "--num-processes", "2"]) == 0
    assert calls[-1][0] == ["run", "--resume", "runs/old", "--num-processes", "2"]


def test_relaunch_refuses_more_processes_than_gpus(monkeypatch):
    import torch

    from transferkit.train.launch import relaunch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"--num-processes=2 but this machine has 1 CUDA GPU\(s\); give at most 1"):
        relaunch(["run", "exp.yaml"], 2, 2)
