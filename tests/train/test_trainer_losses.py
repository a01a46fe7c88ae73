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
