"""The run boundary: nothing outside the run directory is written or deleted, nothing old is lost.

Each test checksums everything a run must not touch (the working directory, the inputs, an
older run, a victim folder a hostile file points at) before and after.
"""

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _badinput import BASE
from transferkit.cli import main
from transferkit.train.rundir import LOCK, RUN_MARKER

pytestmark = pytest.mark.usefixtures("one_thread")

EXP = {**BASE, "name": "edge", "strategies": [{"name": "scratch", "epochs": 1, "batch_size": 16}]}


def _sums(root: Path, skip: Path | None = None) -> dict:
    """path -> sha256 of every file (and the mode bits) under ``root``, except under ``skip``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


def _exp(tmp: Path, name="exp.yaml", **changes) -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump({**EXP, **changes}, sort_keys=False))
    return p


def _finished(tmp: Path, out="old", **changes) -> Path:
    cfg = _exp(tmp, f"{out}.yaml", **changes)
    assert main(["run", str(cfg), "--out", str(tmp / out), "--no-report"]) == 0
    return tmp / out


def test_a_degenerate_model_is_a_warning_in_the_results(tmp_path, capsys, monkeypatch):
    """A run whose model predicts one class for every test sample exits 0 (the run did what was
    asked) but says so, on stderr and in results.json."""
    import numpy as np

    from transferkit.strategies import FineTune

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(FineTune, "predict", lambda self, ds: np.full(len(ds), 3))
    d = _finished(tmp_path, seeds=[0, 1])
    warned = json.loads((d / "results.json").read_text())["warnings"]
    assert len(warned) == 2 and all("predicts class '3' for 100% of the test samples" in w for w in warned), warned
    assert "seed 0" in warned[0] and "seed 1" in warned[1]
    assert capsys.readouterr().err.count("transferkit: warning: scratch (seed") == 2


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("transferkit: error: "), err
    for f in fragments:
        assert f in err, (f, err)
    return err


def test_a_new_run_dir_has_the_marker_and_no_lock_after(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = _finished(tmp_path)
    assert (d / RUN_MARKER).is_file() and not (d / LOCK).exists()
    warned = json.loads((d / "results.json").read_text())["warnings"]
    assert warned[-1].startswith("one seed (0)")  # (the 1-epoch model may also predict one class)
    assert "transferkit: warning: one seed (0)" in capsys.readouterr().err


@pytest.mark.parametrize("label", ["../..", "..", "/tmp/evil", "a/b", ".hidden"])
def test_a_malicious_label_writes_nothing_anywhere(label, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = _exp(work, strategies=[{"name": "scratch", "epochs": 1, "label": label}])
    before = _sums(tmp_path)
    assert main(["run", str(cfg), "--out", str(work / "runs" / "x"), "--no-report"]) == 2
    _one_line_error(capsys, "label")
    assert _sums(tmp_path) == before
    assert not Path("/tmp/evil").exists() or label != "/tmp/evil"


def test_out_dot_is_refused_and_the_working_directory_is_intact(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _exp(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = _sums(tmp_path)
    for argv in (["run", str(cfg), "--out", ".", "--overwrite"], ["run", str(cfg), "--out", str(tmp_path.parent)]):
        assert main([*argv, "--no-report"]) == 2
        _one_line_error(capsys, "current directory", "--out runs/NAME")
        assert _sums(tmp_path) == before


def test_out_over_the_input_folder_is_refused(tmp_path, capsys, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savez(data / "t.npz", x=rng.normal(size=(40, 4)).astype("float32"), y=np.arange(40) % 2)
    cfg = _exp(data, target=str(data / "t.npz"), backbone={"name": "tiny_mlp", "options": {"in_features": 4}})
    before = _sums(tmp_path)
    for out in (data, data / "t.npz", tmp_path):  # the data folder, the file itself, a folder above both
        assert main(["run", str(cfg), "--out", str(out), "--overwrite", "--no-report"]) == 2
        _one_line_error(capsys, "--out")
        assert _sums(tmp_path) == before


def test_overwrite_never_deletes_a_folder_transferkit_did_not_create(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    cfg = _exp(tmp_path)
    before = _sums(tmp_path)
    assert main(["run", str(cfg), "--out", str(mine), "--overwrite", "--no-report"]) == 2
    _one_line_error(capsys, "was not created by transferkit", "choose another --out")
    assert _sums(tmp_path) == before


def test_overwrite_swaps_only_on_success(tmp_path, capsys, monkeypatch):
    """A new run that fails after the checks (a full disk while training) leaves the old run
    byte-identical and no half-built sibling; a new run that succeeds replaces it whole."""
    import transferkit.train.checkpoint as trainer  # where checkpoints are written

    monkeypatch.chdir(tmp_path)
    old = _finished(tmp_path)
    capsys.readouterr()  # the finished run's output
    before = _sums(tmp_path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "save_checkpoint", full)
    monkeypatch.setattr(trainer, "AUTO_CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every epoch
    cfg = _exp(tmp_path, "new.yaml", strategies=[{"name": "scratch", "epochs": 2, "lr": 0.01}])
    assert main(["run", str(cfg), "--out", str(old), "--overwrite", "--no-report"]) == 2
    _one_line_error(capsys, "No space left on device", "free disk space")
    assert _sums(tmp_path, skip=tmp_path / "new.yaml") == {k: v for k, v in before.items()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".old.")]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(cfg), "--out", str(old), "--overwrite", "--no-report"]) == 0
    res = json.loads((old / "results.json").read_text())
    assert res["output_dir"] == str(old) and res["runs"][0]["run_dir"] == str(old / "scratch" / "seed0")
    assert yaml.safe_load((old / "config.yaml").read_text())["strategies"][0]["lr"] == 0.01
    assert (old / RUN_MARKER).is_file() and not (old / LOCK).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".old.")]


def test_a_second_writer_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = _finished(tmp_path)
    capsys.readouterr()  # the finished run's output
    (old / ".incomplete").write_text("x")  # as if it were still running
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (old / LOCK).write_text(f"{live.pid}\n")
        cfg = _exp(tmp_path, "new.yaml")
        before = _sums(tmp_path)
        assert main(["run", str(cfg), "--out", str(old), "--overwrite", "--no-report"]) == 2
        _one_line_error(capsys, f"being written by process {live.pid}", "wait for it")
        assert main(["run", "--resume", str(old), "--no-report"]) == 2
        _one_line_error(capsys, f"being written by process {live.pid}")
        assert _sums(tmp_path) == before
    finally:
        live.kill()
        live.wait()
    # the writer is gone: its lock is stale and is taken over
    assert main(["run", "--resume", str(old), "--no-report"]) == 0
    assert not (old / LOCK).exists()


def _hostile_resume_dir(tmp: Path) -> tuple[Path, Path]:
    """A received run directory whose unfinished run folder is a link to someone's files."""
    run = _finished(tmp, out="received")
    victim = tmp / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    (run / ".incomplete").write_text("x")
    seed = run / "scratch" / "seed0"
    import shutil

    shutil.rmtree(seed)
    seed.symlink_to(victim, target_is_directory=True)
    return run, victim


def test_a_hostile_resume_directory_touches_nothing_outside(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run, victim = _hostile_resume_dir(tmp_path)
    capsys.readouterr()  # the finished run's output
    before = _sums(tmp_path)
    assert main(["run", "--resume", str(run), "--no-report"]) == 2
    _one_line_error(capsys, "symbolic link", "start a new run")
    assert _sums(tmp_path) == before


@pytest.mark.parametrize("label", ["../../victim", "/abs/path"])
def test_a_resume_config_with_a_path_label_is_refused(label, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _finished(tmp_path, out="received")
    capsys.readouterr()  # the finished run's output
    victim = tmp_path / "victim" / "seed0"
    victim.mkdir(parents=True)
    (victim / "data.bin").write_bytes(b"keep")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["strategies"][0]["label"] = label
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / ".incomplete").write_text("x")
    before = _sums(tmp_path)
    assert main(["run", "--resume", str(run), "--no-report"]) == 2
    _one_line_error(capsys, "label")
    assert _sums(tmp_path) == before


def test_files_follow_the_umask(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        cache = tmp_path / "cache"
        d = _finished(tmp_path, cache_dir=str(cache),
                      strategies=[{"name": "feature_extraction"}, {"name": "scratch", "epochs": 1}])
    finally:
        os.umask(old)
    files = [p for p in [*d.rglob("*"), *cache.rglob("*")] if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files) and any(p.parent == cache or cache in p.parents
                                                                   for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_argparse_errors_are_one_line(capsys):
    for argv, frag in ((["run", "x.yaml", "--seeds", "0"], "--seeds: must be between 1"),
                       (["run", "x.yaml", "--seeds", "-2"], "--seeds"),
                       (["assess", "--source", "digits", "--target", "digits", "--image-size", "0"], "--image-size"),
                       (["assess", "--source", "digits", "--target", "digits", "--max-samples", "0"], "--max-samples"),
                       (["bogus"], "invalid choice")):
        assert main(argv) == 2
        _one_line_error(capsys, frag)


def test_escape_codes_never_reach_the_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(tmp_path / "\x1b[31mred\x1b[0m.yaml")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "red" in err


def test_a_killed_overwrite_keeps_the_old_run_and_resume_finishes_the_new_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = _finished(tmp_path)
    capsys.readouterr()  # the finished run's output
    before = _sums(old)
    cfg = _exp(tmp_path, "new.yaml", strategies=[{"name": "scratch", "epochs": 2, "lr": 0.01},
                                                  {"name": "feature_extraction"}])
    env = {**os.environ, "TRANSFERKIT_FAULT": "experiment.result", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "transferkit", "run", str(cfg), "--out", str(old), "--overwrite",
                           "--no-report"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert _sums(old) == before  # the old run is untouched while the new one is built
    stage = [p for p in tmp_path.iterdir() if p.name.startswith(".old.new-")]
    assert len(stage) == 1
    assert main(["run", "--resume", str(old), "--no-report"]) == 0
    assert "continuing the interrupted --overwrite" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".old.")]
    res = json.loads((old / "results.json").read_text())
    ref = _finished(tmp_path, out="ref", strategies=[{"name": "scratch", "epochs": 2, "lr": 0.01},
                                                     {"name": "feature_extraction"}])
    want = json.loads((ref / "results.json").read_text())
    keys = ("strategy", "seed", "accuracy", "val_accuracy", "best_epoch")
    assert [{k: r[k] for k in keys} for r in res["runs"]] == [{k: r[k] for k in keys} for r in want["runs"]]
    assert res["output_dir"] == str(old) and not (old / ".incomplete").exists()


@pytest.mark.parametrize("tamper", [
    lambda r: {**r, "accuracy": float("nan")},
    lambda r: {**r, "accuracy": 7.5, "seed": 5},
    lambda r: {**r, "strategy": "../../x"},
    lambda r: {**r, "accuracy": "0.99"},
    lambda r: [1, 2],
    lambda r: "[" * 100000,
], ids=["nan", "out-of-range", "path-strategy", "string", "list", "deep"])
def test_resume_does_not_trust_a_tampered_result(tamper, tmp_path, capsys, monkeypatch):
    """A finished run's result.json in a received directory is checked: an invalid one is
    retrained (with a warning), and the final results equal an untampered run's."""
    monkeypatch.chdir(tmp_path)
    run = _finished(tmp_path, out="received", seeds=[0, 1])
    want = json.loads((run / "results.json").read_text())
    f = run / "scratch" / "seed0" / "result.json"
    new = tamper(json.loads(f.read_text()))
    f.write_text(new if isinstance(new, str) else json.dumps(new))
    (run / ".incomplete").write_text("x")
    capsys.readouterr()
    assert main(["run", "--resume", str(run), "--no-report"]) == 0
    err = capsys.readouterr().err
    assert "is not a valid result of 'scratch' seed 0" in err and "trained again" in err
    got = json.loads((run / "results.json").read_text())
    keys = ("strategy", "seed", "accuracy", "val_accuracy", "best_epoch", "run_dir")
    assert [{k: r[k] for k in keys} for r in got["runs"]] == [{k: r[k] for k in keys} for r in want["runs"]]
    drop = ("train_time_mean",)  # the retrained run took its own time
    assert ({k: {m: v for m, v in x.items() if m not in drop} for k, x in got["summary"].items()}
            == {k: {m: v for m, v in x.items() if m not in drop} for k, x in want["summary"].items()})
