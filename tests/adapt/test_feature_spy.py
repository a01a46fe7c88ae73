"""The feature-level adapter is honest (issue 11): unsupervised adaptation never reads target
labels, ``source_only`` never touches the target at all, AdaBN statistics come from the target
*training* inputs (never from the split being scored), the selected checkpoint is restored
together with its BatchNorm statistics, and ``target_val`` scores labeled rows only.

The backbone-level twin of the label spy is ``tests/adapt/test_backbone.py::test_target_labels_are_never_read``.
"""

import numpy as np
import pytest
import torch

from transferkit._registry import available
from transferkit.data import DomainDataset, load_digits_domain

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds contention

KW = dict(backbone="tiny_cnn", pretrained=False, image_size=16, seed=0)


@pytest.fixture(scope="module")
def domains():
    src = load_digits_domain(size=12, subset="0/2")
    tgt = load_digits_domain(size=12, subset="1/2", invert=True)
    return src, tgt


class _SpyDataset(DomainDataset):
    """A dataset whose labels (and, with ``no_inputs``, inputs) may not be read once armed."""

    def __getattribute__(self, name):
        d = object.__getattribute__(self, "__dict__")
        if d.get("armed"):
            if name == "labels":
                raise AssertionError("target labels were read")
            if d.get("no_inputs") and name in ("inputs", "fingerprint", "get_input", "subset", "without_labels"):
                raise AssertionError(f"target inputs were touched ({name})")
        return super().__getattribute__(name)


def spy(ds, *, no_inputs=False):
    s = _SpyDataset(ds.inputs, ds.labels, ds.name, ds.modality, classes=ds.classes)
    s.no_inputs = no_inputs
    s.armed = True
    return s


def _state(strategy):
    if hasattr(strategy, "model_"):
        return {k: v.clone() for k, v in strategy.model_.state_dict().items()}
    return {k: torch.as_tensor(v) for k, v in strategy.state_dict().items()}


def _assert_same(a, b):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _closed_form_method_strategies():
    from transferkit.strategies.adapt import _METHOD_STRATEGIES

    return sorted(n for n, c in _METHOD_STRATEGIES.items() if c.closed_form)


# every feature-level adapt method the registry knows (shallow estimators and the closed-form
# method strategies) plus deep losses of each family and the no-loss AdaBN variant
UNSUPERVISED = [*available("shallow_da"), *_closed_form_method_strategies(), "mcc", "dann", "jan+mcc", None]


# ------------------------------------------------------------------ target labels
@pytest.mark.parametrize("method", UNSUPERVISED, ids=str)
def test_unsupervised_adaptation_never_reads_target_labels(domains, method):
    """``adapt`` with a labeled target training split: its labels are never read (the spy
    raises), and the fitted model is exactly the one fitted on the same inputs without labels."""
    from transferkit.strategies import Adapt

    src, tgt = domains
    kw = dict(KW, method=method, epochs=2, bottleneck=32)
    if method == "dann":
        kw["loss_options"] = {"hidden": 16}
    with_labels = Adapt(**kw).fit(spy(tgt), source=src)
    without = Adapt(**kw).fit(tgt.without_labels(), source=src)
    _assert_same(with_labels, without)
    assert with_labels.n_target_labels_ == 0
    np.testing.assert_array_equal(with_labels.predict_logits(tgt), without.predict_logits(tgt))


def test_target_labels_are_used_only_when_asked(domains):
    """``target_labels=True`` (semi-supervised adaptation) is the one way target labels reach
    the loss: the model changes, and the count is recorded."""
    from transferkit.strategies import Adapt

    src, tgt = domains
    kw = dict(KW, method="mcc", epochs=2, bottleneck=32)
    ssda = Adapt(**kw, target_labels=True).fit(tgt, source=src)
    uda = Adapt(**kw).fit(tgt, source=src)
    assert ssda.n_target_labels_ == len(tgt) and uda.n_target_labels_ == 0
    assert not torch.equal(ssda.model_.head.weight, uda.model_.head.weight)
    with pytest.raises(AssertionError, match="target labels were read"):
        Adapt(**kw, target_labels=True).fit(spy(tgt), source=src)


@pytest.mark.parametrize("name", ["source_only", "source_only_lr"])
def test_source_only_never_touches_the_target(domains, name):
    """``source_only`` and ``source_only_lr`` fit with a target whose labels *and* inputs may
    not be read, and give exactly the model they give with no target at all."""
    from transferkit._registry import get

    src, tgt = domains
    kw = dict(KW, epochs=2, bottleneck=32) if name == "source_only" else dict(KW)
    a = get("strategy", name)(**kw).fit(spy(tgt, no_inputs=True), source=src)
    b = get("strategy", name)(**kw).fit(None, source=src)
    _assert_same(a, b)
    assert "no target input" in a.selection_ or a.selection_.startswith("none")


def test_adabn_variant_reads_target_inputs_never_labels(domains):
    from transferkit.strategies import SourceOnly, SourceOnlyAdaBN

    src, tgt = domains
    kw = dict(KW, epochs=2, bottleneck=32)
    ada = SourceOnlyAdaBN(**kw).fit(spy(tgt), source=src)
    with pytest.raises(AssertionError, match="target inputs were touched"):
        SourceOnlyAdaBN(**kw).fit(spy(tgt, no_inputs=True), source=src)
    plain = SourceOnly(**kw).fit(None, source=src)
    # the same training (same weights, same selected epoch); only the BatchNorm statistics differ
    sa, sp = ada.model_.state_dict(), plain.model_.state_dict()
    for k in sa:
        if "running" not in k:
            assert torch.equal(sa[k], sp[k]), k
    assert ada.best_epoch_ == plain.best_epoch_
    bn = ada.model_.bottleneck[1]
    with torch.no_grad():
        h = ada.model_.bottleneck[0](torch.as_tensor(ada._features(tgt)))
    torch.testing.assert_close(bn.running_mean, h.mean(0))
    torch.testing.assert_close(bn.running_var, h.var(0, unbiased=True))
    assert not torch.allclose(plain.model_.bottleneck[1].running_mean, bn.running_mean)
    assert "BatchNorm statistics" in ada.selection_


# ------------------------------------------------------------------ AdaBN statistics at prediction
@pytest.mark.parametrize("name,kw", [("adapt", {"method": "mcc"}), ("adapt", {"method": None}),
                                      ("source_only_adabn", {})])
def test_adabn_statistics_come_from_the_target_training_inputs_not_the_scored_split(domains, name, kw):
    """Scoring two different (overlapping) test sets with one fitted model gives identical
    logits for the shared rows, and the same logits as the whole set: prediction never
    re-estimates BatchNorm statistics on the rows it scores. The statistics are those of the
    target training inputs."""
    from transferkit._registry import get

    src, tgt = domains
    train = tgt.subset(np.arange(0, len(tgt), 2)).without_labels()
    s = get("strategy", name)(**KW, epochs=2, bottleneck=32, **kw).fit(train, source=src)
    full = s.predict_logits(tgt)
    a = s.predict_logits(tgt.subset(np.arange(0, 300)))
    b = s.predict_logits(tgt.subset(np.arange(200, 500)))
    # (a tolerance for the backbone's float summation order, which may depend on the batch)
    np.testing.assert_allclose(a[200:], b[:100], rtol=0, atol=1e-5)
    np.testing.assert_allclose(a, full[:300], rtol=0, atol=1e-5)
    np.testing.assert_allclose(b, full[200:500], rtol=0, atol=1e-5)
    one = s.predict_logits(tgt.subset(np.arange(7, 8)))  # a single row scores as it does among all
    np.testing.assert_allclose(one[0], full[7], rtol=0, atol=1e-5)
    bn = s.model_.bottleneck[1]
    with torch.no_grad():
        h = s.model_.bottleneck[0](torch.as_tensor(s._features(train)))
    torch.testing.assert_close(bn.running_mean, h.mean(0))
    torch.testing.assert_close(bn.running_var, h.var(0, unbiased=True))


# ------------------------------------------------------------------ the selected checkpoint
def _blobs(n=160):
    """Three separable classes on 12 features (source) and a scaled, shifted unlabeled target."""
    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(n, 12)).astype(np.float32)
    ys = rng.integers(0, 3, n)
    Xs[np.arange(n), ys] += 3.0
    Xt = (rng.normal(size=(n, 12)) * 1.5 + 1.0).astype(np.float32)
    return Xs, ys, Xt


@pytest.mark.parametrize("domain_bn", [True, False])
def test_the_selected_epoch_is_restored_with_its_batchnorm_statistics(domains, monkeypatch, domain_bn):
    """A scorer preferring the first epoch: the returned model predicts exactly what the scorer
    saw at epoch 0, on the target (target statistics) and on the source validation rows
    (source statistics): weights and AdaBN statistics of the selected epoch, together."""
    import transferkit.adapt.features as feats

    seen_t, seen_sv = [], []

    def first_is_best(ctx):
        seen_t.append(ctx.logits_t.copy())
        seen_sv.append(ctx.logits_sv.copy())
        return -float(len(seen_t))

    import transferkit._registry as reg  # the selection callback looks its scorer up in the registry

    real_get = reg.get
    monkeypatch.setattr(reg, "get", lambda kind, name: first_is_best if kind == "scorer" else real_get(kind, name))
    Xs, ys, Xt = _blobs()
    res = feats.train_feature_adapter(Xs[:120], ys[:120], Xt, Xs_val=Xs[120:], ys_val=ys[120:],
                                      weights_val=np.ones(40), num_classes=3, method="mcc", bottleneck=16,
                                      epochs=4, batch_size=32, lr=1e-2, selection="dev", domain_bn=domain_bn)
    assert res["best_epoch"] == 0 and [r["score"] for r in res["history"]] == [-1.0, -2.0, -3.0, -4.0]
    model = res["model"]
    assert not model.training
    with torch.no_grad():
        zt = model(torch.as_tensor(Xt)).numpy()
    np.testing.assert_allclose(zt, seen_t[0], rtol=0, atol=1e-5)
    assert not np.allclose(zt, seen_t[-1], atol=1e-3)  # the epochs differ: the check has teeth
    if domain_bn:
        bn = model.bottleneck[1]
        with torch.no_grad():
            h = model.bottleneck[0](torch.as_tensor(Xt))
        torch.testing.assert_close(bn.running_mean, h.mean(0))
        torch.testing.assert_close(bn.running_var, h.var(0, unbiased=True))
        model.set_bn_statistics(torch.as_tensor(Xs[:120]))  # source rows were scored with source statistics
    with torch.no_grad():
        zsv = model(torch.as_tensor(Xs[120:])).numpy()
    np.testing.assert_allclose(zsv, seen_sv[0], rtol=0, atol=1e-5)


def test_source_val_selection_needs_no_target_and_logs_the_source_loss(domains):
    import transferkit.adapt.features as feats

    Xs, ys, _ = _blobs()
    res = feats.train_feature_adapter(Xs[:120], ys[:120], None, Xs_val=Xs[120:], ys_val=ys[120:], num_classes=3,
                                      method=None, bottleneck=16, epochs=3, batch_size=32, selection="source_val",
                                      domain_bn=False)
    h = res["history"]
    assert all(r["score"] == -r["source_val_loss"] and 0 <= r["source_val_accuracy"] <= 1 for r in h)
    assert res["best_epoch"] == int(np.argmax([r["score"] for r in h]))
    with torch.no_grad():
        z = res["model"](torch.as_tensor(Xs[120:]))
    best = h[res["best_epoch"]]
    assert float(torch.nn.functional.cross_entropy(z, torch.as_tensor(ys[120:]))) == pytest.approx(
        best["source_val_loss"], abs=1e-6)


@pytest.mark.parametrize("kw,fragment", [
    ({"method": "mcc"}, "method='mcc'"), ({"domain_bn": True}, "domain_bn=True"),
    ({"selection": "dev", "weights_val": np.ones(40)}, "selection='dev'"),
    ({"yt": np.zeros(5, dtype=int)}, "yt (target labels)"),
])
def test_no_target_input_is_refused_where_one_is_needed(domains, kw, fragment):
    import transferkit.adapt.features as feats
    from transferkit.errors import ConfigError

    Xs, ys, _ = _blobs()
    args = dict(Xs_val=Xs[120:], ys_val=ys[120:], num_classes=3, method=None, bottleneck=8, epochs=1,
                selection="source_val", domain_bn=False)
    args.update(kw)
    with pytest.raises(ConfigError, match=r"Xt=None \(no target input\) but " + fragment.replace("(", r"\(")
                       .replace(")", r"\)")) as info:
        feats.train_feature_adapter(Xs[:120], ys[:120], None, **args)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ target_val
def test_target_val_accuracy_counts_labeled_rows_only(domains):
    """Unlabeled (-1) rows of the target validation split are no evidence: the score of the
    selected epoch is the returned model's accuracy on the labeled rows alone (it used to
    count every -1 row as a miss)."""
    import transferkit.adapt.features as feats
    from transferkit.errors import DataError

    Xs, ys, Xt = _blobs()
    Xv, yv = Xs[120:], ys[120:].copy()
    yv[::2] = -1  # half the validation rows unlabeled
    res = feats.train_feature_adapter(Xs[:120], ys[:120], Xt, Xt_val=Xv, yt_val=yv, num_classes=3, method=None,
                                      bottleneck=16, epochs=3, batch_size=32, lr=1e-2, selection="target_val",
                                      domain_bn=False)
    with torch.no_grad():
        pred = res["model"](torch.as_tensor(Xv)).argmax(1).numpy()
    m = yv >= 0
    assert res["history"][res["best_epoch"]]["score"] == pytest.approx(float((pred[m] == yv[m]).mean()))
    assert res["history"][res["best_epoch"]]["score"] > 0.6  # separable blobs: well above a diluted 0.5
    with pytest.raises(DataError, match="labels >= 0"):
        feats.train_feature_adapter(Xs[:120], ys[:120], Xt, Xt_val=Xv, yt_val=np.full(len(yv), -1), num_classes=3,
                                    method=None, bottleneck=8, epochs=1, selection="target_val", domain_bn=False)
