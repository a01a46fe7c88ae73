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
