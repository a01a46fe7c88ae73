import numpy as np
import pytest

from transferkit.data import DomainDataset
from transferkit.errors import ConfigError
from transferkit.strategies import Adapt



# kliep and tca draw random numbers (centres, subsamples): adapt seeds them with its own seed
@pytest.mark.parametrize("method", [None, "dann", "deep_coral", "coral", "kliep", "tca", "self_training",
                                    "source_only_lr"])
def test_adapt_runs_and_is_deterministic(domains, method):
    src, tgt, unl = domains
    s = Adapt(backbone="tiny_cnn", pretrained=False, image_size=16, method=method, epochs=3, seed=0).fit(unl, source=src)
    acc = s.score(tgt)
    # the score is what the predictions say (a random tiny CNN on inverted digits sits near
    # chance, so accuracy itself is not the point here: determinism is)
    assert acc == pytest.approx(float(np.mean(s.predict_logits(tgt).argmax(1) == tgt.labels)))
    assert s.train_time_ > 0
    assert s.selection_ in ("dev",) or s.selection_.startswith("none")
    s2 = Adapt(backbone="tiny_cnn", pretrained=False, image_size=16, method=method, epochs=3, seed=0).fit(unl, source=src)
    np.testing.assert_allclose(s.predict_logits(tgt), s2.predict_logits(tgt), rtol=1e-5, atol=1e-5)


def test_adaptation_beats_source_only_on_a_shifted_toy_problem():
    """Target = source scaled and translated: CORAL recovers much of the accuracy, and so does
    AdaBN, against the true source-only baseline (no target input at all)."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(600, n_features=6, centers=4, cluster_std=1.5, random_state=0)
    Xs, ys, Xt, yt = X[:300], y[:300], X[300:] * 2.0 + 6.0, y[300:]
    src = DomainDataset(Xs.astype(np.float32), ys, "src", "tabular")
    unl = DomainDataset(Xt.astype(np.float32), np.full(300, -1), "tgt", "tabular")
    test = DomainDataset(Xt.astype(np.float32), yt, "tgt", "tabular")
    kw = dict(backbone="identity", pretrained=False, seed=0)

    def fit(method, strategy=Adapt, **more):
        s = strategy(**kw, **({} if method == "-" else {"method": method}), **more)
        s.extractor_ = __import__("transferkit").FeatureExtractor(
            __import__("transferkit").create_backbone("identity", in_features=6), cache_dir=False).fit()
        return s.fit(unl, source=src).score(test)

    from transferkit.strategies import SourceOnly, SourceOnlyAdaBN

    so = fit("-", SourceOnly, epochs=20)
    assert fit("coral") > so + 0.2
    # AdaBN: normalizing the target with its own statistics undoes a per-feature affine shift
    assert fit(None, epochs=20, domain_bn=True) > so + 0.2
    assert fit("-", SourceOnlyAdaBN, epochs=20) > so + 0.2


def test_adapt_needs_a_source(domains):
    _, _, unl = domains
    with pytest.raises(ConfigError, match="labeled source"):
        Adapt(backbone="tiny_cnn", pretrained=False, image_size=16).fit(unl)


def test_unknown_loss_option_is_named(domains):
    src, _, unl = domains
    with pytest.raises(ConfigError, match="no option 'hiden'"):
        Adapt(backbone="tiny_cnn", pretrained=False, image_size=16, method="dann", loss_options={"hiden": 8},
              epochs=1).fit(unl, source=src)


def test_two_stage_uses_the_few_target_labels():
    """A target whose labels are permuted relative to the source: stage 1 alone is wrong on
    every class; stage 2 on 5 labels per class must recover."""
    from sklearn.datasets import make_blobs

    import transferkit as tk
    from transferkit.strategies import TwoStage

    X, y = make_blobs(800, n_features=6, centers=4, cluster_std=1.0, random_state=0)
    perm = np.array([1, 2, 3, 0])
    Xs, ys, Xt, yt = X[:400], y[:400], X[400:], perm[y[400:]]
    labels = np.full(400, -1)
    for c in range(4):
        labels[np.flatnonzero(yt == c)[:5]] = c
    src = DomainDataset(Xs.astype(np.float32), ys, "src", "tabular")
    train = DomainDataset(Xt.astype(np.float32), labels, "tgt", "tabular")
    test = DomainDataset(Xt.astype(np.float32), yt, "tgt", "tabular")
    s = TwoStage(backbone="identity", pretrained=False, epochs=5, stage2_epochs=60, stage2_lr=3e-3, seed=0)
    s.extractor_ = tk.FeatureExtractor(tk.create_backbone("identity", in_features=6), cache_dir=False).fit()
    s.fit(train, source=src)
    assert len(s.stage1_history_) == 5 and len(s.history_) == 60
    assert s.score(test) > 0.9
    assert s.selection_.startswith("stage 1: dev; stage 2: last epoch")


def test_weight_grid_is_chosen_by_the_unsupervised_score():
    from sklearn.datasets import make_blobs

    import transferkit as tk

    X, y = make_blobs(400, n_features=4, centers=3, random_state=1)
    src = DomainDataset(X[:200].astype(np.float32), y[:200], "s", "tabular")
    unl = DomainDataset((X[200:] + 2).astype(np.float32), np.full(200, -1), "t", "tabular")
    s = Adapt(backbone="identity", pretrained=False, method="mcc", weight=[0.1, 1.0], epochs=3, seed=0)
    s.extractor_ = tk.FeatureExtractor(tk.create_backbone("identity", in_features=4), cache_dir=False).fit()
    s.fit(unl, source=src)
    assert set(s.weight_scores_) == {0.1, 1.0}
    assert s.weight_ == max(s.weight_scores_, key=s.weight_scores_.get)
    assert "weight from [0.1, 1.0]" in s.selection_


@pytest.mark.parametrize("method", ["jan+mcc", "fixmatch"])
def test_backbone_level_adaptation_through_the_strategy(domains, method):
    src, tgt, unl = domains
    s = Adapt(backbone="tiny_cnn", pretrained=False, image_size=16, method=method, epochs=2, seed=0,
              level="backbone", batch_size=64).fit(unl.subset(np.arange(200)), source=src.subset(np.arange(300)))
    assert s.selection_.startswith("dev") and s.best_epoch_ in (0, 1)
    assert s.predict_logits(tgt).shape == (len(tgt), 10)
    # the backbone trained: its parameters count as trainable
    assert s.trainable_params_ > sum(p.numel() for p in s.model_.head.parameters())


def test_backbone_level_rejects_a_shallow_method(domains):
    src, _, unl = domains
    with pytest.raises(ConfigError, match="level: features"):
        Adapt(backbone="tiny_cnn", pretrained=False, image_size=16, method="coral", level="backbone").fit(unl, source=src)


def test_combined_losses_and_part_options(domains):
    from transferkit.adapt.features import CombinedDALoss, build_method_loss

    loss = build_method_loss("jan+mcc", 8, 3, 0.5, {"mcc": {"temperature": 2.0}})
    assert isinstance(loss, CombinedDALoss) and set(loss.parts) == {"jan", "mcc"}
    assert loss.parts["mcc"].temperature == 2.0
    import torch

    torch.manual_seed(0)
    fs, ft, zs, zt = torch.randn(6, 8), torch.randn(5, 8), torch.randn(6, 3), torch.randn(5, 3)
    kw = dict(logits_s=zs, logits_t=zt, y_s=torch.tensor([0, 1, 2, 0, 1, 2]))
    parts = sum(loss.parts[n](fs, ft, **kw)["loss"] for n in ("jan", "mcc"))
    assert torch.allclose(loss(fs, ft, **kw)["loss"], parts)
    with pytest.raises(ConfigError, match="keyed by part name"):
        build_method_loss("jan+mcc", 8, 3, 1.0, {"temperature": 2.0})


def test_two_stage_without_target_labels_says_stage_2_was_skipped():
    from sklearn.datasets import make_blobs

    import transferkit as tk
    from transferkit.errors import TransferKitWarning
    from transferkit.strategies import TwoStage

    X, y = make_blobs(200, n_features=6, centers=3, random_state=0)
    src = DomainDataset(X[:100].astype(np.float32), y[:100], "src", "tabular")
    train = DomainDataset(X[100:].astype(np.float32), np.full(100, -1), "tgt", "tabular")
    s = TwoStage(backbone="identity", pretrained=False, epochs=2, stage2_epochs=5, seed=0)
    s.extractor_ = tk.FeatureExtractor(tk.create_backbone("identity", in_features=6), cache_dir=False).fit()
    with pytest.warns(TransferKitWarning, match="stage 2 .* was skipped"):
        s.fit(train, source=src)
    assert len(s.history_) == 2  # stage 1 only
