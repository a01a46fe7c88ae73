"""Test-time adaptation: what changes, reset, modes, and each method against a hand computation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import transferkit as tk
from transferkit.errors import ConfigError, DataError
from transferkit.tta import BNAdapt, T3A, Tent, wrap
from transferkit.tta.base import softmax_entropy
from transferkit.tta.tent import norm_affine_parameters


def _cnn(seed=0, k=4):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                      nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16),
                      nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, k))
    with torch.no_grad():  # source statistics that are not the test batch's
        for bn in (m[1], m[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return m.eval()


def _stream(n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g) * 1.5 + 0.3


def _same_state(a: dict, b: dict, keys=None) -> bool:
    keys = a.keys() if keys is None else keys
    return all(torch.equal(a[k], b[k]) for k in keys)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def test_registry_and_wrap():
    assert set(tk.tta.methods()) >= {"bn_adapt", "tent", "t3a", "eata"}
    assert isinstance(wrap(_cnn(), "tent"), Tent)
    with pytest.raises(ConfigError, match="nearest|Did you mean|tent"):
        wrap(_cnn(), "tnet")
    with pytest.raises(ConfigError, match="no option 'learning_rate'.*lr"):
        wrap(_cnn(), "tent", learning_rate=1e-3)
    with pytest.raises(ConfigError, match="mode='batch'.*online.*episodic"):
        wrap(_cnn(), "tent", mode="batch")
    with pytest.raises(ConfigError, match="lr=-1"):
        wrap(_cnn(), "tent", lr=-1)


def test_tent_changes_only_norm_affine_parameters_and_not_the_callers_model():
    model = _cnn()
    before = copy.deepcopy(model.state_dict())
    a = wrap(model, "tent", batch_size=32)
    a.predict_logits(_stream())
    after = a.model.state_dict()
    affine = {n for n, _ in norm_affine_parameters(model)}
    assert set(a.changed_parameters()) == affine
    assert affine == {"1.weight", "1.bias", "4.weight", "4.bias", "9.weight", "9.bias"}
    assert after.keys() == before.keys()  # the BatchNorm swap keeps the names
    others = [k for k in before if k not in affine]
    assert _same_state(after, before, others)  # convs, linears, running statistics: bit-identical
    assert all(not torch.equal(after[k], before[k]) for k in affine)
    assert _same_state(model.state_dict(), before)  # the caller's model is a copy's source, untouched
    assert "updates 6 parameter tensors" in a.describe() and "2 BatchNorm layers" in a.describe()


def test_tent_step_equals_the_reference_recipe():
    """One TENT step = the reference implementation: BatchNorm in train mode without running
    statistics, Adam(lr=1e-3, betas=(0.9, 0.999)) on the norm affine parameters, entropy loss;
    the logits returned are those of the forward pass before the step."""
    model = _cnn()
    x1, x2 = _stream(32, 1), _stream(32, 2)
    a = Tent(model, lr=1e-3)
    out1 = a(x1)
    out2 = a(x2)

    ref = copy.deepcopy(model)
    ref.train()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    params = [p for _, p in norm_affine_parameters(ref)]
    for p in ref.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999))
    outs = []
    for x in (x1, x2):
        logits = ref(x)
        loss = softmax_entropy(logits).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        outs.append(logits.detach())
    torch.testing.assert_close(out1, outs[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out2, outs[1], rtol=1e-5, atol=1e-6)
    for (n, p), (_, q) in zip(norm_affine_parameters(a.model), norm_affine_parameters(ref)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=n)


def test_tent_lowers_the_entropy_of_a_batch():
    x = _stream(64)
    a = wrap(_cnn(), "tent", lr=5e-3)
    ents = [softmax_entropy(a(x)).mean().item() for _ in range(15)]
    assert ents[-1] < ents[0] - 0.05
    assert np.all(np.diff(ents[:5]) < 0)


@pytest.mark.parametrize("method", ["tent", "eata", "t3a", "bn_adapt"])
def test_reset_restores_the_exact_initial_state(method):
    model, x = _cnn(), _stream()
    a = wrap(model, method, batch_size=32)
    init = copy.deepcopy(a.model.state_dict())
    first = a.predict_logits(x)
    a.predict_logits(_stream(seed=5))  # more adaptation
    a.reset()
    assert _same_state(a.model.state_dict(), init)
    assert a.n_batches_ == 0
    np.testing.assert_array_equal(a.predict_logits(x), first)  # optimizer moments and memory back too


def test_episodic_batches_are_independent_and_online_is_not():
    model = _cnn()
    x1, x2 = _stream(32, 1), _stream(32, 2)
    epi = wrap(model, "tent", mode="episodic", lr=1e-2)
    epi(x1)
    alone = wrap(model, "tent", mode="episodic", lr=1e-2)(x2)
    torch.testing.assert_close(epi(x2), alone, rtol=0, atol=0)
    onl = wrap(model, "tent", lr=1e-2)
    onl(x1)
    assert not torch.equal(onl(x2), alone)


def test_bn_adapt_equals_hand_normalisation():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.running_mean[:] = torch.tensor([1.0, -2.0, 0.5])
        bn.running_var[:] = torch.tensor([4.0, 0.25, 1.0])
        bn.weight[:] = torch.tensor([1.5, 0.5, 1.0])
        bn.bias[:] = torch.tensor([0.1, 0.0, -0.3])
    model = nn.Sequential(bn, nn.Linear(3, 2)).eval()
    x = torch.randn(10, 3) * 2 + 1
    for prior in (0.0, 4.0):
        a = BNAdapt(model, prior=prior)
        got = a.model[0](x)
        mu, var = x.mean(0), x.var(0, unbiased=False)
        w = prior / (prior + 1)
        m = w * bn.running_mean + (1 - w) * mu
        v = w * bn.running_var + (1 - w) * var
        want = (x - m) / torch.sqrt(v + bn.eps) * bn.weight + bn.bias
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
        out = a(x)
        torch.testing.assert_close(out, model[1](want).detach(), rtol=1e-5, atol=1e-6)
        assert a.changed_parameters() == [] and _same_state(a.model.state_dict(), model.state_dict())
    # prior > 0 works on one sample; prior 0 does not
    BNAdapt(model, prior=16)(x[:1])
    with pytest.raises(DataError, match="batch of 1 sample.*at least 16"):
        BNAdapt(model)(x[:1])


def test_t3a_hand_computation_and_a_one_class_stream():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight[:] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        lin.bias.zero_()
    model = nn.Sequential(nn.Identity(), lin)
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.2, 2.0]])
    a = T3A(model, filter_k=-1)
    out = a(z)
    # supports: w_0, w_1 and the three samples labeled by the classifier's argmax (0, 1, 0)
    sup = torch.cat([lin.weight, z])
    lab = torch.tensor([0, 1, 0, 1, 0])
    c = torch.stack([nn.functional.normalize(sup[lab == k], dim=1).sum(0) for k in (0, 1)], 1)
    torch.testing.assert_close(out, z @ (c / c.norm(dim=0)))
    # filter_k=1 keeps each class's lowest-entropy support
    a1 = T3A(model, filter_k=1)
    a1(z)
    ent = softmax_entropy(lin(sup))
    for k in (0, 1):
        idx = torch.nonzero(lab == k).flatten()
        best = idx[ent[idx].argmin()]
        assert any(torch.equal(s, sup[best]) for s in a1.supports_[a1.labels_ == k])
    assert len(a1.supports_) == 2


def test_t3a_on_a_stream_of_one_class_does_not_crash():
    model, x = _cnn(k=5), _stream(200)
    pred = model(x).argmax(1)
    one = x[pred == pred.mode().values]  # every sample predicted the same class
    a = wrap(model, "t3a", batch_size=16, filter_k=5)
    p = a.predict(one)
    assert len(p) == len(one) and np.isfinite(a.predict_logits(one)).all()
    assert a.changed_parameters() == [] and _same_state(a.model.state_dict(), model.state_dict())
    assert set(a.labels_.tolist()) == set(range(5))  # every class keeps a support


def test_t3a_speed_path_adds_no_gradient():
    a = wrap(_cnn(), "t3a")
    out = a(_stream(8))
    assert not out.requires_grad


def test_eata_filters_and_anchors():
    model, x = _cnn(), _stream(64)
    # nothing reliable (e_margin tiny): no step, nothing changes
    a = wrap(model, "eata", e_margin=1e-6)
    a(x)
    assert a.n_selected_ == 0 and _same_state(a.model.state_dict(), model.state_dict())
    # a Fisher from clean inputs: one non-negative value per affine value, the anchor at the paper's 2000
    b = wrap(model, "eata", fisher_inputs=_stream(50, 7), e_margin=1.0, d_margin=1.0)
    assert b.anchor == 2000 and len(b.fisher_) == len(b.changed_parameters())
    assert all((f >= 0).all() for f in b.fisher_) and any((f > 0).any() for f in b.fisher_)
    b(x)
    assert b.n_selected_ > 0
    # a huge anchor keeps the parameters at the source solution, none lets them move further
    far = wrap(model, "eata", e_margin=1.0, d_margin=1.0, lr=1e-2)
    near = wrap(model, "eata", e_margin=1.0, d_margin=1.0, lr=1e-2, anchor=1e6)
    for _ in range(10):
        far(x)
        near(x)
    d = lambda m: sum(((p - p0) ** 2).sum().item() for p, p0 in zip(m._params, m.theta0_))  # noqa: E731
    assert d(near) < d(far)


def test_bad_input_is_one_line_and_names_the_alternative():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    for method in ("tent", "bn_adapt", "eata"):
        with pytest.raises(ConfigError, match="no .*layers.*t3a") as e:
            wrap(plain, method)
        assert "\n" not in str(e.value)
    wrap(plain, "t3a")(torch.randn(4, 1, 8, 8))  # what the message offers works
    with pytest.raises(DataError, match="tent got a test batch of 1 sample.*t3a"):
        wrap(_cnn(), "tent")(_stream(1))
    with pytest.raises(ConfigError, match="t3a: the model has no nn.Linear"):
        wrap(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten()), "t3a")
    with pytest.raises(ConfigError, match="must be a torch.nn.Module"):
        wrap("usps_cnn", "tent")
    with pytest.raises(ConfigError, match="batch_size=0"):
        wrap(_cnn(), "tent", batch_size=0)


def test_a_last_batch_of_one_joins_the_batch_before():
    a = wrap(_cnn(), "tent", batch_size=32)
    out = a.predict_logits(_stream(65))
    assert out.shape == (65, 4) and a.n_batches_ == 2


def test_predict_logits_on_a_dataset_uses_the_models_preprocess():
    from transferkit.backbones import create_backbone
    from transferkit.data import DomainDataset

    bb = create_backbone("tiny_cnn", pretrained=False, image_size=16)
    model = tk.TransferModel(bb, 3).eval()
    ds = DomainDataset(np.random.RandomState(0).rand(20, 16, 16, 3).astype(np.float32), np.zeros(20, int), "toy",
                       "image", classes=["a", "b", "c"])
    a = wrap(model, "t3a", batch_size=8)
    assert a.predict_logits(ds).shape == (20, 3)


def test_close_detaches_t3a_from_a_model_adapted_in_place():
    model, x = _cnn(), _stream(16)
    a = wrap(model, "t3a", copy=False)
    a(x)
    assert len(model[11]._forward_hooks) == 1
    a.close()
    assert len(model[11]._forward_hooks) == 0
    with pytest.raises(ConfigError, match="closed; wrap the model again"):
        a(x)
