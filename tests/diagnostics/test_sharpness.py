"""Top Hessian eigenvalue by power iteration, checked against closed forms."""

import numpy as np
import pytest
import torch

from transferkit.diagnostics.sharpness import hessian_vector_product, model_sharpness, top_hessian_eigenvalue
from transferkit.errors import ConfigError


def _spd(d, seed, top=None):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    ev = np.sort(rng.uniform(0.1, 2.0, size=d))
    if top is not None:
        ev[-1] = top
    return Q @ np.diag(ev) @ Q.T, ev


def test_quadratic_matches_numpy_eigvalsh():
    A, ev = _spd(12, 0, top=7.5)
    At = torch.tensor(A)
    x = torch.zeros(12, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(np.random.default_rng(1).normal(size=12))

    def loss():
        return 0.5 * x @ At @ x + b @ x  # Hessian = A

    res = top_hessian_eigenvalue(loss, [x], n_iter=500, tol=1e-12)
    assert res["converged"]
    assert res["eigenvalue"] == pytest.approx(np.linalg.eigvalsh(A).max(), rel=1e-8)
    # H v itself
    v = torch.tensor(np.random.default_rng(2).normal(size=12))
    np.testing.assert_allclose(hessian_vector_product(loss, [x], [v])[0].numpy(), A @ v.numpy(), rtol=1e-10)


def test_parameters_split_in_several_tensors_and_batches():
    """The Hessian over two tensors is the full block matrix; a loss given as summed batch
    terms gives the same products as the whole loss."""
    A, _ = _spd(7, 3, top=5.0)
    At = torch.tensor(A)
    p1 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    p2 = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)

    def whole():
        z = torch.cat([p1, p2.flatten()])
        return 0.5 * z @ At @ z

    halves = [lambda: 0.25 * torch.cat([p1, p2.flatten()]) @ At @ torch.cat([p1, p2.flatten()])] * 2
    r1 = top_hessian_eigenvalue(whole, [p1, p2], n_iter=500, tol=1e-12)
    r2 = top_hessian_eigenvalue(halves, [p1, p2], n_iter=500, tol=1e-12)
    assert r1["eigenvalue"] == pytest.approx(5.0, rel=1e-8)
    assert r2["eigenvalue"] == pytest.approx(r1["eigenvalue"], rel=1e-10)


def test_logistic_regression_hessian_closed_form():
    """Binary logistic loss: H = X^T diag(p (1 - p)) X / n (numpy), at an arbitrary point."""
    rng = np.random.default_rng(0)
    n, d = 200, 6
    X = rng.normal(size=(n, d)) * np.array([3.0, 1, 1, 0.5, 2, 1])
    y = (X[:, 0] + rng.normal(size=n) > 0).astype(float)
    w0 = rng.normal(size=d) * 0.3
    p = 1 / (1 + np.exp(-X @ w0))
    H = X.T @ np.diag(p * (1 - p)) @ X / n
    w = torch.tensor(w0, requires_grad=True)
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def loss():
        return torch.nn.functional.binary_cross_entropy_with_logits(Xt @ w, yt)

    res = top_hessian_eigenvalue(loss, [w], n_iter=1000, tol=1e-12)
    assert res["eigenvalue"] == pytest.approx(np.linalg.eigvalsh(H).max(), rel=1e-7)


def test_seeded_determinism_and_seed_dependence_of_the_path():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    X, y = torch.randn(40, 5), torch.randint(0, 3, (40,))

    def loss():
        return torch.nn.functional.cross_entropy(net(X), y)

    params = list(net.parameters())
    a = top_hessian_eigenvalue(loss, params, n_iter=7, tol=0, seed=3)
    b = top_hessian_eigenvalue(loss, params, n_iter=7, tol=0, seed=3)
    c = top_hessian_eigenvalue(loss, params, n_iter=7, tol=0, seed=4)
    assert a == b
    assert a["n_iter"] == 7 and not a["converged"]
    assert a["eigenvalue"] != c["eigenvalue"]  # a different start vector, an unconverged different path


def test_linear_loss_has_zero_curvature():
    w = torch.ones(4, requires_grad=True)
    res = top_hessian_eigenvalue(lambda: (w * torch.arange(4.0)).sum(), [w])
    assert res["eigenvalue"] == 0.0 and res["converged"]


def test_model_sharpness_matches_explicit_hessian():
    """On a tiny model the full Hessian is small enough to build with torch.autograd.functional."""
    from transferkit.backbones import create_backbone
    from transferkit.data import DomainDataset
    from transferkit.nn import TransferModel

    torch.manual_seed(0)
    model = TransferModel(create_backbone("tiny_mlp", in_features=4, width=3), 3).double()
    for p in model.backbone.parameters():
        p.requires_grad_(False)  # only the head (3x3 + 3 = 12 parameters) enters the Hessian
    rng = np.random.default_rng(0)
    ds = DomainDataset(rng.normal(size=(30, 4)), rng.integers(0, 3, 30), "toy", "tabular")
    res = model_sharpness(model, ds, batch_size=7, n_iter=2000, tol=1e-12, max_samples=30)
    X = torch.as_tensor(ds.inputs)
    y = torch.as_tensor(ds.labels)
    feats = model.backbone(X).detach()
    W, b = model.head.fc.weight.detach(), model.head.fc.bias.detach()

    def f(flat):
        return torch.nn.functional.cross_entropy(feats @ flat[:9].reshape(3, 3).T + flat[9:], y)

    H = torch.autograd.functional.hessian(f, torch.cat([W.flatten(), b])).numpy()
    assert res["n_samples"] == 30 and res["n_params"] == 12
    assert res["eigenvalue"] == pytest.approx(np.abs(np.linalg.eigvalsh(H)).max(), rel=1e-6)


def test_bad_params_are_refused():
    with pytest.raises(ConfigError, match="requires_grad"):
        top_hessian_eigenvalue(lambda: torch.zeros(()), [torch.zeros(2)])
    with pytest.raises(ConfigError, match="at least one"):
        top_hessian_eigenvalue(lambda: torch.zeros(()), [])
