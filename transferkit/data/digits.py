"""Built-in ``digits`` domain: scikit-learn's 8x8 handwritten digits, resized, with shifts."""

from __future__ import annotations

import numpy as np

from .._registry import register
from .._validation import check_number
from ..errors import ConfigError
from .domain import DomainDataset
from .splits import stratified_split
from .transforms import Shift

_CACHE: dict[int, np.ndarray] = {}


def _resized_digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    y = d.target.astype(np.int64)
    if size not in _CACHE:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        _CACHE[size] = x[:, 0].clamp(0, 1).numpy()
    return _CACHE[size], y


@register("dataset", "digits")
def load_digits_domain(
    size: int = 32,
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
    subset
        ``"i/n"`` keeps part ``i`` of a fixed stratified ``n``-way partition (seed 0), so a
        source ``subset=0/2`` and a target ``subset=1/2`` never share an image.
    seed
        Seed of the per-image shift parameters.
    **shift
        ``rotate``, ``translate``, ``scale``, ``noise``, ``blur``, ``invert``; see
        :class:`transferkit.data.transforms.Shift`.
    """
    size = check_number("size", size, low=8, high=512, integer=True)
    unknown = set(shift) - {"rotate", "translate", "scale", "noise", "blur", "invert"}
    if unknown:
        from .._validation import suggest

        bad = sorted(unknown)[0]
        raise ConfigError(
            f"digits: unknown option {bad!r}."
            + suggest(bad, ["rotate", "translate", "scale", "noise", "blur", "invert", "size", "subset", "seed"])
        )
    x, y = _resized_digits(size)
    if subset is not None:
        try:
            i, n = (int(v) for v in str(subset).split("/"))
            assert 0 <= i < n
        except (ValueError, AssertionError):
            raise ConfigError(f"digits: subset={subset!r} must look like i/n with 0 <= i < n, e.g. 0/2.") from None
        idx = stratified_split(y, [1.0 / n] * n, seed=0)[i]
        x, y = x[idx], y[idx]
    sh = Shift.from_options(**shift)
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
