"""Random views of an image batch for self-supervised pretext tasks (SimCLR, BYOL, SimSiam).

:class:`SSLViews` turns one preprocessed ``(N, C, H, W)`` batch (normalized for the backbone)
into one random view of each image; calling it twice gives the two views a joint-embedding
method compares. :func:`make_views` builds it from a preset name (``"ssl"``, ``"ssl_light"``) or
a dict; :func:`check_views_possible` says, in one line, why a dataset cannot give such views.

The photometric operations and the pixel-space round trip are the ones of
:class:`transferkit.train.augment.RandAugment` (reused, not copied); the crop is a random
resized crop written as one affine warp per image, which :class:`~transferkit.train.augment.RandomAffine`
(rotation/translation/isotropic zoom about the centre) does not express.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import suggest
from ..errors import ConfigError, DataError
from ..train.augment import RandAugment, _finite

#: Smallest image side (pixels) a view-based pretext accepts: a crop of a 0.3 area fraction of
#: an image below 8 px keeps about 2-4 pixels of content, nothing to learn invariances from.
MIN_SIDE = 8

PRESETS: dict[str, dict] = {
    # SimCLR's recipe (Chen et al. 2020, appendix A) without the flip (it turns digits and text
    # into other symbols), hue/saturation (most of our images are grayscale) and blur (at 16-32 px
    # a blur of the paper's 10%-of-the-side kernel wipes out strokes); plus a little pixel noise
    "ssl": {"scale": (0.3, 1.0), "ratio": (3 / 4, 4 / 3), "hflip": False, "brightness": 0.4, "contrast": 0.4,
            "jitter": 0.8, "blur": 0.0, "blur_sigma": (0.1, 1.0), "noise": 0.02},
    # milder views for tiny images or short budgets
    "ssl_light": {"scale": (0.6, 1.0), "ratio": (3 / 4, 4 / 3), "hflip": False, "brightness": 0.2, "contrast": 0.2,
                  "jitter": 0.8, "blur": 0.0, "blur_sigma": (0.1, 1.0), "noise": 0.01},
}


def _pair(name: str, value, low: float, high: float, what: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{name}={value!r} must be a pair [low, high] ({what}).")
    lo, hi = (_finite(name, v, low, high, what) for v in value)
    if lo > hi:
        raise ConfigError(f"{name}={list(value)!r} has low > high; write it as [low, high] ({what}).")
    return lo, hi


def _probability(name: str, value) -> float:
    return _finite(name, value, 0.0, 1.0, "a probability in [0, 1]")


class SSLViews:
    r"""One random view per image of a normalized ``(N, C, H, W)`` batch (SimCLR-style).

    For image :math:`i`, in this order:

    1. **random resized crop**: an area fraction :math:`a \sim U(\text{scale})` and aspect ratio
       :math:`r = e^{u}, u \sim U(\log \text{ratio})` give a box of half-widths
       :math:`w = \min(1, \sqrt{a r})`, :math:`h = \min(1, \sqrt{a / r})` (in the ``[-1, 1]``
       coordinates of ``affine_grid``) centred at :math:`c \sim U(-(1 - w), 1 - w)` (and likewise
       in y), resized to the full image by one bilinear warp
       :math:`\theta = [[\pm w, 0, c_x], [0, h, c_y]]`; the sign is a horizontal flip with
       probability 1/2 when ``hflip`` (off by default: a mirrored digit is another symbol);
    2. with probability ``jitter``, **brightness** :math:`p \leftarrow p f_b` and **contrast**
       :math:`p \leftarrow \mu + (p - \mu) f_c` (:math:`\mu` the mean luma), with
       :math:`f_b \sim U(1 \pm \text{brightness})`, :math:`f_c \sim U(1 \pm \text{contrast})`;
    3. with probability ``blur``, a **gaussian blur** of :math:`\sigma \sim U(\text{blur\_sigma})`
       pixels (separable, reflected borders);
    4. **gaussian noise** of standard deviation ``noise`` (pixel units, images in [0, 1]), then
       pixels are clipped to [0, 1].

    Photometric steps act on pixels: with ``mean``/``std`` the batch is mapped back to [0, 1]
    pixels and normalized again at the end (as :class:`~transferkit.train.augment.RandAugment`).
    Every random number comes, on the CPU and in a fixed order, from the ``torch.Generator``
    passed to :meth:`__call__`, so the same generator state gives the same views. Shape, dtype
    and device of the batch are kept.

    Parameters
    ----------
    scale, ratio
        Area fraction and aspect-ratio ranges of the crop (torchvision's ``RandomResizedCrop``
        defaults are ``(0.08, 1)`` at 224 px; ``(0.3, 1)`` keeps enough of a 16-32 px image).
    hflip
        Random horizontal flips.
    brightness, contrast, jitter
        Jitter strengths in [0, 1) and the probability the jitter is applied (0.8 in SimCLR).
    blur, blur_sigma
        Probability of a blur and its sigma range in pixels.
    noise
        Standard deviation of the added pixel noise.
    mean, std
        The backbone's normalization (``BackboneSpec.mean``/``std``), or ``None`` (each image's
        own min/max range stands for [0, 1]).

    References
    ----------
    Chen, Kornblith, Norouzi & Hinton, "A simple framework for contrastive learning of visual
    representations" (SimCLR), ICML 2020, appendix A. Szegedy et al., "Going deeper with
    convolutions", CVPR 2015 (the random resized crop).
    """

    def __init__(self, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3), hflip: bool = False, brightness: float = 0.4,
                 contrast: float = 0.4, jitter: float = 0.8, blur: float = 0.0, blur_sigma=(0.1, 1.0),
                 noise: float = 0.02, mean=None, std=None):
        self.scale = _pair("scale", scale, 0.01, 1.0, "area fractions of the crop in (0, 1], e.g. [0.3, 1.0]")
        self.ratio = _pair("ratio", ratio, 0.1, 10.0, "aspect ratios of the crop, e.g. [0.75, 1.333]")
        if not isinstance(hflip, bool):
            raise ConfigError(f"hflip={hflip!r} is not a boolean; write hflip: true or false.")
        self.hflip = hflip
        self.brightness = _finite("brightness", brightness, 0.0, 0.99, "a jitter strength in [0, 1), e.g. 0.4")
        self.contrast = _finite("contrast", contrast, 0.0, 0.99, "a jitter strength in [0, 1), e.g. 0.4")
        self.jitter = _probability("jitter", jitter)
        self.blur = _probability("blur", blur)
        self.blur_sigma = _pair("blur_sigma", blur_sigma, 0.01, 10.0, "a sigma range in pixels, e.g. [0.1, 1.0]")
        self.noise = _finite("noise", noise, 0.0, 1.0, "the noise standard deviation in pixel units, e.g. 0.02")
        # the pixel round trip of RandAugment (the same normalization rules and errors)
        self._pixels = RandAugment(n_ops=0, cutout=0.0, mean=mean, std=std)

    def __repr__(self) -> str:
        return (f"SSLViews(scale={self.scale}, hflip={self.hflip}, brightness={self.brightness:g}, "
                f"contrast={self.contrast:g}, blur={self.blur:g}, noise={self.noise:g})")

    # ------------------------------------------------------------------ steps
    def _crop(self, x: torch.Tensor, draws: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        area = draws[:, 0] * (self.scale[1] - self.scale[0]) + self.scale[0]
        lr = math.log(self.ratio[0]) + draws[:, 1] * (math.log(self.ratio[1]) - math.log(self.ratio[0]))
        r = torch.exp(lr)
        w = torch.sqrt(area * r).clamp(max=1.0)
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (draws[:, 2] * 2 - 1) * (1 - w)
        cy = (draws[:, 3] * 2 - 1) * (1 - h)
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
        grid = F.affine_grid(theta.to(dtype=x.dtype, device=x.device), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _blur(self, p: torch.Tensor, apply: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        n, c, hh, ww = p.shape
        radius = min(int(math.ceil(3 * self.blur_sigma[1])), (min(hh, ww) - 1) // 2)
        if radius < 1 or not bool(apply.any()):
            return p
        k = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(k[None] ** 2) / (2 * sigma[:, None] ** 2))
        g = g / g.sum(1, keepdim=True)
        delta = (k == 0).float()[None].expand(n, -1)
        g = torch.where(apply[:, None], g, delta)  # images without blur get the identity kernel
        g = g.repeat_interleave(c, 0).to(dtype=p.dtype, device=p.device)  # one kernel per (image, channel)
        q = p.reshape(1, n * c, hh, ww)
        q = F.conv2d(F.pad(q, (0, 0, radius, radius), mode="reflect"), g[:, None, :, None], groups=n * c)
        q = F.conv2d(F.pad(q, (radius, radius, 0, 0), mode="reflect"), g[:, None, None, :], groups=n * c)
        return q.reshape(n, c, hh, ww)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """One view of every image of ``x`` ``(N, C, H, W)``; random numbers from ``gen``."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise DataError(f"SSLViews takes a floating-point (N, C, H, W) image tensor, got "
                            f"{getattr(x, 'shape', type(x))}.")
        n, c, hh, ww = x.shape
        if n == 0:
            return x
        dtype, dev = x.dtype, x.device
        # every draw on the CPU from ``gen`` in a fixed order, whatever the options switch off
        crop = torch.rand(n, 4, generator=gen)
        flip = torch.rand(n, generator=gen)
        jit = torch.rand(n, 3, generator=gen)  # apply?, brightness factor, contrast factor
        blur = torch.rand(n, 2, generator=gen)  # apply?, sigma
        noise = torch.randn(n, c, hh, ww, generator=gen) if self.noise > 0 else None
        sign = torch.where(flip < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        p, back = self._pixels._to_pixels(x.float())
        p = self._crop(p, crop, sign)
        on = jit[:, 0] < self.jitter
        fb = torch.where(on, 1 + self.brightness * (2 * jit[:, 1] - 1), torch.ones(n))
        fc = torch.where(on, 1 + self.contrast * (2 * jit[:, 2] - 1), torch.ones(n))
        if self.brightness > 0 or self.contrast > 0:
            shape = (-1, 1, 1, 1)
            p = RandAugment._photometric("brightness", p, fb.view(shape).to(dev), None, None).clamp(0, 1)
            p = RandAugment._photometric("contrast", p, fc.view(shape).to(dev), None, None).clamp(0, 1)
        if self.blur > 0:
            sig = self.blur_sigma[0] + blur[:, 1] * (self.blur_sigma[1] - self.blur_sigma[0])
            p = self._blur(p, blur[:, 0] < self.blur, sig)
        if noise is not None:
            p = p + self.noise * noise.to(device=dev, dtype=p.dtype)
        return back(p.clamp(0, 1)).to(dtype).contiguous()


_OPTIONS = ("scale", "ratio", "hflip", "brightness", "contrast", "jitter", "blur", "blur_sigma", "noise")


def make_views(name_or_cfg="ssl", mean=None, std=None) -> SSLViews:
    """:class:`SSLViews` from a preset name (``"ssl"``, ``"ssl_light"``) or a dict of options
    (``{"preset": "ssl_light", "noise": 0.0}``: a preset's values, some replaced), with the
    backbone's ``mean``/``std``. An :class:`SSLViews` is returned as it is."""
    if isinstance(name_or_cfg, SSLViews):
        return name_or_cfg
    if name_or_cfg is None:
        name_or_cfg = "ssl"
    if isinstance(name_or_cfg, str):
        if name_or_cfg not in PRESETS:
            raise ConfigError(f"views={name_or_cfg!r} is not a view preset; choose one of "
                              f"{', '.join(map(repr, PRESETS))} or give a dict of options."
                              + suggest(name_or_cfg, PRESETS))
        return SSLViews(**PRESETS[name_or_cfg], mean=mean, std=std)
    if not isinstance(name_or_cfg, dict):
        raise ConfigError(f"views={name_or_cfg!r} must be a preset name ({', '.join(PRESETS)}) or a dict of "
                          f"options ({', '.join(_OPTIONS)}).")
    cfg = dict(name_or_cfg)
    preset = cfg.pop("preset", "ssl")
    if preset not in PRESETS:
        raise ConfigError(f"views preset={preset!r} is not valid; choose one of {', '.join(map(repr, PRESETS))}."
                          + suggest(str(preset), PRESETS))
    unknown = [k for k in cfg if k not in _OPTIONS]
    if unknown:
        raise ConfigError(f"views option {unknown[0]!r} is not an option of SSLViews."
                          + suggest(str(unknown[0]), _OPTIONS) + f" Options: preset, {', '.join(_OPTIONS)}.")
    return SSLViews(**{**PRESETS[preset], **cfg}, mean=mean, std=std)


def _image_side(dataset) -> tuple[int, int] | None:
    inputs = dataset.inputs
    shape = inputs.shape if isinstance(inputs, np.ndarray) else (
        (len(inputs), *np.shape(inputs[0])) if len(inputs) else None)
    if shape is None or len(shape) < 3:
        return None
    return int(shape[1]), int(shape[2])


def check_views_possible(dataset, pretext_name: str, needs: str = "two augmented views of each image") -> None:
    """Raise a one-line :class:`DataError` when ``dataset`` cannot give what pretext
    ``pretext_name`` needs: an empty dataset, a modality other than ``"image"`` (text and tables
    have no crops, colours or rotations), or images smaller than :data:`MIN_SIDE` pixels."""
    name = getattr(dataset, "name", "?")
    modality = getattr(dataset, "modality", None)
    if len(dataset) == 0:
        raise DataError(f"pretext {pretext_name!r} needs {needs}; dataset {name!r} is empty, give it some images.")
    if modality != "image":
        raise DataError(f"pretext {pretext_name!r} needs {needs}; dataset {name!r} is {modality}, which these image "
                        "transforms cannot augment; use image data (the pretext tasks here are all for images: "
                        "rotation, simclr, byol, simsiam, mae).")
    side = _image_side(dataset)
    if side is not None and min(side) < MIN_SIDE:
        raise DataError(f"pretext {pretext_name!r} needs {needs}; dataset {name!r} has {side[0]}x{side[1]} images, "
                        f"smaller than {MIN_SIDE} px; load them at a larger size (e.g. digits: size=16).")
