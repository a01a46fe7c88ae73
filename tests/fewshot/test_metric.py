"""Metric-based methods and transfer baselines against closed forms and reference implementations:
protonet, matching, simpleshot, baseline, baseline_pp, finetune (and their shared training loops)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from transferkit._registry import get
from transferkit.errors import ConfigError, DataError
from transferkit.fewshot import EpisodeSampler, MetaData, conv4, mlp, snapshot, split_classes
from transferkit.fewshot import _episodic

pytestmark = pytest.mark.usefixtures("one_thread")


def _episode(n_way=5, k=1, q=4, d=12, seed=0, spread=1.0, dtype=torch.float64):
    g = np.random.default_rng(seed)
    centres = g.normal(size=(n_way, d)) * spread
    xs = centres.repeat(k, 0) + g.normal(size=(n_way * k, d))
    xq = centres.repeat(q, 0) + g.normal(size=(n_way * q, d))
    ys = np.repeat(np.arange(n_way), k)
    yq = np.repeat(np.arange(n_way), q)
    return (torch.tensor(xs, dtype=dtype), torch.tensor(ys), torch.tensor(xq, dtype=dtype), torch.tensor(yq))


def _method(name, encoder=None, d=12, seed=0, **params):
    return get("fewshot", name)(**params).setup(encoder if encoder is not None else nn.Identity(), d, seed=seed)


class _NoTest:
    """A test split that fails the test when a method so much as looks at it."""

    def __getattr__(self, name):
        raise AssertionError(f"meta-training touched data.test ({name})")

    def __iter__(self):
        raise AssertionError("meta-training iterated data.test")


# ------------------------------------------------------------------------------------------ all of these
@pytest.mark.parametrize("name", ["protonet", "matching", "simpleshot", "baseline", "baseline_pp", "finetune"])
def test_a_query_is_predicted_alone(name):
    """BatchNorm in eval mode at prediction: a query's logits do not depend on the other queries."""
    torch.manual_seed(0)
    enc = conv4(1, 4)
    with torch.no_grad():  # running statistics away from their (0, 1) start
        for m in enc.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    m = _method(name, enc, d=4, seed=0, **({"steps": 5} if name == "finetune" else {}))
    m.meta_trained_ = True  # the encoder counts as (meta-)trained
    g = torch.Generator().manual_seed(0)
    xs, xq = torch.rand(6, 1, 16, 16, generator=g), torch.rand(8, 1, 16, 16, generator=g) * 3
    ys = torch.tensor([0, 0, 1, 1, 2, 2])
    full = m.predict_episode(xs, ys, xq, 3)
    torch.testing.assert_close(m.predict_episode(xs, ys, xq[:3], 3), full[:3], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ ProtoNet
def test_protonet_one_shot_is_nearest_neighbour_sqeuclidean():
    for seed in range(5):
        xs, ys, xq, _ = _episode(k=1, seed=seed)
        logits = _method("protonet").predict_episode(xs, ys, xq, 5)
        d2 = ((xq.numpy()[:, None, :] - xs.numpy()[None]) ** 2).sum(-1)  # support row j is class j
        np.testing.assert_array_equal(logits.argmax(1).numpy(), d2.argmin(1))
        np.testing.assert_allclose(logits.numpy(), -d2, rtol=1e-12, atol=0)


def test_protonet_cosine_one_shot_is_cosine_nearest_neighbour():
    for seed in range(5):
        xs, ys, xq, _ = _episode(k=1, seed=seed)
        m = _method("protonet", distance="cosine", scale=3.0)
        logits = m.predict_episode(xs, ys, xq, 5).numpy()
        a, b = xq.numpy(), xs.numpy()
        cos = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
        np.testing.assert_array_equal(logits.argmax(1), cos.argmax(1))
        np.testing.assert_allclose(logits, 3.0 * cos, rtol=1e-10)


def test_protonet_logits_are_minus_squared_distance_to_class_means():
    xs, ys, xq, _ = _episode(n_way=4, k=3, q=5, seed=1)
    perm = torch.randperm(len(xs), generator=torch.Generator().manual_seed(0))  # order of rows must not matter
    xs, ys = xs[perm], ys[perm]
    logits = _method("protonet").predict_episode(xs, ys, xq, 4).numpy()
    X, Y, Q = xs.numpy(), ys.numpy(), xq.numpy()
    expected = np.empty((len(Q), 4))
    for i, q in enumerate(Q):
        for k in range(4):
            c = X[Y == k].mean(0)
            expected[i, k] = -np.sum((q - c) ** 2)
    np.testing.assert_allclose(logits, expected, rtol=1e-12)


# ------------------------------------------------------------------------------------------ Matching Networks
@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_matching_output_is_softmax_weighted_label_sum(scale):
    xs, ys, xq, _ = _episode(n_way=3, k=4, q=3, seed=2)
    logits = _method("matching", scale=scale).predict_episode(xs, ys, xq, 3).numpy()
    S, Y, Q = xs.numpy(), ys.numpy(), xq.numpy()
    expected = np.zeros((len(Q), 3))
    for i, q in enumerate(Q):
        c = np.array([q @ s / np.linalg.norm(q) / np.linalg.norm(s) for s in S])
        a = np.exp(scale * c) / np.exp(scale * c).sum()
        for j, y in enumerate(Y):
            expected[i, y] += a[j]
    np.testing.assert_allclose(np.exp(logits), expected, rtol=1e-10)
    np.testing.assert_allclose(np.exp(logits).sum(1), 1.0, rtol=1e-12)


# ------------------------------------------------------------------------------------------ SimpleShot
def _table_data(n_classes=9, rows=12, d=8, seed=0):
    g = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), rows)
    x = g.normal(size=(n_classes, d))[labels] * 2 + g.normal(size=(len(labels), d)) + 3.0  # far from the origin
    sp = split_classes(labels, {"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7, 8]})
    return MetaData(torch.tensor(x, dtype=torch.float64), labels,
                    train=EpisodeSampler(labels, 3, 2, 3, classes=sp["train"], seed=1),
                    val=EpisodeSampler(labels, 2, 2, 3, classes=sp["val"], seed=2),
                    test=EpisodeSampler(labels, 3, 2, 3, classes=sp["test"], seed=3))


def _simpleshot_closed_form(xs, ys, xq, n_way, norm, mean):
    X, Q = xs.numpy(), xq.numpy()

    def phi(v):
        if norm == "cl2n":
            v = v - mean
        if norm in ("cl2n", "l2"):
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return v

    cent = np.stack([phi(X)[ys.numpy() == k].mean(0) for k in range(n_way)])
    return -((phi(Q)[:, None, :] - cent[None]) ** 2).sum(-1)


@pytest.mark.parametrize("norm", ["cl2n", "l2", "none"])
def test_simpleshot_closed_form(norm):
    data = _table_data()
    m = _method("simpleshot", d=8, norm=norm)
    assert m.meta_train(data, steps=0) == []
    train_rows = np.isin(data.labels, [0, 1, 2, 3])
    mean = data.inputs.numpy()[train_rows].mean(0)
    if norm == "cl2n":
        np.testing.assert_allclose(m.mean_.numpy(), mean, rtol=1e-12)
    ep = data.test.episode(0)
    xs, ys, xq, _ = data.rows(ep)
    logits = m.predict_episode(xs, ys, xq, 3).numpy()
    np.testing.assert_allclose(logits, _simpleshot_closed_form(xs, ys, xq, 3, norm, mean), rtol=1e-10)


def test_simpleshot_without_meta_train_centres_on_the_support_mean():
    data = _table_data()
    xs, ys, xq, _ = data.rows(data.test.episode(1))
    logits = _method("simpleshot", d=8).predict_episode(xs, ys, xq, 3).numpy()
    np.testing.assert_allclose(logits, _simpleshot_closed_form(xs, ys, xq, 3, "cl2n", xs.numpy().mean(0)),
                               rtol=1e-10)


def test_simpleshot_meta_train_needs_meta_train_classes():
    data = _table_data()
    data.train = None
    with pytest.raises(ConfigError, match="no meta-train classes"):
        _method("simpleshot", d=8).meta_train(data, steps=0)


# ------------------------------------------------------------------------------------------ per-episode heads
@pytest.mark.parametrize("cosine", [False, True])
def test_head_gradient_matches_autograd(cosine):
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(10, 6, dtype=torch.float64, generator=g)
    ys = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    W = torch.randn(3, 6, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    loss, dW, db = _episodic.head_loss_grad(zs, ys, W.detach(), b.detach(), weight_decay=0.3, cosine=cosine,
                                            scale=4.0)
    logits = 4.0 * _episodic.cosine_similarity(zs, W) if cosine else zs @ W.T + b
    ref = torch.nn.functional.cross_entropy(logits, ys) + 0.15 * (W * W).sum()
    ref.backward()
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-12)
    torch.testing.assert_close(dW, W.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, b.grad if not cosine else torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("cosine", [False, True])
def test_fit_head_is_torch_adam(cosine):
    """The written-out Adam loop equals torch.optim.Adam with autograd on the same objective."""
    zs = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ys = torch.arange(4).repeat(3)
    head = _episodic.fit_head(zs, ys, 4, steps=30, lr=0.05, weight_decay=0.01,
                              generator=torch.Generator().manual_seed(3), cosine=cosine, scale=5.0,
                              optimizer="adam")
    W, b = _episodic.init_head(5, 4, torch.Generator().manual_seed(3), zs, bias=not cosine)
    params = [W] + ([] if cosine else [b])
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(30):
        logits = 5.0 * _episodic.cosine_similarity(zs, W) if cosine else zs @ W.T + b
        loss = torch.nn.functional.cross_entropy(logits, ys) + 0.005 * (W * W).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    q = torch.randn(7, 5, dtype=torch.float64)
    ref = 5.0 * _episodic.cosine_similarity(q, W.detach()) if cosine else q @ W.detach().T + b.detach()
    torch.testing.assert_close(head(q), ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("optimizer,steps,atol", [("lbfgs", 200, 1e-5), ("adam", 1500, 2e-3)])
@pytest.mark.parametrize("offset,gain", [(0.0, 1.0), (5.0, 30.0)])  # raw-feature scales: L-BFGS does not mind
def test_baseline_head_reaches_sklearn_logistic_regression(optimizer, steps, atol, offset, gain):
    from sklearn.linear_model import LogisticRegression

    if optimizer == "adam" and gain != 1.0:
        pytest.skip("Adam's steps of size lr are not scale-free (why lbfgs is the default)")
    agree, ours, theirs = [], [], []
    for seed in range(3):
        xs, ys, xq, yq = _episode(n_way=5, k=5, q=10, d=10, seed=seed, spread=1.2)
        xs, xq = xs * gain + offset, xq * gain + offset
        C = 1.0
        m = _method("baseline", d=10, optimizer=optimizer, steps=steps, lr=0.05, weight_decay=1.0 / (C * len(xs)))
        logits = m.predict_episode(xs, ys, xq, 5)
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(xs.numpy(), ys.numpy())
        p_ref = ref.predict_proba(xq.numpy())
        # x30 gain: the penalty is 900x weaker relative to the data term, an ill-conditioned problem that
        # 200 L-BFGS iterations solve to probabilities within 1e-2 (decisions identical)
        np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), p_ref, atol=atol if gain == 1.0 else 1e-2)
        agree.append(np.mean(logits.argmax(1).numpy() == p_ref.argmax(1)))
        ours.append(float((logits.argmax(1) == yq).float().mean()))
        theirs.append(np.mean(p_ref.argmax(1) == yq.numpy()))
    assert np.mean(agree) == 1.0
    assert np.mean(ours) == pytest.approx(np.mean(theirs), abs=1e-6)


def test_baseline_pp_on_easy_data_and_defaults_are_fast_enough():
    accs = []
    for seed in range(4):
        xs, ys, xq, yq = _episode(n_way=5, k=5, q=10, d=16, seed=seed, spread=2.0)
        logits = _method("baseline_pp", d=16).predict_episode(xs, ys, xq, 5)
        accs.append(float((logits.argmax(1) == yq).float().mean()))
        # same episode, same logits (the head's start is seeded per call, not per stream)
        torch.testing.assert_close(logits, _method("baseline_pp", d=16).predict_episode(xs, ys, xq, 5), rtol=0, atol=0)
    assert np.mean(accs) > 0.9


def test_episode_checks():
    xs, ys, xq, _ = _episode(n_way=3, k=2)
    m = _method("protonet")
    with pytest.raises(DataError, match=r"episode classes \[2\] have no support row"):
        m.predict_episode(xs[:4], ys[:4], xq, 3)
    with pytest.raises(DataError, match="support_y must hold episode labels 0..1"):
        m.predict_episode(xs, ys, xq, 2)
    with pytest.raises(DataError, match="6 rows but support_y has 5"):
        m.predict_episode(xs, ys[:5], xq, 3)
    with pytest.raises(ConfigError, match="call setup"):
        get("fewshot", "protonet")().predict_episode(xs, ys, xq, 3)


# ------------------------------------------------------------------------------------------ finetune
def test_layer_groups_of_the_encoders():
    assert [[n.split(".")[0] for n in g] for g in _episodic.layer_groups(conv4(1, 4))] == \
        [["0", "0", "1", "1"], ["4", "4", "5", "5"], ["8", "8", "9", "9"], ["12", "12", "13", "13"]]  # conv + BN
    assert len(_episodic.layer_groups(mlp(6, 8, depth=3))) == 3
    assert _episodic.layer_groups(nn.Identity()) == []
    wrapped = nn.Sequential(mlp(6, 8, depth=2))  # one parameter-bearing child is descended
    assert _episodic.layer_groups(wrapped)[1][0] == "0.3.weight"


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("groups", [0, 1, 2])
def test_finetune_leaves_the_encoder_unchanged(groups):
    torch.manual_seed(0)
    enc = mlp(12, 16, depth=2).double()
    enc.train()
    enc[1].eval()  # a mix of modes must come back as it was
    before = _state(enc)
    xs, ys, xq, _ = _episode(n_way=3, k=3, q=4)
    m = _method("finetune", enc, d=16, groups=groups, steps=20, lr=0.05, backbone_lr_mult=1.0)
    logits = m.predict_episode(xs, ys, xq, 3)
    assert logits.shape == (12, 3)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in enc.parameters())
    assert enc.training and not enc[1].training and enc[4].training
    # the per-episode copy: unfrozen groups moved, the rest are the encoder's own values
    params, _, _ = m.fit_episode(xs, ys, 3)
    unfrozen = set(m.unfrozen_names())
    assert unfrozen == {n for g in _episodic.layer_groups(enc)[2 - groups:] for n in g}
    for n, p in enc.named_parameters():
        if not params:
            continue
        if n in unfrozen:
            assert not torch.equal(params[n], p), n
        else:
            assert torch.equal(params[n], p), n


def test_finetune_head_only_is_baseline_and_groups_change_the_answer():
    torch.manual_seed(1)
    enc = mlp(12, 16, depth=2).double()
    xs, ys, xq, _ = _episode(n_way=3, k=3, q=4, seed=3)
    head_only = _method("finetune", enc, d=16, groups=0, probe_steps=30, weight_decay=1e-3)
    base = _method("baseline", enc, d=16, steps=30, weight_decay=1e-3).predict_episode(xs, ys, xq, 3)
    torch.testing.assert_close(head_only.predict_episode(xs, ys, xq, 3), base, rtol=1e-12, atol=1e-12)
    tuned = _method("finetune", enc, d=16, groups=2, probe_steps=30, steps=20, lr=0.01, weight_decay=1e-3)
    assert not torch.allclose(tuned.predict_episode(xs, ys, xq, 3), base)
    # fine-tuning starts from the probe (LP-FT): with lr -> 0 the answer is the probe's
    frozen = _method("finetune", enc, d=16, groups=2, probe_steps=30, steps=5, lr=1e-300, weight_decay=1e-3)
    torch.testing.assert_close(frozen.predict_episode(xs, ys, xq, 3), base, rtol=1e-10, atol=1e-10)


def test_finetune_groups_checked_against_the_encoder():
    with pytest.raises(ConfigError, match="groups=5 is more than the encoder's 4 layer groups"):
        _method("finetune", conv4(1, 4), d=4, groups=5)
    m = _method("finetune", nn.Identity(), groups=3)  # cached features: the head only
    assert m.unfrozen_names() == []
    with pytest.raises(ConfigError, match="groups must be >= 0"):
        _method("finetune", groups=-1)


# ------------------------------------------------------------------------------------------ meta-training
def _gratings(C=30, n=20, size=16, noise=0.7, seed=0):
    """Classes are oriented sinusoidal gratings (orientation, frequency) with random phase and noise."""
    g = np.random.default_rng(seed)
    theta, freq = g.uniform(0, np.pi, C), g.uniform(0.08, 0.3, C)
    yy, xx = np.mgrid[0:size, 0:size]
    labels = np.repeat(np.arange(C), n)
    phase = g.uniform(0, 2 * np.pi, len(labels))
    t, f = theta[labels, None, None], freq[labels, None, None]
    x = np.sin(2 * np.pi * f * (xx * np.cos(t) + yy * np.sin(t)) + phase[:, None, None])
    x = x + noise * g.normal(size=x.shape)
    sp = split_classes(labels, {"train": list(range(20)), "val": list(range(20, 25)), "test": list(range(25, 30))})
    return MetaData(torch.tensor(x[:, None], dtype=torch.float32), labels,
                    train=EpisodeSampler(labels, 5, 1, 5, classes=sp["train"], seed=1),
                    val=EpisodeSampler(labels, 5, 1, 5, classes=sp["val"], seed=2), test=_NoTest())


def test_protonet_meta_training_conv4_improves_meta_val_and_restores_the_best():
    data = _gratings()
    torch.manual_seed(0)
    enc = conv4(1, 8)
    init = copy.deepcopy(enc)
    m = _method("protonet", enc, d=8, lr=5e-3)
    assert m.needs_meta_training
    with pytest.raises(ConfigError, match="needs meta-training"):
        m.predict_episode(*data.rows(data.val.episode(0))[:3], 5)
    lines = []
    hist = m.meta_train(data, steps=60, eval_every=20, val_episodes=40, log=lines.append)
    assert [h["step"] for h in hist] == [0, 20, 40, 60] and np.isnan(hist[0]["loss"])
    untrained = hist[0]["val_accuracy"]
    best = max(hist, key=lambda h: h["val_accuracy"])
    assert best["val_accuracy"] > untrained + 0.2, hist
    assert [h["best"] for h in hist].count(True) == 1 and best["best"] and m.best_step_ == best["step"]
    assert m.best_val_accuracy_ == best["val_accuracy"]
    assert "restored step" in lines[-1]
    # what remains is the best step's encoder: retrain from the same start to that step and compare
    again = _method("protonet", copy.deepcopy(init), d=8, lr=5e-3)
    again.meta_train(data, steps=best["step"], eval_every=10**6, val_episodes=1)
    for k, v in again.encoder_.state_dict().items():
        torch.testing.assert_close(enc.state_dict()[k], v, rtol=0, atol=0)
    acc, _ = _episodic.val_accuracy(m, data, 40)
    assert acc == best["val_accuracy"]


def _scripted(monkeypatch, accs):
    """Replace meta-val scoring with a script; record the encoder's weights at each evaluation."""
    seen = []

    def fake(method, data, n):
        seen.append(snapshot(method.encoder_))
        return accs[len(seen) - 1], 0.0

    monkeypatch.setattr(_episodic, "val_accuracy", fake)
    return seen


@pytest.mark.parametrize("name", ["protonet", "matching"])
def test_episodic_training_restores_the_best_meta_val_checkpoint(monkeypatch, name):
    data = _table_data()
    data.test = _NoTest()
    torch.manual_seed(0)
    seen = _scripted(monkeypatch, [0.3, 0.5, 0.9, 0.4, 0.6])
    m = _method(name, mlp(8, 8, depth=2).double(), d=8, lr=0.05)
    hist = m.meta_train(data, steps=8, eval_every=2, val_episodes=3)
    assert [h["step"] for h in hist] == [0, 2, 4, 6, 8] and m.best_step_ == 4
    for k, v in m.encoder_.state_dict().items():
        torch.testing.assert_close(v, seen[2][k], rtol=0, atol=0)
    assert any(not torch.equal(seen[4][k], seen[2][k]) for k in seen[2])  # training went on after step 4


@pytest.mark.parametrize("name", ["baseline", "baseline_pp", "simpleshot", "finetune"])
def test_pretraining_restores_the_best_meta_val_checkpoint(monkeypatch, name):
    data = _table_data()
    data.test = _NoTest()
    torch.manual_seed(0)
    seen = _scripted(monkeypatch, [0.3, 0.8, 0.2, 0.5])
    m = _method(name, mlp(8, 8, depth=2).double(), d=8, batch_size=8, pretrain_lr=0.05)
    before = _state(m.encoder_)
    hist = m.meta_train(data, steps=6, eval_every=2, val_episodes=3)
    assert [h["step"] for h in hist] == [0, 2, 4, 6] and m.best_step_ == 2 and hist[1]["best"]
    for k, v in m.encoder_.state_dict().items():
        torch.testing.assert_close(v, seen[1][k], rtol=0, atol=0)
    assert any(not torch.equal(before[k], seen[1][k]) for k in before)  # pre-training changed it


def test_meta_training_without_meta_val_keeps_the_last_step():
    data = _table_data()
    data.val, data.test = None, _NoTest()
    m = _method("protonet", mlp(8, 8, depth=1).double(), d=8, lr=0.05)
    hist = m.meta_train(data, steps=4, eval_every=2)
    assert [h["val_accuracy"] for h in hist] == [None] * 3 and m.best_step_ == 4 and hist[-1]["best"]


def test_pretraining_improves_on_a_random_encoder():
    """Supervised pre-training of conv4 on the meta-train gratings helps Baseline on novel classes."""
    data = _gratings()
    torch.manual_seed(0)
    m = _method("baseline", conv4(1, 8), d=8, pretrain_lr=5e-3, batch_size=32, steps=50)
    hist = m.meta_train(data, steps=60, eval_every=30, val_episodes=20)
    assert max(h["val_accuracy"] for h in hist) > hist[0]["val_accuracy"] + 0.1, hist


def test_parameter_free_encoder_needs_no_meta_training():
    m = _method("protonet")
    assert not m.needs_meta_training
    assert m.meta_train(_table_data(), steps=10) == []
    assert get("fewshot", "protonet")().needs_meta_training  # before setup: assume it does
    assert _method("protonet", mlp(12, 4, depth=1), d=4).needs_meta_training
    data = _table_data()
    data.train = None
    with pytest.raises(ConfigError, match="no meta-train classes"):
        _method("matching", mlp(8, 4, depth=1).double(), d=4).meta_train(data, steps=2)
