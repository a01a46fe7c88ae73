"""Checkpoints and resume: a killed run continues to the same final weights and metrics.

Trainer level: a fit interrupted mid-epoch (an exception from a loss term) resumes from the
last epoch's checkpoint and ends bit-identical to an uninterrupted fit. CLI level: a
``transferkit run`` subprocess is killed with SIGKILL mid-epoch, ``--resume`` finishes it,
and ``results.json`` matches an uninterrupted run in another directory.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.backbones import create_backbone
from transferkit.cli import main
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError
from transferkit.nn import TransferModel
from transferkit.train import Trainer
from transferkit.train.rundir import INCOMPLETE, resuming
from transferkit.train.trainer import CHECKPOINT, load_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread here and in the child process: the same float reductions in both,
    and no OpenMP spinning on a busy machine (two threads on two shared cores can be 100x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(n=96, seed=0, labels=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) if labels else np.full(n, -1)
    return DomainDataset(X, y, "toy", "tabular", classes=["a", "b"])


def _model():
    torch.manual_seed(0)
    return TransferModel(create_backbone("tiny_mlp", pretrained=False, in_features=8), 2, dropout=0.3)


class Noisy(torch.nn.Module):
    """A loss term with state and randomness of its own (global RNG and the trainer's
    generator), and a switch that kills the process mid-epoch."""

    def __init__(self, die_at=None):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))
        self.die_at = die_at

    def forward(self, ctx):
        if self.die_at is not None and (ctx.epoch, ctx.step) == self.die_at:
            raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this line runs
        self.calls += 1
        noise = torch.randn(()) + torch.rand((), generator=ctx.generator)
        mmd = (ctx.features.mean(0) - ctx.target_features.mean(0)).pow(2).sum()
        return {"loss": 0.1 * mmd + 0.0 * noise, "mmd": mmd.detach(), "noise": noise}


def _trainer(run_dir, term, **kw):
    m = _model()
    kw.setdefault("checkpoint_every", 1)  # these tests kill at chosen epochs: a checkpoint after each
    return m, Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=4, batch_size=16,
                      progress=False, losses=[term], device="cpu", run_dir=run_dir, augment="none",
                      early_stopping=10, **kw)


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.state_dict().values()])


def test_trainer_resume_is_bit_identical(tmp_path):
    train, val, target = _data(), _data(40, seed=2), _data(50, seed=1, labels=False)
    ref_model, ref = _trainer(tmp_path / "ref", Noisy())
    ref.fit(train, val, target=target)
    assert not (tmp_path / "ref" / CHECKPOINT).exists()  # removed once the fit is complete

    run = tmp_path / "run"
    _, t1 = _trainer(run, Noisy(die_at=(2, 14)))  # epoch 2 of 4, in the middle (6 steps per epoch)
    with pytest.raises(KeyboardInterrupt):
        t1.fit(train, val, target=target)
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)  # plain tensors and types only
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 2
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]

    m2, t2 = _trainer(run, Noisy())
    t2.fit(train, val, target=target, resume=True)
    assert torch.equal(_params(m2), _params(ref_model))
    assert t2.losses[0].calls.item() == ref.losses[0].calls.item() == 24  # the term's buffer was restored
    drop = ("epoch_time",)
    strip = [[{k: v for k, v in r.items() if k not in drop} for r in h] for h in (t2.history, ref.history)]
    assert strip[0] == strip[1]
    assert t2.best_epoch == ref.best_epoch
    # metrics.jsonl holds each epoch exactly once
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert not (run / CHECKPOINT).exists()


def test_a_logged_but_not_checkpointed_epoch_is_not_logged_twice(tmp_path):
    train, val = _data(), _data(40, seed=2)

    class DieAfterLog:
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 1:
                raise KeyboardInterrupt  # the row of epoch 1 is on disk, its checkpoint is not

    m, t = _trainer(tmp_path, Noisy(), callbacks=[DieAfterLog()])
    with pytest.raises(KeyboardInterrupt):
        t.fit(train, val, target=_data(50, seed=1, labels=False))
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2
    _, t2 = _trainer(tmp_path, Noisy())
    with resuming():  # what `transferkit run --resume` uses: no argument to fit
        t2.fit(train, val, target=_data(50, seed=1, labels=False))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]


def test_checkpoint_of_another_run_is_refused(tmp_path):
    train, val = _data(), _data(40, seed=2)
    _, t = _trainer(tmp_path, Noisy(die_at=(1, 7)))
    with pytest.raises(KeyboardInterrupt):
        t.fit(train, val, target=_data(50, seed=1, labels=False))
    _, t2 = _trainer(tmp_path, Noisy())
    with pytest.raises(ConfigError,
                       match=r"different training run \(n_train, steps_per_epoch differ\).*delete the checkpoint"):
        t2.fit(_data(80), val, target=_data(50, seed=1, labels=False), resume=True)
    with pytest.raises(ConfigError, match="does not exist"):
        t2.fit(train, val, resume=tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt")


# --------------------------------------------------------------------------- CLI: SIGKILL and --resume

EXP = """
name: resume
seeds: [0]
target: "digits:subset=1/2,size=16"
split: {train_fraction: 0.6, val_fraction: 0.5}
backbone: {name: tiny_cnn, image_size: 16}
progress: false
strategies:
  - {name: scratch, epochs: 4, batch_size: 16, augment: light, dropout: 0.2}
"""


def _metrics(path: Path) -> list:
    res = json.loads((path / "results.json").read_text())
    keys = ("strategy", "seed", "accuracy", "val_accuracy", "train_accuracy", "best_epoch", "n_train")
    return [{k: r[k] for k in keys} for r in res["runs"]]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXP)
    run = tmp_path / "killed"
    # the killed run: a child process with this process's thread count (same float reductions)
    code = ("import sys, torch; torch.set_num_threads(1); from transferkit.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(exp), "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = run / "scratch" / "seed0" / "metrics.jsonl"
    try:
        t0 = time.monotonic()
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() - t0 < 120, "the run never finished an epoch"
            time.sleep(0.01)
        epoch_time = json.loads(metrics.read_text().splitlines()[0])["epoch_time"]
        time.sleep(min(0.1, epoch_time / 10))  # now in the middle of epoch 1 (epochs take >= 0.2 s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (run / INCOMPLETE).exists() and not (run / "results.json").exists()
    assert not (run / "scratch" / "seed0" / "result.json").exists()
    n_logged = metrics.read_text().count("\n")
    assert 1 <= n_logged < 4
    # an interrupted directory is not reused by mistake
    assert main(["run", str(exp), "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err

    assert main(["run", "--resume", str(run), "--no-report"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert not (run / INCOMPLETE).exists()
    assert not (run / "scratch" / "seed0" / CHECKPOINT).exists()
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]

    ref = tmp_path / "ref"
    assert main(["run", str(exp), "--out", str(ref), "--no-report"]) == 0
    a, b = _metrics(run), _metrics(ref)
    assert [r["strategy"] for r in a] == ["scratch"]
    for ra, rb in zip(a, b):
        for k in ra:
            if isinstance(ra[k], float):
                assert abs(ra[k] - rb[k]) <= 1e-6, k
            else:
                assert ra[k] == rb[k], k
    ref_rows = [json.loads(x) for x in (ref / "scratch" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    for r1, r2 in zip(rows, ref_rows):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=1e-6)
        assert r1.keys() == r2.keys()  # the same epochs scored (val_every)
        if "val_loss" in r1:
            assert r1["val_loss"] == pytest.approx(r2["val_loss"], abs=1e-6)


def test_resume_keeps_finished_runs_and_reruns_the_rest(tmp_path, capsys):
    """Finished (strategy, seed) runs are read back, not retrained; a run interrupted before
    its first checkpoint starts over; a complete directory has nothing to resume."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXP.replace("seeds: [0]", "seeds: [0, 1]").replace("epochs: 4", "epochs: 2")
                   + "  - feature_extraction\n")
    out = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(out), "--no-report"]) == 0
    before = json.loads((out / "results.json").read_text())
    kept = out / "feature_extraction" / "seed1" / "model.safetensors"
    stamp = kept.stat().st_mtime_ns
    # pretend the process died during scratch/seed1 (before its first checkpoint) and the summary
    (out / "results.json").unlink()
    (out / INCOMPLETE).write_text("")
    (out / "scratch" / "seed1" / "result.json").unlink()
    (out / "scratch" / "seed1" / "model.safetensors").unlink()
    (out / "scratch" / "seed1" / "junk.tmp").write_text("half")
    assert main(["run", "--resume", str(out), "--no-report"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(complete, kept)") == 3
    after = json.loads((out / "results.json").read_text())
    assert kept.stat().st_mtime_ns == stamp  # not retrained
    assert not (out / "scratch" / "seed1" / "junk.tmp").exists()
    strip = [[{k: v for k, v in r.items() if k != "train_time"} for r in x["runs"]] for x in (before, after)]
    assert strip[0] == strip[1]
    assert not (out / INCOMPLETE).exists()
    assert main(["run", "--resume", str(out), "--no-report"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
