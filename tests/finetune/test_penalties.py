"""Source-knowledge penalties: closed forms, gradients, buffers, registry, strategy wiring."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferkit._registry import available, get
from transferkit.data import DomainDataset
from transferkit.errors import ConfigError
from transferkit.finetune.penalties import (
    BSSPenalty,
    EWCPenalty,
    FrozenHead,
    L2SPPenalty,
    LwFPenalty,
    ReplayPenalty,
    diagonal_fisher,
)
from transferkit.train.trainer import StepContext


class _Backbone(nn.Module):
    """``features = tanh(x A^T)``; tabular, no BN."""

    def __init__(self, d_in=4, d=3):
        super().__init__()
        self.lin = nn.Linear(d_in, d)

    def preprocess(self, x):
        return torch.as_tensor(np.asarray(x, dtype=np.float32))

    def move_inputs(self, x, dev):
        return x.to(dev)

    def forward(self, x):
        return torch.tanh(self.lin(x))


class _Model(nn.Module):
    def __init__(self, d_in=4, d=3, k=2, backbone=None):
        super().__init__()
        self.backbone = backbone or _Backbone(d_in, d)
        self.head = nn.Linear(self.backbone.lin.out_features if backbone is None else d, k)

    def preprocess(self, x):
        return self.backbone.preprocess(x)

    def move_inputs(self, x, dev):
        return x.to(dev)

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.features(x))

    def layer_groups(self):
        return [("backbone", ["backbone." + n for n, _ in self.backbone.named_parameters()]),
                ("head", ["head." + n for n, _ in self.head.named_parameters()])]


def _source(n=40, d_in=4, k=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_in)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) if k == 2 else rng.integers(0, k, n)
    return DomainDataset(X, y, "src", "tabular", classes=[str(i) for i in range(k)])


def _ctx(model, x, y=None):
    feats = model.features(x)
    return StepContext(model=model, inputs=x, labels=y if y is not None else torch.zeros(len(x), dtype=torch.long),
                       features=feats, logits=model.head(feats), augment=None, generator=torch.Generator(),
                       epoch=0, step=0, progress=0.0, device=torch.device("cpu"))


def _perturb(model, scale=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_registry_lists_every_penalty():
    assert {"l2sp", "ewc", "lwf", "replay", "bss"} <= set(available("penalty"))
    assert get("penalty", "ewc") is EWCPenalty
    with pytest.raises(ConfigError, match="Did you mean 'ewc'"):
        get("penalty", "ewk")


def test_l2sp_closed_form_and_gradient():
    torch.manual_seed(0)
    m = _Model()
    x = torch.randn(5, 4)
    pen = L2SPPenalty(alpha=0.7, beta=0.2).attach(m)
    w0 = {n: p.detach().clone() for n, p in m.named_parameters()}
    head0 = 0.5 * 0.2 * sum(p.pow(2).sum() for p in m.head.parameters())
    # at the reference point only the head's decay remains
    assert pen(_ctx(m, x))["loss"].item() == pytest.approx(head0.item(), rel=1e-6)
    _perturb(m)
    out = pen(_ctx(m, x))
    bb = {n: p for n, p in m.named_parameters() if n.startswith("backbone.")}
    want = 0.35 * sum((bb[n] - w0[n]).pow(2).sum() for n in bb) + 0.1 * sum(p.pow(2).sum() for p in m.head.parameters())
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    g = _grads(m, out["loss"])
    for n, p in m.named_parameters():
        expect = 0.7 * (p - w0[n]) if n.startswith("backbone.") else 0.2 * p
        torch.testing.assert_close(g[n], expect.detach())
    assert set(out) == {"loss", "l2sp", "l2sp_dist"}


def _logistic_setup():
    """A 1-layer logistic model: backbone = identity-like linear map (fixed), head (2 classes)."""
    torch.manual_seed(0)
    m = _Model(d_in=3, d=3, k=2)
    return m


def test_ewc_fisher_matches_closed_form_logistic():
    """For z = W tanh(A x) + b with softmax, d log p_y / d A is closed form; check the empirical Fisher."""
    m = _logistic_setup()
    src = _source(30, d_in=3)
    W, b = torch.randn(2, 3), torch.randn(2)
    fis = diagonal_fisher(m, (W, b), src, n_samples=None, fisher="empirical")
    A, c = m.backbone.lin.weight.detach(), m.backbone.lin.bias.detach()
    X = torch.as_tensor(src.inputs)
    y = torch.as_tensor(src.labels)
    h = torch.tanh(X @ A.T + c)
    p = torch.softmax(h @ W.T + b, 1)
    # d(-log p_y)/dz = p - e_y ; dz/dh = W ; dh/du = 1 - h^2 ; du/dA = x
    delta = (p - F.one_hot(y, 2).float()) @ W * (1 - h ** 2)  # (n, d)
    gA = delta[:, :, None] * X[:, None, :]
    torch.testing.assert_close(fis["backbone.lin.weight"], gA.pow(2).mean(0), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(fis["backbone.lin.bias"], delta.pow(2).mean(0), rtol=1e-4, atol=1e-7)
    # true Fisher: expectation over y ~ p; for two classes sum_k p_k (p - e_k)^2 per logit-direction
    fis_t = diagonal_fisher(m, (W, b), src, n_samples=None, fisher="true")
    want = torch.zeros_like(A)
    for k in range(2):
        dk = (p - F.one_hot(torch.full_like(y, k), 2).float()) @ W * (1 - h ** 2)
        want += (p[:, k, None, None] * (dk[:, :, None] * X[:, None, :]).pow(2)).mean(0) * 1.0
    torch.testing.assert_close(fis_t["backbone.lin.weight"], want, rtol=1e-4, atol=1e-7)


def test_ewc_p1mp_form_on_pure_logistic():
    """Binary logistic p = sigmoid(w x) as a 2-class softmax with logits (0, w x): true Fisher p(1-p) x^2."""

    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 1, bias=False)

        def preprocess(self, x):
            return torch.as_tensor(np.asarray(x, dtype=np.float32))

        def forward(self, x):
            return self.lin(x)

    m = _Model(backbone=Lin(), d=1, k=2)
    with torch.no_grad():
        m.backbone.lin.weight.fill_(0.8)
    src = _source(25, d_in=1)
    W, b = torch.tensor([[0.0], [1.0]]), torch.zeros(2)  # logits (0, f): p(1) = sigmoid(f)
    fis = diagonal_fisher(m, (W, b), src, n_samples=None, fisher="true")["backbone.lin.weight"]
    x = torch.as_tensor(src.inputs)[:, 0]
    p = torch.sigmoid(0.8 * x)
    assert fis.item() == pytest.approx((p * (1 - p) * x ** 2).mean().item(), rel=1e-5)


def test_ewc_penalty_value_gradient_and_zero_at_reference():
    m = _logistic_setup()
    src = _source(30, d_in=3)
    head = nn.Linear(3, 2)
    pen = EWCPenalty(lam=3.0, n_samples=None).attach(m, source=src, source_head=head)
    x = torch.randn(4, 3)
    assert pen(_ctx(m, x))["loss"].item() == 0.0
    star = {n: p.detach().clone() for n, p in m.named_parameters()}
    _perturb(m)
    fis = pen.fisher_()
    out = pen(_ctx(m, x))
    want = 1.5 * sum((fis[n] * (p - star[n]) ** 2).sum() for n, p in m.named_parameters() if n in fis)
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-5)
    g = _grads(m, out["loss"])
    for n in fis:
        torch.testing.assert_close(g[n], (3.0 * fis[n] * (dict(m.named_parameters())[n] - star[n])).detach())
    assert "head.weight" not in g  # the new head is not anchored


def test_lwf_zero_at_start_and_matches_kl():
    torch.manual_seed(0)
    m = _Model()
    head = nn.Linear(3, 5)
    pen = LwFPenalty(weight=2.0, temperature=3.0).attach(m, source_head=head)
    x = torch.randn(6, 4)
    assert pen(_ctx(m, x))["loss"].abs().item() < 1e-6
    teacher = copy.deepcopy(m)
    _perturb(m)
    out = pen(_ctx(m, x))
    with torch.no_grad():
        logq = torch.log_softmax(head(teacher.features(x)) / 3, 1)
    logp = torch.log_softmax(head(m.features(x)) / 3, 1)
    want = 2.0 * 9 * (logq.exp() * (logq - logp)).sum(1).mean()
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-5)
    g = _grads(m, out["loss"])
    g_ref = _grads(m, want)
    for n in g_ref:
        torch.testing.assert_close(g[n], g_ref[n])
    assert all(not p.requires_grad for p in pen.parameters())  # nothing for the optimizer


def test_replay_is_cross_entropy_of_memory_through_old_head():
    torch.manual_seed(0)
    m = _Model()
    src = _source(20)
    W, b = torch.randn(2, 3), torch.randn(2)
    pen = ReplayPenalty(fraction=0.5, weight=1.0, memory_size=None).attach(m, source=src, source_head=(W, b), seed=3)
    assert pen.memory_x.shape == (20, 4) and pen.memory_y.shape == (20,)
    x = torch.randn(8, 4)
    out = pen(_ctx(m, x))
    # redraw the same indices: the penalty's stream is seeded at attach
    gen = torch.Generator().manual_seed(3 + 7919)
    idx = torch.randint(20, (8,), generator=gen)
    logits = m.features(pen.memory_x[idx]) @ W.T + b
    assert out["loss"].item() == pytest.approx(F.cross_entropy(logits, pen.memory_y[idx]).item(), rel=1e-5)
    stratified = ReplayPenalty(memory_size=10).attach(m, source=src, source_head=(W, b))
    assert np.bincount(stratified.memory_y.numpy()).min() >= 4  # class-stratified memory


def test_bss_matches_numpy_svd_and_gradient():
    torch.manual_seed(0)
    m = _Model(d_in=4, d=3)
    x = torch.randn(7, 4)
    pen = BSSPenalty(eta=0.5, k=2)
    ctx = _ctx(m, x)
    out = pen(ctx)
    s = np.linalg.svd(ctx.features.detach().numpy().astype(np.float64), compute_uv=False)
    assert out["loss"].item() == pytest.approx(0.5 * (np.sort(s)[:2] ** 2).sum(), rel=1e-4)
    # gradient of sigma_min^2 w.r.t. F is 2 sigma u v^T
    f = ctx.features.detach().clone().requires_grad_(True)
    ctx2 = StepContext(model=m, inputs=x, features=f)
    BSSPenalty(eta=1.0, k=1)(ctx2)["loss"].backward()
    U, S, Vt = np.linalg.svd(f.detach().numpy().astype(np.float64), full_matrices=False)
    np.testing.assert_allclose(f.grad.numpy(), 2 * S[-1] * np.outer(U[:, -1], Vt[-1]), atol=1e-5)


@pytest.mark.parametrize("cls,kw", [(L2SPPenalty, {}), (EWCPenalty, {"n_samples": 10}), (LwFPenalty, {}),
                                    (ReplayPenalty, {"memory_size": 10})])
def test_state_lives_in_buffers(cls, kw):
    m = _Model()
    pen = cls(**kw).attach(m, source=_source(), source_head=nn.Linear(3, 2))
    sd = pen.state_dict()
    assert sd, "reference state must be checkpointed"
    assert not any(p.requires_grad for p in pen.parameters())
    pen.to(torch.float64)
    assert all(t.dtype == torch.float64 for t in pen.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point())
    # a fresh attached penalty loads the checkpoint and computes the same value
    pen = cls(**kw).attach(m, source=_source(), source_head=nn.Linear(3, 2))
    other = cls(**kw).attach(_Model(), source=_source(), source_head=nn.Linear(3, 2))
    other.load_state_dict(pen.state_dict())
    _perturb(m)
    x = torch.randn(4, 4)
    if cls is ReplayPenalty:
        other._gen.manual_seed(0), pen._gen.manual_seed(0)
    assert other(_ctx(m, x))["loss"].item() == pytest.approx(pen(_ctx(m, x))["loss"].item(), rel=1e-6)


def test_missing_source_and_unattached_errors():
    m = _Model()
    with pytest.raises(ConfigError, match="needs labeled source data"):
        EWCPenalty().attach(m, source_head=nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="source task's classifier"):
        LwFPenalty().attach(m)
    with pytest.raises(ConfigError, match="not attached"):
        L2SPPenalty()(_ctx(m, torch.randn(2, 4)))
    with pytest.raises(ConfigError, match="alpha must be >= 0"):
        L2SPPenalty(alpha=-1)


def test_frozen_head_forms():
    lin = nn.Linear(3, 2)
    f = torch.randn(4, 3)
    for h in (lin, (lin.weight, lin.bias), (lin.weight.detach().numpy(), lin.bias.detach().numpy())):
        torch.testing.assert_close(FrozenHead(h)(f), lin(f).detach())
    assert set(FrozenHead(lin).state_dict()) == {"weight", "bias"}


# ---------------------------------------------------------------------------- strategy wiring
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds contention


@pytest.fixture(scope="module")
def two_tasks():
    from transferkit.diagnostics.forgetting import two_task_digits

    return two_task_digits(size=12, seed=0)


def _trained_backbone(s_train):
    from transferkit.backbones import create_backbone

    torch.manual_seed(0)
    bb = create_backbone("tiny_cnn", pretrained=False, image_size=12, width=8)
    bb.source_head = (torch.randn(5, bb.feature_dim) * 0.1, torch.zeros(5))
    return bb


def test_finetune_with_penalties_logs_and_needs_source(two_tasks):
    from transferkit.strategies import FineTune

    s_train, _, s_test = two_tasks["source"]
    t_train, t_val, _ = two_tasks["target"]
    bb = _trained_backbone(s_train)
    kw = dict(pretrained=True, lp_init=False, epochs=2, batch_size=64, augment="none", device="cpu")
    ft = FineTune(backbone=copy.deepcopy(bb), penalty="ewc", **kw)
    assert ft.needs_source and not FineTune(penalty="lwf").needs_source and not FineTune().needs_source
    with pytest.raises(ConfigError, match="needs labeled source data"):
        ft.fit(t_train, t_val)
    ft = FineTune(backbone=copy.deepcopy(bb), penalty=["l2sp", "ewc", "lwf", "replay", "bss"],
                  penalty_options={"ewc": {"lam": 10.0, "n_samples": 32}, "replay": {"memory_size": 20}}, **kw)
    ft.fit(t_train, t_val, source=s_train)
    assert {"l2sp", "ewc", "lwf", "replay", "bss", "replay_accuracy"} <= set(ft.history_[0])
    assert ft.source_head_origin_ == "backbone"  # width 5 matches the source classes
    assert ft.predict_source_logits(s_test).shape == (len(s_test), 5)
    assert [p.name for p in ft.penalties_] == ["l2sp", "ewc", "lwf", "replay", "bss"]
    with pytest.raises(ConfigError, match="not among the penalties"):
        FineTune(backbone=copy.deepcopy(bb), penalty=["l2sp", "ewc"], penalty_options={"lam": 1}, **kw).fit(
            t_train, t_val, source=s_train)


def test_finetune_fits_a_source_probe_when_backbone_has_no_head(two_tasks):
    from transferkit.backbones import create_backbone
    from transferkit.strategies import FineTune

    s_train, _, _ = two_tasks["source"]
    t_train, t_val, _ = two_tasks["target"]
    torch.manual_seed(0)
    bb = create_backbone("tiny_cnn", pretrained=False, image_size=12, width=8)
    ft = FineTune(backbone=bb, pretrained=True, lp_init=False, epochs=1, batch_size=64, augment="none",
                  device="cpu", penalty="lwf", penalty_options={"temperature": 1.0})
    ft.fit(t_train, t_val, source=s_train)
    assert ft.source_head_origin_.startswith("linear probe on")
    with pytest.raises(ConfigError, match="source task's classifier"):
        FineTune(backbone=create_backbone("tiny_cnn", image_size=12, width=8), pretrained=True, lp_init=False,
                 epochs=1, device="cpu", penalty="lwf").fit(t_train, t_val)


def test_experiment_runner_passes_source_only_when_needed(tmp_path):
    from transferkit.config import config_from_dict
    from transferkit.experiment import run_experiment

    base = {"name": "pen", "seeds": [0], "target": "digits:subset=1/2,size=8", "backbone": {"name": "tiny_cnn",
            "image_size": 8}, "split": {"labels_per_class": 5, "val_fraction": 0.5}}
    strategies = [{"name": "finetune", "epochs": 1, "penalty": "ewc"}]
    with pytest.raises(ConfigError, match="needs a labeled 'source' dataset"):
        run_experiment(config_from_dict({**base, "strategies": strategies}), tmp_path / "a", echo=lambda *a: None)
    res = run_experiment(config_from_dict({**base, "source": "digits:subset=0/2,size=8", "strategies": strategies}),
                         tmp_path / "b", echo=lambda *a: None)
    assert res["summary"]["finetune"]["n_seeds"] == 1


def test_replay_draws_resume_from_the_state_dict():
    """The replay memory's random stream is checkpointed: a restored copy draws the same samples."""
    import numpy as np

    from transferkit.backbones import create_backbone
    from transferkit.data import DomainDataset
    from transferkit.finetune.penalties import ReplayPenalty
    from transferkit.train import StepContext

    rng = np.random.default_rng(0)
    src = DomainDataset(rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40), "src", "tabular")
    model = create_backbone("tiny_mlp", 3, pretrained=False, in_features=6)
    head = torch.nn.Linear(model.backbone.feature_dim, 3)
    a = ReplayPenalty(fraction=0.5).attach(model, source=src, source_head=head, seed=0)
    x = torch.as_tensor(src.inputs[:8])
    ctx = StepContext(model=model, inputs=x, labels=torch.as_tensor(src.labels[:8]), epoch=0, step=0, progress=0.0)
    a(ctx)  # advance the stream
    sd = a.state_dict()
    b = ReplayPenalty(fraction=0.5).attach(model, source=src, source_head=head, seed=123)
    b.load_state_dict(sd)
    with torch.no_grad():
        assert torch.equal(a(ctx)["loss"], b(ctx)["loss"])
