"""Domain generalisation: the multi-domain terms against hand computations, MixStyle, ERM as
source-only training, a spurious-feature toy, and leave-one-domain-out never reading the
held-out domain."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferkit.adapt import dg
from transferkit.adapt.deep.deep_coral import DeepCORALLoss
from transferkit.adapt.dg import (
    CORALTerm,
    GroupDROTerm,
    IRMTerm,
    MixStyle,
    VRExTerm,
    fit_domain_generalization,
    insert_mixstyle,
    irm_scale_gradient,
    leave_one_domain_out,
)
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError, DataError


def _ctx(logits, labels, indices, step=0, features=None):
    return SimpleNamespace(logits=logits, labels=labels, indices=torch.as_tensor(indices), step=step,
                           features=features)


def _toy(n, agree, seed, noise_dims=4):
    """Binary label; an invariant feature right 75% of the time in every domain and a spurious
    one that agrees with the label with probability ``agree`` (domain-dependent)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    inv = np.where(rng.random(n) < 0.75, y, 1 - y)
    sp = np.where(rng.random(n) < agree, y, 1 - y)
    X = np.c_[(2 * inv - 1) + 0.1 * rng.normal(size=n), (2 * sp - 1) + 0.1 * rng.normal(size=n),
              rng.normal(size=(n, noise_dims))]
    return X.astype(np.float32), y


# ------------------------------------------------------------------------------------- IRM
def test_irm_scale_gradient_is_the_derivative_of_the_scaled_loss():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1])
    e = math.e
    hand = (-1 / (e + 1) - 2 / (1 + e * e)) / 2  # p.z - z_y per row, averaged
    assert irm_scale_gradient(z, y).item() == pytest.approx(hand, rel=1e-6)
    torch.manual_seed(0)
    z, y = torch.randn(9, 4, requires_grad=True), torch.randint(0, 4, (9,))
    w = torch.tensor(1.0, requires_grad=True)
    g = torch.autograd.grad(F.cross_entropy(z * w, y), [w], create_graph=True)[0]
    ours = irm_scale_gradient(z, y)
    assert torch.allclose(ours, g, atol=1e-6)
    # the penalty's gradient in the logits is the same as through the nested autograd
    assert torch.allclose(torch.autograd.grad(ours ** 2, z)[0], torch.autograd.grad(g ** 2, z)[0], atol=1e-6)


def test_irm_penalty_per_domain_split_halves_and_annealing():
    torch.manual_seed(1)
    z, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    domains = np.array([0, 1, 0, 1, 0, 0, 1, 1])
    idx = np.arange(8)
    term = IRMTerm(domains, weight=100.0, anneal_iters=3)

    def grad(zz, yy):
        w = torch.tensor(1.0, requires_grad=True)
        return torch.autograd.grad(F.cross_entropy(zz * w, yy), [w])[0]

    halves, plain = [], []
    for e in (0, 1):
        m = torch.as_tensor(domains == e)
        ze, ye = z[m], y[m]
        halves.append(grad(ze[0::2], ye[0::2]) * grad(ze[1::2], ye[1::2]))
        plain.append(grad(ze, ye) ** 2)
    hand = torch.stack(halves).mean()
    out = term(_ctx(z, y, idx, step=2))
    assert torch.allclose(out["irm_penalty"], hand, atol=1e-6)
    assert torch.allclose(out["loss"], hand, atol=1e-6)  # weight 1 while annealing
    assert torch.allclose(term(_ctx(z, y, idx, step=3))["loss"], 100 * hand, atol=1e-5)
    plain_term = IRMTerm(domains, estimator="plain")
    assert torch.allclose(plain_term(_ctx(z, y, idx))["irm_penalty"], torch.stack(plain).mean(), atol=1e-6)
    assert IRMTerm(domains).weight == 100.0 and IRMTerm(domains).anneal_iters == 500  # DomainBed's defaults
    with pytest.raises(ConfigError, match="estimator"):
        IRMTerm(domains, estimator="squared")


# ------------------------------------------------------------------------------------ V-REx
def test_vrex_penalty_is_the_variance_of_the_domain_risks():
    torch.manual_seed(2)
    z, y = torch.randn(9, 3), torch.randint(0, 3, (9,))
    domains = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    risks = torch.stack([F.cross_entropy(z[d::3], y[d::3]) for d in range(3)])
    hand = ((risks - risks.mean()) ** 2).sum() / 3  # population variance, as DomainBed
    term = VRExTerm(domains, weight=10.0, anneal_iters=1)
    out = term(_ctx(z, y, np.arange(9), step=0))
    assert torch.allclose(out["vrex_penalty"], hand, atol=1e-6) and torch.allclose(out["loss"], hand, atol=1e-6)
    assert torch.allclose(term(_ctx(z, y, np.arange(9), step=1))["loss"], 10 * hand, atol=1e-6)
    assert VRExTerm(domains).weight == 10.0  # DomainBed's vrex_lambda
    one = term(_ctx(z[:1], y[:1], [0]))  # a single domain in the batch: no variance
    assert one["loss"].item() == 0.0


# --------------------------------------------------------------------------------- GroupDRO
def test_groupdro_weights_and_objective_follow_the_online_update():
    torch.manual_seed(3)
    domains = np.array([0, 0, 1, 1, 1])
    term = GroupDROTerm(domains, eta=0.5)
    q = np.array([0.5, 0.5])
    for step in range(3):
        z, y = torch.randn(5, 2), torch.randint(0, 2, (5,))
        r = np.array([F.cross_entropy(z[:2], y[:2]).item(), F.cross_entropy(z[2:], y[2:]).item()])
        q = q * np.exp(0.5 * r)
        q = q / q.sum()
        out = term(_ctx(z, y, np.arange(5), step=step))
        assert np.allclose(term.q.numpy(), q, atol=1e-6)
        # the Trainer adds the plain mean CE: the total is the GroupDRO objective
        total = out["loss"] + F.cross_entropy(z, y)
        assert total.item() == pytest.approx(float(q @ r), abs=1e-5)
    # a domain absent from the batch keeps its weight factor
    before = term.q.clone()
    z, y = torch.randn(2, 2), torch.randint(0, 2, (2,))
    term(_ctx(z, y, [0, 1]))
    r0 = F.cross_entropy(z, y).item()
    raw = before.numpy() * np.array([math.exp(0.5 * r0), 1.0])
    assert np.allclose(term.q.numpy(), raw / raw.sum(), atol=1e-6)
    assert "q" in term.state_dict() and "domains" not in term.state_dict()  # q is checkpointed
    assert GroupDROTerm(domains).eta == 1e-2


# ------------------------------------------------------------------------------------ CORAL
def test_coral_across_sources_is_mean_plus_deep_coral_covariance_over_pairs():
    torch.manual_seed(4)
    f = torch.randn(12, 5)
    d2 = np.array([0, 1] * 6)
    a, b = f[0::2], f[1::2]
    deep = DeepCORALLoss(weight=1.0).compute(a, b, None, None, None)[0]
    hand = (a.mean(0) - b.mean(0)).pow(2).mean() + 4 * deep  # ||C_a - C_b||^2 / d^2 = 4 * Deep CORAL
    term = CORALTerm(d2)
    out = term(_ctx(torch.zeros(12, 2), torch.zeros(12, dtype=torch.long), np.arange(12), features=f))
    assert torch.allclose(out["coral_penalty"], hand, atol=1e-6)
    d3 = np.array([0, 1, 2] * 4)
    pairs = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        x, z = f[i::3], f[j::3]
        deep = DeepCORALLoss(weight=1.0).compute(x, z, None, None, None)[0]
        pairs.append((x.mean(0) - z.mean(0)).pow(2).mean() + 4 * deep)
    assert torch.allclose(CORALTerm.penalty(f, torch.as_tensor(d3)), torch.stack(pairs).mean(), atol=1e-6)


# --------------------------------------------------------------------------------- MixStyle
def test_mixstyle_identity_in_eval_and_at_p0_and_the_hand_mix():
    torch.manual_seed(5)
    x = torch.randn(4, 3, 5, 6) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1) + 3
    ms = MixStyle(p=1.0)
    assert torch.equal(ms.eval()(x), x)
    assert torch.equal(MixStyle(p=0.0).train()(x), x)
    ms.train()
    assert ms(x).shape == x.shape and not torch.equal(ms(x), x)
    lam, perm = torch.tensor([0.2, 0.9, 0.5, 0.0]), torch.tensor([2, 0, 3, 1])
    out = ms.mix_with(x, lam, perm)
    mu = x.mean((2, 3))
    sig = (x.var((2, 3)) + ms.eps).sqrt()
    lam2 = lam.view(-1, 1)
    assert torch.allclose(out.mean((2, 3)), lam2 * mu + (1 - lam2) * mu[perm], atol=1e-5)
    # the normalised map has std sqrt(var / (var + eps)), then scaled by the mixed sigma
    shrink = (x.var((2, 3)) / (x.var((2, 3)) + ms.eps)).sqrt()
    assert torch.allclose(out.std((2, 3)), (lam2 * sig + (1 - lam2) * sig[perm]) * shrink, atol=1e-4)
    assert torch.allclose(out[3], (x[3] - mu[3].view(3, 1, 1)) / sig[3].view(3, 1, 1)
                          * sig[1].view(3, 1, 1) + mu[1].view(3, 1, 1), atol=1e-5)  # lam 0: the partner's style
    with pytest.raises(DataError, match="feature maps"):
        ms.mix_with(torch.randn(4, 3), lam, perm)


def test_mixstyle_crossdomain_partners_come_from_other_domains():
    torch.manual_seed(6)
    ms = MixStyle(mix="crossdomain")
    d = torch.tensor([0, 0, 1, 2, 1, 0])
    for _ in range(20):
        perm = ms.partners(6, d, "cpu")
        assert (d[perm] != d).all()
    half = ms.partners(6, None, "cpu")  # the paper's two-halves convention
    assert set(half[:3].tolist()) == {3, 4, 5} and set(half[3:].tolist()) == {0, 1, 2}
    with pytest.raises(ConfigError, match="variant"):
        MixStyle(mix="shuffle")


def test_insert_mixstyle_hooks_a_cnn_and_is_identity_in_eval():
    from transferkit.backbones import create_backbone

    torch.manual_seed(7)
    bb = create_backbone("tiny_cnn", width=4, image_size=16)
    x = torch.randn(4, 3, 16, 16)
    ref_train = bb.train()(x)  # train mode: BatchNorm on batch statistics (and its running ones updated)
    ref = bb.eval()(x)
    handles = insert_mixstyle(bb, after=["stem", "stage1"], p=1.0)
    assert len(handles) == 2 and len(bb.mixstyle) == 2
    assert torch.allclose(bb.eval()(x), ref)  # identity in eval
    assert bb.train()(x).shape == ref_train.shape and not torch.allclose(bb(x), ref_train)
    for h in handles:
        h.remove()
    assert torch.allclose(bb.train()(x), ref_train)  # removed: no mixing any more
    with pytest.raises(ConfigError, match="stage1"):
        insert_mixstyle(bb, after=["stage_1"])


def test_mixstyle_is_not_a_feature_level_method():
    with pytest.raises(ConfigError, match="not defined at the feature level"):
        fit_domain_generalization([np.zeros((4, 2))], [np.array([0, 1, 0, 1])], method="mixstyle")
    with pytest.raises(ConfigError, match="irm"):
        fit_domain_generalization([np.zeros((4, 2))], [np.array([0, 1, 0, 1])], method="irn")


# ----------------------------------------------------------------------- training end to end
def test_erm_with_one_source_is_plain_source_only_training(one_thread):
    from transferkit.adapt.features import train_feature_adapter
    from transferkit.data import stratified_split

    X, y = _toy(120, 0.9, 0)
    kw = dict(bottleneck=16, epochs=3, batch_size=32, seed=3)
    res = fit_domain_generalization([X], [y], method="erm", **kw)
    tr, va = stratified_split(y, [0.8, 0.2], seed=3)
    ref = train_feature_adapter(X[tr], y[tr], None, Xs_val=X[va], ys_val=y[va], num_classes=2, method=None,
                                domain_bn=False, selection="source_val", **kw)
    for (k, a), b in zip(res["model"].state_dict().items(), ref["model"].state_dict().values()):
        assert torch.equal(a, b), k
    assert res["best_epoch"] == ref["best_epoch"] and res["term"] is None


def test_irm_and_vrex_beat_erm_when_a_spurious_feature_flips(one_thread):
    """Two sources where a spurious feature agrees with the label 95% / 70% of the time (the
    invariant one 75% in both), tested on a domain where it agrees 10% of the time. ERM leans
    on the spurious feature (below chance); the penalties push towards the invariant one."""
    doms = [_toy(500, 0.95, 1), _toy(500, 0.7, 2)]
    Xt, yt = _toy(500, 0.1, 3)
    kw = dict(epochs=20, batch_size=128, lr=5e-3, bottleneck=32, dropout=0.0, weight_decay=0.0, seed=0,
              selection="last")
    acc = {}
    for m, w in (("erm", None), ("irm", 1e2), ("vrex", 1e2)):
        res = fit_domain_generalization([d[0] for d in doms], [d[1] for d in doms], method=m, weight=w,
                                        options={"anneal_iters": 40} if m != "erm" else None, **kw)
        with torch.no_grad():
            acc[m] = float((res["model"](torch.as_tensor(Xt)).argmax(1).numpy() == yt).mean())
        if m != "erm":
            assert all(k in res["history"][-1] for k in (f"{m}_penalty",))
    # measured: erm 0.31, irm 0.68, vrex 0.73 (seeds 1, 2: 0.28/0.71/0.73, 0.24/0.73/0.73; the
    # invariant feature alone: 0.75)
    assert acc["erm"] < 0.4, acc
    assert acc["irm"] > acc["erm"] + 0.25 and acc["vrex"] > acc["erm"] + 0.25, acc


def test_groupdro_and_coral_train_through_the_trainer(one_thread):
    doms = [_toy(80, 0.9, 1), _toy(40, 0.6, 2)]
    for m in ("groupdro", "coral"):
        res = fit_domain_generalization([d[0] for d in doms], [d[1] for d in doms], method=m, bottleneck=8,
                                        epochs=2, batch_size=32)
        assert 0.0 <= res["val_accuracy"] <= 1.0 and res["n_sources"] == 2
        assert f"{m}_" + ("objective" if m == "groupdro" else "penalty") in res["history"][-1]
        if m == "groupdro":
            q = res["term"].q
            assert abs(float(q.sum()) - 1) < 1e-6 and float(q.max()) > 0.5  # the weights moved


class _SpyDomain:
    """A dataset of feature rows that records every read of its inputs or labels."""

    def __init__(self, X, y, name, log):
        self._X, self._y, self.name, self._log = X, y, name, log

    @property
    def inputs(self):
        self._log.append(("read", self.name))
        return self._X

    @property
    def labels(self):
        self._log.append(("read", self.name))
        return self._y


def test_leave_one_domain_out_never_reads_the_held_out_domain_before_testing(one_thread, monkeypatch):
    log = []
    raw = [_toy(60, a, s) for s, a in enumerate((0.9, 0.7, 0.2))]
    doms = [_SpyDomain(X, y, f"d{k}", log) for k, (X, y) in enumerate(raw)]
    real = dg.fit_domain_generalization

    def spy(Xs_list, ys_list, **kw):
        log.append(("fit", [id(x) for x in Xs_list]))
        out = real(Xs_list, ys_list, **kw)
        log.append(("fit_end", None))
        return out

    monkeypatch.setattr(dg, "fit_domain_generalization", spy)
    res = leave_one_domain_out(doms, method="vrex", seed=0, bottleneck=8, epochs=2, batch_size=32)
    assert set(res["accuracy"]) == {"d0", "d1", "d2"} and 0 <= res["mean"] <= 1
    ends = [i for i, e in enumerate(log) if e[0] == "fit_end"]
    fits = [e for e in log if e[0] == "fit"]
    assert len(ends) == len(fits) == 3
    start = 0
    for k in range(3):
        fold = log[start:ends[k]]
        assert ("read", f"d{k}") not in fold, (k, fold)  # the held-out domain: untouched until the fit is over
        assert id(raw[k][0]) not in fits[k][1]
        start = ends[k] + 1
        assert ("read", f"d{k}") in log[start:start + 3]  # ... and read for its test right after
    with pytest.raises(ConfigError, match="at least two"):
        leave_one_domain_out(doms[:1])


# --------------------------------------------------------------------------------- strategy
class _Untouchable:
    def __getattr__(self, item):
        raise AssertionError(f"the target split was read ({item})")


def test_strategy_fits_on_sources_only_and_round_trips(one_thread):
    from transferkit.strategies.domain_generalization import DomainGeneralization

    ds = [DomainDataset(*_toy(80, a, s), f"d{s}", "tabular", classes=["a", "b"])
          for s, a in enumerate((0.9, 0.7, 0.1))]
    s = DomainGeneralization(backbone="identity", pretrained=False, method="irm", weight=10.0,
                             loss_options={"anneal_iters": 5}, bottleneck=8, epochs=2, batch_size=32)
    s.fit(_Untouchable(), _Untouchable(), source=ds[:2])
    acc = s.score(ds[2])
    assert 0 <= acc <= 1 and s.n_sources_ == 2 and s.n_target_labels_ == 0 and "no target input" in s.selection_
    again = DomainGeneralization(backbone="identity", pretrained=False).load_state(s.state_dict(), s.state_metadata())
    assert np.allclose(again.predict_logits(ds[2]), s.predict_logits(ds[2]), atol=1e-6)
    one = DomainGeneralization(backbone="identity", pretrained=False, bottleneck=8, epochs=1).fit(source=ds[0])
    assert one.n_sources_ == 1
    for bad, match in ((dict(method="mixstyle"), "feature level"), (dict(method="erm", weight=1.0), "no penalty"),
                       (dict(method="irm", loss_options={"eta": 1}), "no option 'eta'"),
                       (dict(selection="dev"), "selection")):
        with pytest.raises(ConfigError, match=match):
            DomainGeneralization(backbone="identity", **bad).validate()
    with pytest.raises(ConfigError, match="source"):
        DomainGeneralization(backbone="identity", pretrained=False).fit(None)


def test_fit_dg_backbone_mixes_styles_in_training_only(one_thread, monkeypatch):
    from transferkit.backbones import tiny_cnn
    from transferkit.data import load_dataset

    src = [load_dataset(f"digits:size=16,subset=0/2,rotate={r},seed=0") for r in (0, 30)]
    src = [s.subset(np.arange(0, len(s), 12)) for s in src]
    calls = {"n": 0}
    real = MixStyle.mix_with

    def counting(self, x, lam, perm):
        calls["n"] += 1
        return real(self, x, lam, perm)

    monkeypatch.setattr(MixStyle, "mix_with", counting)
    res = dg.fit_dg_backbone(src, backbone=lambda pretrained: tiny_cnn(width=4, image_size=16), method="vrex",
                             epochs=2, batch_size=32, mixstyle_options={"p": 1.0})
    trained = calls["n"]
    assert trained > 0 and len(res["mixstyle"]) == 2 and "vrex_penalty" in res["history"][-1]
    logits = res["trainer"].predict_logits(src[0])
    assert calls["n"] == trained and logits.shape == (len(src[0]), 10)  # identity when predicting
    with pytest.raises(ConfigError, match="crossdomain"):
        dg.fit_dg_backbone(src, mixstyle_options={"mix": "crossdomain"})
    tab = [DomainDataset(*_toy(20, 0.9, s), f"t{s}", "tabular") for s in range(2)]
    with pytest.raises(ConfigError, match="image"):
        dg.fit_dg_backbone(tab)
