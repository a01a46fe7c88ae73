import numpy as np
import pytest

from transferkit.data import DomainDataset, load_digits_domain
from transferkit.errors import ConfigError
from transferkit.strategies import Adapt


@pytest.fixture(scope="module")
def domains():
    src = load_digits_domain(size=12, subset="0/2")
    tgt = load_digits_domain(size=12, subset="1/2", invert=True)
    unl = DomainDataset(tgt.inputs, np.full(len(tgt), -1), "target", "image", classes=tgt.classes)
    return src, tgt, unl


@pytest.mark.parametrize("method", [None, "dann", "deep_coral", "coral", "self_training"])
def test_adapt_runs_and_is_deterministic(domains, method):
    src, tgt, unl = domains
    s = Adapt(backbone="tiny_cnn", pretrained=False, image_size=16, method=method, epochs=3, seed=0).fit(unl, source=src)
    acc = s.score(tgt)
    assert 0 <= acc <= 1 and s.train_time_ > 0
    assert s.selection_ in ("dev",) or s.selection_.startswith("none")
    s2 = Adapt(backbone="tiny_cnn", pretrained=False, image_size=16, method=method, epochs=3, seed=0).fit(unl, source=src)
    np.testing.assert_allclose(s.predict_logits(tgt), s2.predict_logits(tgt), rtol=1e-5, atol=1e-5)


def test_adaptation_beats_source_only_on_a_shifted_toy_problem():
    """Target = source scaled and translated: CORAL recovers much of the accuracy."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(600, n_features=6, centers=4, cluster_std=1.5, random_state=0)
    Xs, ys, Xt, yt = X[:300], y[:300], X[300:] * 2.0 + 6.0, y[300:]
    src = DomainDataset(Xs.astype(np.float32), ys, "src", "tabular")
    unl = DomainDataset(Xt.astype(np.float32), np.full(300, -1), "tgt", "tabular")
    test = DomainDataset(Xt.astype(np.float32), yt, "tgt", "tabular")
    kw = dict(backbone="identity", pretrained=False, seed=0)

    def fit(method, **more):
        s = Adapt(**kw, method=method, **more)
        s.extractor_ = __import__("transferkit").FeatureExtractor(
            __import__("transferkit").create_backbone("identity", in_features=6), cache_dir=False).fit()
        return s.fit(unl, source=src).score(test)

    so = fit(None, epochs=20)
    assert fit("coral") > so + 0.2


def test_adapt_needs_a_source(domains):
    _, _, unl = domains
    with pytest.raises(ConfigError, match="labeled source"):
        Adapt(backbone="tiny_cnn", pretrained=False, image_size=16).fit(unl)


def test_unknown_loss_option_is_named(domains):
    src, _, unl = domains
    with pytest.raises(ConfigError, match="no option 'hiden'"):
        Adapt(backbone="tiny_cnn", pretrained=False, image_size=16, method="dann", loss_options={"hiden": 8},
              epochs=1).fit(unl, source=src)
