"""Composable, seeded domain-shift transforms for image arrays.

Each transform draws its parameters per image from a :class:`numpy.random.Generator`, so a
shifted domain is reproducible from its seed. Images are float arrays in [0, 1] with shape
``(H, W)`` or ``(H, W, C)``. A range ``a..b`` draws uniformly per image; a scalar is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ._options import MAX_IMAGE_SIZE, boolean, number, number_range

#: Largest blur sigma when the image side is not known (see :meth:`Shift.from_options`).
MAX_BLUR = MAX_IMAGE_SIZE


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

    #: The options :meth:`from_options` understands.
    OPTIONS = ("rotate", "translate", "scale", "noise", "blur", "invert")

    @classmethod
    def from_options(cls, *, what: str = "shift", size: int | None = None, **opts) -> Shift:
        """Build a shift from spec options, checking every value strictly.

        ``what`` names the dataset in messages; ``size`` (the image side, when known) bounds
        ``blur``: a Gaussian sigma beyond the image side only flattens the image further while
        its kernel (8 sigma + 1 taps) grows without bound (``blur=1e9`` asked for 60 GiB).
        Every number must be finite; ``invert`` must be a boolean (``true/false``, ``1/0``,
        ``yes/no``).
        """
        from ..errors import ConfigError
        from .._validation import suggest

        unknown = sorted(set(opts) - set(cls.OPTIONS))
        if unknown:
            raise ConfigError(f"{what}: unknown shift option {unknown[0]!r}." + suggest(unknown[0], cls.OPTIONS)
                              + f" Shift options: {', '.join(cls.OPTIONS)}.")
        rot = number_range(what, "rotate", opts.get("rotate", 0.0), low=-360, high=360,
                           hint="degrees, counter-clockwise")
        translate = number(what, "translate", opts.get("translate", 0.0), low=0, high=0.5, high_inclusive=False,
                           hint="a fraction of the image size, e.g. translate=0.1")
        sc = number_range(what, "scale", opts.get("scale", 1.0), low=0.1, high=10,
                          hint="a zoom factor, 1 = unchanged", example="0.9..1.1")
        noise = number(what, "noise", opts.get("noise", 0.0), low=0, high=1,
                       hint="the standard deviation of Gaussian noise on [0, 1] pixels, e.g. noise=0.1")
        blur_max = float(size) if size is not None else float(MAX_BLUR)
        blur = number(what, "blur", opts.get("blur", 0.0), low=0, high=blur_max,
                      hint=f"a Gaussian sigma in pixels, at most the image side ({blur_max:g}), e.g. blur=1")
        inv = boolean(what, "invert", opts.get("invert", False))
        return cls(rot, float(translate), sc, float(noise), float(blur), inv)

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
