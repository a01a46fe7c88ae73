"""MAML, first-order MAML, ANIL and Reptile against hand-written references.

The references below never call transferkit's inner loop: the model is written out as plain
tensor algebra (Linear, batch-statistics BatchNorm, tanh, Linear head) and the inner loop is
unrolled SGD with ``torch.autograd.grad(create_graph=True)`` (second order) or without a graph
(first order), in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferkit._registry import describe, get
from transferkit.errors import ConfigError
from transferkit.fewshot import EpisodeSampler, MetaData, mlp, split_classes
from transferkit.fewshot.maml import ANIL, FOMAML, MAML, batch_statistics
from transferkit.fewshot.reptile import Reptile, minibatches

EPS_BN = 1e-5
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- tiny problem
def tiny_encoder(seed: int = 0) -> nn.Module:
    """Linear(4, 6) - BatchNorm1d - tanh - Linear(6, 5) - tanh, float64, BN affine randomised."""
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh()).double()
    with torch.no_grad():
        enc[1].weight.uniform_(0.5, 1.5)
        enc[1].bias.normal_(0, 0.3)
    return enc


def ref_features(P: dict, x: torch.Tensor) -> torch.Tensor:
    h = x @ P["encoder.0.weight"].T + P["encoder.0.bias"]
    mu, var = h.mean(0), h.var(0, unbiased=False)  # batch statistics of this batch
    h = (h - mu) / torch.sqrt(var + EPS_BN) * P["encoder.1.weight"] + P["encoder.1.bias"]
    h = torch.tanh(h)
    return torch.tanh(h @ P["encoder.3.weight"].T + P["encoder.3.bias"])


def ref_logits(P: dict, x: torch.Tensor) -> torch.Tensor:
    return ref_features(P, x) @ P["head.weight"].T + P["head.bias"]


def ref_loss(P, x, y):
    return F.cross_entropy(ref_logits(P, x), y)


def tiny_data(n_way=3, k=2, q=3, n_classes=6, per=8, seed=0) -> MetaData:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per)
    X = rng.normal(size=(len(y), 4)) + rng.normal(size=(n_classes, 4))[y]
    return MetaData(torch.tensor(X), y, train=EpisodeSampler(y, n_way, k, q, seed=seed))


def theta_of(method) -> dict:
    """The meta-parameters as fresh leaves (for the reference) plus the zero head if not learned."""
    P = {k: v.detach().clone().requires_grad_() for k, v in method._meta_params().items()}
    if method.head_ is None:
        P["head.weight"] = torch.zeros(method.n_way_, method.feature_dim_, dtype=torch.float64, requires_grad=True)
        P["head.bias"] = torch.zeros(method.n_way_, dtype=torch.float64, requires_grad=True)
    return P


class NoStep:
    """An optimizer that leaves ``.grad`` for the test to read."""

    def __init__(self, params):
        self.params = list(params)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        pass


def meta_gradient(method, data, episodes) -> dict:
    """``.grad`` of every meta-parameter after transferkit's own outer step (no update applied)."""
    params = method._meta_params()
    method._outer_step(data, episodes, NoStep(params.values()), 0.0)
    return {k: v.grad.detach().clone() for k, v in params.items()}


def build(cls, head_init="learned", **kw):
    m = cls(inner_lr=0.3, head_init=head_init, **kw).setup(tiny_encoder(), feature_dim=5, seed=3)
    m._init_head(3)
    return m


def assert_close(a: dict, b: dict, keys=None, tol=1e-6):
    for k in keys or a:
        assert torch.allclose(a[k], b[k], atol=tol, rtol=0), (k, (a[k] - b[k]).abs().max())


# ----------------------------------------------------------------------------- MAML
@pytest.mark.parametrize("head_init", ["learned", "zero"])
@pytest.mark.parametrize("steps", [2, 3])
def test_maml_meta_gradient_equals_unrolled_second_order_autograd(head_init, steps):
    m = build(MAML, head_init, inner_steps=steps, meta_batch=2)
    data = tiny_data()
    eps = [data.train.episode(0), data.train.episode(1)]
    got = meta_gradient(m, data, eps)

    P = theta_of(m)
    total = 0
    for ep in eps:
        xs, ys, xq, yq = data.rows(ep)
        phi = dict(P)
        for _ in range(steps):
            g = torch.autograd.grad(ref_loss(phi, xs, ys), list(phi.values()), create_graph=True)
            phi = {k: v - 0.3 * gi for (k, v), gi in zip(phi.items(), g)}
        total = total + ref_loss(phi, xq, yq) / len(eps)
    ref = dict(zip(P, torch.autograd.grad(total, list(P.values()))))
    assert set(got) == set(m._meta_params())
    assert_close(got, ref, keys=list(got))
    # every parameter gets a meta-gradient, except the bias before BatchNorm (the batch mean cancels it)
    assert all(float(v.abs().max()) > 1e-4 for k, v in got.items() if k != "encoder.0.bias")


@pytest.mark.parametrize("head_init", ["learned", "zero"])
def test_first_order_maml_is_query_gradient_at_adapted_parameters(head_init):
    data = tiny_data()
    ep = data.train.episode(0)
    fo = build(FOMAML, head_init, inner_steps=3, meta_batch=1)
    got = meta_gradient(fo, data, [ep])

    P = theta_of(fo)
    xs, ys, xq, yq = data.rows(ep)
    phi = {k: v.detach() for k, v in P.items()}
    for _ in range(3):  # plain SGD, no graph
        phi = {k: v.requires_grad_() for k, v in phi.items()}
        g = torch.autograd.grad(ref_loss(phi, xs, ys), list(phi.values()))
        phi = {k: (v - 0.3 * gi).detach() for (k, v), gi in zip(phi.items(), g)}
    phi = {k: v.requires_grad_() for k, v in phi.items()}
    ref = dict(zip(phi, torch.autograd.grad(ref_loss(phi, xq, yq), list(phi.values()))))
    assert_close(got, ref, keys=list(got))

    so = build(MAML, head_init, inner_steps=3, meta_batch=1)
    second = meta_gradient(so, data, [ep])
    diff = max(float((got[k] - second[k]).abs().max()) for k in got)
    assert diff > 1e-3  # the second-order terms are not negligible here, so the test tells them apart
    # MAML with first_order=True is fomaml
    mfo = build(MAML, head_init, inner_steps=3, meta_batch=1, first_order=True)
    assert_close(meta_gradient(mfo, data, [ep]), got, tol=1e-12)


# ----------------------------------------------------------------------------- ANIL
def test_anil_inner_loop_changes_only_the_head():
    m = build(ANIL, "learned", inner_steps=3)
    data = tiny_data()
    xs, ys, _, _ = data.rows(data.train.episode(0))
    theta = m._start(3, detach=False)
    with batch_statistics(m.encoder_, train=True):
        phi = m.adapt(theta, xs, ys, 3, first_order=False)
    for k in theta:
        if k.startswith("encoder."):
            assert phi[k] is theta[k]
        else:
            assert float((phi[k] - theta[k]).detach().abs().max()) > 1e-3


@pytest.mark.parametrize("head_init", ["learned", "zero"])
def test_anil_meta_gradient_reaches_the_encoder_through_the_outer_loop(head_init):
    m = build(ANIL, head_init, inner_steps=3, meta_batch=1)
    data = tiny_data()
    ep = data.train.episode(0)
    got = meta_gradient(m, data, [ep])

    P = theta_of(m)
    xs, ys, xq, yq = data.rows(ep)
    head = {k: P[k] for k in ("head.weight", "head.bias")}
    for _ in range(3):  # unrolled SGD on the head only, encoder fixed at theta
        g = torch.autograd.grad(ref_loss({**P, **head}, xs, ys), list(head.values()), create_graph=True)
        head = {k: v - 0.3 * gi for (k, v), gi in zip(head.items(), g)}
    ref = dict(zip(P, torch.autograd.grad(ref_loss({**P, **head}, xq, yq), list(P.values()))))
    assert_close(got, ref, keys=list(got))
    assert all(float(got[k].abs().max()) > 1e-4 for k in got if k.startswith("encoder.") and k != "encoder.0.bias")
    # second order: the encoder's gradient also flows through the head's adaptation
    fo = build(ANIL, head_init, inner_steps=3, meta_batch=1, first_order=True)
    g_fo = meta_gradient(fo, data, [ep])
    assert max(float((g_fo[k] - got[k]).abs().max()) for k in got if k.startswith("encoder.")) > 1e-4


# ----------------------------------------------------------------------------- Reptile
@pytest.mark.parametrize("head_init,train_on,inner_batch", [
    ("learned", "episode", None), ("zero", "episode", None), ("learned", "support", None), ("zero", "support", None),
    ("learned", "episode", 4), ("zero", "support", 4),
])
def test_reptile_update_is_interpolation_towards_sgd_adapted_weights(head_init, train_on, inner_batch):
    data = tiny_data()
    eps = [data.train.episode(0), data.train.episode(1)]
    m = Reptile(inner_steps=3, inner_lr=0.2, inner_optimizer="sgd", outer_lr=0.4, meta_batch=2, anneal=False,
                train_on=train_on, inner_batch=inner_batch, head_init=head_init).setup(tiny_encoder(), feature_dim=5,
                                                                                         seed=3)
    m._init_head(3)
    P = theta_of(m)
    phis = []
    for ep in eps:
        xs, ys, xq, yq = data.rows(ep)
        x, y = (torch.cat([xs, xq]), torch.cat([ys, yq])) if train_on == "episode" else (xs, ys)
        rows = [slice(None)] * 3
        if inner_batch is not None:  # the documented minibatches: seeded by (seed, episode index)
            rows = minibatches(len(y), 3, inner_batch, np.random.default_rng([3, ep.index]))
        phi = {k: v.detach() for k, v in P.items()}
        for j in range(3):
            phi = {k: v.requires_grad_() for k, v in phi.items()}
            g = torch.autograd.grad(ref_loss(phi, x[rows[j]], y[rows[j]]), list(phi.values()))
            phi = {k: (v - 0.2 * gi).detach() for (k, v), gi in zip(phi.items(), g)}
        phis.append(phi)
    m._outer_step(data, eps, None, 0.0)
    new = m._meta_params()
    assert set(new) == {k for k in P if k.startswith("encoder.") or head_init == "learned"}
    for k, v in new.items():
        t = P[k].detach()
        expect = t + 0.4 * ((phis[0][k] - t) + (phis[1][k] - t)) / 2  # theta + eps * mean_i (phi_i - theta)
        assert torch.allclose(v.detach(), expect, atol=1e-10, rtol=0), k


def test_minibatches_cover_each_pass_once():
    rng = np.random.default_rng(0)
    b = minibatches(10, 7, 4, rng)
    assert [len(r) for r in b] == [4] * 7
    for start in (0, 2, 4):  # pass = two batches of 4 out of 10 rows (2 left over, dropped)
        both = torch.cat(b[start:start + 2]).tolist()
        assert len(set(both)) == 8 and set(both) <= set(range(10))
    again = minibatches(10, 7, 4, np.random.default_rng(0))
    assert all(torch.equal(u, v) for u, v in zip(b, again))


def test_reptile_functional_adam_equals_torch_adam_and_annealing():
    data = tiny_data()
    ep = data.train.episode(0)
    m = Reptile(inner_steps=4, inner_lr=0.05, outer_lr=1.0, meta_batch=1, anneal=True, inner_batch=None,
                head_init="learned").setup(tiny_encoder(), feature_dim=5, seed=3)
    m._init_head(3)
    # reference: torch.optim.Adam(betas=(0, 0.999)) on a copy of the model, BN on batch statistics
    enc = tiny_encoder()
    head = nn.Linear(5, 3).double()
    head.load_state_dict(m.head_.state_dict())
    for mod in enc.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.track_running_stats = False
    opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr=0.05, betas=(0.0, 0.999), eps=1e-8)
    xs, ys, xq, yq = data.rows(ep)
    x, y = torch.cat([xs, xq]), torch.cat([ys, yq])
    theta0 = {k: v.detach().clone() for k, v in m._meta_params().items()}
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(head(enc(x)), y).backward()
        opt.step()
    phi = {f"encoder.{k}": v for k, v in enc.named_parameters()}
    phi.update({f"head.{k}": v for k, v in head.named_parameters()})
    m._outer_step(data, [ep], None, 0.75)  # annealed: epsilon = 1.0 * (1 - 0.75)
    for k, v in m._meta_params().items():
        assert torch.allclose(v.detach(), theta0[k] + 0.25 * (phi[k].detach() - theta0[k]), atol=1e-9, rtol=0), k


# ----------------------------------------------------------------------------- BatchNorm, prediction
def synthetic(noise=1.5, n_classes=20, per=30, seed=0, n_way=4, k=1, q=5):
    """Class signal in 4 dimensions, 28 dimensions of shared noise: meta-learning learns to ignore them."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, 4))
    y = np.repeat(np.arange(n_classes), per)
    X = np.hstack([means[y] + 0.3 * rng.normal(size=(len(y), 4)), noise * rng.normal(size=(len(y), 28))])
    sp = split_classes(y, {"train": list(range(12)), "val": list(range(12, 16)), "test": list(range(16, 20))})
    return MetaData(torch.tensor(X, dtype=torch.float32), y,
                    train=EpisodeSampler(y, n_way, k, q, classes=sp["train"], seed=1, where="meta-train"),
                    val=EpisodeSampler(y, n_way, k, q, classes=sp["val"], seed=2, where="meta-val"),
                    test=EpisodeSampler(y, n_way, k, q, classes=sp["test"], seed=3, where="meta-test"))


class Untouchable:
    """A meta-test sampler that fails the test when anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"meta-training read data.test.{name}")

    def __iter__(self):
        raise AssertionError("meta-training iterated data.test")


def bn_buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


def trained(name, steps=4, seed=0, **kw):
    data = synthetic()
    torch.manual_seed(0)
    m = get("fewshot", name)(**kw).setup(mlp(32, hidden=16, depth=2), feature_dim=16, seed=seed)
    m.meta_train(data, steps=steps, eval_every=2, val_episodes=3)
    return m, data


@pytest.mark.parametrize("name", ["maml", "fomaml", "anil", "reptile"])
def test_batchnorm_uses_batch_statistics_and_never_touches_running_stats(name):
    data = synthetic()
    torch.manual_seed(0)
    enc = mlp(32, hidden=16, depth=2)
    before = bn_buffers(enc)
    m = get("fewshot", name)().setup(enc, feature_dim=16, seed=0)
    m.meta_train(data, steps=3, eval_every=1, val_episodes=2)
    xs, ys, xq, yq = data.rows(data.val.episode(5))
    enc.eval()
    logits = m.predict_episode(xs, ys, xq, 4)
    after = bn_buffers(enc)
    assert before.keys() == after.keys() and before
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert not enc.training  # the caller's mode is restored
    assert all(bn.track_running_stats for bn in enc.modules() if isinstance(bn, nn.BatchNorm1d))
    # running statistics are not used: garbage in them changes nothing
    with torch.no_grad():
        for bn in enc.modules():
            if isinstance(bn, nn.BatchNorm1d):
                bn.running_mean.fill_(100.0)
                bn.running_var.fill_(1e-4)
    assert torch.equal(m.predict_episode(xs, ys, xq, 4), logits)
    # transductive: a query row's logits depend on the other query rows (batch statistics)
    other = xq.clone()
    other[1:] = other[1:] * 3.0 + 1.0
    assert not torch.allclose(m.predict_episode(xs, ys, other, 4)[0], logits[0], atol=1e-4)


@pytest.mark.parametrize("name", ["maml", "anil", "reptile"])
def test_predict_episode_leaves_the_initialisation_unchanged_and_is_deterministic(name):
    m, data = trained(name, head_init="learned")
    state = {k: v.clone() for k, v in m.encoder_.state_dict().items()}
    head = {k: v.clone() for k, v in m.head_.state_dict().items()}
    xs, ys, xq, _ = data.rows(data.val.episode(7))
    with torch.no_grad():  # evaluate() style: adaptation still gets its gradients
        a = m.predict_episode(xs, ys, xq, 4)
    b = m.predict_episode(xs, ys, xq, 4)
    assert torch.equal(a, b)
    for k, v in m.encoder_.state_dict().items():
        assert torch.equal(v, state[k]), k
    for k, v in m.head_.state_dict().items():
        assert torch.equal(v, head[k]), k
    assert all(p.grad is None for p in m._meta_params().values())
    # adaptation does something: zero inner steps at test would give other logits
    m0 = m.set_params(inner_steps_test=1)
    assert not torch.allclose(m0.predict_episode(xs, ys, xq, 4), a)
    # same seed -> same logits; another seed -> another learned head init -> other logits
    again, _ = trained(name, head_init="learned")
    assert torch.equal(again.set_params(inner_steps_test=None).predict_episode(xs, ys, xq, 4),
                       m.set_params(inner_steps_test=None).predict_episode(xs, ys, xq, 4))
    other, _ = trained(name, head_init="learned", seed=1)
    assert not torch.allclose(other.predict_episode(xs, ys, xq, 4), a)


# ----------------------------------------------------------------------------- meta-training
@pytest.mark.parametrize("name,kw,steps", [
    ("maml", {"outer_lr": 0.01}, 100),
    ("fomaml", {"outer_lr": 0.01}, 100),
    ("anil", {"outer_lr": 0.01, "inner_lr": 0.5}, 100),
    ("reptile", {"head_init": "zero"}, 60),  # a learned head is slower on this tiny task (0.31 -> 0.35)
])
def test_meta_training_raises_meta_val_accuracy_and_never_reads_test(name, kw, steps):
    data = synthetic()
    data.test = Untouchable()
    torch.manual_seed(0)
    m = get("fewshot", name)(**kw).setup(mlp(32, hidden=32, depth=2), feature_dim=32, seed=0)
    lines = []
    hist = m.meta_train(data, steps=steps, log=lines.append, eval_every=steps // 2, val_episodes=40)
    accs = [h["val_accuracy"] for h in hist]
    assert [h["step"] for h in hist] == [0, steps // 2, steps]
    assert max(accs[1:]) > accs[0] + 0.15, accs
    assert m.best_val_accuracy_ == max(accs) and hist[[h["step"] for h in hist].index(m.best_step_)]["val_accuracy"] \
        == max(accs)
    assert m._val_accuracy(data, 40) == m.best_val_accuracy_  # the best checkpoint is the one kept
    assert len(lines) == 3 and f"step {steps}/{steps}" in lines[-1] and "val accuracy" in lines[-1] \
        and lines[-1].endswith(" s")
    assert np.isnan(hist[0]["loss"]) and all(np.isfinite(h["loss"]) for h in hist[1:])


def test_best_meta_val_checkpoint_is_restored(monkeypatch):
    data = synthetic()
    data.test = Untouchable()
    scripted = iter([0.3, 0.9, 0.5, 0.6])
    torch.manual_seed(0)
    m = MAML(outer_lr=0.05).setup(mlp(32, hidden=16, depth=2), feature_dim=16, seed=0)
    monkeypatch.setattr(m, "_val_accuracy", lambda data, n: next(scripted))
    hist = m.meta_train(data, steps=3, eval_every=1, val_episodes=2)
    assert [h["val_accuracy"] for h in hist] == [0.3, 0.9, 0.5, 0.6]
    assert m.best_step_ == 1 and m.best_val_accuracy_ == 0.9
    torch.manual_seed(0)
    one = MAML(outer_lr=0.05).setup(mlp(32, hidden=16, depth=2), feature_dim=16, seed=0)
    rising = iter([0.1, 0.2])
    monkeypatch.setattr(one, "_val_accuracy", lambda data, n: next(rising))  # keeps its step-1 parameters
    one.meta_train(data, steps=1, eval_every=1, val_episodes=2)
    for k, v in one.encoder_.state_dict().items():
        assert torch.equal(m.encoder_.state_dict()[k], v), k
    torch.manual_seed(0)
    three = MAML(outer_lr=0.05, meta_batch=4).setup(mlp(32, hidden=16, depth=2), feature_dim=16, seed=0)
    monkeypatch.setattr(three, "_val_accuracy", lambda data, n: 0.5)  # ties: the earliest (initial) is kept
    init = {k: v.clone() for k, v in three.encoder_.state_dict().items()}
    three.meta_train(data, steps=2, eval_every=1, val_episodes=2)
    assert three.best_step_ == 0
    assert all(torch.equal(init[k], v) for k, v in three.encoder_.state_dict().items())


# ----------------------------------------------------------------------------- errors, registry
@pytest.mark.parametrize("name,kw,match", [
    ("maml", {"inner_steps": 0}, "inner_steps"),
    ("maml", {"inner_lr": -1}, "inner_lr"),
    ("fomaml", {"meta_batch": 0}, "meta_batch"),
    ("anil", {"first_order": "yes"}, "first_order"),
    ("maml", {"head_init": "random"}, "head_init"),
    ("maml", {"inner_steps_test": 0}, "inner_steps_test"),
    ("reptile", {"outer_lr": 2.0}, "outer_lr"),
    ("reptile", {"inner_optimizer": "rmsprop"}, "inner_optimizer"),
    ("reptile", {"train_on": "query"}, "train_on"),
    ("reptile", {"inner_batch": 1}, "inner_batch"),
])
def test_bad_parameters_are_refused_at_setup(name, kw, match):
    with pytest.raises(ConfigError, match=match):
        get("fewshot", name)(**kw).setup(mlp(32, hidden=8), feature_dim=8)


def test_yaml_numbers_are_converted():
    m = MAML(inner_lr="1e-2", inner_steps=5.0, inner_steps_test="10").setup(mlp(32, hidden=8), feature_dim=8)
    assert (m.inner_lr, m.inner_steps, m.inner_steps_test) == (0.01, 5, 10) and isinstance(m.inner_steps, int)


def test_usage_errors():
    data = synthetic()
    m = MAML(head_init="learned").setup(mlp(32, hidden=8, depth=1), feature_dim=8)
    xs, ys, xq, _ = data.rows(data.val.episode(0))
    with pytest.raises(ConfigError, match="needs meta-training"):
        m.predict_episode(xs, ys, xq, 4)
    with pytest.raises(ConfigError, match="no meta-train classes"):
        m.meta_train(MetaData(data.inputs, data.labels, val=data.val), steps=1)
    m.meta_train(data, steps=1, val_episodes=1)
    head = m.head_
    m.meta_train(data, steps=1, val_episodes=1)  # a second call continues: the learned head is kept
    assert m.head_ is head
    with pytest.raises(ConfigError, match="4 outputs but the episode is 3-way"):
        m.predict_episode(xs[:3], ys[:3], xq[:15], 3)
    zero = MAML().setup(mlp(32, hidden=8, depth=1), feature_dim=8)
    zero.meta_train(data, steps=1, val_episodes=1)
    assert zero.predict_episode(xs[:3], ys[:3], xq[:15], 3).shape == (15, 3)  # zero head: any n_way
    with pytest.raises(ConfigError, match="nothing to meta-learn"):
        MAML().setup(nn.Identity(), feature_dim=32).meta_train(data, steps=1)
    with pytest.raises(ConfigError, match="steps"):
        zero.meta_train(data, steps=0)


def test_registered_with_descriptions():
    d = describe("fewshot")
    for name in ("maml", "fomaml", "anil", "reptile"):
        assert d[name] and len(d[name]) < 120, name
    assert get("fewshot", "fomaml")().first_order is True
    assert "first_order" not in get("fewshot", "fomaml")().get_params()
