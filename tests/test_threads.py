"""The default torch thread count, --threads, and where the CLI applies it."""

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

from transferkit import _threads
from transferkit._threads import check_threads, configure_threads, default_threads
from transferkit.cli import main as cli
from transferkit.errors import ConfigError


@pytest.fixture
def machine(monkeypatch):
    """A fake machine: ``machine(cores, load, local=1)``; no OMP_NUM_THREADS, no launcher."""
    for var in ("OMP_NUM_THREADS", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)

    def make(cores, load, local=1):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(_threads, "busy_cores", lambda: load)  # what /proc/stat would say
        monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 0.0, 0.0), raising=False)  # not read on Linux
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))

    return make


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("cores, load, local, want", [
    (8, 0.0, 1, 8),    # idle: every core this process may use
    (8, 2.4, 1, 6),    # two cores busy (load rounded)
    (8, 2.6, 1, 5),
    (8, 0.0, 2, 4),    # two ranks share the cores
    (8, 2.0, 2, 3),    # (8 - 2) // 2
    (2, 1.0, 1, 1),    # the 2-core machine with one busy neighbour
    (2, 9.0, 1, 1),    # overloaded: never below 1
    (1, 0.0, 4, 1),    # more ranks than cores: still 1
])
def test_default_rule(machine, cores, load, local, want):
    machine(cores, load, local)
    assert default_threads() == want


def test_default_uses_the_affinity_mask_not_cpu_count(machine, monkeypatch):
    machine(3, 0.0)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_threads() == 3  # taskset / container CPU sets count, not the machine's cores


def test_default_without_affinity_or_load_average(machine, monkeypatch):
    machine(1, 0.0)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 6)

    def no_load():
        raise OSError("no load average")

    monkeypatch.setattr(_threads, "busy_cores", lambda: None)  # no /proc/stat
    monkeypatch.setattr(os, "getloadavg", no_load)
    assert default_threads() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_threads() == 1


def test_without_proc_stat_the_load_average_counts(machine, monkeypatch):
    machine(8, 0.0)
    monkeypatch.setattr(_threads, "busy_cores", lambda: None)  # macOS
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0.0, 0.0), raising=False)
    assert default_threads() == 5


def test_busy_cores_reads_two_samples_of_proc_stat_and_leaves_out_this_process(tmp_path, monkeypatch):
    """Two /proc/stat snapshots on a 4-core machine at 100 ticks/s: the window is 80 ticks (4 cores
    x 0.2 s), 60 of them busy (user, system, steal), i.e. 3 cores; this process used 0.2 s of CPU
    (1 core) in the window, so the others keep 2 cores busy."""
    stat = tmp_path / "stat"
    per_cpu = "cpu0 1 2 3\ncpu1 1 2 3\ncpu2 1 2 3\ncpu3 1 2 3\nintr 5\n"
    snaps = iter(["cpu  1040 0 515 8018 102 0 0 5 0 0\n" + per_cpu])
    own = iter([10.0, 10.2])
    stat.write_text("cpu  1000 0 500 8000 100 0 0 0 0 0\n" + per_cpu)
    monkeypatch.setattr(_threads, "PROC_STAT", str(stat))
    monkeypatch.setattr(_threads.time, "sleep", lambda seconds: stat.write_text(next(snaps)))
    monkeypatch.setattr(os, "times", lambda: (next(own), 0.0, 0.0, 0.0, 0.0))
    monkeypatch.setattr(os, "sysconf", lambda name: 100)
    assert _threads.busy_cores() == pytest.approx(2.0)
    monkeypatch.setattr(_threads, "PROC_STAT", str(tmp_path / "missing"))  # not Linux
    assert _threads.busy_cores() is None


def test_busy_cores_sees_a_busy_neighbour():
    """On this machine (Linux): a process spinning on one core counts as about one busy core."""
    if _threads.busy_cores(0.05) is None:
        pytest.skip("no /proc/stat")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        busy = _threads.busy_cores(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert 0.7 <= busy <= (os.cpu_count() or 1) + 0.5


def test_default_local_processes_argument_overrides_the_launcher(machine):
    machine(8, 0.0, local=4)
    assert default_threads() == 2
    assert default_threads(local_processes=1) == 8


def test_omp_num_threads_wins_over_the_default(machine, monkeypatch):
    machine(8, 6.0, local=2)
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert default_threads() == 5  # the user's choice: not divided, not reduced by the load
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")  # OpenMP's nested form: the outer level
    assert default_threads() == 3
    for junk in ("", "0", "-2", "many"):  # not a count: the rule applies
        monkeypatch.setenv("OMP_NUM_THREADS", junk)
        assert default_threads() == 1


def test_configure_threads_sets_torch(keep_threads, machine):
    assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    machine(8, 6.0)
    assert configure_threads() == 2 and torch.get_num_threads() == 2  # None: the default


def test_explicit_threads_win_over_omp_num_threads(keep_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert configure_threads(1) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, float("nan")])
def test_threads_validation_names_the_flag(bad):
    with pytest.raises(ConfigError, match=r"^--threads=.* must be a whole number >= 1 .*give e\.g\. --threads 1"):
        configure_threads(bad)
    with pytest.raises(ConfigError, match="threads="):
        check_threads(bad, param="threads")


def test_interop_pool_is_sized_once_and_its_refusal_is_harmless(keep_threads, monkeypatch):
    calls = []

    def refuse(n):
        calls.append(n)
        raise RuntimeError("Error: cannot set number of interop threads after parallel work has started")

    monkeypatch.setattr(torch, "set_num_interop_threads", refuse)
    monkeypatch.setattr(_threads, "_INTEROP_SET", False)
    assert configure_threads(1) == 1  # torch refused: no error, the intra-op count is set
    assert configure_threads(1) == 1
    assert calls == [1]  # not asked again


# ---------------------------------------------------------------------------- the CLI
COMMANDS = [  # every subcommand that runs models, with the arguments it needs to parse
    ("run", ["run", "exp.yaml"], "_cmd_run"),
    ("demo", ["demo"], "_cmd_demo"),
    ("assess", ["assess", "--source", "digits", "--target", "digits"], "_cmd_assess"),
    ("benchmark", ["benchmark", "digits-shift"], "_cmd_benchmark"),
    ("diagnose", ["diagnose", "exp.yaml"], "_cmd_diagnose"),
]


@pytest.mark.parametrize("name, argv, fn", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_cli_threads_flag_is_applied_before_the_command(name, argv, fn, monkeypatch, keep_threads):
    cli_main = importlib.import_module("transferkit.cli.main")

    seen = {}
    monkeypatch.setattr(cli_main, fn,
                        lambda args: seen.update(threads=args.threads, torch=torch.get_num_threads()) or 0)
    torch.set_num_threads(2)
    assert cli([*argv, "--threads", "1"]) == 0
    assert seen == {"threads": 1, "torch": 1}


def test_cli_without_threads_keeps_an_embedding_programs_choice(monkeypatch, keep_threads):
    """main() called where torch is already imported (here, a test) keeps the caller's count."""
    cli_main = importlib.import_module("transferkit.cli.main")

    seen = {}
    monkeypatch.setattr(cli_main, "_cmd_run", lambda args: seen.update(torch=torch.get_num_threads()) or 0)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(1)
    assert cli(["run", "exp.yaml"]) == 0
    assert seen == {"torch": 1}


def test_cli_default_threads_from_a_shell(tmp_path):
    """From a shell (torch not imported yet) the default applies: OMP_NUM_THREADS here."""
    code = ("import importlib, sys, json; cm = importlib.import_module('transferkit.cli.main'); "
            "cm._cmd_run = lambda a: print(json.dumps(__import__('torch').get_num_threads())) or 0; "
            "sys.exit(cm.main(sys.argv[1:]))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for threads, want in ((None, 1), ("2", 2)):
        extra = [] if threads is None else ["--threads", threads]
        out = subprocess.run([sys.executable, "-c", code, "run", "exp.yaml", *extra], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.strip().splitlines()[-1]) == want


@pytest.mark.parametrize("bad", ["0", "-3", "two", "1.5"])
def test_cli_bad_threads_is_one_line_exit_2(bad, capsys):
    assert cli(["run", "exp.yaml", "--threads", bad]) == 2
    err = capsys.readouterr().err
    assert "--threads" in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_commands_that_run_no_model_take_no_threads(capsys):
    assert cli(["list", "strategies", "--threads", "1"]) == 2
    assert "unrecognized arguments: --threads" in capsys.readouterr().err
