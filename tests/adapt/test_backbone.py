"""Full-backbone domain adaptation through the Trainer's loss hook."""

import numpy as np
import pytest
import torch

from transferkit.adapt.backbone import DALossTerm, train_backbone_adapter
from transferkit.backbones import tiny_cnn
from transferkit.data import DomainDataset, load_dataset
from transferkit.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def domains():
    src = load_dataset("digits:size=16,subset=0/2")
    tgt = load_dataset("digits:size=16,subset=1/2,rotate=30,seed=0")
    return src.subset(np.arange(0, len(src), 4)), tgt.subset(np.arange(0, len(tgt), 4))  # ~225 each


def run(src, tgt, method, **kw):
    opts = dict(backbone=lambda pretrained: tiny_cnn(width=8, image_size=16), method=method, epochs=2,
                batch_size=32, lr=1e-2, backbone_lr_mult=1.0, selection="entropy", device="cpu", seed=0)
    if method == "dann":
        kw.setdefault("loss_options", {"hidden": 32})
    opts.update(kw)
    return train_backbone_adapter(src, tgt, **opts)


def hidden(ds):
    return DomainDataset(ds.inputs, np.full(len(ds), -1), ds.name, ds.modality, classes=ds.classes)


@pytest.mark.parametrize("method,key", [("dann", "dann"), ("mcc", "mcc"), ("dan", "dan"), ("fixmatch", "mask_rate")])
def test_methods_run_log_and_select(domains, method, key):
    src, tgt = domains
    r = run(src, hidden(tgt), method)
    h = r["history"]
    assert len(h) == 2 and all(np.isfinite(row["train_loss"]) and key in row for row in h)
    scores = [row["score"] for row in h]
    assert r["best_epoch"] == int(np.argmax(scores)) and r["score"] == max(scores)
    assert not r["model"].training
    z = r["trainer"].predict_logits(tgt)
    assert z.shape == (len(tgt), 10) and np.isfinite(z).all()


def test_dann_discriminator_trains_and_sees_bottleneck(domains, monkeypatch):
    import transferkit.adapt.features as feats

    built = []
    real = feats.build_da_loss

    def spy(*a, **k):
        loss = real(*a, **k)
        built.append({n: p.detach().clone() for n, p in loss.named_parameters()})
        return loss

    monkeypatch.setattr(feats, "build_da_loss", spy)
    src, tgt = domains
    r = run(src, hidden(tgt), "dann", epochs=1)
    term = r["term"]
    assert isinstance(term, DALossTerm) and len(built) == 1
    lin = next(m for m in term.da.modules() if isinstance(m, torch.nn.Linear))
    assert lin.in_features == 256  # the MLP head's hidden layer, not the 32-d pooled features
    opt_params = {id(p) for g in r["trainer"].param_groups for p in g["params"]}
    assert all(id(p) in opt_params for p in term.parameters()), "the discriminator must be optimized"
    moved = [(p.detach() - built[0][n]).abs().max().item() for n, p in term.da.named_parameters()]
    assert len(moved) > 0 and min(moved) > 0, "every discriminator parameter must have been updated"


def test_feature_layer_backbone(domains):
    src, tgt = domains
    r = run(src, hidden(tgt), "dann", epochs=1, feature_layer="backbone")
    lin = next(m for m in r["term"].da.modules() if isinstance(m, torch.nn.Linear))
    assert lin.in_features == 32  # tiny_cnn(width=8): 4 * 8 pooled features


def test_selected_epoch_comes_from_scorer_and_is_restored(domains, monkeypatch):
    """A scorer preferring the first epoch: the returned weights are epoch 0's, not the last."""
    import transferkit._registry as bk  # the selection callback looks its scorer up in the registry

    seen = []

    def first_is_best(ctx):
        seen.append(ctx.logits_t.copy())
        return -float(len(seen))

    real_get = bk.get
    monkeypatch.setattr(bk, "get", lambda kind, name: first_is_best if kind == "scorer" else real_get(kind, name))
    src, tgt = domains
    r = run(src, hidden(tgt), "mcc", epochs=3)
    assert [row["score"] for row in r["history"]] == [-1.0, -2.0, -3.0] and r["best_epoch"] == 0
    z = r["trainer"].predict_logits(hidden(tgt))
    np.testing.assert_allclose(z, seen[0], atol=1e-5)
    assert not np.allclose(z, seen[-1], atol=1e-3)


def test_dev_selection_holds_out_source(domains):
    src, tgt = domains
    r = run(src, hidden(tgt), "mcc", selection="dev", epochs=1)
    assert r["selection"] == "dev" and np.isfinite(r["score"])


class _SpyDataset(DomainDataset):
    """A dataset whose labels may not be read once armed."""

    def __getattribute__(self, name):
        if name == "labels" and object.__getattribute__(self, "__dict__").get("armed"):
            raise AssertionError("target labels were read")
        return super().__getattribute__(name)


def test_target_labels_are_never_read(domains):
    src, tgt = domains
    spy = _SpyDataset(tgt.inputs, tgt.labels, tgt.name, tgt.modality, classes=tgt.classes)
    spy.armed = True
    with_labels = run(src, spy, "dann", selection="dev", epochs=1)
    without = run(src, hidden(tgt), "dann", selection="dev", epochs=1)
    for (k, a), b in zip(with_labels["model"].state_dict().items(), without["model"].state_dict().values()):
        assert torch.equal(a, b), k
    assert with_labels["history"][0]["score"] == without["history"][0]["score"]


def test_source_val_selection_uses_no_target_at_all(domains):
    """``selection="source_val"`` scores the labeled source validation loss: with ``method=None``
    the target may be ``None`` (the ``source_only`` baseline at this level)."""
    src, tgt = domains
    r = run(src, None, None, selection="source_val", epochs=2)
    h = r["history"]
    assert r["selection"] == "source_val" and r["term"] is None
    assert r["best_epoch"] == int(np.argmax([row["score"] for row in h])) and all(row["score"] < 0 for row in h)
    # the score is the negative cross-entropy on the held-out source rows (the same split dev uses)
    from transferkit.data import stratified_split

    s = src.subset(np.flatnonzero(src.labels >= 0))
    _, va = stratified_split(s.labels, [0.8, 0.2], seed=0)
    z = torch.as_tensor(r["trainer"].predict_logits(s.subset(va)))
    loss = float(torch.nn.functional.cross_entropy(z, torch.as_tensor(s.labels[va])))
    assert -loss == pytest.approx(r["score"], abs=1e-5)
    with pytest.raises(ConfigError, match="target_ds=None but method='mcc' needs unlabeled target samples"):
        run(src, None, "mcc", selection="source_val")
    with pytest.raises(ConfigError, match="target_ds=None but selection='dev'"):
        run(src, None, None, selection="dev")


def test_errors_name_the_parameter(domains):
    src, tgt = domains
    with pytest.raises(ConfigError, match="Did you mean 'dann'"):
        run(src, tgt, "dannn")
    with pytest.raises(ConfigError, match="threshold"):
        run(src, tgt, "fixmatch", loss_options={"treshold": 0.9})
    with pytest.raises(ConfigError, match="selection"):
        run(src, tgt, "mcc", selection="target_test")
    with pytest.raises(DataError, match="target_val_ds"):
        run(src, tgt, "mcc", selection="target_val")
    with pytest.raises(DataError, match="no labels"):
        run(hidden(src), tgt, "mcc")
