"""Datasets with several targets per image, for multi-task learning.

=========================  ========  =====================================================  ==========================
spec name                  modality  targets (``meta["attributes"]``)                       built from
=========================  ========  =====================================================  ==========================
``multi_fashion_mnist``    image     ``left``, ``right`` (10 classes each; labels = left)   Fashion-MNIST, two per image
``digits_multitask``       image     ``digit`` (10), ``parity`` (2), ``angle`` (degrees)    scikit-learn digits, rotated
=========================  ========  =====================================================  ==========================

Both are built offline, in memory, and deterministically from ``seed``; the targets are per-row
attributes that :meth:`DomainDataset.subset` keeps aligned with the rows, and
``meta["attribute_classes"]`` names the classes of the classification attributes. A head of
:mod:`transferkit.pretrain.multitask` reads them by name (``heads: {left: classification,
right: classification}``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._registry import register
from ..errors import ConfigError
from ._options import MAX_IMAGE_SIZE, number, text
from .domain import DomainDataset

#: Side of the Multi-Fashion-MNIST canvas and the shift of the second item (MultiMNIST's layout).
CANVAS = 36
OFFSET = 8
#: Most rows a generated dataset may have (200,000 images of 36 x 36 are 1 GB as float32).
MAX_ROWS = 200_000


def _rows(what: str, n: Any, default: int | None) -> int | None:
    if n is None:
        return default
    return number(what, "n", n, low=2, high=MAX_ROWS, integer=True, hint="the number of images, e.g. n=2000")


@register("dataset", "multi_fashion_mnist",
          doc="Multi-Fashion-MNIST: two Fashion-MNIST items overlaid on a 36x36 canvas (top-left and bottom-right); "
              "attributes left and right (10 classes each); built from Debian dataset-fashion-mnist")
def multi_fashion_mnist(n: int = 10_000, seed: int = 0, split: str = "train", size: int = CANVAS,
                        name: str | None = None, root: str | os.PathLike | None = None) -> DomainDataset:
    """Multi-Fashion-MNIST in the MultiMNIST way (Sabour, Frosst & Hinton 2017; the two-task
    layout of Sener & Koltun 2018 and Lin et al. 2019): two Fashion-MNIST items per image.

    Image ``i`` puts item ``a_i`` (28 x 28) at the top-left of a 36 x 36 black canvas and item
    ``b_i != a_i`` shifted 8 pixels down and right, overlapping it; where they overlap the
    brighter pixel wins (``max``). ``a`` and ``b`` are drawn uniformly, with replacement, from
    the Fashion-MNIST ``split`` by ``default_rng((seed, split))``, so a train and a test set never
    share a source photo and the same options give the same images.

    Parameters
    ----------
    n
        Number of images.
    seed
        Seed of the pairing.
    split
        ``"train"`` (pairs from the 60,000 training photos) or ``"test"`` (from the 10,000 test photos).
    size
        Side of the returned images (bilinear resize of the 36 x 36 canvas).
    name
        Domain name (default ``multi_fashion_mnist[split=...,n=...]``).
    root
        A folder with the four Fashion-MNIST ``.gz`` files (default: the Debian package's folder).

    Returns
    -------
    DomainDataset
        float32 images ``(n, size, size)`` in [0, 1]; ``labels`` = the left item's class;
        ``meta["attributes"]``: ``left``, ``right`` (int64 classes) and ``left_index``,
        ``right_index`` (the source photos' rows in the split).
    """
    from .real import FASHION_MNIST_CLASSES, _resize, _split, load_fashion_mnist

    what = "dataset 'multi_fashion_mnist'"
    n = _rows(what, n, 10_000)
    seed = number(what, "seed", seed, low=0, high=2**32 - 1, integer=True, hint="the seed of the pairing, e.g. seed=1")
    split = _split(what, split, ("train", "test"))
    size = number(what, "size", size, low=8, high=MAX_IMAGE_SIZE, integer=True,
                  hint="the side of the square images in pixels, e.g. size=36")
    name = text(what, "name", name)
    src = load_fashion_mnist(split=split, root=root)
    N = len(src)
    rng = np.random.default_rng((seed, 0 if split == "train" else 1))
    a = rng.integers(N, size=n)
    b = rng.integers(N, size=n)
    same = a == b
    while same.any():  # two different photos per image
        b[same] = rng.integers(N, size=int(same.sum()))
        same = a == b
    canvas = np.zeros((n, CANVAS, CANVAS), dtype=np.float32)
    for s in range(0, n, 4096):  # a batch of photos at a time: the source is read lazily
        e = min(n, s + 4096)
        canvas[s:e, :28, :28] = src.inputs[a[s:e]]
        lo = canvas[s:e, OFFSET:OFFSET + 28, OFFSET:OFFSET + 28]
        np.maximum(lo, src.inputs[b[s:e]], out=lo)
    if size != CANVAS:
        canvas = _resize(canvas, size)
    y = np.asarray(src.labels)
    left, right = y[a].astype(np.int64), y[b].astype(np.int64)
    classes = list(FASHION_MNIST_CLASSES)
    return DomainDataset(
        inputs=canvas, labels=left.copy(), name=name or f"multi_fashion_mnist[split={split},n={n}]", modality="image",
        classes=classes,
        meta={"kind": "multi_fashion_mnist", "split": split, "seed": seed,
              "attributes": {"left": left, "right": right, "left_index": a.astype(np.int64),
                             "right_index": b.astype(np.int64)},
              "attribute_classes": {"left": classes, "right": classes}},
    )


def rotate_image(img: np.ndarray, angle: float) -> np.ndarray:
    """``img`` ``(H, W)`` rotated by ``angle`` degrees counter-clockwise about its centre
    (bilinear, black outside, the same size; :func:`scipy.ndimage.rotate`), clipped to [0, 1]."""
    from scipy import ndimage

    return np.clip(ndimage.rotate(img, float(angle), reshape=False, order=1, mode="constant", cval=0.0), 0.0, 1.0)


@register("dataset", "digits_multitask",
          doc="scikit-learn digits, each rotated by a random angle in [-45, 45] degrees; attributes digit, parity, "
              "angle (regression)")
def digits_multitask(n: int | None = None, seed: int = 0, size: int = 32, max_angle: float = 45.0,
                     name: str | None = None) -> DomainDataset:
    """scikit-learn's digits with three targets: the digit, its parity and its rotation angle.

    Each image is a digit (resized to ``size`` as the ``digits`` dataset does) rotated by an angle
    drawn uniformly from ``[-max_angle, max_angle]`` degrees (counter-clockwise positive,
    :func:`rotate_image`); ``default_rng(seed)`` draws the rows and the angles.

    Parameters
    ----------
    n
        Number of images. ``None``: each of the 1,797 digits once; ``n <= 1797``: that many
        distinct digits; more: digits drawn with replacement (each copy its own angle).
    seed
        Seed of the rows and the angles.
    size
        Side of the square images.
    max_angle
        Largest rotation in degrees (0 to 180).
    name
        Domain name (default ``digits_multitask[...]``).

    Returns
    -------
    DomainDataset
        float32 images in [0, 1]; ``labels`` = the digit; ``meta["attributes"]``: ``digit``
        (int64, 10 classes), ``parity`` (int64: 0 even, 1 odd), ``angle`` (float64 degrees),
        ``source_index`` (the row in scikit-learn's digits).
    """
    from .digits import MAX_DIGITS_SIZE, _resized_digits

    what = "dataset 'digits_multitask'"
    n = _rows(what, n, None)
    seed = number(what, "seed", seed, low=0, high=2**32 - 1, integer=True,
                  hint="the seed of the rows and angles, e.g. seed=1")
    size = number(what, "size", size, low=8, high=MAX_DIGITS_SIZE, integer=True,
                  hint="the side of the square images in pixels, e.g. size=32")
    max_angle = number(what, "max_angle", max_angle, low=0, high=180,
                       hint="the largest rotation in degrees, e.g. max_angle=45")
    name = text(what, "name", name)
    x, y = _resized_digits(size)
    rng = np.random.default_rng(seed)
    if n is None:
        rows = np.arange(len(y))
    else:
        rows = np.sort(rng.choice(len(y), size=n, replace=n > len(y)))
    angles = rng.uniform(-max_angle, max_angle, size=len(rows))
    imgs = np.stack([rotate_image(x[r], a) for r, a in zip(rows, angles)]).astype(np.float32)
    digit = y[rows].astype(np.int64)
    if len(np.unique(digit)) < 2:
        raise ConfigError(f"{what}: n={n} draws a single digit class; raise n.")
    return DomainDataset(
        inputs=imgs, labels=digit.copy(), modality="image", classes=[str(i) for i in range(10)],
        name=name or "digits_multitask" + (f"[n={n},seed={seed}]" if n is not None else f"[seed={seed}]"),
        meta={"kind": "digits_multitask", "seed": seed,
              "attributes": {"digit": digit, "parity": (digit % 2).astype(np.int64), "angle": angles.astype(np.float64),
                             "source_index": rows.astype(np.int64)},
              "attribute_classes": {"digit": [str(i) for i in range(10)], "parity": ["even", "odd"]}},
    )
