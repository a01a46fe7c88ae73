"""Deep domain-adaptation losses: the registry-driven contract, then method-specific properties."""

import inspect
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferkit._registry import available, get
from transferkit.adapt.deep import (
    DANLoss,
    DANNLoss,
    DeepCORALLoss,
    DeepJDOTLoss,
    EntropyLoss,
    JANLoss,
    KLAlignLoss,
    MCCLoss,
    cdan_entropy_weights,
    mmd_from_kernels,
)
from transferkit.errors import ConfigError, DataError
from transferkit.nn.grl import GradientReversal, WarmStartSchedule, dann_lambda, grad_reverse
from transferkit.nn.kernels import bandwidth_heuristic, gaussian_kernel_matrix, pooled_kernel_blocks

D, K = 6, 3
NAMES = available("da_loss")
SOURCE_FREE = {"entropy", "mcc"}  # losses on target predictions only


def make(name, **kw):
    """Build a registered loss with tiny discriminators, passing only the arguments it takes."""
    cls = get("da_loss", name)
    params = inspect.signature(cls).parameters
    base = {"in_features": D, "num_classes": K, "weight": 1.0, "hidden": (16,), "randomized_dim": 32}
    return cls(**{k: v for k, v in {**base, **kw}.items() if k in params})


def batch(ns=8, nt=5, dtype=torch.float32, seed=0, shift=0.5):
    """Leaf features, logits from a fixed linear head (so logit-only losses reach the features)."""
    g = torch.Generator().manual_seed(seed)
    f_s = torch.randn(ns, D, generator=g, dtype=dtype).requires_grad_()
    f_t = (torch.randn(nt, D, generator=g, dtype=dtype) + shift).requires_grad_()
    w = torch.randn(D, K, generator=g, dtype=dtype)
    y_s = torch.randint(0, K, (ns,), generator=g)
    return f_s, f_t, f_s @ w, f_t @ w, y_s


def call(loss, f_s, f_t, z_s, z_t, y_s):
    return loss(f_s, f_t, logits_s=z_s, logits_t=z_t, y_s=y_s)


# ---------------------------------------------------------------------------------- contract
def test_registry_lists_every_loss():
    assert set(NAMES) >= {"dan", "jan", "dann", "cdan", "cdan_e", "deep_coral", "mcc", "entropy", "deepjdot",
                          "kl_align"}
    with pytest.raises(ConfigError, match="Did you mean 'dann'"):
        get("da_loss", "dannn")


@pytest.mark.parametrize("name", NAMES)
def test_contract_finite_scalar_backward_unequal_batches(name):
    loss = make(name)
    loss.set_progress(0.5)  # adversarial losses: a non-zero reversal coefficient
    f_s, f_t, z_s, z_t, y_s = batch(ns=8, nt=5)
    out = call(loss, f_s, f_t, z_s, z_t, y_s)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    assert loss.name in out and all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in out.values())
    assert all(not v.requires_grad for k, v in out.items() if k != "loss"), "logging values must be detached"
    out["loss"].backward()
    assert f_t.grad is not None and torch.isfinite(f_t.grad).all() and f_t.grad.abs().sum() > 0
    if name not in SOURCE_FREE:
        assert f_s.grad is not None and torch.isfinite(f_s.grad).all() and f_s.grad.abs().sum() > 0
    for pname, p in loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    if any(True for _ in loss.parameters()):
        assert sum(p.grad.abs().sum() for p in loss.parameters()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_contract_same_keys_and_types_in_train_and_eval(name):
    loss = make(name)
    loss.set_progress(0.3)
    args = batch()
    train = call(loss.train(), *args)
    with torch.no_grad():
        ev = call(loss.eval(), *args)
    assert train.keys() == ev.keys()
    for k in train:
        assert type(train[k]) is type(ev[k]) and train[k].shape == ev[k].shape and train[k].dtype == ev[k].dtype, k


@pytest.mark.parametrize("name", NAMES)
def test_contract_to_moves_state(name):
    loss = make(name)
    assert "progress" in loss.state_dict()
    loss.set_progress(0.25)
    loss.to(torch.float64).to("cpu")
    for t in [*loss.parameters(), *loss.buffers()]:
        if t.is_floating_point():
            assert t.dtype == torch.float64 and t.device.type == "cpu"
    assert float(loss.progress) == 0.25
    out = call(loss, *batch(dtype=torch.float64))
    assert out["loss"].dtype == torch.float64 and torch.isfinite(out["loss"])
    # a fresh instance restores the state (buffers included) from a checkpoint
    other = make(name).to(torch.float64)
    other.load_state_dict(loss.state_dict())
    assert float(other.progress) == 0.25


@pytest.mark.parametrize("name", [n for n in NAMES if get("da_loss", n).needs_logits])
def test_contract_missing_logits_is_an_actionable_error(name):
    f_s, f_t, *_ = batch()
    with pytest.raises(DataError, match="needs logits_[st]; call loss"):
        make(name)(f_s, f_t, y_s=torch.zeros(8, dtype=torch.long))


@pytest.mark.parametrize("name", NAMES)
def test_contract_feature_mismatch_is_an_actionable_error(name):
    f_s, f_t, z_s, z_t, y_s = batch()
    with pytest.raises(DataError, match="differ in shape"):
        call(make(name), f_s, f_t[:, :4], z_s, z_t, y_s)


def test_set_progress_validates_and_weight_scales():
    loss = DeepCORALLoss(weight=3.0)
    with pytest.raises(ConfigError, match="p must be <= 1"):
        loss.set_progress(1.5)
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        DeepCORALLoss(weight=-1)
    out = loss(*batch()[:2])
    assert torch.allclose(out["loss"], 3.0 * out["deep_coral"])


# ---------------------------------------------------------------------------------- kernels / MMD
def _np_mmd_unbiased(x, y, mults):
    z = np.vstack([x, y])
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    s2 = np.median(d2[np.triu_indices(len(z), 1)])
    k = np.mean([np.exp(-d2 / (2 * m * s2)) for m in mults], axis=0)
    m, n = len(x), len(y)
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_dan_unbiased_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 4)), rng.normal(0.7, 1.3, size=(6, 4))
    got = DANLoss(estimator="unbiased")(torch.tensor(x), torch.tensor(y))["dan"].item()
    assert got == pytest.approx(_np_mmd_unbiased(x, y, (0.25, 0.5, 1, 2, 4)), rel=1e-10)


def test_dan_zero_on_identical_and_larger_when_shifted():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    x2 = torch.randn(64, 5, generator=g)  # same distribution, other sample
    shifted = torch.randn(64, 5, generator=g) + 1.5
    assert abs(DANLoss(estimator="biased")(x, x.clone())["dan"].item()) < 1e-6
    for est in ("biased", "unbiased", "linear"):
        same = DANLoss(estimator=est)(x, x2)["dan"].item()
        far = DANLoss(estimator=est)(x, shifted)["dan"].item()
        assert far > 0.1 and abs(same) < far / 4, (est, same, far)


def test_dan_multi_layer_is_sum_of_layers():
    f_s, f_t, z_s, z_t, _ = batch(ns=10, nt=7)
    loss = DANLoss()
    both = loss([f_s, z_s], [f_t, z_t])["dan"]
    assert torch.allclose(both, loss(f_s, f_t)["dan"] + loss(z_s, z_t)["dan"])
    with pytest.raises(DataError, match="takes one feature tensor"):
        DeepCORALLoss()([f_s, z_s], [f_t, z_t])


def test_linear_mmd_uses_quad_tuples():
    k = torch.arange(16.0).reshape(4, 4)
    # pairs (0,1), (2,3): kss[a,b] + ktt[a,b] - kst[a,b] - kst[b,a] with all blocks = k
    expect = ((k[0, 1] + k[0, 1] - k[0, 1] - k[1, 0]) + (k[2, 3] + k[2, 3] - k[2, 3] - k[3, 2])) / 2
    assert mmd_from_kernels(k, k, k, "linear") == expect


def test_kernel_bandwidth_heuristics():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    d2 = torch.tensor([[0.0, 1, 9], [1, 0, 4], [9, 4, 0]])
    assert bandwidth_heuristic(d2, "median") == 4.0
    assert bandwidth_heuristic(d2, "mean") == pytest.approx(14 / 3)
    k = gaussian_kernel_matrix(x, multipliers=(1.0,))
    assert torch.allclose(k, torch.exp(-d2 / 8.0))
    kxx, kyy, kxy = pooled_kernel_blocks(x[:2], x[2:], multipliers=(1.0,))
    assert torch.allclose(kxy, torch.exp(-torch.tensor([[9.0], [4.0]]) / 8.0))
    assert bandwidth_heuristic(torch.zeros(3, 3)) == 1.0  # all points equal: finite kernel
    with pytest.raises(ConfigError, match="multipliers"):
        DANLoss(multipliers=())
    with pytest.raises(ConfigError, match="multipliers must be > 0"):
        JANLoss(multipliers=(1.0, -2.0))


def test_jan_sees_joint_shift_that_marginal_mmd_misses():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    f = torch.randn(40, 4, generator=g) + 3.0 * y[:, None]  # features depend on the class
    z_s = 8.0 * F.one_hot(y, 2).float()
    z_t = 8.0 * F.one_hot(1 - y, 2).float()  # same features, same label marginal, swapped labels
    jan = JANLoss(estimator="biased")
    assert abs(jan(f, f.clone(), logits_s=z_s, logits_t=z_s.clone())["jan"].item()) < 1e-6
    assert abs(DANLoss(estimator="biased")(f, f.clone())["dan"].item()) < 1e-6
    assert abs(DANLoss(estimator="biased")(z_s, z_t)["dan"].item()) < 1e-6
    assert jan(f, f.clone(), logits_s=z_s, logits_t=z_t)["jan"].item() > 0.2


# ---------------------------------------------------------------------------------- CORAL / KL
def test_deep_coral_closed_formula_and_translation_invariance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(9, 5)) @ rng.normal(size=(5, 5))
    expect = ((np.cov(x, rowvar=False) - np.cov(y, rowvar=False)) ** 2).sum() / (4 * 5**2)
    got = DeepCORALLoss()(torch.tensor(x), torch.tensor(y))["deep_coral"].item()
    assert got == pytest.approx(expect, rel=1e-10)
    xt = torch.tensor(x)
    assert DeepCORALLoss()(xt, xt + 3.0)["deep_coral"].item() < 1e-12  # same covariance, other mean


def test_kl_align_zero_on_identical_and_matches_closed_form():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 3)), rng.normal(0.5, 2.0, size=(25, 3))
    xt, yt = torch.tensor(x), torch.tensor(y)
    for cov in ("diag", "full"):
        for sym in (False, True):
            loss = KLAlignLoss(covariance=cov, symmetric=sym)
            assert abs(loss(xt, xt.clone())["kl_align"].item()) < 1e-10
            assert loss(xt, yt)["kl_align"].item() > 0.5
    r = 1e-3
    s0, s1 = np.cov(x, rowvar=False) + r * np.eye(3), np.cov(y, rowvar=False) + r * np.eye(3)
    dm = y.mean(0) - x.mean(0)
    inv = np.linalg.inv(s1)
    expect = 0.5 * (np.trace(inv @ s0) + dm @ inv @ dm - 3 + np.linalg.slogdet(s1)[1] - np.linalg.slogdet(s0)[1])
    assert KLAlignLoss(covariance="full", ridge=r)(xt, yt)["kl_align"].item() == pytest.approx(expect, rel=1e-9)
    # diagonal KL is exactly the full KL of the diagonal fits
    d0, d1 = np.diag(np.diag(s0)), np.diag(np.diag(s1))
    i1 = np.linalg.inv(d1)
    expect_d = 0.5 * (np.trace(i1 @ d0) + dm @ i1 @ dm - 3 + np.log(np.diag(d1)).sum() - np.log(np.diag(d0)).sum())
    assert KLAlignLoss(covariance="diag", ridge=r)(xt, yt)["kl_align"].item() == pytest.approx(expect_d, rel=1e-9)


# ---------------------------------------------------------------------------------- GRL / DANN
def test_gradient_reversal_flips_sign_with_coefficient():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)
    x.grad = None
    (GradientReversal(2.0)(x) * w).sum().backward()
    assert torch.allclose(x.grad, -2.0 * w)


def test_dann_schedule_values():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1) and dann_lambda(1.0) > 0.9999
    assert 0 < dann_lambda(0.1) < dann_lambda(0.5) < dann_lambda(1.0)
    assert WarmStartSchedule(hi=0.5)(1.0) == pytest.approx(0.5 * dann_lambda(1.0))
    assert WarmStartSchedule(hi=0.5, kind="constant")(0.0) == 0.5
    loss = DANNLoss(in_features=D, hidden=(8,))
    for p in (0.0, 0.4, 1.0):
        loss.set_progress(p)
        assert call(loss, *batch())["grl_coeff"].item() == pytest.approx(dann_lambda(p), abs=1e-6)


def test_dann_feature_gradient_is_reversed_discriminator_gradient():
    f_s, f_t, *_ = batch()
    loss = DANNLoss(in_features=D, hidden=(8,), dropout=0.0, schedule="constant", max_coeff=0.7)
    loss(f_s, f_t)["loss"].backward()
    g_rev = f_s.grad.clone()
    f_s.grad = None
    plain = DANNLoss(in_features=D, hidden=(8,), dropout=0.0, schedule="constant", max_coeff=0.7)
    plain.load_state_dict(loss.state_dict())
    d = plain.discriminator(torch.cat([f_s, f_t]))
    (0.5 * (F.binary_cross_entropy_with_logits(d[:8], torch.ones(8))
            + F.binary_cross_entropy_with_logits(d[8:], torch.zeros(5)))).backward()
    assert torch.allclose(g_rev, -0.7 * f_s.grad, atol=1e-6)


def test_dann_warns_when_progress_is_never_set():
    loss = DANNLoss(in_features=D, hidden=(8,))
    with pytest.warns(UserWarning, match="set_progress"):
        loss(*batch()[:2])
    loss2 = DANNLoss(in_features=D, hidden=(8,))
    loss2.set_progress(0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss2(*batch()[:2])
    with pytest.raises(ConfigError, match="needs in_features"):
        DANNLoss()


def _toy(n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) * 0.5
    x[:, 0] += torch.where(y == 1, 1.5, -1.5)
    x[:, 1] += shift  # target: shifted along the axis that does not matter for the label
    return x, y


def _train_dann(adapt: bool, steps=300, seed=0):
    torch.manual_seed(seed)
    Xs, ys = _toy(400, 0.0, 1)
    Xt, _ = _toy(400, 3.0, 2)
    feat = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 8))
    head = nn.Linear(8, 2)
    da = DANNLoss(in_features=8, hidden=(32,), dropout=0.0)
    # beta1 = 0.5: the usual Adam setting for adversarial games, which damps oscillation
    opt = torch.optim.Adam([*feat.parameters(), *head.parameters(), *da.parameters()], lr=5e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        i, j = torch.randint(400, (64,), generator=g), torch.randint(400, (64,), generator=g)
        fs, ft = feat(Xs[i]), feat(Xt[j])
        da.set_progress(step / steps)
        out = da(fs, ft) if adapt else da(fs.detach(), ft.detach())
        loss = F.cross_entropy(head(fs), ys[i]) + out["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    da.eval()
    with torch.no_grad():
        fs, ft = feat(Xs), feat(Xt)
        return da(fs, ft)["domain_acc"].item(), (head(fs).argmax(1) == ys).float().mean().item()


def test_dann_toy_training_confuses_discriminator_and_keeps_source_accuracy():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread hand-offs cost more than the math on a busy machine
    try:
        acc_dom, acc_src = _train_dann(adapt=True)
        base_dom, base_src = _train_dann(adapt=False)  # same discriminator, features not adapted
    finally:
        torch.set_num_threads(threads)
    assert base_dom > 0.9, base_dom
    assert abs(acc_dom - 0.5) < 0.15, acc_dom
    assert acc_src > 0.95 and base_src > 0.95


# ---------------------------------------------------------------------------------- CDAN
def test_cdan_entropy_weights():
    w = cdan_entropy_weights(torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(w, torch.tensor([1.25, 2.0]))


def test_cdan_e_reduces_to_cdan_for_equal_entropies_and_differs_otherwise():
    f_s, f_t, _, _, _ = batch()
    perm_s = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0],
                           [0, 2.0, 0]])
    z_t = perm_s[:5].flip(1)
    losses = []
    for name in ("cdan", "cdan_e"):
        torch.manual_seed(0)
        loss = make(name, dropout=0.0, schedule="constant")
        losses.append(loss(f_s, f_t, logits_s=perm_s, logits_t=z_t)["loss"].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    z_t2 = z_t.clone()
    z_t2[0] = 0.0  # one uncertain target prediction gets a smaller weight
    out = []
    for name in ("cdan", "cdan_e"):
        torch.manual_seed(0)
        loss = make(name, dropout=0.0, schedule="constant")
        out.append(loss(f_s, f_t, logits_s=perm_s, logits_t=z_t2)["loss"].item())
    assert out[0] != pytest.approx(out[1], rel=1e-4)


def test_cdan_multilinear_maps():
    loss = make("cdan", randomized=False)
    f, g = torch.randn(4, D), torch.softmax(torch.randn(4, K), 1)
    h = loss.multilinear_map(f, g)
    assert h.shape == (4, K * D)
    assert torch.allclose(h.view(4, K, D), g[:, :, None] * f[:, None, :])
    assert make("cdan", in_features=100, num_classes=50).randomized  # 5000 > 4096: auto-randomized
    r = make("cdan", randomized=True, randomized_dim=4096)
    hr = r.multilinear_map(f, g)
    # E[<T(f,g), T(f',g')>] = <f,f'><g,g'>: the randomized map preserves the outer-product geometry
    exact = (f @ f.T) * (g @ g.T)
    assert hr.shape == (4, 4096)
    assert torch.allclose(hr @ hr.T, exact, atol=0.35 * exact.abs().max())


# ---------------------------------------------------------------------------------- MCC / entropy
def test_entropy_loss_values():
    one_hot = 100.0 * torch.eye(K)[[0, 1, 2, 1]]
    f = torch.randn(4, D)
    assert EntropyLoss()(f, f, logits_t=one_hot)["entropy"].item() < 1e-6
    assert EntropyLoss()(f, f, logits_t=torch.zeros(4, K))["entropy"].item() == pytest.approx(math.log(K))


def test_mcc_zero_for_confident_and_max_for_uniform_predictions():
    f = torch.randn(6, D)
    confident = 100.0 * torch.eye(K)[[0, 1, 2, 0, 1, 2]]
    assert MCCLoss()(f, f, logits_t=confident)["mcc"].item() < 1e-6
    assert MCCLoss()(f, f, logits_t=torch.zeros(6, K))["mcc"].item() == pytest.approx((K - 1) / K)


# ---------------------------------------------------------------------------------- DeepJDOT
def test_deepjdot_coupling_marginals_and_zero_loss_on_matching_domains():
    f_s, f_t, _, z_t, y_s = batch(ns=8, nt=5)
    loss = DeepJDOTLoss(alpha=0.1, lambda_t=1.0)
    gamma = loss.coupling(f_s, f_t, z_t, y_s)
    assert gamma.sum().item() == pytest.approx(1.0)
    assert torch.allclose(gamma.sum(1), torch.full((8,), 1 / 8), atol=1e-7)
    assert torch.allclose(gamma.sum(0), torch.full((5,), 1 / 5), atol=1e-7)
    out = call(loss, f_s, f_t, None, z_t, y_s)
    d2, ce = loss.costs(f_s, f_t, z_t, y_s)
    assert out["deepjdot"].item() == pytest.approx((gamma * (0.1 * d2 + ce)).sum().item(), rel=1e-6)
    assert out["deepjdot"].item() == pytest.approx(out["feature_cost"].item() + out["label_cost"].item(), rel=1e-6)
    # target = a permutation of the source with predictions matching the source labels
    perm = torch.randperm(8)
    f = f_s.detach()
    match = 50.0 * F.one_hot(y_s, K).float()
    zero = loss(f, f[perm], logits_t=match[perm], y_s=y_s)
    assert zero["deepjdot"].item() < 1e-6


def test_deepjdot_checks_labels():
    f_s, f_t, _, z_t, y_s = batch()
    with pytest.raises(DataError, match="needs the source labels"):
        DeepJDOTLoss()(f_s, f_t, logits_t=z_t)
    with pytest.raises(DataError, match="only 3 classes"):
        DeepJDOTLoss()(f_s, f_t, logits_t=z_t, y_s=torch.full((8,), 5))
