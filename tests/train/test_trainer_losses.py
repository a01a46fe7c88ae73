"""The Trainer's extra-loss hook: terms see the batch, a target batch, and are logged."""

import numpy as np
import torch

from transferkit.data import DomainDataset
from transferkit.nn import TransferModel
from transferkit.backbones import create_backbone
from transferkit.train import Trainer


def _data(n=64, seed=0, labels=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) if labels else np.full(n, -1)
    return DomainDataset(X, y, "toy", "tabular", classes=["a", "b"])


def _model():
    torch.manual_seed(0)
    return TransferModel(create_backbone("tiny_mlp", pretrained=False, in_features=8), 2)


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, ctx):
        self.seen.append((ctx.features.shape, None if ctx.target_features is None else ctx.target_features.shape,
                          ctx.progress))
        # the logits the term sees are the ones of the classification loss
        assert torch.allclose(ctx.logits, ctx.model.head(ctx.features))
        return {"loss": ctx.features.pow(2).mean() * 0.0 + 0.0, "probe": torch.tensor(1.5)}


def test_terms_see_batches_and_are_logged():
    rec = Recorder()
    m = _model()
    tr = Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=2, batch_size=16, progress=False,
                 losses=[rec], device="cpu")
    tr.fit(_data(), target=_data(40, seed=1, labels=False))
    assert len(rec.seen) == 8
    assert all(fs[0] == 16 and ft == fs for fs, ft, _ in rec.seen)
    prog = [p for *_, p in rec.seen]
    assert prog[0] == 0 and prog == sorted(prog) and prog[-1] < 1
    assert tr.history[0]["probe"] == 1.5


def test_zero_term_leaves_training_unchanged():
    def run(losses, target=None):
        m = _model()
        Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=2, batch_size=16, progress=False,
                losses=losses, device="cpu").fit(_data(), target=target)
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    ref = run([])
    zero = run([lambda ctx: {"loss": torch.zeros(())}], target=_data(40, seed=1, labels=False))
    assert torch.allclose(ref, zero)


def test_term_gradient_changes_training():
    m = _model()
    pull = lambda ctx: {"loss": 10 * ctx.target_logits.softmax(1)[:, 0].mean()}  # push target to class 1
    Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=5, batch_size=16, progress=False,
            losses=[pull], device="cpu").fit(_data(), target=_data(40, seed=1, labels=False))
    with torch.no_grad():
        p = m(torch.as_tensor(_data(40, seed=1).inputs)).softmax(1)[:, 1].mean()
    assert p > 0.6


# ---------------------------------------------------------------- divergence, resume, full disk
import errno  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from transferkit.errors import ConfigError, TransferKitError  # noqa: E402
from transferkit.train.trainer import CHECKPOINT, TrainingDivergedError, load_checkpoint  # noqa: E402


def test_a_non_finite_loss_stops_training_with_one_clear_error(one_thread):
    """Inputs near the float32 limit overflow the logits: the first step's loss is not finite."""
    from transferkit.strategies import Scratch

    d = _data()
    d.inputs[::3] = 3e38
    with pytest.raises(TrainingDivergedError) as info:
        Scratch(backbone=create_backbone("tiny_mlp", pretrained=False, in_features=8), epochs=2, batch_size=16,
                device="cpu").fit(d)
    msg = str(info.value)
    assert isinstance(info.value, TransferKitError) and "\n" not in msg
    assert "scratch: training diverged: the training loss became" in msg
    assert "at epoch 0, step 1 of 8 (lr " in msg and "lower lr" in msg and "huge or infinite values" in msg


def test_nan_weights_after_the_last_step_are_caught_before_they_are_scored(one_thread):
    """A finite loss whose gradient is NaN (d sqrt(u)/du at u = 0): one step, one epoch, so no later
    loss could show it; the weights are checked before validation, checkpoint and scoring."""
    m = _model()
    nan_grad = lambda ctx: {"loss": torch.sqrt(ctx.logits.sum() - ctx.logits.sum().detach()).abs()}
    tr = Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=1, batch_size=64, progress=False,
                 losses=[nan_grad], grad_clip=None, device="cpu", tag="probe")
    with pytest.raises(TrainingDivergedError, match=r"probe: training diverged: weight '.*' became NaN or infinite "
                                                     r"at epoch 0, step 1 of 1 \(lr 0.01\); lower lr"):
        tr.fit(_data(), _data(20, seed=3))


class _Stop(Exception):
    pass


def _killed_after_one_epoch(run_dir):
    """A fit whose process 'dies' at the start of epoch 1: the epoch-0 checkpoint stays."""
    class Kill:
        def on_epoch_start(self, trainer, epoch):
            if epoch == 1:
                raise _Stop

    m = _model()
    with pytest.raises(_Stop):
        Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=3, batch_size=16, progress=False,
                device="cpu", run_dir=run_dir, callbacks=[Kill()], checkpoint_every=1).fit(_data(), resume=False)
    assert (run_dir / CHECKPOINT).is_file()


@pytest.mark.parametrize("tamper", ["missing key", "unexpected key", "wrong shape", "no optimizer"])
def test_resuming_from_a_mismatched_checkpoint_is_one_config_error(tmp_path, tamper, one_thread):
    _killed_after_one_epoch(tmp_path)
    path = tmp_path / CHECKPOINT
    ckpt = torch.load(path, weights_only=True)
    name = next(iter(ckpt["model"]))
    if tamper == "missing key":
        del ckpt["model"][name]
    elif tamper == "unexpected key":
        ckpt["model"]["extra.weight"] = torch.zeros(3)
    elif tamper == "wrong shape":
        ckpt["model"][name] = torch.zeros(7, 7, 7)
    else:
        del ckpt["optimizer"]
    torch.save(ckpt, path)
    m = _model()
    tr = Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=3, batch_size=16, progress=False,
                 device="cpu", run_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        tr.fit(_data(), resume=True)
    msg = str(info.value)
    assert "\n" not in msg and "does not match this model or run" in msg
    assert "delete the checkpoint, or start a new run without --resume" in msg


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a real ENOSPC")
@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_full_disk_during_a_checkpoint_write_leaves_no_temp_file(tmp_path, monkeypatch, one_thread, asynchronous):
    """The second checkpoint write goes to /dev/full (a real ENOSPC from the kernel): OSError
    propagates (from the background writer too, at the next wait), the temporary file is gone
    and the previous checkpoint is intact."""
    import builtins

    import transferkit.train.checkpoint as trainer_mod

    calls = []

    def full_after_first(path, mode="r", *a, **kw):
        if str(path).endswith(".tmp"):  # checkpoint writes (metrics.jsonl goes through open too)
            calls.append(path)
        if len(calls) != 2:
            return builtins.open(path, mode, *a, **kw)
        builtins.open(path, mode).close()  # the temporary file exists, as it would on a full disk
        return builtins.open("/dev/full", mode)

    class Snapshot:  # the epoch-0 checkpoint, as it was before the failing write
        def on_epoch_start(self, trainer, epoch):
            if epoch == 1:
                trainer._checkpointer.wait()  # the epoch-0 write may still be in flight
                self.before = (tmp_path / CHECKPOINT).read_bytes()

    snap = Snapshot()
    monkeypatch.setattr(trainer_mod, "open", full_after_first, raising=False)
    m = _model()
    tr = Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=3, batch_size=16, progress=False,
                 device="cpu", run_dir=tmp_path, callbacks=[snap], async_checkpoint=asynchronous, checkpoint_every=1)
    with pytest.raises(OSError) as info:
        tr.fit(_data(), resume=False)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT, "metrics.jsonl"]  # no temp file
    assert (tmp_path / CHECKPOINT).read_bytes() == snap.before
    assert load_checkpoint(tmp_path / CHECKPOINT)["epoch"] == 0


def test_terms_see_the_batch_row_indices():
    """``ctx.indices`` are the labeled batch's rows in the training set: a per-row array indexed
    with them (the domain of pooled sources) lines up with the batch; every row once per epoch."""
    ds = _data(48)
    seen = []

    def term(ctx):
        idx = ctx.indices
        assert idx.dtype == torch.int64 and len(idx) == len(ctx.labels)
        assert torch.equal(torch.as_tensor(ds.labels)[idx], ctx.labels.cpu())
        assert torch.allclose(torch.as_tensor(ds.inputs)[idx], ctx.inputs.cpu())
        seen.append(idx.clone())
        return {"loss": torch.zeros(())}

    m = _model()
    Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=1, batch_size=16, progress=False,
            losses=[term], device="cpu", augment="none").fit(ds)
    assert sorted(torch.cat(seen).tolist()) == list(range(48))
