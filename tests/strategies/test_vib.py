"""The variational information bottleneck head of finetune (``head: vib``; Alemi et al. 2017):
the KL term against its closed form by hand, the Trainer step's loss = CE + beta * KL (beta = 0:
the cross-entropy alone), the mean code at evaluation, compression growing with beta, bad
options, and a run that saves and reloads with identical predictions."""

import functools
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferkit.backbones import create_backbone
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError
from transferkit.nn import TransferModel
from transferkit.nn.vib import VIBHead, VIBLoss, gaussian_kl
from transferkit.strategies import FineTune, Scratch
from transferkit.train.trainer import StepContext, _Step

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gaussian_kl_is_the_closed_form_computed_by_hand():
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0], [0.5, 0.3]])
    logvar = torch.tensor([[0.0, 0.0], [0.0, math.log(4.0)], [-1.0, 2.0]])
    # 0.5 * sum_j (mu^2 + sigma^2 - 1 - log sigma^2), row by row
    by_hand = [0.0,
               0.5 * ((1 + 1 - 1 - 0) + (4 + 4 - 1 - math.log(4.0))),
               0.5 * ((0.25 + math.exp(-1) - 1 + 1) + (0.09 + math.exp(2) - 1 - 2))]
    np.testing.assert_allclose(gaussian_kl(mu, logvar).numpy(), by_hand, rtol=1e-6, atol=1e-7)
    # and torch's own KL of the two Gaussians
    from torch.distributions import Normal, kl_divergence

    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), ref)


def _model(dim=4, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    bb = create_backbone("tiny_mlp", in_features=5, width=8)
    return TransferModel(bb, 3, head=functools.partial(VIBHead, dim=dim), dropout=dropout)


@pytest.mark.parametrize("beta,dropout", [(0.0, 0.0), (1e-3, 0.0), (0.7, 0.0), (0.7, 0.5)])
def test_the_training_step_loss_is_cross_entropy_plus_beta_times_the_kl_of_that_pass(beta, dropout):
    """With dropout the KL must be that of the pass that gave the logits (one dropout mask), not
    of a second encoding."""
    model = _model(dropout=dropout).train()
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    step = _Step(model, [VIBLoss(beta)], split=True)
    torch.manual_seed(1)
    loss, logits, logs = step(x, y, None, StepContext(model=model), 0.0, 1.0)
    # the same pass by hand: encoder -> (mu, logvar), one sample, decoder
    enc, fc = model.head.encoder, model.head.fc
    with torch.no_grad():
        f = model.backbone(x)
        torch.manual_seed(1)
        h = F.dropout(f, dropout, training=True) @ enc.weight.T + enc.bias
        mu, logvar = h[:, :4], h[:, 4:]
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        expect_logits = z @ fc.weight.T + fc.bias
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1).mean()
        ce = F.cross_entropy(expect_logits, y)
    torch.testing.assert_close(logits, expect_logits)
    torch.testing.assert_close(logs["vib_kl"], kl)
    torch.testing.assert_close(loss, ce + beta * kl)
    if beta == 0.0:  # the plain head loss: the cross-entropy of the head's logits, nothing added
        assert torch.equal(loss, F.cross_entropy(logits, y))
    loss.backward()  # the KL term reaches the encoder: both halves get a gradient when beta > 0
    g = model.head.encoder.weight.grad
    assert torch.isfinite(g).all() and g[4:].abs().sum() > 0


def test_eval_classifies_the_mean_code_and_training_samples():
    model = _model()
    x = torch.randn(7, 5)
    model.eval()
    with torch.no_grad():
        mu, _ = model.head.encode(model.backbone(x))
        a, b = model(x), model(x)
    assert torch.equal(a, b) and torch.allclose(a, model.head.fc(mu))
    assert model.head._stats is None  # eval keeps nothing
    model.train()
    with torch.no_grad():
        model.head.encoder.bias[4:].fill_(0.0)  # sigma = 1: samples differ visibly
        assert not torch.equal(model(x), model(x))
    model.eval()
    assert model.head._stats is None  # switching to eval drops the last training pass


def test_the_head_and_its_term_need_each_other():
    model = TransferModel(create_backbone("tiny_mlp", in_features=5, width=8), 3, head="mlp")
    with pytest.raises(ConfigError, match="VIBLoss needs a model whose head is a VIBHead, got MLPHead; build it "
                                          "with head='vib'"):
        VIBLoss(0.1)(StepContext(model=model, features=torch.zeros(2, 8)))
    assert isinstance(TransferModel(create_backbone("tiny_mlp", in_features=5, width=8), 3, head="vib").head, VIBHead)


@pytest.mark.parametrize("kw,fragments", [
    ({"head": "linear", "vib_beta": 0.1}, ["finetune.vib_beta is set but finetune.head='linear'", "set head: vib"]),
    ({"head": "mlp", "vib_dim": 8}, ["finetune.vib_dim is set but finetune.head='mlp'"]),
    ({"head": "vib", "vib_beta": -1}, ["finetune.vib_beta=-1 is out of range", "[0, 1e+06]"]),
    ({"head": "vib", "vib_dim": 0}, ["finetune.vib_dim=0 is out of range", "[1, 65536]"]),
    ({"head": "vib", "vib_dim": 2.5}, ["finetune.vib_dim=2.5 is not a whole number"]),
    ({"head": "vib", "vib_beta": float("nan")}, ["finetune.vib_beta=nan is not a finite number"]),
    ({"head": "vibe"}, ["head='vibe'", "Did you mean 'vib'"]),
])
def test_bad_vib_options_are_one_line_errors(kw, fragments):
    with pytest.raises(ConfigError) as info:
        FineTune(backbone="tiny_cnn", **kw).validate()
    msg = str(info.value)
    assert "\n" not in msg and all(f in msg for f in fragments), msg


def _blobs(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, 5)).astype(np.float32) + 2.0 * np.eye(5, dtype=np.float32)[y]
    return DomainDataset(X, y, "blobs", "tabular", classes=["a", "b", "c"])


def test_a_larger_beta_compresses_the_code():
    """The KL of the code to N(0, I) (I(Z; X)'s variational bound) falls as beta grows; a wrong
    sign or a term that never reaches the encoder breaks this."""
    data = _blobs()
    kls = []
    for beta in (0.0, 0.3):
        s = Scratch(backbone="identity", head="vib", vib_beta=beta, vib_dim=4, epochs=12, batch_size=30, lr=0.05,
                    augment="none", seed=0, val_every=1).fit(data, data)
        kls.append(s.history_[-1]["vib_kl"])
        assert all(np.isfinite(r["vib_kl"]) for r in s.history_)
    assert kls[1] < 0.5 * kls[0], kls


@pytest.fixture(scope="module")
def vib_run(tmp_path_factory):
    from transferkit.config import config_from_dict
    from transferkit.experiment import run_experiment

    cfg = {"name": "vib", "seeds": [0], "target": "digits:subset=1/8,size=16,rotate=10..30,seed=1",
           "split": {"labels_per_class": 5, "val_fraction": 0.5},
           "backbone": {"name": "tiny_cnn", "image_size": 16, "pretrained": False}, "progress": False,
           "strategies": [{"name": "finetune", "head": "vib", "vib_beta": 0.01, "vib_dim": 8, "epochs": 3,
                           "batch_size": 16, "lr": 0.01, "backbone_lr_mult": 1.0}]}
    out = tmp_path_factory.mktemp("vib") / "run"
    kept = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_experiment(config_from_dict(cfg), out, echo=lambda *a, **k: None, report_features=False,
                       on_run=lambda strat, row, splits: kept.update(strat=strat, test=splits[2]))
    return cfg, out, kept


def test_a_vib_run_saves_and_reloads_with_identical_predictions(vib_run):
    import transferkit as tk

    cfg, out, kept = vib_run
    fitted, test = kept["strat"], kept["test"]
    assert isinstance(fitted.model_.head, VIBHead) and fitted.model_.head.dim == 8
    assert "vib_kl" in fitted.history_[-1]
    model = tk.load_run(out, strategy="finetune")
    assert isinstance(model.model_.head, VIBHead) and model.model_.head.dim == 8
    saved = np.load(out / "finetune" / "seed0" / "predictions.npz")
    np.testing.assert_array_equal(model.predict(test), saved["y_pred"])
    np.testing.assert_array_equal(model.predict_logits(test), fitted.predict_logits(test))  # the mean code, exactly
    assert list(model.classes_) == [str(i) for i in range(10)]


def test_a_vib_file_does_not_load_as_another_head(vib_run):
    from safetensors.torch import load_file

    cfg, out, _ = vib_run
    state = load_file(str(out / "finetune" / "seed0" / "model.safetensors"))
    with pytest.raises(ConfigError, match="holds no 'linear' head"):
        FineTune(backbone="tiny_cnn", image_size=16, pretrained=False).load_state(state)
    with pytest.raises(Exception, match="does not fit the architecture"):  # another code width
        FineTune(backbone="tiny_cnn", image_size=16, pretrained=False, head="vib", vib_dim=4).load_state(state)
