"""Honest baselines (issue 11): ``source_only`` means trained on labeled source only, with no
target labels and no target statistics; the variants that use target inputs carry other names
(``source_only_adabn``, ``adapt`` with ``method=None``); ``target_only`` is trained on target
labels alone; ``source_only_lr``, ``self_training`` and ``fixmatch`` are registered strategies
that are also ``adapt`` methods."""

import numpy as np
import pytest

from transferkit._registry import available, get
from transferkit.data import DomainDataset, load_digits_domain, stratified_split
from transferkit.errors import ConfigError, DataError
from transferkit.strategies import (
    Adapt,
    FixMatch,
    SelfTraining,
    SourceOnly,
    SourceOnlyAdaBN,
    SourceOnlyLR,
    TargetOnly,
)

pytestmark = pytest.mark.usefixtures("one_thread")

KW = dict(backbone="tiny_cnn", pretrained=False, image_size=16, seed=0)


@pytest.fixture(scope="module")
def permuted():
    """Source digits; a target of the other digits whose labels are the source's shifted by one
    class (c -> c + 1 mod 10), with 10 labeled training samples per class (as ``diagnose`` hands
    every strategy the labeled target training split) and a test split."""
    src = load_digits_domain(size=12, subset="0/2")
    tgt = load_digits_domain(size=12, subset="1/2")
    y = (tgt.labels + 1) % 10
    tr, te = stratified_split(y, [0.5, 0.5], seed=0)
    lab = np.full(len(tr), -1)
    for c in range(10):
        lab[np.flatnonzero(y[tr] == c)[:10]] = c
    train = DomainDataset(tgt.inputs[tr], lab, "permuted", "image", classes=tgt.classes)
    test = DomainDataset(tgt.inputs[te], y[te], "permuted", "image", classes=tgt.classes)
    return src, train, test, tgt.labels[te]


def test_source_only_scores_about_zero_on_a_permuted_label_target(permuted):
    """A model of the source alone predicts the source's classes: on a target whose labels are
    a permutation of them it scores ~0, while being right by the unpermuted labels. The old
    baseline (``adapt`` with ``method=None``, which trained on the labeled target rows) scored
    0.40 here; that is now only what ``target_labels=True`` asks for, and never the default."""
    src, train, test, unpermuted = permuted
    so = SourceOnly(**KW, epochs=10).fit(train, source=src)
    assert so.score(test) < 0.05
    assert float((so.predict(test) == unpermuted).mean()) > 0.8  # it did learn the source task
    assert so.n_target_labels_ == 0
    assert Adapt(**KW, method=None, epochs=10).fit(train, source=src).score(test) < 0.05  # AdaBN + DEV, no labels
    ssda = Adapt(**KW, method=None, epochs=10, target_labels=True).fit(train, source=src)
    assert ssda.score(test) > 0.3 and ssda.n_target_labels_ == 100
    # the target's own labels are learnable: the target-only baseline gets them
    assert TargetOnly(**KW, epochs=30, lr=1e-2).fit(train).score(test) > 0.6


def test_source_only_is_the_same_with_any_target_or_none(permuted):
    src, train, test, _ = permuted
    a = SourceOnly(**KW, epochs=2, bottleneck=32).fit(train, source=src)
    b = SourceOnly(**KW, epochs=2, bottleneck=32).fit(None, source=src)
    np.testing.assert_array_equal(a.predict_logits(test), b.predict_logits(test))
    assert a.selection_ == "source_val (labeled source validation loss; no target input)"
    last = SourceOnly(**KW, epochs=3, bottleneck=32, selection="last").fit(None, source=src)
    assert last.best_epoch_ == 2 and last.selection_ == "last epoch (no target input)"
    assert all("source_val_loss" in r for r in a.history_) and a.best_epoch_ == int(
        np.argmax([r["score"] for r in a.history_]))


def test_source_only_at_the_backbone_level_uses_no_target(permuted):
    src, _, test, _ = permuted
    src = src.subset(np.arange(0, len(src), 3))
    s = SourceOnly(**KW, epochs=2, batch_size=32, level="backbone").fit(None, source=src)
    assert s.selection_.startswith("source_val") and s.best_epoch_ in (0, 1)
    assert s.predict_logits(test).shape == (len(test), 10)
    assert s.trainable_params_ > sum(p.numel() for p in s.model_.head.parameters())


def test_target_only_ignores_the_source(permuted):
    src, train, test, _ = permuted
    a = TargetOnly(**KW, epochs=3, bottleneck=32).fit(train)
    b = TargetOnly(**KW, epochs=3, bottleneck=32).fit(train, source=src)
    np.testing.assert_array_equal(a.predict_logits(test), b.predict_logits(test))
    assert a.selection_ == "last epoch" and a.n_target_labels_ == 100 and not TargetOnly.needs_source
    val = test.subset(np.arange(100))
    c = TargetOnly(**KW, epochs=3, bottleneck=32).fit(train, val)
    assert c.selection_ == "labeled target validation accuracy"
    with pytest.raises(DataError, match="no labeled samples"):
        TargetOnly(**KW, epochs=1).fit(train.without_labels())


# ------------------------------------------------------------------ method strategies
@pytest.mark.parametrize("name,cls", [("source_only_lr", SourceOnlyLR), ("self_training", SelfTraining)])
def test_method_strategies_equal_the_adapt_method(domains, name, cls):
    src, tgt, unl = domains
    a = cls(**KW).fit(unl, source=src)
    b = Adapt(**KW, method=name).fit(unl, source=src)
    np.testing.assert_array_equal(a.predict_logits(tgt), b.predict_logits(tgt))
    assert get("strategy", name) is cls and a.selection_.startswith("none")


def test_fixmatch_strategy_equals_the_adapt_method(domains):
    src, tgt, unl = domains
    kw = dict(KW, epochs=1, batch_size=64)
    data = dict(train=unl.subset(np.arange(150)), source=src.subset(np.arange(200)))
    a = FixMatch(**kw).fit(data["train"], source=data["source"])
    b = Adapt(**kw, method="fixmatch", level="backbone").fit(data["train"], source=data["source"])
    np.testing.assert_allclose(a.predict_logits(tgt), b.predict_logits(tgt), rtol=0, atol=1e-6)
    assert a.level == "backbone" and "mask_rate" in a.history_[0]


def test_every_adapt_method_name_is_in_the_registry():
    """``adapt``'s methods are all registry entries: deep losses, shallow estimators, and the
    method strategies (which ``transferkit list strategies`` shows)."""
    from transferkit.strategies.adapt import _METHOD_STRATEGIES

    names = Adapt()._method_choices()
    assert {"source_only_lr", "self_training", "fixmatch"} <= set(names)
    for n in names:
        assert n in available("da_loss") or n in available("shallow_da") or n in available("strategy"), n
    assert set(_METHOD_STRATEGIES) == {"source_only_lr", "self_training", "fixmatch"}
    assert {"source_only", "source_only_adabn", "target_only"} <= set(available("strategy"))


def test_transferkit_list_shows_the_baselines_and_method_strategies(capsys):
    from transferkit.cli import main

    assert main(["list", "strategies"]) == 0
    out = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "no target label or input" in out["source_only"]
    assert "BatchNorm" in out["source_only_adabn"]
    for name in ("target_only", "source_only_lr", "self_training", "fixmatch", "two_stage"):
        assert name in out


# ------------------------------------------------------------------ errors
@pytest.fixture(scope="module")
def tiny():
    from transferkit.backbones import create_backbone

    return create_backbone("tiny_cnn", pretrained=False, image_size=16)


@pytest.mark.parametrize("strategy,kw,fragments", [
    ("source_only", {"selection": "dev"}, ["source_only.selection='dev'", "'source_val'"]),
    ("source_only", {"level": "deep"}, ["source_only.level='deep'"]),
    ("source_only_adabn", {"epochs": 0}, ["source_only_adabn.epochs=0 is out of range"]),
    ("target_only", {"lr": 0}, ["target_only.lr=0 is out of range"]),
    ("self_training", {"threshold": 0}, ["self_training.threshold=0 is out of range", "(0, 1]"]),
    ("source_only_lr", {"source_val_fraction": 1.5}, ["source_only_lr.source_val_fraction=1.5 is out of range"]),
    ("fixmatch", {"loss_options": {"treshold": 0.9}}, ["fixmatch.loss_options", "'treshold'", "'threshold'"]),
    ("adapt", {"target_labels": "yes"}, ["adapt.target_labels='yes' is not a boolean"]),
    ("adapt", {"target_labels": True, "level": "backbone"}, ["adapt.target_labels=true needs adapt.level: features"]),
    ("adapt", {"method": "source_only_lr", "target_labels": True},
     ["adapt.target_labels=true contradicts adapt.method='source_only_lr'"]),
    ("adapt", {"method": "self_training", "level": "backbone"}, ["adapt.method='self_training' works on fixed"]),
    ("adapt", {"method": "self_training", "loss_options": {"x": 1}}, ["takes no options"]),
    ("adapt", {"method": "fixmatch"}, ["adapt.method='fixmatch' augments images", "adapt.level: backbone"]),
    ("adapt", {"method": "self_trainig"}, ["adapt.method='self_trainig'", "Did you mean 'self_training'"]),
])
def test_errors_name_the_parameter(strategy, kw, fragments, tiny):
    with pytest.raises(ConfigError) as info:
        get("strategy", strategy)(backbone="tiny_cnn", **kw).validate(backbone=tiny)
    msg = str(info.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_fit_errors(domains):
    src, _, unl = domains
    with pytest.raises(ConfigError, match="strategy 'source_only' needs a labeled source"):
        SourceOnly(**KW, epochs=1).fit(unl)
    with pytest.raises(DataError, match="source 'target' has no labels; source_only needs a labeled source"):
        SourceOnly(**KW, epochs=1).fit(None, source=unl)
    with pytest.raises(DataError, match="source_only_adabn needs the target training split"):
        SourceOnlyAdaBN(**KW, epochs=1).fit(None, source=src)
