"""The contrastive losses against hand computations."""

import math

import numpy as np
import pytest
import torch

from transferkit.errors import ConfigError
from transferkit.pretrain.contrastive import LearnableTemperature, info_nce, nt_xent


def _nt_xent_by_hand(z1, z2, tau):
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        p = (i + n) % n2
        num = math.exp(z[i] @ z[p] / tau)
        den = sum(math.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n2


def test_nt_xent_equals_a_hand_computation_on_four_samples():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), temperature=0.5).item()
    assert got == pytest.approx(_nt_xent_by_hand(z1, z2, 0.5), rel=1e-9)
    # symmetric in the two views, and lowest when the views agree
    assert nt_xent(torch.tensor(z2), torch.tensor(z1), 0.5).item() == pytest.approx(got, rel=1e-9)
    assert nt_xent(torch.tensor(z1), torch.tensor(z1), 0.5).item() < got


def test_info_nce_is_symmetric_and_equals_a_hand_computation():
    rng = np.random.default_rng(1)
    a, b = torch.tensor(rng.normal(size=(5, 4))), torch.tensor(rng.normal(size=(5, 4)))
    got = info_nce(a, b, 2.0)
    assert info_nce(b, a, 2.0).item() == pytest.approx(got.item(), rel=1e-12)
    an, bn = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True), b.numpy() / np.linalg.norm(
        b.numpy(), axis=1, keepdims=True)
    logits = 2.0 * an @ bn.T

    def ce(m):
        return np.mean([-(m[i, i] - np.log(np.exp(m[i]).sum())) for i in range(len(m))])

    assert got.item() == pytest.approx(0.5 * (ce(logits) + ce(logits.T)), rel=1e-9)
    # one-hot soft targets are the hard ones
    assert info_nce(a, b, 2.0, targets=torch.eye(5, dtype=a.dtype)).item() == pytest.approx(got.item(), rel=1e-9)


def test_learnable_temperature_and_bad_input():
    t = LearnableTemperature(0.07)
    assert float(t()) == pytest.approx(1 / 0.07, rel=1e-5) and t.temperature == pytest.approx(0.07, rel=1e-5)
    with torch.no_grad():
        t.log_scale.fill_(20.0)
    assert float(t()) == 100.0
    with pytest.raises(ConfigError, match="same shape"):
        nt_xent(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ConfigError, match="at least 2"):
        info_nce(torch.zeros(1, 3), torch.zeros(1, 3))
