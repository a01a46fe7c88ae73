"""Run directories: the marker, the one-writer lock, and --overwrite's build-beside-and-swap."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transferkit.errors import ConfigError
from transferkit.train import rundir
from transferkit.train.rundir import LOCK, RUN_MARKER, check_output_dir, input_paths, is_run_dir, open_run_dir


def _sums(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _old_run(tmp: Path) -> Path:
    with open_run_dir(tmp / "run") as d:
        (d / "results.json").write_text('{"old": true}')
    return tmp / "run"


def test_new_dir_gets_marker_and_lock_only_while_open(tmp_path):
    with open_run_dir(tmp_path / "a") as d:
        assert d == tmp_path / "a" and is_run_dir(d)
        assert (d / LOCK).read_text().split()[0] == str(os.getpid())
    assert not (d / LOCK).exists() and (d / RUN_MARKER).is_file()


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_overwrite_swaps_on_success_and_keeps_the_old_on_failure(tmp_path, monkeypatch, atomic_exchange):
    if not atomic_exchange:  # the two-rename path of systems without renameat2
        monkeypatch.setattr(rundir, "_exchange", lambda a, b: False)
    old = _old_run(tmp_path)
    before = _sums(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with open_run_dir(old, overwrite=True) as d:
            assert d != old and d.parent == old.parent and d.name.startswith(".run.new-")
            (d / "results.json").write_text('{"new": true}')
            raise RuntimeError("boom")
    assert _sums(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with open_run_dir(old, overwrite=True) as d:
        (d / "results.json").write_text('{"new": true}')
    assert (old / "results.json").read_text() == '{"new": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and not (old / LOCK).exists()


def test_a_killed_overwrite_leaves_a_sibling_that_the_next_overwrite_removes(tmp_path):
    old = _old_run(tmp_path)
    code = ("import sys, os, signal; sys.path.insert(0, %r)\n"
            "from transferkit.train.rundir import open_run_dir\n"
            "with open_run_dir(%r, overwrite=True) as d:\n"
            "    (d / 'half').write_text('x'); os.kill(os.getpid(), signal.SIGKILL)\n") % (
        str(Path(rundir.__file__).parents[2]), str(old))
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".run.new-")]
    assert len(stale) == 1 and (old / "results.json").read_text() == '{"old": true}'
    with open_run_dir(old, overwrite=True) as d:
        (d / "results.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path):
    old = _old_run(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (old / LOCK).write_text(f"{dead.pid}\n")
    with open_run_dir(old, resume=True):
        pass
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (old / LOCK).write_text(f"{live.pid}\n")
        for kw in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(ConfigError, match=f"being written by process {live.pid}"):
                with open_run_dir(old, **kw):
                    pass
    finally:
        live.kill()
        live.wait()
    assert (old / "results.json").read_text() == '{"old": true}'


def test_an_overwrite_replaces_a_run_whose_writer_was_killed(tmp_path):
    """A run killed while writing in place leaves its lock (a dead pid); an --overwrite of it builds
    the replacement beside it and swaps it in at the end: its own replacement's live lock must not
    count as 'another process replacing this folder' (it once did, and the finished run stayed in
    the hidden sibling)."""
    old = _old_run(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (old / LOCK).write_text(f"{dead.pid}\n")
    with open_run_dir(old, overwrite=True) as d:
        assert d != old
        (d / "results.json").write_text('{"new": true}')
    assert (old / "results.json").read_text() == '{"new": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and not (old / LOCK).exists()


def test_the_same_process_cannot_open_a_directory_twice(tmp_path):
    with open_run_dir(tmp_path / "a"):
        with pytest.raises(ConfigError, match="being written by process"):
            with open_run_dir(tmp_path / "a", resume=True):
                pass


def test_check_output_dir_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.csv").write_text("a,label\n1,0\n")
    with pytest.raises(ConfigError, match="current directory"):
        check_output_dir(".")
    with pytest.raises(ConfigError, match="current directory"):
        check_output_dir("..")
    with pytest.raises(ConfigError, match="holds the input"):
        check_output_dir(data, inputs=[{"target": "data/t.csv:label=label"}])
    with pytest.raises(ConfigError, match="inside the input folder"):
        check_output_dir(data / "run", inputs=["data"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x").write_text("x")
    with pytest.raises(ConfigError, match="already holds a run"):
        check_output_dir("mine")
    with pytest.raises(ConfigError, match="was not created by transferkit"):
        check_output_dir("mine", overwrite=True)
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    with pytest.raises(ConfigError, match="symbolic link"):
        check_output_dir("link", overwrite=True)
    assert check_output_dir("runs/new", inputs=[{"target": "data/t.csv:label=label"}]) == Path("runs/new")


def test_input_paths_finds_the_paths_in_a_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "imgs").mkdir()
    cfg = {"target": "imgs", "source": "digits:rotate=5", "backbone": {"name": "file:w.safetensors"},
           "strategies": [{"name": "scratch"}]}
    assert input_paths(cfg) == sorted([(tmp_path / "imgs").resolve(), (tmp_path / "w.safetensors").resolve()])


def test_a_second_overwrite_or_resume_is_refused_while_a_replacement_is_built(tmp_path):
    old = _old_run(tmp_path)
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from transferkit.train.rundir import open_run_dir\n"
            "with open_run_dir(%r, overwrite=True) as d:\n"
            "    (d / 'ready').write_text('x'); time.sleep(60)\n") % (str(Path(rundir.__file__).parents[2]), str(old))
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        import time

        for _ in range(200):
            if any((q / "ready").exists() for q in tmp_path.glob(".run.new-*")):
                break
            time.sleep(0.05)
        before = _sums(tmp_path)
        for kw in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(ConfigError, match=f"being replaced by process {proc.pid}"):
                with open_run_dir(old, **kw):
                    pass
        with pytest.raises(ConfigError, match=f"being replaced by process {proc.pid}"):
            check_output_dir(old)  # not 'holds an interrupted run'
        assert _sums(tmp_path) == before
    finally:
        proc.kill()
        proc.wait()


def test_out_inside_another_run_is_refused(tmp_path):
    old = _old_run(tmp_path)
    with pytest.raises(ConfigError, match="inside the transferkit output"):
        check_output_dir(old / "scratch" / "seed0" / "x")
    with open_run_dir(tmp_path / "mine") as d:  # a run's own sub-runs (diagnose) are fine
        assert check_output_dir(d / "negative_transfer") == d / "negative_transfer"
    with pytest.raises(ConfigError, match="control characters"):
        check_output_dir("out\nx")
