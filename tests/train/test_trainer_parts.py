"""The Trainer's parts: samplers, the two data paths, evaluation that costs what it should,
gradient accumulation, asynchronous checkpoints, mixed precision on a CPU."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.data import DomainDataset
from transferkit.train import SelectionCallback, Trainer
from transferkit.train.data import EpochSampler, LoaderSource, TensorSource, make_source, shard
from transferkit.train.checkpoint import load_checkpoint
from transferkit.train.trainer import auto_val_every


class MLP(nn.Module):
    spec = None

    def __init__(self, d=6, k=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 16), nn.Tanh())
        self.head = nn.Linear(16, k)
        self.calls = 0

    def preprocess(self, X):
        self.calls += 1
        return torch.as_tensor(np.asarray(X), dtype=torch.float32)

    def move_inputs(self, b, device):
        return b.to(device)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def _data(n=64, seed=0, lazy=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    inputs = list(X) if lazy else X
    return DomainDataset(inputs, y, "d", "tabular")


def _fit(model=None, train=None, val=None, **kw):
    torch.manual_seed(0)
    model = model or MLP()
    t = Trainer(model, [{"params": list(model.parameters()), "lr": 0.05}], device="cpu", progress=False,
                warmup_epochs=0.0, **{"epochs": 3, "batch_size": 16, **kw})
    t.fit(train if train is not None else _data(), val)
    return model, t


def _params(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


# ------------------------------------------------------------------------------ samplers
def test_epoch_sampler_one_pass_and_steps_mode():
    g = torch.Generator().manual_seed(0)
    s = EpochSampler(10, 4, g)
    batches = list(s.epoch())
    assert sorted(np.concatenate(batches).tolist()) == list(range(10)) and [len(b) for b in batches] == [4, 4, 2]
    s = EpochSampler(10, 4, torch.Generator().manual_seed(0), steps=5)
    batches = list(s.epoch())
    assert [len(b) for b in batches] == [4] * 5
    flat = np.concatenate(batches)
    assert sorted(flat[:10].tolist()) == list(range(10))  # the first pass is a permutation
    # the leftover of a pass carries over, and a resumed sampler continues where it was
    state = s.state_dict()
    g2 = torch.Generator()
    g2.set_state(s.gen.get_state())
    s2 = EpochSampler(10, 4, g2, steps=5)
    s2.load_state_dict(state)
    np.testing.assert_array_equal(np.concatenate(list(s.epoch())), np.concatenate(list(s2.epoch())))


def test_shard_splits_a_global_batch_into_contiguous_near_equal_parts():
    idx = np.arange(10)
    parts = [shard(idx, r, 3) for r in range(3)]
    assert np.concatenate(parts).tolist() == list(range(10)) and sorted(len(p) for p in parts) == [3, 3, 4]
    assert shard(idx, 0, 1) is idx


def test_a_last_batch_too_small_for_every_process_is_skipped_everywhere():
    s = EpochSampler(33, 16, torch.Generator().manual_seed(0), world=2)
    assert [len(b) for b in s.epoch()] == [16, 16]  # 1 left: some process would get none


# ------------------------------------------------------------------------------ data paths
def test_small_arrays_take_the_in_memory_path_and_lazy_inputs_stream():
    m = MLP()
    assert isinstance(make_source(m, _data()), TensorSource)
    assert isinstance(make_source(m, _data(lazy=True)), LoaderSource)


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_through_data_loaders_trains_exactly_like_the_in_memory_path(workers, one_thread):
    a, _ = _fit(train=_data())
    b, _ = _fit(train=_data(lazy=True), num_workers=workers)
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=0)


# ------------------------------------------------------------------------------ evaluation
def test_auto_val_every_closed_form():
    assert auto_val_every(401, 100, 30) == 15  # the demo: k = floor(0.1 * 30 / (401 / 300)) = 2 -> epochs 14, 29
    assert auto_val_every(100, 100, 30) == 4
    assert auto_val_every(100, 400, 30) == 1
    assert auto_val_every(10_000, 10, 30) == 30  # never beyond the budget: the last epoch is scored
    assert auto_val_every(5, 0, 3) == 3


def test_auto_val_every_keeps_validation_within_its_budget():
    # the scored epochs (every N-th and the last) never cost more than the budget allows, and the
    # next shorter interval would exceed it: N is the most frequent schedule within the budget
    def scored(n, epochs):
        return len({e for e in range(epochs) if (e + 1) % n == 0} | {epochs - 1})

    for epochs in (1, 3, 7, 30, 100):
        for n_val, n_train in ((401, 100), (100, 100), (50, 1000), (5000, 64), (1, 1), (333, 100)):
            n = auto_val_every(n_val, n_train, epochs)
            allowed = max(1, math.floor(0.1 * epochs / (n_val / (3 * n_train))))
            assert scored(n, epochs) <= allowed, (epochs, n_val, n_train, n)
            if n > 1:
                assert scored(n - 1, epochs) > allowed, (epochs, n_val, n_train, n)


def test_val_every_scores_every_nth_epoch_and_the_last(one_thread):
    _, t = _fit(val=_data(40, seed=1), epochs=7, val_every=3)
    assert [r["epoch"] for r in t.history if "val_accuracy" in r] == [2, 5, 6]
    assert t.best_epoch in (2, 5, 6)
    _, t = _fit(val=_data(40, seed=1), epochs=7, val_every="auto")
    assert [r["epoch"] for r in t.history if "val_accuracy" in r] == [2, 5, 6]  # ceil(40 / (0.3 * 64)) = 3
    _, t = _fit(val=_data(40, seed=1), epochs=4, val_every="auto", early_stopping=3)
    assert all("val_accuracy" in r for r in t.history)  # early stopping counts epochs of the curve


def test_val_max_samples_scores_a_fixed_stratified_sample():
    val = _data(300, seed=4)
    sel = SelectionCallback("val_accuracy", max_samples=60, seed=0)

    class T:
        pass

    tr = T()
    tr.val, tr.model = val, MLP()
    sel.on_fit_start(tr)
    assert len(sel.val) == 60
    share = np.bincount(val.labels, minlength=3) / len(val)
    got = np.bincount(sel.val.labels, minlength=3) / 60
    np.testing.assert_allclose(got, share, atol=1 / 60 + 1e-9)  # stratified: the class shares kept
    sel2 = SelectionCallback("val_accuracy", max_samples=60, seed=0)
    sel2.on_fit_start(tr)
    np.testing.assert_array_equal(sel.val.inputs, sel2.val.inputs)  # the same rows for a given seed


def test_a_frozen_backbone_is_embedded_once_per_validation_split(one_thread):
    from transferkit.backbones import create_backbone
    from transferkit.nn import TransferModel

    torch.manual_seed(0)
    m = TransferModel(create_backbone("tiny_cnn", image_size=16, pretrained=False), 4)
    for p in m.backbone.parameters():
        p.requires_grad_(False)
    bns = [x for x in m.backbone.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)]
    calls = []
    m.backbone.register_forward_hook(lambda mod, i, o: calls.append(o.shape[0]) if not mod.training else None)
    rng = np.random.default_rng(0)
    imgs = rng.random((48, 16, 16)).astype(np.float32)
    train = DomainDataset(imgs[:32], np.arange(32) % 4, "t", "image")
    val = DomainDataset(imgs[32:], np.arange(16) % 4, "v", "image")
    t = Trainer(m, [{"params": list(m.head.parameters()), "lr": 0.05}], epochs=4, batch_size=8, device="cpu",
                progress=False, bn_frozen=lambda: bns)
    t.fit(train, val)
    assert sum(calls) == 16  # the 16 validation images went through the backbone once, not 4 times
    calls.clear()
    m2 = TransferModel(create_backbone("tiny_cnn", image_size=16, pretrained=False), 4)  # a trained backbone
    m2.backbone.register_forward_hook(lambda mod, i, o: calls.append(o.shape[0]) if not mod.training else None)
    Trainer(m2, [{"params": list(m2.parameters()), "lr": 0.05}], epochs=4, batch_size=8, device="cpu",
            progress=False).fit(train, val)
    assert sum(calls) == 64


# ------------------------------------------------------------------------------ steps
def test_gradient_accumulation_equals_the_larger_batch(one_thread):
    a, _ = _fit(batch_size=16, optimizer="sgd")
    torch.manual_seed(0)
    m = MLP()
    t = Trainer(m, [{"params": list(m.parameters()), "lr": 0.05}], device="cpu", progress=False, warmup_epochs=0.0,
                epochs=3, batch_size=8, grad_accum_steps=2, optimizer="sgd")
    # the same samples in the same order: 8-sample batches from a 16-sample permutation chunk
    from transferkit.train import data as tdata

    real = tdata.EpochSampler.epoch

    def halves(self):
        for b in real(EpochSampler(self.n, 16, self.gen)):
            yield b[:8]
            yield b[8:]

    tdata.EpochSampler.epoch = halves
    try:
        t.fit(_data())
    finally:
        tdata.EpochSampler.epoch = real
    assert t.optimizer_steps_per_epoch == 4 and t.step == 12
    torch.testing.assert_close(_params(a), _params(m), rtol=0, atol=1e-6)


def test_asynchronous_and_synchronous_checkpoints_hold_the_same_state(tmp_path, one_thread):

    class Keep:
        def on_epoch_end(self, trainer, epoch, row):
            if epoch == 1:
                trainer._checkpointer.wait()
                raise KeyboardInterrupt

    out = {}
    for asynchronous in (False, True):
        d = tmp_path / str(asynchronous)
        torch.manual_seed(0)
        m = MLP()
        t = Trainer(m, [{"params": list(m.parameters()), "lr": 0.05}], device="cpu", progress=False, epochs=3,
                    batch_size=16, run_dir=d, async_checkpoint=asynchronous, callbacks=[Keep()], checkpoint_every=1)
        with pytest.raises(KeyboardInterrupt):
            t.fit(_data(), _data(20, seed=1))
        out[asynchronous] = load_checkpoint(d / "checkpoint.pt")
    a, b = out[False], out[True]
    assert a["epoch"] == b["epoch"] == 0  # the epoch-1 checkpoint comes after the callbacks
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_checkpoint_every_n_epochs(tmp_path, one_thread):
    saved = []
    from transferkit.train import checkpoint as ck

    real = ck.save_checkpoint
    ck.save_checkpoint = lambda state, path: (saved.append(state["epoch"]), real(state, path))
    try:
        torch.manual_seed(0)
        m = MLP()
        Trainer(m, [{"params": list(m.parameters()), "lr": 0.05}], device="cpu", progress=False, epochs=5,
                batch_size=16, run_dir=tmp_path, checkpoint_every=2, async_checkpoint=False).fit(_data())
    finally:
        ck.save_checkpoint = real
    assert saved == [1, 3, 4]


def test_auto_checkpoints_follow_the_clock_and_a_resume_from_any_of_them_is_exact(tmp_path, monkeypatch, one_thread):
    """checkpoint_every='auto' (the default): a checkpoint after an epoch ending 30 s or more after
    the previous one, none extra after the last. The clock is faked: each epoch 'takes' 12 s."""
    from transferkit.train import checkpoint as ck

    clock = [0.0]
    monkeypatch.setattr(ck.time, "monotonic", lambda: clock[0])
    saved = []
    real = ck.save_checkpoint
    monkeypatch.setattr(ck, "save_checkpoint", lambda state, path: (saved.append(state["epoch"]), real(state, path)))

    class Tick:
        def on_epoch_start(self, trainer, epoch):
            clock[0] += 12.0

    class Die(Tick):
        def on_epoch_start(self, trainer, epoch):
            super().on_epoch_start(trainer, epoch)
            if epoch == 6:
                raise KeyboardInterrupt

    def fit(run_dir, cb, resume=False):
        torch.manual_seed(0)
        m = MLP()
        t = Trainer(m, [{"params": list(m.parameters()), "lr": 0.05}], device="cpu", progress=False, epochs=8,
                    batch_size=16, run_dir=run_dir, async_checkpoint=False, callbacks=[cb], seed=3)
        t.fit(_data(), _data(20, seed=1), resume=resume)
        return torch.cat([p.detach().reshape(-1) for p in m.parameters()]), t

    ref, t_ref = fit(tmp_path / "ref", Tick())
    assert saved == [2, 5]  # epochs end at 12, 24, 36 (saved), 48, 60, 72 (saved), 84, 96 s
    saved.clear()
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "run", Die())
    assert saved == [2, 5] and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 5
    got, t = fit(tmp_path / "run", Tick(), resume=True)
    assert t.start_epoch == 6
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert [r["train_loss"] for r in t.history] == [r["train_loss"] for r in t_ref.history]


def test_bf16_on_a_cpu_without_it_is_off_with_a_warning():
    from transferkit.train.trainer import _bf16_capable

    m = MLP()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = Trainer(m, [{"params": list(m.parameters()), "lr": 0.05}], device="cpu", progress=False,
                    mixed_precision="bf16")
    if _bf16_capable(torch.device("cpu")):
        assert t.mixed_precision == "bf16"
    else:
        assert t.mixed_precision == "no" and any("bfloat16" in str(x.message) for x in w)
    with pytest.raises(Exception, match="fp16"):
        Trainer(m, [{"params": list(m.parameters()), "lr": 0.05}], device="cpu", mixed_precision="fp16")


KILL_CHILD = r'''
import os, signal, sys, time
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[3])
from test_trainer_parts import MLP, _data
from transferkit.train import Trainer
from transferkit.train import checkpoint as ck

run_dir, mode = sys.argv[1], sys.argv[2]
real = ck.save_checkpoint

def slow(state, path):  # the epoch-1 write is still in flight when the process dies
    if state["epoch"] == 1 and mode == "kill":
        time.sleep(30)
    real(state, path)

ck.save_checkpoint = slow

class Die:
    def on_epoch_start(self, trainer, epoch):
        if mode == "kill" and epoch == 2:
            time.sleep(0.5)  # the epoch-1 snapshot is being written (slowly) in the background
            os.kill(os.getpid(), signal.SIGKILL)

torch.manual_seed(0)
m = MLP()
t = Trainer(m, [{"params": list(m.parameters()), "lr": 0.05}], device="cpu", progress=False, epochs=4, batch_size=16,
            run_dir=run_dir, callbacks=[Die()], seed=1, checkpoint_every=1)
t.fit(_data(), _data(20, seed=1), resume=(mode == "resume"))
np.save(os.path.join(run_dir, f"params-{mode}.npy"), torch.cat([p.detach().reshape(-1) for p in m.parameters()]).numpy())
'''


def test_a_kill_while_an_asynchronous_checkpoint_is_written_resumes_exactly(tmp_path):
    """SIGKILL while the background thread writes epoch 1's checkpoint: epoch 0's stays on disk
    (atomic rename), metrics.jsonl is cut back to it on resume, and the resumed fit ends with
    the weights of an uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path


    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFERKIT_FAULT")}
    env["OMP_NUM_THREADS"] = "1"
    here = str(Path(__file__).parent)
    script = tmp_path / "child.py"
    script.write_text(KILL_CHILD)
    ref, run = tmp_path / "ref", tmp_path / "run"

    def child(d, mode):
        return subprocess.run([sys.executable, str(script), str(d), mode, here], env=env, capture_output=True,
                              text=True, timeout=120)

    assert child(ref, "plain").returncode == 0
    r = child(run, "kill")
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 0  # the in-flight write never landed
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # epochs 0 and 1 were logged
    r = child(run, "resume")
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_array_equal(np.load(ref / "params-plain.npy"), np.load(run / "params-resume.npy"))
    assert (run / "metrics.jsonl").read_text().count("\n") == 4
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref_rows]
