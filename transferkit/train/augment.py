"""Batched augmentation on preprocessed image tensors (one affine warp per image)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._validation import check_choice

PRESETS = {
    "none": None,
    # mild geometric jitter that is safe for any image content (no flips: they break digits/text)
    "light": {"rotate": 10.0, "translate": 0.1, "scale": (0.9, 1.1)},
    "strong": {"rotate": 20.0, "translate": 0.15, "scale": (0.8, 1.2), "hflip": True},
}


class RandomAffine:
    """Random rotation/translation/scale (and optional horizontal flip) for NCHW batches.

    Border pixels are replicated, so a black digit background stays black and natural images
    get no artificial frame.
    """

    def __init__(self, rotate: float = 10.0, translate: float = 0.1, scale=(0.9, 1.1), hflip: bool = False):
        self.rotate, self.translate, self.scale, self.hflip = rotate, translate, tuple(scale), hflip

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


def make_augment(name_or_cfg) -> RandomAffine | None:
    """``"none"``, ``"light"``, ``"strong"`` or a dict of :class:`RandomAffine` arguments."""
    if name_or_cfg is None or name_or_cfg is False:
        return None
    if isinstance(name_or_cfg, dict):
        return RandomAffine(**name_or_cfg)
    check_choice("augment", name_or_cfg, PRESETS)
    cfg = PRESETS[name_or_cfg]
    return RandomAffine(**cfg) if cfg else None
