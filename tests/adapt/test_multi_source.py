"""Multi-source domain adaptation (issue 17, item 5): M3SDA's moment distance, the single-source
``moment`` loss it reduces to, relevance weights of the sources and the weighted cross-entropy,
and the ``multi_source`` strategy (its target labels never read)."""

from itertools import combinations
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import transferkit.adapt.multi_source as ms
import transferkit.strategies.multi_source as msx  # not in strategies/__init__ yet: registers "multi_source"
from transferkit.data import DomainDataset
from transferkit.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def _ctx(features, target_features):
    """What the Trainer passes a term: the batch is rows 0..n-1 of the pooled training set."""
    return SimpleNamespace(features=features, target_features=target_features, indices=torch.arange(len(features)),
                           logits=features[:, :3])


def _hand_md(sources, target, K=2):
    """Peng et al. 2019, eq. 1, written out in NumPy."""
    N = len(sources)
    total = 0.0
    for k in range(1, K + 1):
        m = [np.mean(s.astype(np.float64) ** k, 0) for s in sources]
        mt = np.mean(target.astype(np.float64) ** k, 0)
        total += sum(np.linalg.norm(mi - mt) for mi in m) / N
        pairs = list(combinations(range(N), 2))
        if pairs:
            total += sum(np.linalg.norm(m[i] - m[j]) for i, j in pairs) / len(pairs)
    return total


@pytest.mark.parametrize("n_sources", [2, 3])
def test_moment_distance_equals_the_hand_computation(n_sources):
    """Two or three sources plus the target: the term on a batch whose rows of the sources are
    interleaved equals eq. 1 (1/N on the source-target terms, 1/C(N,2) on the pairs)."""
    rng = np.random.default_rng(0)
    sizes = [5, 7, 4][:n_sources]
    srcs = [rng.normal(loc=i, scale=1 + i, size=(n, 6)).astype(np.float32) for i, n in enumerate(sizes)]
    tgt = rng.normal(size=(9, 6)).astype(np.float32) * 0.5
    dom = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    order = rng.permutation(len(dom))  # the batch's rows in a shuffled order
    feats = torch.as_tensor(np.concatenate(srcs)[order])
    term = ms.MomentMatchingTerm(dom[order], weight=0.5)
    out = term(_ctx(feats, torch.as_tensor(tgt)))
    want = _hand_md(srcs, tgt)
    assert float(out["m3sda"]) == pytest.approx(want, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(0.5 * want, rel=1e-5)
    assert float(ms.moment_distance([torch.as_tensor(s) for s in srcs], torch.as_tensor(tgt))) == pytest.approx(
        want, rel=1e-5)
    assert float(ms.moment_distance([torch.as_tensor(s) for s in srcs], torch.as_tensor(tgt), moments=1)) == \
        pytest.approx(_hand_md(srcs, tgt, K=1), rel=1e-5)


def test_moment_term_is_invariant_to_the_order_of_the_sources_and_zero_on_equal_moments():
    rng = np.random.default_rng(1)
    srcs = [rng.normal(loc=i, size=(6, 4)).astype(np.float32) for i in range(3)]
    tgt = torch.as_tensor(rng.normal(size=(8, 4)).astype(np.float32))
    feats = torch.as_tensor(np.concatenate(srcs))
    dom = np.repeat(np.arange(3), 6)
    a = ms.MomentMatchingTerm(dom)(_ctx(feats, tgt))["loss"]
    perm = np.array([2, 0, 1])  # source i becomes source perm[i]
    b = ms.MomentMatchingTerm(perm[dom])(_ctx(feats, tgt))["loss"]
    rows = rng.permutation(18)
    c = ms.MomentMatchingTerm(perm[dom][rows])(_ctx(feats[rows], tgt))["loss"]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    same = torch.as_tensor(srcs[0])
    z = ms.MomentMatchingTerm(np.repeat([0, 1], 6))(_ctx(torch.cat([same, same]), same))["loss"]
    assert float(z) == 0.0


def test_moment_loss_keeps_the_da_loss_contract_and_gradients_reach_both_domains():
    from transferkit._registry import get

    assert get("da_loss", "moment") is ms.MomentLoss
    g = torch.Generator().manual_seed(0)
    f_s = torch.randn(8, 5, generator=g).requires_grad_()
    f_t = (torch.randn(3, 5, generator=g) + 1).requires_grad_()
    out = ms.MomentLoss(weight=2.0)(f_s, f_t)
    want = _hand_md([f_s.detach().numpy()], f_t.detach().numpy())
    assert out["moment"].item() == pytest.approx(want, rel=1e-5)
    assert out["loss"].item() == pytest.approx(2 * want, rel=1e-5)
    out["loss"].backward()
    assert f_s.grad.abs().sum() > 0 and f_t.grad.abs().sum() > 0


def _blob_sources(seed=0, n=60, d=6):
    """Three classes on ``d`` features; source 1 scaled and shifted; target between them."""
    rng = np.random.default_rng(seed)

    def domain(m, scale, shift):
        y = rng.integers(0, 3, m)
        X = rng.normal(size=(m, d))
        X[np.arange(m), y] += 3.0
        return (X * scale + shift).astype(np.float32), y

    return domain(n, 1.0, 0.0), domain(n, 1.5, 1.0), domain(n, 1.2, 0.5)


def test_one_source_is_exactly_the_single_source_moment_method():
    """With one source, fit_multi_source(method='m3sda') trains the same network as
    train_feature_adapter(method='moment') bit for bit, and the strategy ``multi_source`` the
    same as ``adapt`` with ``method='moment'``."""
    from transferkit.adapt.features import train_feature_adapter
    from transferkit.strategies import Adapt
    from transferkit.train.selection import importance_weights

    (Xs, ys), _, (Xt, _) = _blob_sources()
    kw = dict(bottleneck=8, epochs=3, batch_size=16, lr=1e-2, seed=3)
    Xtr, ytr, Xv, yv = Xs[:45], ys[:45], Xs[45:], ys[45:]
    multi = ms.fit_multi_source([Xtr], [ytr], Xt, method="m3sda", Xs_val_list=[Xv], ys_val_list=[yv],
                                num_classes=3, **kw)
    single = train_feature_adapter(Xtr, ytr, Xt, Xs_val=Xv, ys_val=yv, weights_val=importance_weights(Xv, Xtr, Xt),
                                   num_classes=3, method="moment", **kw)
    a, b = multi["model"].state_dict(), single["model"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in multi["history"]] == [r["train_loss"] for r in single["history"]]
    assert multi["source_weights"].tolist() == [1.0]

    src = DomainDataset(Xs, ys, "src", "tabular")
    tgt = DomainDataset(Xt, np.full(len(Xt), -1), "tgt", "tabular")
    skw = dict(backbone="identity", pretrained=False, bottleneck=8, epochs=3, batch_size=16, lr=1e-2, seed=3)
    m = msx.MultiSource(method="m3sda", **skw).fit(tgt, source=[src])
    s = Adapt(method="moment", **skw).fit(tgt, source=src)
    np.testing.assert_array_equal(m.predict_logits(tgt), s.predict_logits(tgt))
    assert m.best_epoch_ == s.best_epoch_ and m.n_sources_ == 1


def test_weighted_ce_correction_makes_the_total_the_hand_weighted_cross_entropy():
    """Trainer CE (plain mean) + the term's correction = sum_i v_i l_i / sum_i v_i with
    v_i = alpha_{d_i} / pi_{d_i}; gradients too. With alpha = the pool shares it is 0."""
    torch.manual_seed(0)
    dom = np.array([0] * 6 + [1] * 3 + [2] * 11)  # the pooled rows' sources (pi = .3, .15, .55)
    alpha = np.array([0.5, 0.3, 0.2])
    batch = torch.tensor([1, 7, 8, 12, 19, 3, 10])
    logits = torch.randn(7, 4, requires_grad=True)
    labels = torch.randint(0, 4, (7,))
    term = ms.SourceWeightedCE(dom, alpha)
    ctx = SimpleNamespace(indices=batch, logits=logits, labels=labels)
    total = F.cross_entropy(logits, labels) + term(ctx)["loss"]
    pi = np.bincount(dom) / len(dom)
    v = torch.as_tensor(alpha / pi, dtype=torch.float32)[torch.as_tensor(dom)[batch]]
    ce = F.cross_entropy(logits, labels, reduction="none")
    want = (v * ce).sum() / v.sum()
    torch.testing.assert_close(total, want)
    g_total, = torch.autograd.grad(total, logits, retain_graph=True)
    g_want, = torch.autograd.grad(want, logits)
    torch.testing.assert_close(g_total, g_want)
    assert not torch.allclose(total, F.cross_entropy(logits, labels))  # the correction does something
    zero = ms.SourceWeightedCE(dom, pi)(ctx)["loss"]
    assert abs(zero.item()) < 1e-6
    with pytest.raises(DataError, match="one per source"):
        ms.SourceWeightedCE(dom, [0.5, 0.5])


@pytest.mark.parametrize("method", ["domain_classifier", "mmd"])
def test_source_relevance_prefers_the_source_closest_to_the_target(method):
    rng = np.random.default_rng(0)
    target = rng.normal(size=(150, 5))
    near = rng.normal(size=(120, 5)) + 0.1
    far = rng.normal(size=(100, 5)) + 4.0
    w = ms.source_relevance([far, near], target, method, seed=0)
    assert w.shape == (2,) and w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[1] > 0.8 > w[0], w
    np.testing.assert_array_equal(w, ms.source_relevance([far, near], target, method, seed=0))  # seeded
    w3 = ms.source_relevance([far, near, near + 0.5], target, method, seed=0)  # graded: near > middle > far
    assert w3[1] > w3[2] > 0.05 and w3[2] > w3[0], w3


class _Spy(DomainDataset):
    """A target whose labels may not be read once armed (as in test_feature_spy.py)."""

    def __getattribute__(self, name):
        if object.__getattribute__(self, "__dict__").get("armed") and name == "labels":
            raise AssertionError("target labels were read")
        return super().__getattribute__(name)


def _spy(ds):
    s = _Spy(ds.inputs, ds.labels, ds.name, ds.modality, classes=ds.classes)
    s.armed = True
    return s


@pytest.mark.parametrize("method", ["m3sda+weighted", "pooled"])
def test_strategy_end_to_end_never_reads_the_target_labels(method):
    (X0, y0), (X1, y1), (Xt, yt) = _blob_sources(n=48)
    s0, s1 = DomainDataset(X0, y0, "s0", "tabular"), DomainDataset(X1, y1, "s1", "tabular")
    tgt = DomainDataset(Xt, yt, "t", "tabular")
    kw = dict(backbone="identity", pretrained=False, method=method, bottleneck=8, epochs=2, batch_size=16,
              seed=0, relevance="mmd")
    a = msx.MultiSource(**kw).fit(_spy(tgt), source=[s0, s1])
    b = msx.MultiSource(**kw).fit(tgt.without_labels(), source=[s0, s1])
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.n_sources_ == 2 and a.n_target_labels_ == 0 and a.source_weights_.sum() == pytest.approx(1.0)
    if method == "pooled":
        assert a.source_weights_.tolist() == [0.5, 0.5]
    assert 0.0 <= a.score(tgt) <= 1.0 and a.predict(tgt).shape == (len(tgt),)
    assert a.selection_ == "dev"


def test_sources_of_different_widths_are_refused_naming_both():
    a = DomainDataset(np.zeros((6, 4), np.float32), np.arange(6) % 2, "narrow", "tabular")
    b = DomainDataset(np.zeros((6, 5), np.float32), np.arange(6) % 2, "wide", "tabular")
    t = DomainDataset(np.zeros((6, 4), np.float32), np.full(6, -1), "t", "tabular")
    with pytest.raises(DataError, match=r"source\[1\] \('wide'\) has features of shape \(5,\) but "
                                        r"source\[0\] \('narrow'\) has \(4,\)") as e:
        msx.MultiSource(backbone="identity", pretrained=False).fit(t, source=[a, b])
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"sources\[1\].*\(5,\).*sources\[0\].*\(4,\)"):
        ms.fit_multi_source([a.inputs, b.inputs], [a.labels, b.labels], t.inputs)


def test_fit_multi_source_refuses_what_it_cannot_do():
    from transferkit.errors import ConfigError

    (X0, y0), (X1, y1), (Xt, _) = _blob_sources(n=20)
    with pytest.raises(ConfigError, match="Xs_val_list"):
        ms.fit_multi_source([X0, X1], [y0, y1], Xt, selection="dev")
    with pytest.raises(ConfigError, match="method"):
        ms.fit_multi_source([X0, X1], [y0, y1], Xt, method="mdan", selection="last")
    with pytest.raises(ConfigError, match="sets 'terms' itself"):
        ms.fit_multi_source([X0, X1], [y0, y1], Xt, selection="last", terms=[])
    res = ms.fit_multi_source([X0, X1], [y0, y1], Xt, method="weighted", source_weights=[3, 1], selection="last",
                              bottleneck=4, epochs=1)
    assert res["source_weights"].tolist() == [0.75, 0.25] and res["domains"].tolist() == [0] * 20 + [1] * 20
