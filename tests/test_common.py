"""Registry-driven contract checks: every registered backbone and strategy."""

import inspect

import numpy as np
import pytest
import torch

from transferkit._registry import available, get

BACKBONE_INPUTS = {
    "image": lambda: np.random.default_rng(0).random((3, 16, 16), dtype=np.float32),
    "text": lambda: ["a short sentence", "another one, a bit longer", "x"],
    "tabular": lambda: np.random.default_rng(0).random((3, 64)).astype(np.float32),
}


@pytest.mark.parametrize("name", available("backbone"))
def test_backbone_contract(name):
    kw = {"image_size": 32} if name in ("efficientnet_lite0", "tiny_cnn") else {}
    if name == "identity":
        kw = {"in_features": 64}
    bb = get("backbone", name)(pretrained=False, **kw) if name != "minilm" else get("backbone", name)()
    groups = bb.layer_groups()
    names = [n for _, ps in groups for n in ps]
    assert sorted(names) == sorted(n for n, _ in bb.named_parameters()), "groups must cover every parameter"
    assert len(names) == len(set(names)), "a parameter in two groups"
    assert len(groups) >= 2 or not names, "fine-tuning needs at least two groups"
    x = bb.preprocess(BACKBONE_INPUTS[bb.spec.modality]())
    bb.eval()
    with torch.no_grad():
        f = bb(x)
    assert f.shape == (3, bb.feature_dim) and torch.isfinite(f).all()
    assert bb.spec.modality in ("image", "text", "tabular")


@pytest.mark.parametrize("name", available("strategy"))
def test_strategy_contract(name):
    cls = get("strategy", name)
    sig = inspect.signature(cls.__init__)
    assert all(p.default is not inspect.Parameter.empty for k, p in sig.parameters.items() if k != "self"), \
        "every strategy parameter needs a default"
    s = cls()
    assert s.get_params().keys() == {k for k in sig.parameters if k != "self"}
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(s)), "no fitted attributes before fit"


def test_import_is_light_and_api_resolves():
    import subprocess
    import sys

    code = "import sys, transferkit; print('torch' in sys.modules); print(all(hasattr(transferkit, n) for n in transferkit.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "True"], out.stderr[-1000:]


@pytest.mark.parametrize("name", available("divergence"))
def test_divergence_contract(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    Y = rng.normal(size=(50, 4)) + 3.0
    f = get("divergence", name)
    same = f(X, X.copy(), seed=0)
    a, b = f(X, Y, seed=1), f(X, Y, seed=1)
    assert np.isfinite(a.value) and a.value == b.value, "deterministic under a seed"
    # ~0 on identical samples: unbiased estimators (MMD U-statistic, kNN KL's log(m/(n-1)))
    # are O(1/n) off, so "~0" is measured against a large shift
    assert abs(same.value) < max(1e-6, 0.05 * a.value), "identical samples must give ~0"
    assert a.value > same.value + 1e-3, "a large shift must register"
    assert set(a.to_dict()) >= {"value"}


@pytest.mark.parametrize("name", available("transferability"))
def test_transferability_contract(name):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    F = rng.normal(size=(60, 8)) + 2 * np.eye(8)[y]
    probs = np.full((60, 5), 0.1)
    probs[np.arange(60), y] = 0.6
    f = get("transferability", name)
    r1 = f(features=F, labels=y, source_probs=probs, seed=0)
    r2 = f(features=F, labels=y, source_probs=probs, seed=0)
    assert np.isfinite(r1.value) and r1.value == r2.value


def _penalty_names():
    from transferkit._registry import available

    return available("penalty")


@pytest.mark.parametrize("name", _penalty_names())
def test_penalty_contract(name):
    """Every registered penalty: attaches, gives a finite scalar that backpropagates into the
    model, keeps its state in buffers that ``.to()`` moves and ``state_dict()`` restores."""
    import numpy as np
    import torch

    from transferkit._registry import get
    from transferkit.backbones import create_backbone
    from transferkit.data import DomainDataset
    from transferkit.train import StepContext

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    src = DomainDataset(rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40), "src", "tabular")
    model = create_backbone("tiny_mlp", 3, pretrained=False, in_features=6)
    head = torch.nn.Linear(model.backbone.feature_dim, 3)

    def attached():
        return get("penalty", name)().attach(model, source=src, source_head=head, seed=0)

    pen = attached()
    with torch.no_grad():  # move away from the reference point so every penalty is active
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.as_tensor(src.inputs[:16])
    f = model.features(x)
    ctx = StepContext(model=model, inputs=x, labels=torch.as_tensor(src.labels[:16]), features=f,
                      logits=model.head(f), generator=torch.Generator().manual_seed(0), epoch=0, step=0,
                      progress=0.0, device=torch.device("cpu"))
    out = pen(ctx)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    assert name in out and all(torch.as_tensor(v).numel() == 1 for v in out.values())
    model.zero_grad()
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    sd = pen.state_dict()
    fresh = attached()  # attached at the moved weights: only the restored state can make it equal pen
    fresh.load_state_dict(sd)
    assert all(torch.equal(sd[k], fresh.state_dict()[k]) for k in sd if isinstance(sd[k], torch.Tensor))
    with torch.no_grad():  # the restored state gives the same value (random draws aside: same seed)
        f = model.features(x)
        ctx.features, ctx.logits, ctx.generator = f, model.head(f), torch.Generator().manual_seed(0)
        a = pen(ctx)["loss"]
        ctx.generator = torch.Generator().manual_seed(0)
        fresh.load_state_dict(sd)
        b = fresh(ctx)["loss"]
    assert torch.isfinite(a) and torch.isfinite(b)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), f"restored {name} gives {b.item()}, the original {a.item()}"
    pen.to(torch.float64)
    assert all(b.dtype in (torch.float64, torch.int64, torch.long, torch.bool) or not b.is_floating_point()
               for b in pen.buffers())
