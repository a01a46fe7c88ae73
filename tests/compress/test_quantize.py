"""INT8: static PT2E on a tiny CNN, dynamic torchao on a tiny MLP, save/reload, backend check, latency."""

import pytest
import torch
from torch import nn

from transferkit.backbones import create_backbone
from transferkit.errors import ConfigError, DataError

pytest.importorskip("torchao")

from transferkit.compress import quantize as Q  # noqa: E402

#: Static INT8 tolerance on calibration data: max |q - f| <= REL_TOL * max |f| (measured 0.5-2.6% over
#: seeds 0-3 for this net) and the same argmax on >= 90% of rows.
REL_TOL = 0.1


def _cnn(seed=0):
    return create_backbone("tiny_cnn", num_classes=3, image_size=16, width=8, seed=seed).eval()


def _batches(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(size, 3, 16, 16, generator=g) * 2 - 1 for _ in range(n)]


@pytest.fixture(scope="module")
def static_q():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped, so the one_thread fixture does not cover it
    m, cal = _cnn(), _batches()
    yield m, cal, Q.quantize_static_int8(m, cal, cal[0][:2])
    torch.set_num_threads(n)


def _close(f, q):
    err = float((f - q).abs().max() / f.abs().max())
    agree = float((f.argmax(1) == q.argmax(1)).float().mean())
    return err, agree


def test_static_int8_close_to_fp32_on_calibration_data(one_thread, static_q):
    m, cal, q = static_q
    assert m.training is False and isinstance(q, torch.fx.GraphModule)
    x = torch.cat(cal)
    with torch.no_grad():
        f, y = m(x), q(x)
    err, agree = _close(f, y)
    assert err <= REL_TOL and agree >= 0.9
    assert err > 0  # really quantized: int8 rounding changes the logits
    targets = {str(n.target) for n in q.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in t for t in targets)
    # weights are int8 constants with one scale per output channel, and no FP32 copy is left behind
    tensors = dict(q.named_buffers()) | dict(q.named_parameters())
    convs = [mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    int8 = sorted(tuple(t.shape) for t in tensors.values() if t.dtype == torch.int8)
    assert int8 == sorted(tuple(c.weight.shape) for c in convs)
    scales = sorted(tuple(t.shape) for k, t in tensors.items() if k.startswith("_scale_"))
    assert scales == sorted((c.weight.shape[0],) for c in convs)
    assert not [k for k, t in tensors.items() if t.dtype == torch.float32 and t.ndim > 1]
    # a new batch of another size runs (dynamic batch dimension)
    with torch.no_grad():
        assert q(_batches(1, size=5, seed=9)[0]).shape == (5, 3)
        assert q(_batches(1, size=1, seed=9)[0]).shape == (1, 3)


def test_static_int8_lowered_matches_reference(one_thread, static_q, tmp_path):
    m, cal, q = static_q
    low = Q.lower_to_x86(q, cal[0][:2])
    ops = {str(n.target) for n in low.graph.nodes if n.op == "call_function"}
    assert "onednn.qconv_pointwise.default" in ops
    x = cal[1]
    with torch.no_grad():
        assert torch.allclose(low(x), q(x), atol=1e-4)
        assert low(x[:1]).shape == (1, 3)
    # oneDNN's prepacked weights cannot be serialized: a clear error, not a crash deep inside
    with pytest.raises(ConfigError, match="save the model before lowering"):
        Q.save_quantized(low, x[:2], tmp_path / "low.pt2")


def test_static_int8_needs_calibration(one_thread):
    with pytest.raises(DataError, match="calibration_batches is empty"):
        Q.quantize_static_int8(_cnn(), [], _batches(1, size=2)[0])


def test_save_and_reload_round_trip(one_thread, static_q, tmp_path):
    m, cal, q = static_q
    path = Q.save_quantized(q, cal[0][:2], tmp_path / "cnn_int8.pt2")
    loaded = Q.load_quantized(path)
    x = _batches(1, size=7, seed=3)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))
    with pytest.raises(ConfigError, match=r"must end in \.pt2"):
        Q.save_quantized(q, cal[0][:2], tmp_path / "cnn.pt")
    with pytest.raises(DataError, match="does not exist"):
        Q.load_quantized(tmp_path / "missing.pt2")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3)).eval()


def test_dynamic_int8_mlp(one_thread, tmp_path):
    m = _mlp()
    w0 = m[0].weight.detach().clone()
    q = Q.quantize_dynamic_int8(m)
    # the original is untouched
    assert type(m[0].weight) is nn.Parameter and torch.equal(m[0].weight, w0)
    x = torch.randn(50, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f, y = m(x), q(x)
    err, agree = _close(f, y)
    assert 0 < err <= 0.05 and agree >= 0.9
    for lin in (q[0], q[2]):
        inner = lin.weight.__tensor_flatten__()[0]
        assert lin.weight.qdata.dtype == torch.int8 and "qdata" in inner
        # per-row scale: W ~ s_c * q_c, within half a step
        s = lin.weight.scale.reshape(-1, 1)
        ref = m[0].weight if lin is q[0] else m[2].weight
        assert ((lin.weight.qdata.float() * s - ref).abs() <= s / 2 + 1e-6).all()
    path = Q.save_quantized(q, x[:2], tmp_path / "mlp_int8.pt2")
    with torch.no_grad():
        assert torch.equal(Q.load_quantized(path)(x), y)
    with pytest.raises(ConfigError, match="has no nn.Linear"):
        Q.quantize_dynamic_int8(nn.Conv2d(1, 1, 1))


def test_check_backend(monkeypatch):
    assert Q.check_backend() in Q.X86_ENGINES
    assert Q._supported_engines() == list(torch.backends.quantized.supported_engines)
    monkeypatch.setattr(Q, "_supported_engines", lambda: ["qnnpack", "none"])  # an ARM build
    with pytest.raises(ConfigError, match="static INT8 needs a quantized engine among x86, onednn, fbgemm"):
        Q.check_backend()
    with pytest.raises(ConfigError, match="quantized engine"):
        Q.quantize_static_int8(_cnn(), _batches(1), _batches(1, size=2)[0])


def test_latency_is_a_positive_median(one_thread):
    calls = []

    def f(x):
        calls.append(1)
        return x

    t = Q.latency(f, torch.zeros(1), repeats=5, warmup=2)
    assert t >= 0 and len(calls) == 7
    with pytest.raises(ConfigError, match="repeats must be >= 1"):
        Q.latency(f, torch.zeros(1), repeats=0)
