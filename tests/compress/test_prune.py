"""Pruning: counted MACs against closed forms, structured pruning to a MAC ratio, global magnitude pruning."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.backbones import create_backbone
from transferkit.compress.prune import MACS_TOLERANCE, count_macs_params, prune_structured, prune_unstructured
from transferkit.errors import ConfigError

pytest.importorskip("torch_pruning")


def _tiny(width=8):
    return create_backbone("tiny_cnn", num_classes=3, image_size=16, width=width, seed=0)


def _x(n=4, seed=0):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


class ConvLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)  # 10x10 -> 5x5
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=3)  # grouped: Cin/g = 2
        self.fc = nn.Linear(6 * 5 * 5, 4)

    def forward(self, x):
        return self.fc(self.dw(self.conv(x)).flatten(1))


def test_counted_macs_match_closed_form(one_thread):
    m = ConvLinear()
    macs, params = count_macs_params(m, torch.randn(5, 3, 10, 10))
    conv = 6 * 3 * 3 * 3 * 5 * 5  # Cout*Cin*k*k*Hout*Wout
    dw = 6 * (6 // 3) * 3 * 3 * 5 * 5
    fc = 150 * 4
    assert macs == conv + dw + fc  # per example: the batch of 5 is divided out
    assert params == (6 * 3 * 9 + 6) + (6 * 2 * 9 + 6) + (150 * 4 + 4)


def test_counted_macs_of_tiny_cnn(one_thread):
    m = _tiny()
    macs, params = count_macs_params(m, _x())
    w = 8  # stem 3->8 at 16x16, stage1 8->16 at 8x8, stage2 16->32 at 4x4, head 32->3
    assert macs == w * 3 * 9 * 256 + 2 * w * w * 9 * 64 + 4 * w * 2 * w * 9 * 16 + 4 * w * 3
    assert params == sum(p.numel() for p in m.parameters())
    assert m.training  # mode restored


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_prune_structured_to_half_macs(one_thread, importance):
    m, x = _tiny(), _x()
    y = torch.tensor([0, 1, 2, 0])
    before = copy.deepcopy(m.state_dict())
    pruned, rep = prune_structured(m, x, target_macs_ratio=0.5, importance=importance,
                                   calibration=(x, y) if importance == "taylor" else None)
    # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    # counted, not taken from the report
    macs0, _ = count_macs_params(m, x)
    macs1, params1 = count_macs_params(pruned, x)
    assert macs1 == rep["macs_after"] and macs0 == rep["macs_before"]
    assert macs1 / macs0 <= 0.5 + MACS_TOLERANCE
    assert macs1 / macs0 > 0.3  # one schedule step under the target, not everything removed
    assert params1 < sum(p.numel() for p in m.parameters())  # channels physically removed
    pruned.eval()
    with torch.no_grad():
        assert pruned(x).shape == (4, 3)
        assert pruned(_x(7, seed=1)).shape == (7, 3)
    assert pruned.head.fc.out_features == 3 and pruned.spec.feature_dim == pruned.head.fc.in_features
    names = [n for _, ns in pruned.layer_groups() for n in ns]
    assert sorted(names) == sorted(n for n, _ in pruned.named_parameters())


def test_prune_to_params_ratio(one_thread):
    m, x = _tiny(), _x()
    pruned, rep = prune_structured(m, x, target_params_ratio=0.5)
    assert rep["target_kind"] == "params"
    assert count_macs_params(pruned, x)[1] / count_macs_params(m, x)[1] <= 0.5 + MACS_TOLERANCE


def test_pruned_model_fine_tunes_with_trainer(one_thread):
    from transferkit.data import DomainDataset
    from transferkit.train import Trainer

    rng = np.random.default_rng(0)
    ds = DomainDataset(rng.random((24, 16, 16), dtype=np.float32), rng.integers(0, 3, 24), "x", "image",
                       classes=["a", "b", "c"])
    pruned, _ = prune_structured(_tiny(), _x(), target_macs_ratio=0.5)
    params = dict(pruned.named_parameters())
    groups = [{"params": [params[n] for n in ns], "lr": 1e-2, "name": g} for g, ns in pruned.layer_groups()]
    w0 = pruned.backbone.stem[0].weight.detach().clone()
    Trainer(pruned, groups, epochs=1, batch_size=8, progress=False, device="cpu", checkpoint=False).fit(ds)
    assert not torch.equal(w0, pruned.backbone.stem[0].weight)


def test_prune_structured_bad_input(one_thread):
    m, x = _tiny(), _x()
    with pytest.raises(ConfigError, match="importance='taylor' needs calibration"):
        prune_structured(m, x, importance="taylor")
    with pytest.raises(ConfigError, match="importance='l1' is not valid"):
        prune_structured(m, x, importance="l1")
    with pytest.raises(ConfigError, match="not both"):
        prune_structured(m, x, target_macs_ratio=0.5, target_params_ratio=0.5)
    with pytest.raises(ConfigError, match="target_macs_ratio must be > 0"):
        prune_structured(m, x, target_macs_ratio=0.0)
    with pytest.raises(ConfigError,
                       match=r"output shape from \(4, 3\) to .* classifier layer in ignored_layers"):
        prune_structured(m, x, ignored_layers=[])
    with pytest.raises(ConfigError, match="was not reached"):
        prune_structured(m, x, target_macs_ratio=0.01, max_channel_ratio=0.2, iterative_steps=2)


def test_prune_unstructured_zeroes_smallest(one_thread):
    m = _tiny(width=8)
    layers = [mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    w0 = [mod.weight.detach().abs().clone() for mod in layers]
    bias0 = m.head.fc.bias.detach().clone()
    achieved = prune_unstructured(m, sparsity=0.5)
    assert abs(achieved - 0.5) <= 0.01
    zeroed = torch.cat([w[mod.weight == 0] for w, mod in zip(w0, layers)])
    kept = torch.cat([w[mod.weight != 0] for w, mod in zip(w0, layers)])
    assert zeroed.max() <= kept.min()  # global: one threshold across layers
    # permanent: plain parameters, no mask or forward hook left
    assert all(not hasattr(mod, "weight_mask") and not mod._forward_pre_hooks for mod in layers)
    assert torch.equal(m.head.fc.bias, bias0)
    # not per-layer: the layers end with different sparsities
    per_layer = [float((mod.weight == 0).float().mean()) for mod in layers]
    assert max(per_layer) - min(per_layer) > 0.01
    with pytest.raises(ConfigError, match="sparsity must be < 1"):
        prune_unstructured(m, sparsity=1.0)


def _dead_unit_mlp():
    """Hidden unit 0 has the largest incoming weights but no outgoing ones: large by magnitude,
    useless to the loss (its Taylor score W * dL/dW is exactly 0)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        m[0].weight[0] = 10.0
        m[0].bias[0] = 1.0
        m[2].weight[:, 0] = 0.0
    return m


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_importance_picks_the_expected_channel(one_thread, importance):
    m, x = _dead_unit_mlp(), torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(1))
    pruned, rep = prune_structured(m, x, target_params_ratio=0.9, importance=importance, calibration=(x, y),
                                   iterative_steps=8)
    assert pruned[0].out_features == 7 and pruned[2].out_features == 2  # one unit removed, head kept
    dead_kept = bool((pruned[0].weight == 10.0).all(dim=1).any())
    # magnitude keeps the big dead unit; Taylor removes it (and only it)
    assert dead_kept == (importance == "magnitude")
    if importance == "taylor":
        with torch.no_grad():
            assert torch.allclose(pruned(x), m(x), atol=1e-6)  # removing a unit with no outgoing weight changes nothing
