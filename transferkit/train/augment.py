"""Batched augmentation on preprocessed image tensors.

:class:`RandomAffine` (one random warp per image; the ``light``/``strong`` presets) and
:class:`RandAugment` (random photometric and geometric operations plus Cutout, the strong view
of FixMatch). Both take an ``(N, C, H, W)`` batch that has already been normalized for the
backbone, return a batch of the same shape, dtype and device, and draw every random number
from the ``torch.Generator`` they are given, so a seeded generator reproduces the batch.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F

from .._validation import check_choice, check_number, suggest
from ..errors import ConfigError, DataError

PRESETS = {
    "none": None,
    # mild geometric jitter that is safe for any image content (no flips: they break digits/text)
    "light": {"rotate": 10.0, "translate": 0.1, "scale": (0.9, 1.1)},
    "strong": {"rotate": 20.0, "translate": 0.15, "scale": (0.8, 1.2), "hflip": True},
}


def _finite(name: str, value, low: float, high: float, what: str) -> float:
    """A finite number in ``[low, high]`` (NaN or infinity would warp every image to nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is not valid; use a finite number in [{low:g}, {high:g}] ({what}).")
    return float(value)


class RandomAffine:
    """Random rotation/translation/scale (and optional horizontal flip) for NCHW batches.

    Border pixels are replicated, so a black digit background stays black and natural images
    get no artificial frame.
    """

    def __init__(self, rotate: float = 10.0, translate: float = 0.1, scale=(0.9, 1.1), hflip: bool = False):
        rotate = _finite("rotate", rotate, 0, 180, "degrees, e.g. rotate: 10")
        translate = _finite("translate", translate, 0, 1, "a fraction of the side, e.g. translate: 0.1")
        if isinstance(scale, (int, float)) and not isinstance(scale, bool):
            scale = (scale, scale)
        if not isinstance(scale, (list, tuple)) or len(scale) != 2:
            raise ConfigError(f"scale={scale!r} must be a pair [low, high] of zoom factors, e.g. scale: [0.9, 1.1].")
        scale = tuple(_finite("scale", s, 0.01, 100, "a pair of zoom factors, e.g. scale: [0.9, 1.1]") for s in scale)
        if scale[0] > scale[1]:
            raise ConfigError(f"scale={list(scale)!r} has low > high; write it as [low, high], e.g. [0.9, 1.1].")
        if not isinstance(hflip, bool):
            raise ConfigError(f"hflip={hflip!r} is not a boolean; write hflip: true or false.")
        self.rotate, self.translate, self.scale, self.hflip = rotate, translate, scale, hflip

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]

        def u(lo, hi):
            return torch.rand(n, generator=gen) * (hi - lo) + lo

        ang = u(-self.rotate, self.rotate) * math.pi / 180
        s = u(*self.scale)
        tx, ty = u(-self.translate, self.translate) * 2, u(-self.translate, self.translate) * 2
        flip = (torch.rand(n, generator=gen) < 0.5).float() * 2 - 1 if self.hflip else torch.ones(n)
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(p: torch.Tensor) -> torch.Tensor:
    """Luma ``(N, 1, H, W)`` of pixels in [0, 1] (ITU-R 601 weights for RGB, the mean otherwise)."""
    if p.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=p.dtype, device=p.device).view(1, 3, 1, 1)
        return (p * w).sum(1, keepdim=True)
    return p.mean(1, keepdim=True)


class RandAugment:
    r"""RandAugment-style strong augmentation for normalized NCHW batches (the FixMatch strong view).

    For every image, ``n_ops`` distinct operations are drawn from ``ops``, each with its own
    random magnitude :math:`v \sim U(0, \text{magnitude})` (FixMatch's variant of RandAugment,
    which samples the magnitude instead of fixing it), then a Cutout square is applied. At
    ``magnitude=1`` the ranges are the ones of FixMatch (Sohn et al., 2020, Table 12):

    ================  ============================================================
    ``brightness``    ``p * f``, :math:`f = 1 \pm 0.9 v`
    ``contrast``      blend with the image's mean luma, factor :math:`1 \pm 0.9 v`
    ``color``         blend with the luma image (saturation), factor :math:`1 \pm 0.9 v`
    ``sharpness``     blend with a 3x3 smoothed image, factor :math:`1 \pm 0.9 v`
    ``solarize``      invert pixels above :math:`1 - v`
    ``posterize``     keep :math:`8 - \mathrm{round}(4 v)` bits
    ``autocontrast``  stretch each channel to [0, 1]
    ``noise``         add Gaussian noise of std :math:`0.1 v`
    ``rotate``        :math:`\pm 30 v` degrees
    ``shear_x/y``     :math:`\pm 0.3 v`
    ``translate_x/y`` :math:`\pm 0.3 v` of the side
    ================  ============================================================

    Photometric operations need pixel values, not normalized ones: with ``mean``/``std`` (the
    backbone's normalization) the batch is mapped back to [0, 1] pixels, augmented, clipped and
    normalized again; without them each image's own min/max range plays the role of [0, 1]
    (exactly invertible, so nothing depends on how the batch was normalized). The geometric
    operations of one image are composed into a single bilinear warp (border replicated).

    Parameters
    ----------
    n_ops
        Operations per image (2 in FixMatch).
    magnitude
        Upper bound of the per-image magnitude ``v`` in [0, 1] (scales every range above).
    cutout
        Largest Cutout side as a fraction of the shorter image side (the side is drawn from
        :math:`U(0, \text{cutout})`, the square filled with mid-gray); 0 disables Cutout.
    mean, std
        Per-channel normalization of the inputs (``BackboneSpec.mean``/``std``), or ``None``.
    ops
        Subset of :attr:`OPS` to draw from (default: all).

    References
    ----------
    Cubuk, Zoph, Shlens & Le, "RandAugment: Practical automated data augmentation with a reduced
    search space", CVPR Workshops 2020. DeVries & Taylor, "Improved regularization of
    convolutional neural networks with Cutout", 2017. Sohn et al., "FixMatch", NeurIPS 2020.
    """

    OPS = ("brightness", "contrast", "color", "sharpness", "solarize", "posterize", "autocontrast", "noise",
           "rotate", "shear_x", "shear_y", "translate_x", "translate_y")
    GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")

    def __init__(self, n_ops: int = 2, magnitude: float = 1.0, cutout: float = 0.5, mean=None, std=None, ops=None):
        self.ops = tuple(self.OPS if ops is None else ops)
        for op in self.ops:
            check_choice("ops", op, self.OPS)
        if not self.ops:
            raise ConfigError("ops=[] is empty; name at least one of RandAugment.OPS or pass ops=None for all.")
        self.n_ops = check_number("n_ops", n_ops, low=0, high=len(self.ops), integer=True)
        self.magnitude = float(check_number("magnitude", magnitude, low=0, high=1))
        self.cutout = float(check_number("cutout", cutout, low=0, high=1))
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std (the backbone's normalization) or neither.")
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)

    def __repr__(self) -> str:
        return (f"RandAugment(n_ops={self.n_ops}, magnitude={self.magnitude:g}, cutout={self.cutout:g}, "
                f"ops={len(self.ops)})")

    # ------------------------------------------------------------------ pixel space
    def _to_pixels(self, x: torch.Tensor):
        if self.mean is not None:
            c = x.shape[1]
            if len(self.mean) not in (1, c):
                raise DataError(f"RandAugment has mean/std for {len(self.mean)} channels, the batch has {c}.")
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            return ((x * std + mean).clamp(0, 1), lambda p: (p - mean) / std)
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        scale = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
        return (x - lo) / scale, lambda p: p * scale + lo

    # ------------------------------------------------------------------ operations
    def _warp(self, p, sel, v, sgn):
        """One composed affine warp for the images with at least one geometric op drawn."""
        gi = [self.ops.index(g) for g in self.GEOMETRIC if g in self.ops]
        if not gi:
            return p
        n = p.shape[0]
        m = torch.eye(3).repeat(n, 1, 1)

        def amt(op):
            j = self.ops.index(op)
            return torch.where(sel[:, j], v[:, j] * sgn[:, j], torch.zeros(n))

        def mat(a, b, c, d, e, f):
            out = torch.eye(3).repeat(n, 1, 1)
            out[:, 0, 0], out[:, 0, 1], out[:, 0, 2], out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = a, b, c, d, e, f
            return out

        zero, one = torch.zeros(n), torch.ones(n)
        if "rotate" in self.ops:
            a = amt("rotate") * (30.0 * math.pi / 180)
            m = mat(torch.cos(a), -torch.sin(a), zero, torch.sin(a), torch.cos(a), zero) @ m
        if "shear_x" in self.ops:
            m = mat(one, 0.3 * amt("shear_x"), zero, zero, one, zero) @ m
        if "shear_y" in self.ops:
            m = mat(one, zero, zero, 0.3 * amt("shear_y"), one, zero) @ m
        tx = 0.6 * amt("translate_x") if "translate_x" in self.ops else zero  # 0.3 of the side = 0.6 in [-1, 1]
        ty = 0.6 * amt("translate_y") if "translate_y" in self.ops else zero
        m = mat(one, zero, tx, zero, one, ty) @ m
        rows = torch.nonzero(sel[:, gi].any(1)).flatten()
        if len(rows) == 0:
            return p
        sub = p[rows.to(p.device)]
        theta = m[rows, :2].to(dtype=p.dtype, device=p.device)
        grid = F.affine_grid(theta, list(sub.shape), align_corners=False)
        out = p.clone()
        out[rows.to(p.device)] = F.grid_sample(sub, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out

    @staticmethod
    def _photometric(op, p, f, v, noise):
        """Apply ``op`` to every image of ``p`` (per-image factors ``f``/``v`` of shape (N, 1, 1, 1))."""
        if op == "brightness":
            return p * f
        if op == "contrast":
            mu = _gray(p).mean((1, 2, 3), keepdim=True)
            return mu + (p - mu) * f
        if op == "color":
            g = _gray(p)
            return g + (p - g) * f
        if op == "sharpness":
            # PIL's SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, via a (faster) box filter
            box = F.avg_pool2d(F.pad(p, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            smooth = (9 * box + 4 * p) / 13
            return smooth + (p - smooth) * f
        if op == "solarize":
            return torch.where(p >= 1 - v, 1 - p, p)
        if op == "posterize":
            q = 2.0 ** torch.round(4 * v)  # 8 - bits dropped -> quantization step q / 255
            return torch.floor(p * 255 / q) * q / 255
        if op == "autocontrast":
            lo = p.amin(dim=(2, 3), keepdim=True)
            hi = p.amax(dim=(2, 3), keepdim=True)
            return torch.where(hi - lo > 1e-6, (p - lo) / (hi - lo).clamp_min(1e-6), p)
        if op == "noise":
            return p + 0.1 * v * noise
        raise AssertionError(op)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise DataError(f"RandAugment takes an (N, C, H, W) image tensor, got {getattr(x, 'shape', type(x))}.")
        n, c, h, w = x.shape
        if n == 0:
            return x
        dtype, dev = x.dtype, x.device
        p, back = self._to_pixels(x.float())
        k = len(self.ops)
        # every draw is made on the CPU from ``gen`` in a fixed order, so a seed fixes the batch
        order = torch.rand(n, k, generator=gen).argsort(1)[:, : self.n_ops]
        sel = torch.zeros(n, k, dtype=torch.bool).scatter_(1, order, True)
        v = torch.rand(n, k, generator=gen) * self.magnitude
        sgn = torch.where(torch.rand(n, k, generator=gen) < 0.5, -1.0, 1.0)
        cut = torch.rand(n, 3, generator=gen)  # side fraction, centre y, centre x
        p = self._warp(p, sel, v, sgn)
        for j, op in enumerate(self.ops):
            if op in self.GEOMETRIC or not sel[:, j].any():
                continue
            rows = torch.nonzero(sel[:, j]).flatten()
            noise = torch.randn(len(rows), c, h, w, generator=gen).to(dev) if op == "noise" else None
            vj = v[rows, j].view(-1, 1, 1, 1).to(dtype=p.dtype, device=dev)
            fj = (1 + 0.9 * v[rows, j] * sgn[rows, j]).view(-1, 1, 1, 1).to(dtype=p.dtype, device=dev)
            r = rows.to(dev)
            p = p.clone()
            p[r] = self._photometric(op, p[r], fj, vj, noise).clamp(0, 1)
        if self.cutout > 0:
            side = cut[:, 0] * self.cutout * min(h, w)
            cy, cx = cut[:, 1] * h, cut[:, 2] * w
            yy = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
            xx = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
            hole = (((yy - cy.view(-1, 1, 1)).abs() <= side.view(-1, 1, 1) / 2)
                    & ((xx - cx.view(-1, 1, 1)).abs() <= side.view(-1, 1, 1) / 2))
            p = torch.where(hole[:, None].to(dev), torch.full_like(p, 0.5), p)
        return back(p).to(dtype)


def make_augment(name_or_cfg) -> RandomAffine | RandAugment | None:
    """``"none"``, ``"light"``, ``"strong"`` (random affine), ``"randaugment"`` (:class:`RandAugment`
    with its defaults), or a dict: :class:`RandomAffine` arguments, or ``{"kind": "randaugment", ...}``
    with :class:`RandAugment` arguments."""
    if name_or_cfg is None or name_or_cfg is False:
        return None
    if isinstance(name_or_cfg, dict):
        cfg = dict(name_or_cfg)
        kind = cfg.pop("kind", "affine")
        check_choice("augment kind", kind, ("affine", "randaugment"))
        cls = RandAugment if kind == "randaugment" else RandomAffine
        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = [k for k in cfg if k not in valid]
        if unknown:
            raise ConfigError(f"augment option {unknown[0]!r} is not an option of {cls.__name__}."
                              + suggest(str(unknown[0]), valid) + f" Options: kind, {', '.join(valid)}.")
        return cls(**cfg)
    check_choice("augment", name_or_cfg, [*PRESETS, "randaugment"])
    if name_or_cfg == "randaugment":
        return RandAugment()
    cfg = PRESETS[name_or_cfg]
    return RandomAffine(**cfg) if cfg else None
