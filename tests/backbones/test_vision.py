import numpy as np
import pytest
import torch

from transferkit.backbones import create_backbone, describe_groups, save_backbone
from transferkit.backbones.weights import load_state_dict_file
from transferkit.errors import WeightsError


@pytest.fixture(scope="module")
def effnet():
    return create_backbone("efficientnet_lite0", image_size=224).eval()


def test_efficientnet_spec(effnet):
    s = effnet.spec
    assert s.feature_dim == 1280 and s.input_size == (3, 224, 224)
    assert s.mean == s.std == (0.5, 0.5, 0.5)
    assert s.pretrained and s.license == "apache-2.0"
    assert s.weights.endswith(".pth")


def test_packaged_weights_classify_the_sample_photos(effnet):
    """The shipped ImageNet weights, loaded in order into timm's tf_efficientnet_lite0, must
    recognise scikit-learn's sample photos (a Chinese temple by a lake; a daisy)."""
    from sklearn.datasets import load_sample_images

    sd = load_state_dict_file(effnet.spec.weights)
    W, b = sd["_fc.weight"], sd["_fc.bias"]
    china, flower = load_sample_images().images
    x = effnet.preprocess(np.stack([np.asarray(china), np.asarray(flower)]).astype(np.float32) / 255)
    with torch.no_grad():
        top = (effnet(x) @ W.T + b).topk(3).indices.tolist()
    temple_like = {442, 449, 483, 497, 663, 698, 832, 975}  # bell cote, boathouse, castle, church, ...
    assert temple_like & set(top[0])
    assert 985 in top[1]  # daisy
    with torch.no_grad():
        probs = effnet.source_probs(effnet(x).numpy())  # the same head, kept for LEEP/NCE
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert np.argsort(-probs[1])[:3].tolist() == top[1]
    assert create_backbone("tiny_cnn").source_probs(np.zeros((1, 64))) is None


def test_random_init_differs_from_pretrained(effnet):
    rnd = create_backbone("efficientnet_lite0", pretrained=False)
    assert not rnd.spec.pretrained and rnd.spec.weights is None
    assert not torch.equal(rnd.state_dict()["model.conv_stem.weight"], effnet.state_dict()["model.conv_stem.weight"])


def test_efficientnet_groups_are_stem_to_head(effnet):
    names = [n for n, _ in effnet.layer_groups()]
    assert names[0] == "conv_stem+bn1" and names[-1] == "blocks.6+conv_head+bn2" and len(names) == 8
    assert "blocks.6+conv_head+bn2" in describe_groups(effnet)


def test_image_size_override_and_grayscale_input():
    bb = create_backbone("efficientnet_lite0", image_size=32).eval()
    x = bb.preprocess(np.random.default_rng(0).random((2, 8, 8), dtype=np.float32))
    assert x.shape == (2, 3, 32, 32)
    assert bb(x).shape == (2, 1280)


def test_timm_offline_error_says_how_to_pass_local_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"weights=path/to/model.safetensors.*pretrained=False"):
        create_backbone("timm:resnet18")


def test_timm_unknown_model_suggests():
    with pytest.raises(WeightsError, match="resnet18"):
        create_backbone("timm:resnet188", pretrained=False)


def test_timm_random_and_local_weights_roundtrip(tmp_path):
    bb = create_backbone("timm:resnet18", pretrained=False, image_size=32)
    assert bb.feature_dim == 512
    path = tmp_path / "r18.safetensors"
    save_backbone(bb, path)
    again = create_backbone("timm:resnet18", weights=str(path), image_size=32)
    assert again.spec.pretrained and again.spec.weights == str(path)
    for (k, v), (k2, v2) in zip(bb.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    viafile = create_backbone(f"file:{path}")
    assert viafile.spec.input_size == (3, 32, 32)
    assert torch.equal(viafile.state_dict()["model.conv1.weight"], bb.state_dict()["model.conv1.weight"])


def test_file_backbone_refuses_pickles_and_unknown_arch(tmp_path):
    import pickle

    evil = tmp_path / "model.pt"

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    evil.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(WeightsError, match="never unpickles"):
        create_backbone("tiny_cnn", weights=str(evil))
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(WeightsError, match="arch="):
        create_backbone(f"file:{bare}")
    with pytest.raises(WeightsError, match="does not exist"):
        create_backbone(f"file:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(WeightsError, match="does not load into tiny_cnn"):
        create_backbone(f"file:{bare}", arch="tiny_cnn")


def test_plain_tensor_torch_file_loads(tmp_path):
    bb = create_backbone("tiny_cnn")
    p = tmp_path / "w.pt"
    torch.save(bb.state_dict(), p)
    again = create_backbone("tiny_cnn", weights=str(p))
    assert torch.equal(again.state_dict()["stem.0.weight"], bb.state_dict()["stem.0.weight"])


# ------------------------------------------------------------------ options, bad weights, seeds
from transferkit.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize("name,opts,match", [
    ("tiny_cnn", {"widht": 8}, r"unknown option 'widht' for backbone 'tiny_cnn' .*Did you mean 'width'\? "
                               r"Valid options: width\."),
    ("tiny_mlp", {"in_feature": 4}, r"unknown option 'in_feature'.*Did you mean 'in_features'"),
    ("identity", {"depth": 2}, r"unknown option 'depth' for backbone 'identity'"),
    ("timm:resnet18", {"width": 2}, r"unknown option 'width' for backbone 'timm:resnet18'.*takes no options"),
    ("tiny_cnn", {"width": "wide"}, r"width must be a number, got 'wide'"),
    ("tiny_cnn", {"width": 0}, r"width must be >= 1"),
    ("tiny_mlp", {"in_features": 2.5}, r"in_features must be an integer"),
])
def test_bad_backbone_options_are_config_errors(name, opts, match):
    with pytest.raises(ConfigError, match=match):
        create_backbone(name, pretrained=False, **opts)


def _tiny_state(**kw):
    return {k: v.contiguous() for k, v in create_backbone("tiny_cnn", seed=0, **kw).state_dict().items()}


@pytest.mark.parametrize("kind", ["tiny_cnn", "tiny_mlp", "timm:resnet18", "file:"])
def test_bad_weights_are_one_line_weights_errors_for_every_kind(tmp_path, kind):
    from safetensors.torch import save_file

    narrow = tmp_path / "narrow.safetensors"  # the right names, the wrong shapes
    state = _tiny_state(width=8) if kind != "tiny_mlp" else create_backbone("tiny_mlp", in_features=3).state_dict()
    save_file(state, str(narrow), metadata={"transferkit.backbone": "tiny_cnn"})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(narrow.read_bytes()[:100])

    def build(path):
        if kind == "file:":
            return create_backbone(f"file:{path}", arch="tiny_cnn")
        return create_backbone(kind, pretrained=False, weights=str(path))

    shape = "of the wrong shape" if kind != "timm:resnet18" else "missing tensors"
    with pytest.raises(WeightsError, match=rf"narrow\.safetensors: does not load into .*{shape}.*right architecture"):
        build(narrow)
    with pytest.raises(WeightsError, match=r"truncated\.safetensors: not a valid safetensors file.*save_file"):
        build(truncated)
    pickled = tmp_path / "pickled.safetensors"
    pickled.write_bytes(b"\x80\x04" + b"x" * 64)
    with pytest.raises(WeightsError, match=r"pickled\.safetensors: .*a pickle, which transferkit never unpickles"):
        build(pickled)


def test_weights_with_nan_and_directories_are_refused(tmp_path):
    from safetensors.torch import save_file

    state = _tiny_state()
    state["stage1.0.weight"][0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(WeightsError, match=r"tensor 'stage1\.0\.weight' holds NaN or infinite values"):
        create_backbone("tiny_cnn", weights=str(tmp_path / "nan.safetensors"))
    with pytest.raises(WeightsError, match=r"is a directory"):
        create_backbone("tiny_cnn", weights=str(tmp_path))
    with pytest.raises(WeightsError, match=r"has no weights"):
        create_backbone("identity", weights=str(tmp_path / "nan.safetensors"))


def test_file_backbone_cycles_are_bounded(tmp_path):
    from safetensors.torch import save_file

    state = _tiny_state()
    me = tmp_path / "me.safetensors"
    save_file(state, str(me), metadata={"transferkit.backbone": f"file:{me}"})
    with pytest.raises(WeightsError, match=r"me\.safetensors: the architecture in its metadata names itself"):
        create_backbone(f"file:{me}")
    # a -> b -> a
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(state, str(a), metadata={"transferkit.backbone": f"file:{b}"})
    save_file(state, str(b), metadata={"transferkit.backbone": f"file:{a}"})
    with pytest.raises(WeightsError, match=r"a\.safetensors -> .*b\.safetensors -> .*a\.safetensors"):
        create_backbone(f"file:{a}")
    # a long but finite chain: bounded too
    prev = tmp_path / "c0.safetensors"
    save_file(state, str(prev), metadata={"transferkit.backbone": "tiny_cnn"})
    for i in range(1, 12):
        cur = tmp_path / f"c{i}.safetensors"
        save_file(state, str(cur), metadata={"transferkit.backbone": f"file:{prev}"})
        prev = cur
    with pytest.raises(WeightsError, match=r"chain of more than 8 files"):
        create_backbone(f"file:{prev}")
    # arch= overrides the metadata; the weights come from the named file
    bb = create_backbone(f"file:{me}", arch="tiny_cnn")
    assert torch.equal(bb.state_dict()["stem.0.weight"], state["stem.0.weight"])


def test_a_file_backbone_resaved_records_the_real_architecture(tmp_path):
    """save_backbone of a file: backbone used to record 'file:<its own path>' as the architecture,
    which is how a file naming itself came about."""
    from transferkit.backbones.weights import safetensors_metadata

    first = tmp_path / "first.safetensors"
    save_backbone(create_backbone("tiny_cnn", seed=0), first)
    again = tmp_path / "again.safetensors"
    save_backbone(create_backbone(f"file:{first}"), again)
    assert safetensors_metadata(again)["transferkit.backbone"] == "tiny_cnn"
    chained = tmp_path / "chained.safetensors"  # written by the old code: the architecture is a file
    from safetensors.torch import save_file

    save_file(load_state_dict_file(first), str(chained), metadata={"transferkit.backbone": f"file:{first}"})
    assert create_backbone(f"file:{chained}").spec.extra["arch"] == "tiny_cnn"


def test_file_backbone_takes_its_architectures_options(tmp_path):
    bb = create_backbone("tiny_mlp", in_features=5, seed=1)
    save_backbone(bb, tmp_path / "mlp.safetensors")
    again = create_backbone(f"file:{tmp_path / 'mlp.safetensors'}", in_features=5)
    assert torch.equal(again.state_dict()["fc1.0.weight"], bb.state_dict()["fc1.0.weight"])
    with pytest.raises(ConfigError, match=r"loads the weights of its own file"):
        create_backbone(f"file:{tmp_path / 'mlp.safetensors'}", weights="other.safetensors")


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_mlp", "tiny_text", "timm:resnet18"])
def test_seeded_random_init_is_deterministic_and_keeps_the_global_rng(name):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = create_backbone(name, pretrained=False, seed=7).state_dict()
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG state is untouched
    b = create_backbone(name, pretrained=False, seed=7).state_dict()
    c = create_backbone(name, pretrained=False, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    with pytest.raises(ConfigError, match=r"seed=-1 is out of range"):
        create_backbone(name, pretrained=False, seed=-1)


def test_resolve_backbone_takes_a_seed_for_names_and_factories():
    from transferkit.backbones import resolve_backbone

    def factory(pretrained=True):
        return create_backbone("tiny_cnn", pretrained=False)

    for spec in ("tiny_cnn", factory):
        a = resolve_backbone(spec, False, seed=5).state_dict()
        b = resolve_backbone(spec, False, seed=5).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    bb = create_backbone("tiny_cnn")
    assert resolve_backbone(bb, seed=1) is bb


def test_layer_groups_refuse_a_broken_grouping_without_assert():
    """A custom backbone whose groups overlap or miss a parameter is refused with an error that
    survives ``python -O`` (not an assert)."""
    import torch

    from transferkit.backbones.vision import IdentityBackbone
    from transferkit.errors import ConfigError

    class Overlap(IdentityBackbone):
        def __init__(self):
            super().__init__(4)
            self.lin = torch.nn.Linear(4, 4)

        def _raw_groups(self):
            return [["lin.weight", "lin.bias"], ["lin.bias"]]

    class Missing(Overlap):
        def _raw_groups(self):
            return [["lin.weight"]]

    with pytest.raises(ConfigError, match="'lin.bias' is in layer groups 0 and 1"):
        Overlap().layer_groups()
    with pytest.raises(ConfigError, match=r"\['lin.bias'\] are in no layer group"):
        Missing().layer_groups()


@pytest.mark.parametrize("arch", ["mobilenetv3_small_050", "resnet18", "convnext_atto"])
def test_timm_feature_dim_is_the_width_of_the_features(arch):
    """MobileNetV3 has a pre-logits layer after its last stage (num_features 288, features 1024):
    a head built on spec.feature_dim used to fail on its first batch (a small distillation student)."""
    import torch

    from transferkit.backbones import create_backbone

    bb = create_backbone(f"timm:{arch}", pretrained=False, image_size=32).eval()
    with torch.no_grad():
        assert bb(torch.zeros(2, 3, 32, 32)).shape == (2, bb.spec.feature_dim)
