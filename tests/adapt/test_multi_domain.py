"""The shared pieces of multi-source adaptation and domain generalisation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferkit.adapt.multi_domain import DomainTerm, check_sources, per_domain_risks, pool_sources
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError, DataError


def _ds(n=10, d=4, name="s", classes=("a", "b"), modality="tabular", labeled=True):
    rng = np.random.default_rng(n + d)
    y = rng.integers(0, len(classes), n) if labeled else np.full(n, -1)
    return DomainDataset(rng.normal(size=(n, d)).astype(np.float32), y, name, modality, classes=list(classes))


def test_check_sources_rejects_mismatches_in_one_line():
    check_sources([_ds(), _ds(12)])
    with pytest.raises(DataError, match=r"sources\[1\] \('wide'\) has features of shape \(5,\).*\(4,\)") as e:
        check_sources([_ds(), _ds(d=5, name="wide")])
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="same class names"):
        check_sources([_ds(), _ds(classes=("a", "c"))])
    with pytest.raises(DataError, match="has no labels"):
        check_sources([_ds(), _ds(labeled=False)])
    with pytest.raises(ConfigError, match="empty"):
        check_sources([])
    with pytest.raises(ConfigError, match="list"):
        check_sources("mnist")


def test_pool_sources_marks_each_row_with_its_source():
    X, y, d = pool_sources([np.ones((3, 2)), np.zeros((2, 2))], [np.array([0, -1, 1]), np.array([1, 0])])
    assert X.shape == (4, 2) and y.tolist() == [0, 1, 1, 0] and d.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match="feature"):
        pool_sources([np.ones((3, 2)), np.ones((3, 3))], [np.zeros(3, int), np.zeros(3, int)])


def test_per_domain_risks_equal_the_mean_loss_of_each_domain():
    torch.manual_seed(0)
    z, y = torch.randn(7, 3), torch.randint(0, 3, (7,))
    dom = torch.tensor([0, 2, 0, 2, 2, 0, 0])
    r, present = per_domain_risks(z, y, dom, 4)
    for k in (0, 2):
        m = dom == k
        assert torch.allclose(r[k], F.cross_entropy(z[m], y[m]))
    assert present.tolist() == [True, False, True, False] and r[1] == 0


def test_domain_term_reads_the_batch_domains_by_index():
    t = DomainTerm(np.array([0, 1, 1, 2]))
    ctx = type("C", (), {"indices": torch.tensor([3, 0]), "logits": torch.zeros(2, 2)})()
    assert t.batch_domains(ctx).tolist() == [2, 0] and t.n_domains == 3
    ctx.indices = torch.tensor([4])
    with pytest.raises(DataError, match="outside"):
        t.batch_domains(ctx)
