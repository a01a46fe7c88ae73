"""Built-in ``digits`` domain: scikit-learn's 8x8 handwritten digits, resized, with shifts."""

from __future__ import annotations

import re

import numpy as np

from .._registry import register
from ..errors import ConfigError
from ._options import number, text
from .domain import DomainDataset
from .splits import stratified_split
from .transforms import Shift

_CACHE: dict[tuple[int, int], np.ndarray] = {}

#: Most parts ``subset=i/n`` may split the 1,797 images into (at least ~18 images, ~2 per class,
#: per part); ``n`` also sizes an array, and ``subset=0/100000000`` exhausted the memory.
MAX_PARTS = 100

#: Largest ``size``: all 1,797 images are held in memory, 1.9 GB as float32 at 512 x 512.
MAX_DIGITS_SIZE = 512


def _resized_digits(size: int, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    y = d.target.astype(np.int64)
    if (size, pad) not in _CACHE:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
        inner = size - 2 * pad
        x = F.interpolate(x, size=(inner, inner), mode="bilinear", align_corners=False)
        if pad:
            x = F.pad(x, (pad, pad, pad, pad))
        _CACHE[(size, pad)] = x[:, 0].clamp(0, 1).numpy()
    return _CACHE[(size, pad)], y


@register("dataset", "digits")
def load_digits_domain(
    size: int = 32,
    pad: int = 0,
    subset: str | None = None,
    seed: int = 0,
    name: str | None = None,
    **shift,
) -> DomainDataset:
    """scikit-learn digits (1,797 images, 10 classes) resized to ``size``, optionally shifted.

    Parameters
    ----------
    size
        Side of the square grayscale images (bilinear resize from 8x8).
    pad
        Empty border in pixels on each side: the digit is resized to ``size - 2 * pad`` and
        centred on a black canvas. ``size=28,pad=4`` frames the digits the way MNIST does (a
        20x20 box inside 28x28), which a network trained on MNIST expects; the 8x8 originals fill
        their frame, as USPS digits do.
    subset
        ``"i/n"`` keeps part ``i`` of a fixed stratified ``n``-way partition (seed 0), so a
        source ``subset=0/2`` and a target ``subset=1/2`` never share an image.
    seed
        Seed of the per-image shift parameters.
    **shift
        ``rotate``, ``translate``, ``scale``, ``noise``, ``blur``, ``invert``; see
        :class:`transferkit.data.transforms.Shift`.
    """
    what = "digits"
    size = number(what, "size", size, low=8, high=MAX_DIGITS_SIZE, integer=True,
                  hint="the side of the square images in pixels, e.g. size=32")
    seed = number(what, "seed", seed, low=0, high=2**32 - 1, integer=True,
                  hint="the seed of the per-image shift parameters, e.g. seed=1")
    pad = number(what, "pad", pad, low=0, high=(size - 4) // 2, integer=True,
                 hint=f"the empty border in pixels on each side, below size/2 (at most {(size - 4) // 2} for size={size}), "
                      "e.g. size=28,pad=4")
    name = text(what, "name", name)
    unknown = sorted(set(shift) - set(Shift.OPTIONS))
    if unknown:
        from .._validation import suggest

        raise ConfigError(
            f"digits: unknown option {unknown[0]!r}." + suggest(unknown[0], [*Shift.OPTIONS, "size", "pad", "subset", "seed", "name"])
            + f" Options: size, pad, subset, seed, name, {', '.join(Shift.OPTIONS)}."
        )
    sh = Shift.from_options(what=what, size=size, **shift)  # every shift value is checked before any work
    part = None
    if subset is not None:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(subset))
        i, n = (int(m.group(1)), int(m.group(2))) if m else (-1, 0)
        if not m or not 0 <= i < n or n > MAX_PARTS:
            raise ConfigError(
                f"digits: subset={subset!r} must look like i/n with 0 <= i < n <= {MAX_PARTS} "
                "(part i of n disjoint stratified parts), e.g. subset=0/2."
            )
        part = (i, n)
    x, y = _resized_digits(size, pad)
    if part is not None:
        i, n = part
        idx = stratified_split(y, [1.0 / n] * n, seed=0)[i]
        x, y = x[idx], y[idx]
    if not sh.is_identity:
        x = sh.apply(x, seed=seed)
    else:
        x = x.copy()
    desc = ",".join(f"{k}={v}" for k, v in shift.items())
    return DomainDataset(
        inputs=x,
        labels=y,
        name=name or ("digits" + (f"[{desc}]" if desc else "")),
        modality="image",
        classes=[str(i) for i in range(10)],
    )
