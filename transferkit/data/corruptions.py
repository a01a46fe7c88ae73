"""Common image corruptions at severities 1-5, after CIFAR-10-C (Hendrycks & Dietterich, 2019).

``corrupt(images, "gaussian_noise", severity=5, seed=0)`` returns a corrupted float32 copy of
``(n, H, W)`` (grayscale) or ``(n, H, W, C)`` images with values in [0, 1], clipped to [0, 1].
In a dataset spec the same corruptions are options of any image dataset
(``digits:corrupt=motion_blur,severity=3``; see :mod:`transferkit.data.spec`).

Severity tables
---------------
The parameters are those of the CIFAR-10-C generator (``make_cifar_c.py`` of
github.com/hendrycks/robustness), which are defined on 32 x 32 images. The scaling rule:
with ``s = min(H, W)``, every *spatial* parameter (a blur radius or sigma, a motion length, an
elastic displacement or smoothness, an affine jitter, all in pixels) is multiplied by
``s / 32``; every *photometric* parameter (noise level, Poisson rate, impulse fraction,
contrast factor, brightness shift, JPEG quality, pixelate and zoom factors, fog amount) is
used as is, because it is already relative to the [0, 1] range or to the image side. So
28 x 28 MNIST-like images get 0.875 times CIFAR's blur widths, 64 x 64 images twice them.

Where CIFAR-10-C's table is not strictly monotone in distortion, it was changed (see each
function): motion blur (severities 3 and 4 share sigma 2 and differ only in a truncation
radius that changes nothing) uses sigmas 1, 1.5, 2, 2.5, 3; elastic transform (severity 1 is
a large pure affine jitter, larger than severity 5's) uses increasing affine and elastic
displacements; pixelate uses factors 0.97, 0.9, 0.8, 0.7, 0.6 (box resampling aliases less
at some rounded sides than at larger ones); defocus blur uses an area-sampled (anti-aliased) disk so that a sub-pixel
radius after scaling still blurs.

Randomness
----------
Image ``i`` draws from ``numpy.random.default_rng((seed, index[i]))`` (``index`` defaults to
``0..n-1``), so a corrupted image depends only on ``(seed, index, severity)``: the same in a
batch, alone, in a subset, in a lazily read dataset and in an eager one. At a fixed seed the
draws are the same at every severity, so a higher severity is the same pattern, stronger.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import suggest
from ..errors import ConfigError, DataError

#: Side of the images the CIFAR-10-C tables were made for; spatial parameters scale by side / 32.
REFERENCE_SIDE = 32

SEVERITIES = (1, 2, 3, 4, 5)

#: Severity used when ``corrupt=`` is given without ``severity=`` (the middle level).
DEFAULT_SEVERITY = 3

#: Images corrupted at once on the eager path (bounds the temporary memory).
CHUNK = 1024

#: Parameters per severity 1..5 (at 32 x 32 for spatial ones; see the module docstring).
TABLES: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of N(0, c^2) added
    "shot_noise": (500, 250, 100, 75, 50),  # Poisson rate: Poisson(x c) / c
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),  # disk radius, alias sigma
    "motion_blur": (1.0, 1.5, 2.0, 2.5, 3.0),  # sigma of the one-sided Gaussian trail (CIFAR: 1,1.5,2,2,2.5)
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma
    "zoom_blur": (0.06, 0.11, 0.16, 0.21, 0.26),  # zoom factors 1, 1.01, ... < 1 + c
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the deviation from the mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to V of HSV
    "pixelate": (0.97, 0.9, 0.8, 0.7, 0.6),  # box down-sampling factor (CIFAR: .95 .9 .85 .75 .65)
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
    "elastic_transform": ((0.02, 0.02), (0.04, 0.03), (0.05, 0.04), (0.06, 0.05), (0.08, 0.06)),  # affine, elastic (x side)
    "fog": ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),  # amount, wibble decay
}

#: Smoothness (Gaussian sigma) of the elastic displacement field, as a fraction of the side.
ELASTIC_SMOOTHNESS = 0.06


# ----------------------------------------------------------------------------- helpers


def _scale(x: np.ndarray) -> float:
    return min(x.shape[1], x.shape[2]) / REFERENCE_SIDE


def _gauss1d(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / max(sigma, 1e-12)) ** 2)
    return k / k.sum()


def _correlate(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """``out[p] = sum_q K[q] x[p + q]`` for each image, edges replicated, through the FFT.

    ``x`` is ``(n, H, W, C)``; ``kernels`` is one odd ``(k, k)`` kernel or one per image
    ``(n, k, k)``, centred. The images are padded by ``k // 2`` (edge values), so the circular
    convolution never wraps into the kept part.
    """
    n, h, w, _ = x.shape
    k = kernels.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
    size = (h + 2 * p, w + 2 * p)
    kk = np.zeros((*kernels.shape[:-2], *size), dtype=np.float64)
    flipped = kernels[..., ::-1, ::-1]  # correlation = convolution with the flipped kernel
    kk[..., :k, :k] = flipped
    kk = np.roll(kk, (-p, -p), axis=(-2, -1))  # centre the kernel at (0, 0)
    fx = np.fft.rfft2(xp, axes=(1, 2))
    fk = np.fft.rfft2(kk, axes=(-2, -1))
    fk = fk[None, ..., None] if kernels.ndim == 2 else fk[..., None]
    out = np.fft.irfft2(fx * fk, s=size, axes=(1, 2))
    return out[:, p : p + h, p : p + w].astype(np.float32)


def _mirror(t: np.ndarray, n: int) -> np.ndarray:
    """Coordinates reflected into ``[0, n-1]`` (the edge pixel not repeated: cv2's REFLECT_101)."""
    if n == 1:
        return np.zeros_like(t)
    period = 2 * (n - 1)
    t = np.mod(t, period)
    return np.where(t > n - 1, period - t, t)


def _bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample each image of ``x`` ``(n, H, W, C)`` at ``(rows, cols)`` ``(n, H, W)`` (bilinear, mirrored)."""
    n, h, w, c = x.shape
    r = _mirror(rows, h)
    q = _mirror(cols, w)
    r0 = np.clip(np.floor(r).astype(np.int64), 0, h - 1)
    q0 = np.clip(np.floor(q).astype(np.int64), 0, w - 1)
    r1, q1 = np.minimum(r0 + 1, h - 1), np.minimum(q0 + 1, w - 1)
    fr, fq = (r - r0)[..., None], (q - q0)[..., None]
    b = np.arange(n)[:, None, None]
    top = x[b, r0, q0] * (1 - fq) + x[b, r0, q1] * fq
    bot = x[b, r1, q0] * (1 - fq) + x[b, r1, q1] * fq
    return (top * (1 - fr) + bot * fr).astype(np.float32)


# ----------------------------------------------------------------------------- noise


def gaussian_noise(x, c, rngs):
    """Additive Gaussian noise: ``x + N(0, c^2)`` per value; ``c`` = 0.04 .. 0.10."""
    noise = np.stack([g.standard_normal(x.shape[1:], dtype=np.float32) for g in rngs])
    return x + np.float32(c) * noise


def shot_noise(x, c, rngs):
    """Poisson (photon) noise: ``Poisson(x c) / c``; rate ``c`` = 500 .. 50."""
    return np.stack([g.poisson(xi.astype(np.float64) * c) for g, xi in zip(rngs, x)]).astype(np.float32) / np.float32(c)


def impulse_noise(x, c, rngs):
    """Salt-and-pepper noise: a fraction ``c`` (0.01 .. 0.07) of the values is set to 0 or 1, half each."""
    u = np.stack([g.random((2, *x.shape[1:]), dtype=np.float32) for g in rngs])
    hit, salt = u[:, 0] < c, u[:, 1] < 0.5
    return np.where(hit, salt.astype(np.float32), x)


# ----------------------------------------------------------------------------- blur


def defocus_kernel(radius: float, alias: float) -> np.ndarray:
    """A disk of ``radius`` pixels, each cell weighted by the part of it inside the circle
    (16 x 16 sub-samples, the centre cell always in), smoothed by a Gaussian of ``alias``."""
    r = int(np.ceil(radius)) + 1
    sub = (np.arange(16) + 0.5) / 16 - 0.5
    t = np.arange(-r, r + 1)
    yy = (t[:, None, None, None] + sub[None, None, :, None]) ** 2
    xx = (t[None, :, None, None] + sub[None, None, None, :]) ** 2
    disk = ((yy + xx) <= radius**2).mean(axis=(2, 3))
    disk[r, r] = max(disk[r, r], 1.0)
    g = _gauss1d(alias)
    a = len(g) // 2
    disk = np.pad(disk, a)
    from scipy.ndimage import convolve1d

    disk = convolve1d(convolve1d(disk, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return disk / disk.sum()


def defocus_blur(x, c, rngs):
    """Defocus (disk) blur; radius and alias sigma ``(0.3, 0.4) .. (1.5, 0.1)`` px x side/32."""
    s = _scale(x)
    return _correlate(x, defocus_kernel(c[0] * s, c[1] * s))


def motion_kernel(sigma: float, angle_deg: float) -> np.ndarray:
    """A one-sided Gaussian trail: weight ``exp(-t^2 / 2 sigma^2)`` at distance ``t = 0, 1, ..,
    3 sigma`` from the centre along ``angle``, splatted bilinearly (sub-pixel steps)."""
    length = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(length + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    w /= w.sum()
    a = np.deg2rad(angle_deg)
    k = np.zeros((2 * length + 3, 2 * length + 3))
    ry, rx = length + 1 + t * np.sin(a), length + 1 + t * np.cos(a)
    y0, x0 = np.floor(ry).astype(int), np.floor(rx).astype(int)
    fy, fx = ry - y0, rx - x0
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(k, (y0 + dy, x0 + dx), w * wt)
    return k


def motion_blur(x, c, rngs):
    """Motion blur along a random angle in [-45, 45) degrees; trail sigma 1 .. 3 px x side/32."""
    s = _scale(x)
    kernels = np.stack([motion_kernel(c * s, g.uniform(-45, 45)) for g in rngs])
    return _correlate(x, kernels)


def gaussian_blur(x, c, rngs):
    """Gaussian blur; sigma 0.4 .. 1.0 px x side/32 (edges replicated)."""
    from scipy.ndimage import gaussian_filter

    s = c * _scale(x)
    return gaussian_filter(x, sigma=(0, s, s, 0), mode="nearest", truncate=3.0)


def _zoom(x: np.ndarray, f: float) -> np.ndarray:
    """The centre of each image magnified by ``f`` (bilinear), same size."""
    n, h, w, _ = x.shape
    rows = (np.arange(h) - (h - 1) / 2) / f + (h - 1) / 2
    cols = (np.arange(w) - (w - 1) / 2) / f + (w - 1) / 2
    r0 = np.clip(np.floor(rows).astype(int), 0, h - 1)
    c0 = np.clip(np.floor(cols).astype(int), 0, w - 1)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (rows - r0)[None, :, None, None], (cols - c0)[None, None, :, None]
    xr = x[:, r0] * (1 - fr) + x[:, r1] * fr
    return xr[:, :, c0] * (1 - fc) + xr[:, :, c1] * fc


def zoom_blur(x, c, rngs):
    """Zoom blur: the mean of the image and its centre zoomed by 1, 1.01, .. < 1 + c (c = 0.06 .. 0.26)."""
    factors = np.arange(1, 1 + c, 0.01)
    out = x.astype(np.float64).copy()
    for f in factors:
        out += _zoom(x, f)
    return (out / (len(factors) + 1)).astype(np.float32)


# ----------------------------------------------------------------------------- photometric


def contrast(x, c, rngs):
    """Lower contrast: ``(x - m) c + m``, ``m`` the per-image, per-channel mean; ``c`` = 0.75 .. 0.15."""
    m = x.mean(axis=(1, 2), keepdims=True)
    return (x - m) * np.float32(c) + m


def brightness(x, c, rngs):
    """Brighter: ``V`` of HSV raised by ``c`` = 0.05 .. 0.3 (clipped at 1), hue and saturation kept.

    With H and S fixed, RGB is proportional to V, so each pixel is scaled by ``V' / V`` (a black
    pixel, which has S = 0, becomes grey ``V'``); for a grayscale image this is ``min(x + c, 1)``.
    """
    v = x.max(axis=-1, keepdims=True)
    v2 = np.minimum(v + np.float32(c), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, x * (v2 / v), v2)


def _box_matrix(n: int, m: int) -> np.ndarray:
    """The ``(m, n)`` matrix of Pillow's BOX resize of a length-``n`` signal to length ``m``."""
    from PIL import Image

    eye = Image.fromarray(np.eye(n, dtype=np.float32), mode="F")
    return np.asarray(eye.resize((m, n), Image.Resampling.BOX), dtype=np.float64).T


def pixelate(x, c, rngs):
    """Pixelation: box down-sampling to ``int(side c)`` then box up-sampling back (Pillow's BOX
    filter, applied as two separable linear maps); ``c`` = 0.97, 0.9, 0.8, 0.7, 0.6.

    CIFAR-10-C's factors (0.95, 0.9, 0.85, 0.75, 0.65) are not monotone in distortion after
    the integer rounding of the side: box resampling 28 -> 26 -> 28 aliases more than
    28 -> 25 -> 28, and 32 -> 28 more than 32 -> 27. The factors above give strictly
    increasing distortion at sides 28, 32 and 64.
    """
    _, h, w, _ = x.shape
    hh, ww = max(1, int(h * c)), max(1, int(w * c))
    rows = _box_matrix(hh, h) @ _box_matrix(h, hh)  # (h, h): down then up
    cols = _box_matrix(ww, w) @ _box_matrix(w, ww)
    return np.einsum("ij,njkc,lk->nilc", rows, x, cols, optimize=True).astype(np.float32)


def jpeg_compression(x, c, rngs):
    """JPEG compression at quality ``c`` = 80 .. 40 (Pillow; values rounded to 8 bits first)."""
    from PIL import Image

    u8 = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    out = np.empty(x.shape, dtype=np.float32)
    planes = [slice(None)] if x.shape[-1] in (1, 3) else [slice(k, k + 1) for k in range(x.shape[-1])]
    for i in range(len(x)):
        for sl in planes:
            a = u8[i][..., sl]
            im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a, mode="L" if a.shape[-1] == 1 else "RGB")
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=int(c))
            buf.seek(0)
            with Image.open(buf) as dec:
                out[i][..., sl] = np.asarray(dec, dtype=np.float32).reshape(a.shape) / 255.0
    return out


# ----------------------------------------------------------------------------- geometric


def elastic_transform(x, c, rngs):
    """Elastic deformation: a random affine jitter (three control points moved by up to
    ``c[0] side`` px) composed with a smooth random displacement field (Gaussian-smoothed
    uniform noise, sigma ``0.06 side``, scaled to an RMS of ``c[1] side`` px); one bilinear
    resampling, edges mirrored. ``c`` = (0.02, 0.02) .. (0.08, 0.06).

    CIFAR-10-C's table ((0, 0, 0.08) .. (0.1, 0.03, 0.03) as alpha, sigma, affine) is not
    monotone: its severity 1 is the largest affine jitter. Here both parts grow with severity.
    """
    from scipy.ndimage import gaussian_filter

    n, h, w, _ = x.shape
    side = min(h, w)
    a_px, e_px = c[0] * side, c[1] * side
    ctr = np.array([h // 2, w // 2], dtype=np.float64)
    sq = side // 3
    src = np.array([ctr + sq, [ctr[0] + sq, ctr[1] - sq], ctr - sq])  # (3, 2) as (row, col)
    draws = [(g.uniform(-1, 1, size=(3, 2)), g.uniform(-1, 1, size=(2, h, w))) for g in rngs]
    field = gaussian_filter(np.stack([d[1] for d in draws]), sigma=(0, 0, ELASTIC_SMOOTHNESS * side,
                                                                    ELASTIC_SMOOTHNESS * side), mode="reflect")
    rms = np.sqrt((field**2).sum(axis=1).mean(axis=(1, 2)))[:, None, None, None]
    field = field / np.maximum(rms, 1e-12) * e_px
    rr, cc = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    rows, cols = np.empty((n, h, w)), np.empty((n, h, w))
    ones = np.ones((3, 1))
    for i, (jit, _) in enumerate(draws):
        dst = src + a_px * jit
        # the affine map dst -> src: output pixel p samples the input at A [p, 1]
        a = np.linalg.lstsq(np.hstack([dst, ones]), src, rcond=None)[0]  # (3, 2)
        pr, pc = rr + field[i, 0], cc + field[i, 1]
        rows[i] = a[0, 0] * pr + a[1, 0] * pc + a[2, 0]
        cols[i] = a[0, 1] * pr + a[1, 1] * pc + a[2, 1]
    return _bilinear(x, rows, cols)


# ----------------------------------------------------------------------------- weather


def plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A ``size x size`` (a power of two) diamond-square height map with values in [0, 1].

    Each level's midpoints are the mean of their four neighbours (toroidal) plus uniform noise
    whose amplitude is divided by ``decay`` from one level to the next: a large ``decay`` gives
    smooth, large-scale fog, a small one patchier fog.
    """
    m = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = m[0:size:step, 0:size:step]
        sq = corners + np.roll(corners, -1, axis=0)
        sq = sq + np.roll(sq, -1, axis=1)
        m[half:size:step, half:size:step] = sq / 4 + wibble * rng.uniform(-wibble, wibble, sq.shape)
        centres = m[half:size:step, half:size:step]
        corners = m[0:size:step, 0:size:step]
        s1 = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        m[0:size:step, half:size:step] = s1 / 4 + wibble * rng.uniform(-wibble, wibble, s1.shape)
        s2 = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        m[half:size:step, 0:size:step] = s2 / 4 + wibble * rng.uniform(-wibble, wibble, s2.shape)
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / max(m.max(), 1e-12)


def fog(x, c, rngs):
    """Fog: a plasma fractal of amount ``c[0]`` added, then rescaled to keep the image's maximum:
    ``(x + a P) max(x) / (max(x) + a)``; ``(a, decay)`` = (0.2, 3) .. (1.5, 1.75)."""
    n, h, w, _ = x.shape
    size = 1 << max(1, int(np.ceil(np.log2(max(h, w)))))
    p = np.stack([plasma_fractal(size, c[1], g)[:h, :w] for g in rngs]).astype(np.float32)[..., None]
    mx = x.max(axis=(1, 2, 3), keepdims=True)
    a = np.float32(c[0])
    return (x + a * p) * mx / (mx + a)


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``fn(images (n, H, W, C), parameter, rngs) -> images``."""

    name: str
    fn: Callable[[np.ndarray, Any, list], np.ndarray]
    description: str
    random: bool


def _entry(name: str, fn: Callable, random: bool) -> Corruption:
    return Corruption(name, fn, (fn.__doc__ or "").strip().split("\n")[0], random)


#: Name -> :class:`Corruption`.
CORRUPTIONS: dict[str, Corruption] = {
    e.name: e
    for e in (
        _entry("gaussian_noise", gaussian_noise, True),
        _entry("shot_noise", shot_noise, True),
        _entry("impulse_noise", impulse_noise, True),
        _entry("defocus_blur", defocus_blur, False),
        _entry("motion_blur", motion_blur, True),
        _entry("gaussian_blur", gaussian_blur, False),
        _entry("zoom_blur", zoom_blur, False),
        _entry("contrast", contrast, False),
        _entry("brightness", brightness, False),
        _entry("pixelate", pixelate, False),
        _entry("jpeg_compression", jpeg_compression, False),
        _entry("elastic_transform", elastic_transform, True),
        _entry("fog", fog, True),
    )
}


def list_corruptions() -> dict[str, str]:
    """Corruption names -> one-line descriptions."""
    return {k: v.description for k, v in CORRUPTIONS.items()}


def check_corruption(names: Any, severity: Any = None, seed: Any = 0, *, what: str = "corrupt") -> tuple[
        tuple[str, ...], int, int]:
    """Validate ``corrupt=``/``severity=``/``corrupt_seed=`` values; return ``(names, severity, seed)``.

    ``names`` is one name or a list applied in order; ``severity`` defaults to
    :data:`DEFAULT_SEVERITY`. Raises a one-line :class:`ConfigError` naming the value.
    """
    from ._options import number

    valid = list(CORRUPTIONS)
    items = list(names) if isinstance(names, (list, tuple)) else [names]
    if not items:
        raise ConfigError(f"{what}: corrupt=[] names no corruption; give one, e.g. corrupt=gaussian_noise. "
                          f"Corruptions: {', '.join(valid)}.")
    for n in items:
        if not isinstance(n, str) or n not in CORRUPTIONS:
            raise ConfigError(f"{what}: unknown corruption corrupt={n!r}." + suggest(str(n), valid)
                              + f" Corruptions: {', '.join(valid)}.")
    sev = DEFAULT_SEVERITY if severity is None else number(
        what, "severity", severity, low=1, high=5, integer=True,
        hint="the corruption severity, 1 (mild) to 5 (strongest) as in CIFAR-10-C, e.g. severity=3")
    sd = number(what, "corrupt_seed", 0 if seed is None else seed, low=0, high=2**32 - 1, integer=True,
                hint="the seed of the per-image corruption draws, e.g. corrupt_seed=1")
    return tuple(items), int(sev), int(sd)


def corrupt(images: np.ndarray, name: str | Sequence[str], severity: int = DEFAULT_SEVERITY, seed: int = 0, *,
            index: np.ndarray | None = None) -> np.ndarray:
    """Corrupt a batch of images.

    Parameters
    ----------
    images
        Float array ``(n, H, W)`` or ``(n, H, W, C)`` with values in [0, 1].
    name
        A name of :data:`CORRUPTIONS`, or a list applied in order (each at ``severity``).
    severity
        1 (mild) .. 5 (strongest); the parameters are in :data:`TABLES`.
    seed
        Image ``i`` draws from ``default_rng((seed, index[i]))``.
    index
        The images' positions in their dataset (default ``0..n-1``), so that a subset or a
        single image is corrupted exactly as in the whole.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``images``, values in [0, 1].
    """
    names, sev, seed = check_corruption(name, severity, seed)
    x = np.asarray(images)
    if x.ndim not in (3, 4):
        raise DataError(f"corrupt: images must have shape (n, H, W) or (n, H, W, C), got {x.shape}.")
    gray = x.ndim == 3
    x4 = (x[..., None] if gray else x).astype(np.float32, copy=True)
    idx = np.arange(len(x4)) if index is None else np.asarray(index, dtype=np.int64).reshape(-1)
    if len(idx) != len(x4):
        raise DataError(f"corrupt: {len(idx)} indices for {len(x4)} images; give one index per image.")
    rngs = None
    for n in names:
        entry = CORRUPTIONS[n]
        if entry.random and rngs is None:
            rngs = [np.random.default_rng((seed, int(j))) for j in idx]
        if len(x4):
            x4 = np.clip(entry.fn(x4, TABLES[n][sev - 1], rngs), 0, 1).astype(np.float32, copy=False)
    return x4[..., 0] if gray else x4


def describe(names: Sequence[str], severity: int) -> str:
    """The dataset-name suffix of a corruption: ``[gaussian_noise@5]``, ``[fog@3+pixelate@3]``."""
    return "[" + "+".join(f"{n}@{severity}" for n in names) + "]"


class CorruptedImages(Sequence):
    """A lazy image sequence corrupted per item on access (the base is never materialised).

    Parameters
    ----------
    base
        A lazy image sequence (:class:`~transferkit.data.IdxImages`,
        :class:`~transferkit.data.ImageFolderInputs`, ...): ``base[i]`` is an ``(H, W)`` or
        ``(H, W, C)`` float array in [0, 1].
    names, severity, seed
        As for :func:`corrupt`.
    index
        Position of each item in the dataset the corruption was applied to (its seed);
        ``None`` for ``0..len(base)-1``.

    Notes
    -----
    Item ``i`` is ``corrupt(base[i][None], names, severity, seed, index=[index[i]])[0]``,
    so it equals the eager result for the same position. Indexing mirrors the base: an int
    gives one image; a slice, an integer array or a mask gives a stacked array when the base
    gives one, else a lazy :meth:`subset`.
    """

    def __init__(self, base: Sequence, names: Sequence[str], severity: int, seed: int,
                 index: np.ndarray | None = None) -> None:
        self.base = base
        self.names = tuple(names)
        self.severity = int(severity)
        self.seed = int(seed)
        self.index = np.arange(len(base), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.base)

    def _positions(self, key) -> np.ndarray:
        return np.arange(len(self), dtype=np.int64)[key]

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)):
            k = int(i) + (len(self) if int(i) < 0 else 0)
            if not 0 <= k < len(self):
                raise IndexError(f"image index {int(i)} out of range for {len(self)} images")
            img = np.asarray(self.base[k], dtype=np.float32)
            return corrupt(img[None], self.names, self.severity, self.seed, index=self.index[k : k + 1])[0]
        pos = self._positions(i if isinstance(i, slice) else np.asarray(i))
        out = self.base[pos] if len(pos) else None
        if isinstance(out, np.ndarray):
            return corrupt(out, self.names, self.severity, self.seed, index=self.index[pos])
        return self.subset(pos)

    def subset(self, idx) -> CorruptedImages:
        """A lazy view of the items at ``idx``, each corrupted as in the whole."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        base = self.base.subset(idx) if hasattr(self.base, "subset") else [self.base[int(j)] for j in idx]
        return CorruptedImages(base, self.names, self.severity, self.seed, self.index[idx])

    def fingerprint(self) -> str:
        """The base's fingerprint (or content hash) plus the corruption and the item positions."""
        h = hashlib.sha256()
        if hasattr(self.base, "fingerprint"):
            h.update(self.base.fingerprint().encode())
        else:
            for item in self.base:
                h.update(np.ascontiguousarray(item).tobytes())
        h.update(f"corrupt {'+'.join(self.names)} severity={self.severity} seed={self.seed}\n".encode())
        h.update(self.index.tobytes())
        return h.hexdigest()[:20]

    def __repr__(self) -> str:
        return f"CorruptedImages({self.base!r}, {describe(self.names, self.severity)}, seed={self.seed})"


def corrupt_inputs(inputs: Any, names: Sequence[str], severity: int, seed: int) -> Any:
    """Corrupted image inputs: an array eagerly (in chunks of :data:`CHUNK`), a lazy sequence lazily."""
    if isinstance(inputs, np.ndarray):
        out = np.empty(inputs.shape, dtype=np.float32)
        for s in range(0, len(inputs), CHUNK):
            out[s : s + CHUNK] = corrupt(inputs[s : s + CHUNK], names, severity, seed,
                                         index=np.arange(s, min(s + CHUNK, len(inputs))))
        return out
    return CorruptedImages(inputs, names, severity, seed)
