"""Multi-task weightings: closed forms (PCGrad, uncertainty, DWA, GradNorm), the gradient
surrogate, and every registered weighting training a tiny two-task model."""

import importlib.util
import math

import numpy as np
import pytest
import torch

from transferkit._registry import available
from transferkit.errors import ConfigError, MissingDependencyError
from transferkit.pretrain.weighting import (
    DWAWeighting,
    GradNormWeighting,
    UncertaintyWeighting,
    WeightingInput,
    dwa_weights,
    make_weighting,
    pcgrad_combine,
    surrogate_loss,
    task_gradients,
)

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_TORCHJD = importlib.util.find_spec("torchjd") is not None


# ------------------------------------------------------------------------------------ PCGrad
def test_pcgrad_removes_the_conflicting_component_closed_form():
    g1, g2 = torch.tensor([1.0, 1.0]), torch.tensor([-1.0, 0.5])  # g1.g2 = -0.5 < 0
    G = torch.stack([g1, g2])
    want1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    want2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    got = pcgrad_combine(G, [0, 1])
    assert torch.allclose(got, want1 + want2, atol=1e-7)
    # each projected gradient is orthogonal to the other task's: the conflict is gone
    assert abs(float(want1 @ g2)) < 1e-7 and abs(float(want2 @ g1)) < 1e-7
    assert torch.allclose(pcgrad_combine(G, [0, 1], reduction="mean"), (want1 + want2) / 2)


def test_pcgrad_leaves_non_conflicting_gradients_unchanged():
    G = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, 0.0]])  # dot = 0.5 >= 0
    assert torch.equal(pcgrad_combine(G, [1, 0]), G.sum(0))


def test_pcgrad_order_matters_with_three_tasks_and_is_checked():
    G = torch.tensor([[1.0, 0.0], [-1.0, 0.2], [-0.2, -1.0]])
    a = pcgrad_combine(G, [[1, 2], [0, 2], [0, 1]])
    b = pcgrad_combine(G, [[2, 1], [2, 0], [1, 0]])
    assert not torch.allclose(a, b)  # projections do not commute, hence the random order
    with pytest.raises(ConfigError, match=r"order=\[0, 0\] must be a permutation of the tasks 0..1"):
        pcgrad_combine(G[:2], [0, 0])


def test_pcgrad_weighting_draws_a_seeded_order_per_step():
    w = make_weighting("pcgrad", {"seed": 3})
    w.setup(["a", "b", "c"], ["classification"] * 3)
    assert w.order(5) == w.order(5) and sorted(w.order(5)[0]) == [0, 1, 2]
    assert any(w.order(s) != w.order(5) for s in range(6, 12))


# ----------------------------------------------------------------------- gradient surrogate
def test_surrogate_puts_exactly_the_combined_gradient_in_grad():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    g = torch.randn(10)
    surrogate_loss(ps, g).backward()
    assert torch.equal(torch.cat([p.grad.reshape(-1) for p in ps]), g)


def test_task_gradients_equal_each_losss_own_backward():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    y = lin(x)
    L = torch.stack([y[:, 0].pow(2).mean(), (y[:, 1] * 3).mean()])
    G = task_gradients(L, list(lin.parameters()))
    for k in range(2):
        lin.zero_grad()
        out = lin(x)
        [out[:, 0].pow(2).mean(), (out[:, 1] * 3).mean()][k].backward()
        assert torch.allclose(G[k], torch.cat([p.grad.reshape(-1) for p in lin.parameters()]))


# ----------------------------------------------------------------------------- uncertainty
def test_uncertainty_log_variance_descends_to_the_closed_form_optimum():
    """For fixed L the minimiser of c exp(-s) L + s/2 is s* = log(2 c L): log L for a regression
    task (c = 1/2), log 2L for a classification task (c = 1)."""
    w = UncertaintyWeighting()
    w.setup(["cls", "reg"], ["classification", "regression"])
    L = torch.tensor([0.7, 3.0])
    opt = torch.optim.SGD(w.parameters(), lr=0.5)
    for _ in range(400):
        opt.zero_grad()
        loss, logs = w.combine(WeightingInput(L))
        loss.backward()
        opt.step()
    assert torch.allclose(w.log_vars.detach(), torch.log(torch.tensor([2 * 0.7, 3.0])), atol=1e-4)
    assert logs["log_var_reg"] == pytest.approx(math.log(3.0), abs=1e-3)


# ----------------------------------------------------------------------------------- DWA
def test_dwa_weights_closed_form_and_the_two_epoch_warm_up():
    prev, prev2 = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([2.0, 2.0], dtype=torch.float64)
    e = np.exp(np.array([0.5, 1.0]) / 2)
    assert np.allclose(dwa_weights(prev, prev2).numpy(), 2 * e / e.sum())
    e = np.exp(np.array([1 / 2, 2 / 1]) / 2)  # r = L(t-1) / L(t-2) of epochs 1 and 0 below
    w = DWAWeighting()
    w.setup(["a", "b"], ["classification", "regression"])
    seen = []
    for epoch, losses in enumerate([(2.0, 1.0), (1.0, 2.0), (1.0, 1.0)]):
        for _ in range(3):  # three steps per epoch with the same losses: the epoch mean is that value
            _, logs = w.combine(WeightingInput(torch.tensor(losses), epoch=epoch))
        seen.append((float(logs["w_a"]), float(logs["w_b"])))
    assert seen[0] == seen[1] == (1.0, 1.0)
    assert np.allclose(seen[2], 2 * e / e.sum())
    state = w.state_dict()  # a resumed fit continues with the same means
    w2 = DWAWeighting()
    w2.setup(["a", "b"], ["classification", "regression"])
    w2.load_state_dict(state)
    assert torch.equal(w2.current_weights(), w.current_weights())


# ------------------------------------------------------------------------------- GradNorm
def test_gradnorm_weight_gradient_matches_the_closed_form():
    """L_k = c_k ||W||^2: grad_W L_k = 2 c_k W, so n_k = 2 c_k ||W||; at the first step r_k = 1 and
    the target is mean_k(w_k n_k); dL_grad/dw_k = sign(w_k n_k - target) n_k. The network's
    gradient is sum_k w_k grad L_k (the weights held constant)."""
    W = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [0.5, -1.0]]))
    w = GradNormWeighting(alpha=1.5)
    w.setup(["a", "b"], ["regression", "regression"])
    with torch.no_grad():
        w.task_weights.copy_(torch.tensor([1.2, 0.8]))
    c = torch.tensor([1.0, 3.0])
    L = c * W.pow(2).sum()
    loss, logs = w.combine(WeightingInput(L, [W], W))
    loss.backward()
    n = 2 * c * torch.linalg.vector_norm(W.detach())
    G = w.task_weights.detach() * n
    target = G.mean()  # r = 1 at the first step
    assert torch.allclose(w.task_weights.grad, torch.sign(G - target) * n)
    assert torch.allclose(W.grad, (w.task_weights.detach() * 2 * c).sum() * W.detach())
    # the value is the network's loss
    assert float(loss.detach()) == pytest.approx(float((w.task_weights.detach() * L.detach()).sum()))
    assert float(logs["gradnorm_loss"]) == pytest.approx(float((G - target).abs().sum()))
    w.after_optimizer_step()
    assert float(w.task_weights.detach().sum()) == pytest.approx(2.0)


def test_gradnorm_targets_follow_the_relative_training_rates():
    """Second step: task a's loss doubled since the first, b's unchanged, so L/L(0) = (2, 1),
    r = (4/3, 2/3) and the targets are mean(G) r^alpha."""
    W = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [0.5, -1.0]]))
    w = GradNormWeighting(alpha=1.5)
    w.setup(["a", "b"], ["regression", "regression"])
    w.combine(WeightingInput(torch.tensor([1.0, 3.0]) * W.pow(2).sum(), [W], W))  # L(0)
    with torch.no_grad():
        w.task_weights.copy_(torch.tensor([1.2, 0.8]))
    c = torch.tensor([2.0, 3.0])
    _, logs = w.combine(WeightingInput(c * W.pow(2).sum(), [W], W))
    G = w.task_weights.detach() * 2 * c * torch.linalg.vector_norm(W.detach())
    target = G.mean() * torch.tensor([4 / 3, 2 / 3]) ** 1.5
    assert float(logs["gradnorm_loss"]) == pytest.approx(float((G - target).abs().sum()), rel=1e-6)


def test_gradnorm_without_a_shared_layer_says_what_to_do():
    w = GradNormWeighting()
    w.setup(["a", "b"], ["regression", "regression"])
    with pytest.raises(ConfigError, match="gradnorm' needs a trainable shared layer.*unfreeze"):
        w.combine(WeightingInput(torch.tensor([1.0, 2.0], requires_grad=True)))


# ----------------------------------------------------------------------------------- names
def test_unknown_names_and_options_suggest_the_nearest():
    with pytest.raises(ConfigError, match=r"weighting='pcgard' is not a multi-task weighting. Did you mean 'pcgrad'"):
        make_weighting("pcgard")
    with pytest.raises(ConfigError, match=r"weighting_options has an unknown option 'alpah'.*Did you mean 'alpha'"):
        make_weighting("gradnorm", {"alpah": 1})
    with pytest.raises(ConfigError, match=r"weighting_options.temperature must be >= 0.001"):
        make_weighting("dwa", {"temperature": 0})
    assert {"equal", "uncertainty", "dwa", "gradnorm", "pcgrad", "upgrad"} <= set(available("mtl_weighting"))


def test_upgrad_without_torchjd_is_a_one_line_error_at_use_time(monkeypatch):
    import sys
    import types

    assert "upgrad" in available("mtl_weighting")  # registered whether or not the package is there
    monkeypatch.setitem(sys.modules, "torchjd", None)  # as if not installed: importing it raises
    monkeypatch.setitem(sys.modules, "torchjd.aggregation", None)
    with pytest.raises(MissingDependencyError, match=r"^mtl_weighting 'upgrad' needs the optional package 'torchjd' "
                                                     r"\(.*\). Install it with: pip install 'transferkit\[mtl\]'$"):
        make_weighting("upgrad")
    # torchjd >= 0.12 without its QP solver: UPGrad() itself raises ImportError
    fake = types.ModuleType("torchjd.aggregation")

    def _no_solver():
        raise ImportError("QuadprogProjector requires ['qpsolvers', 'quadprog'] to be installed.")

    fake.UPGrad = _no_solver
    monkeypatch.setitem(sys.modules, "torchjd", types.ModuleType("torchjd"))
    monkeypatch.setitem(sys.modules, "torchjd.aggregation", fake)
    with pytest.raises(MissingDependencyError, match=r"needs torchjd's QP solver.*pip install qpsolvers quadprog"):
        make_weighting("upgrad")


@pytest.mark.skipif(not HAS_TORCHJD, reason="torchjd is not installed")
def test_upgrad_is_torchjds_aggregator():
    from torchjd.aggregation import UPGrad

    G = torch.tensor([[1.0, 1.0], [-1.0, 0.5]])
    w = make_weighting("upgrad")
    w.setup(["a", "b"], ["classification"] * 2)
    assert torch.allclose(w.aggregate(G, WeightingInput(G.sum(1))), UPGrad()(G))


# ---------------------------------------------------------------- every weighting trains
WEIGHTINGS = [n for n in available("mtl_weighting") if n != "upgrad" or HAS_TORCHJD]


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_every_weighting_trains_a_tiny_two_task_model(name):
    from transferkit.backbones import create_backbone
    from transferkit.data import DomainDataset
    from transferkit.pretrain.multitask import MultiTaskObjective
    from transferkit.train import Trainer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6)).astype(np.float32)
    ds = DomainDataset(X, (X[:, 0] > 0).astype(np.int64), "toy", "tabular", classes=["neg", "pos"],
                       meta={"attributes": {"y": 3.0 * X[:, 1] + 1.0}})
    torch.manual_seed(0)
    enc = create_backbone("tiny_mlp", pretrained=False, in_features=6)
    obj = MultiTaskObjective({"label": "classification", "y": "regression"}, ds, enc.feature_dim, weighting=name)
    before = [p.detach().clone() for p in enc.parameters()]
    tr = Trainer(enc, [{"params": list(enc.parameters()) + list(obj.parameters()), "lr": 1e-2}], epochs=3,
                 batch_size=16, progress=False, device="cpu", objective=obj)
    tr.fit(ds)
    assert len(tr.history) == 3
    for row in tr.history:
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["loss_label"]) and math.isfinite(row["loss_y"])
    assert "train_accuracy" in tr.history[-1]  # the primary head is a classification head on the labels
    assert any(not torch.equal(a, b) for a, b in zip(before, enc.parameters()))  # the shared encoder trained
