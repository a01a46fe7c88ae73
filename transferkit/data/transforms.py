"""Composable, seeded domain-shift transforms for image arrays.

Each transform draws its parameters per image from a :class:`numpy.random.Generator`, so a
shifted domain is reproducible from its seed. Images are float arrays in [0, 1] with shape
``(H, W)`` or ``(H, W, C)``. A range ``a..b`` draws uniformly per image; a scalar is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import ConfigError


def _range(param: str, value) -> tuple[float, float]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    elif isinstance(value, str) and ".." in value:
        a, b = value.split("..", 1)
        try:
            lo, hi = float(a), float(b)
        except ValueError:
            raise ConfigError(f"{param}={value!r}: a range is written low..high, e.g. 22..45.") from None
    else:
        try:
            lo = hi = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{param}={value!r} must be a number or a range low..high.") from None
    if lo > hi:
        raise ConfigError(f"{param}={value!r}: the range's low end is above its high end.")
    return lo, hi


@dataclass
class Shift:
    """Geometric and photometric shift applied to every image.

    Parameters
    ----------
    rotate
        Rotation in degrees, counter-clockwise; a scalar or a range ``(lo, hi)`` drawn per image.
    translate
        Maximum shift as a fraction of the image size; each axis draws from ``[-t, t]``.
    scale
        Zoom factor (``>1`` enlarges); scalar or range.
    noise
        Standard deviation of additive Gaussian noise (result clipped to [0, 1]).
    blur
        Gaussian blur sigma in pixels.
    invert
        Contrast inversion ``x -> 1 - x``.
    """

    rotate: tuple[float, float] = (0.0, 0.0)
    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    noise: float = 0.0
    blur: float = 0.0
    invert: bool = False

    @classmethod
    def from_options(cls, **opts) -> Shift:
        translate = float(opts.get("translate", 0.0))
        if not 0 <= translate < 0.5:
            raise ConfigError(f"translate={translate} must be in [0, 0.5) (a fraction of the image size).")
        noise = float(opts.get("noise", 0.0))
        blur = float(opts.get("blur", 0.0))
        if noise < 0 or blur < 0:
            raise ConfigError("noise and blur must be >= 0.")
        sc = _range("scale", opts.get("scale", 1.0))
        if sc[0] <= 0:
            raise ConfigError(f"scale={opts.get('scale')!r} must be > 0.")
        inv = opts.get("invert", False)
        if isinstance(inv, str):
            inv = inv.lower() in ("1", "true", "yes", "on")
        return cls(_range("rotate", opts.get("rotate", 0.0)), translate, sc, noise, blur, bool(inv))

    @property
    def is_identity(self) -> bool:
        return (
            self.rotate == (0.0, 0.0) and self.translate == 0 and self.scale == (1.0, 1.0)
            and self.noise == 0 and self.blur == 0 and not self.invert
        )

    def apply(self, images: np.ndarray, seed: int = 0) -> np.ndarray:
        """Return shifted copies of ``images`` (``(n, H, W)`` or ``(n, H, W, C)``)."""
        rng = np.random.default_rng(seed)
        out = np.empty_like(images, dtype=np.float32)
        for i, img in enumerate(images):
            out[i] = self._one(np.asarray(img, dtype=np.float32), rng)
        return out

    def _one(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = img.shape[:2]
        angle = rng.uniform(*self.rotate) if self.rotate[1] > self.rotate[0] else self.rotate[0]
        zoom = rng.uniform(*self.scale) if self.scale[1] > self.scale[0] else self.scale[0]
        dy, dx = (rng.uniform(-self.translate, self.translate, size=2) * (h, w)) if self.translate else (0.0, 0.0)
        if angle or zoom != 1.0 or dx or dy:
            # output pixel o maps to input M @ (o - c - t) + c: rotate about the centre, then shift
            t = np.deg2rad(angle)
            rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) / zoom
            c = np.array([(h - 1) / 2, (w - 1) / 2])
            off = c - rot @ (c + np.array([dy, dx]))
            if img.ndim == 2:
                img = ndimage.affine_transform(img, rot, offset=off, order=1, mode="constant", cval=0.0)
            else:
                img = np.stack(
                    [ndimage.affine_transform(img[..., k], rot, offset=off, order=1, mode="constant")
                     for k in range(img.shape[-1])], axis=-1)
        if self.blur:
            sig = (self.blur, self.blur) + ((0,) if img.ndim == 3 else ())
            img = ndimage.gaussian_filter(img, sigma=sig)
        if self.noise:
            img = img + rng.normal(0.0, self.noise, size=img.shape)
        if self.invert:
            img = 1.0 - img
        return np.clip(img, 0.0, 1.0)
