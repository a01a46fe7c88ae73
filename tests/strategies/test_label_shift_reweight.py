"""``adapt.label_shift="mlls+reweight"``: the estimated target priors reweight the source classes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferkit.adapt.features import RowWeightedCETerm
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError
from transferkit.strategies import Adapt


def _blobs(n_per, classes, shift, seed):
    rng = np.random.default_rng(seed)
    centers = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, 0.0]])
    X = np.concatenate([centers[c] + shift + rng.normal(size=(n_per, 2)) for c in classes]).astype(np.float32)
    y = np.repeat(classes, n_per)
    return DomainDataset(X, y, "blobs", "tabular", classes=["a", "b", "c"])


def test_row_weighted_term_turns_the_mean_ce_into_the_weighted_one():
    torch.manual_seed(0)
    z, y = torch.randn(5, 3), torch.tensor([0, 2, 1, 2, 0])
    w = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    idx = torch.tensor([6, 1, 3, 0, 2])
    ctx = type("C", (), {"logits": z, "labels": y, "indices": idx})()
    out = RowWeightedCETerm(w)(ctx)
    ce = F.cross_entropy(z, y, reduction="none")
    total = ce.mean() + out["loss"]
    assert torch.allclose(total, (w[idx] * ce).sum() / w[idx].sum())
    with pytest.raises(Exception, match="all 0"):
        RowWeightedCETerm(np.zeros(3))


@pytest.mark.filterwarnings("ignore:estimate_target_priors")
def test_partial_target_gets_its_absent_class_weighted_near_zero(one_thread):
    source = _blobs(60, [0, 1, 2], 0.0, 0)
    target = _blobs(60, [0, 1], 0.5, 1).without_labels()
    m = Adapt(backbone="identity", method=None, domain_bn=False, label_shift="mlls+reweight", epochs=3, seed=0).fit(
        target, source=source)
    w = m.source_class_weights_
    assert w[2] < 0.1 * min(w[0], w[1])  # the class the target lacks stops counting
    assert m.prior_log_ratio_ is None and "reweighted by mlls" in m.selection_
    assert m.label_shift_.priors[2] < 0.05
    plain = Adapt(backbone="identity", method=None, label_shift="mlls", epochs=3, seed=0).fit(target, source=source)
    assert plain.prior_log_ratio_ is not None


def test_reweight_needs_a_deep_method():
    with pytest.raises(ConfigError, match=r"label_shift='mlls\+reweight' retrains a deep method.*'coral'"):
        Adapt(backbone="identity", method="coral", label_shift="mlls+reweight").validate()
