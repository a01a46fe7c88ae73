"""The Trainer's objective hook: a training loss other than cross-entropy (pretext tasks, several heads)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_trainer_losses import _data, _model  # the same toy table and tiny MLP as the loss-term tests
from transferkit.errors import ConfigError
from transferkit.train import Objective, Trainer


class CE(Objective):
    """Cross-entropy written as an objective: training must equal the built-in loss."""

    def forward(self, ctx):
        logits = ctx.model(ctx.inputs)
        return {"loss": F.cross_entropy(logits, ctx.labels), "logits": logits}


class Reconstruct(Objective):
    """An unlabeled objective with its own parameters, a logged scalar and an EMA hook."""

    needs_labels = False

    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Linear(64, 8)
        self.register_buffer("ema", torch.zeros(8))
        self.steps, self.rows, self.progress = 0, [], []

    def forward(self, ctx):
        self.rows.append(ctx.indices.clone())
        rec = self.decoder(ctx.model.features(ctx.inputs))
        return {"loss": F.mse_loss(rec, ctx.inputs), "probe": torch.tensor(2.5)}

    def after_optimizer_step(self, progress):
        assert not torch.is_grad_enabled()
        self.ema.mul_(0.5).add_(self.decoder.bias, alpha=0.5)
        self.steps += 1
        self.progress.append(progress)


def _weights(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_an_objective_equal_to_cross_entropy_trains_as_the_default_loss():
    def run(objective):
        m = _model()
        tr = Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=2, batch_size=16, progress=False,
                     device="cpu", objective=objective)
        tr.fit(_data())
        return _weights(m), tr.history

    ref, h_ref = run(None)
    got, h_got = run(CE())
    assert torch.allclose(ref, got)
    assert h_ref[-1]["train_accuracy"] == h_got[-1]["train_accuracy"]
    assert h_ref[-1]["train_loss"] == pytest.approx(h_got[-1]["train_loss"], rel=1e-6)


def test_an_unlabeled_objective_trains_every_row_with_its_own_parameters():
    m, obj = _model(), Reconstruct()
    params = list(m.backbone.parameters()) + list(obj.parameters())
    before = obj.decoder.weight.detach().clone()
    tr = Trainer(m, [{"params": params, "lr": 1e-2}], epochs=2, batch_size=16, progress=False, device="cpu",
                 objective=obj)
    tr.fit(_data(64, labels=False))  # no labeled row: the default loss would refuse this dataset
    seen = torch.cat(obj.rows[:4])
    assert sorted(seen.tolist()) == list(range(64))  # one epoch visits every (unlabeled) row once
    assert not torch.equal(before, obj.decoder.weight)  # the objective's parameters trained
    assert obj.steps == 8 and obj.progress == sorted(obj.progress) and obj.progress[-1] == 1.0
    assert not torch.equal(obj.ema, torch.zeros(8))
    row = tr.history[-1]
    assert row["probe"] == 2.5 and "train_accuracy" not in row and np.isfinite(row["train_loss"])
    with pytest.raises(Exception, match="no labeled samples"):  # the default loss still needs labels
        Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], epochs=1, progress=False,
                device="cpu").fit(_data(16, labels=False))


class Crash:
    """Stops the fit at the end of epoch 1, after epoch 0's checkpoint (as a killed process would)."""

    def on_epoch_end(self, trainer, epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt


def test_a_resumed_fit_restores_the_objective(tmp_path):
    def fit(run_dir, resume, kill=False):
        m, obj = _model(), Reconstruct()
        tr = Trainer(m, [{"params": list(m.backbone.parameters()) + list(obj.parameters()), "lr": 1e-2}],
                     epochs=3, batch_size=16, progress=False, device="cpu", objective=obj, run_dir=run_dir,
                     checkpoint_every=1, async_checkpoint=False, callbacks=[Crash()] if kill else ())
        if kill:
            with pytest.raises(KeyboardInterrupt):
                tr.fit(_data(48, labels=False), resume=resume)
        else:
            tr.fit(_data(48, labels=False), resume=resume)
        return _weights(m), obj

    ref, ref_obj = fit(tmp_path / "a", False)
    fit(tmp_path / "b", False, kill=True)
    got, got_obj = fit(tmp_path / "b", True)
    assert ref_obj.steps == 9 and got_obj.steps == 6  # it continued from epoch 1, not from the start
    assert torch.allclose(ref, got) and torch.allclose(ref_obj.ema, got_obj.ema)
    assert torch.allclose(ref_obj.decoder.weight, got_obj.decoder.weight)


def test_a_bad_objective_is_one_line():
    m = _model()
    with pytest.raises(ConfigError, match="objective=.*must be a transferkit.train.Objective"):
        Trainer(m, [{"params": list(m.parameters()), "lr": 1e-2}], objective=3, device="cpu")
