"""CIFAR-10-C-style corruptions: shapes, seeds, monotone severities, closed forms, the spec hook."""

from __future__ import annotations

import colorsys
import struct
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from transferkit.data import load_dataset
from transferkit.data.corruptions import (
    CORRUPTIONS,
    TABLES,
    CorruptedImages,
    corrupt,
    defocus_kernel,
    list_corruptions,
    motion_kernel,
)
from transferkit.errors import ConfigError

NAMES = list(CORRUPTIONS)
RANDOM = [n for n, c in CORRUPTIONS.items() if c.random]


@pytest.fixture(scope="module")
def digits28():
    from transferkit.data.digits import _resized_digits

    return _resized_digits(28)[0][:200].copy()


@pytest.fixture(scope="module")
def digits32():
    from transferkit.data.digits import _resized_digits

    return _resized_digits(32)[0][:200].copy()


def _rgb(x):
    return np.stack([x, 0.5 * x + 0.25, 1 - x], axis=-1).astype(np.float32)


def _rmse(a, b):
    return float(np.sqrt(((a.astype(np.float64) - b) ** 2).mean()))


def test_registry_lists_every_corruption():
    d = list_corruptions()
    assert set(d) == set(TABLES) and len(d) >= 12
    assert all(isinstance(v, str) and v for v in d.values())
    assert all(len(TABLES[n]) == 5 for n in TABLES)


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_range_gray_and_rgb(name, digits28):
    for x in (digits28[:16], _rgb(digits28[:16]), digits28[:16].astype(np.float64)):
        out = corrupt(x, name, 5, seed=1)
        assert out.shape == x.shape and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert corrupt(digits28[:0], name, 3).shape == (0, 28, 28)
    x0 = digits28[:4].copy()
    corrupt(x0, name, 3)
    np.testing.assert_array_equal(x0, digits28[:4])  # the input is not modified


@pytest.mark.parametrize("name", NAMES)
def test_seeded_reproducible_and_index_consistent(name, digits28):
    x = digits28[:12]
    a = corrupt(x, name, 4, seed=3)
    np.testing.assert_array_equal(a, corrupt(x, name, 4, seed=3))
    # image i depends on (seed, index) only: alone or in a batch, the same
    np.testing.assert_allclose(corrupt(x[5:6], name, 4, seed=3, index=[5])[0], a[5], atol=1e-6)
    if name in RANDOM:
        assert not np.allclose(a, corrupt(x, name, 4, seed=4))
    else:
        np.testing.assert_array_equal(a, corrupt(x, name, 4, seed=4))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", [28, 32])
def test_severity_is_strictly_monotone(name, side, digits28, digits32):
    x = digits28 if side == 28 else digits32
    d = [_rmse(corrupt(x, name, s, seed=0), x) for s in range(1, 6)]
    assert all(b > a * 1.02 for a, b in zip(d, d[1:])), (name, side, d)


def test_gaussian_noise_std_matches_table():
    x = np.full((50, 32, 32), 0.5, dtype=np.float32)
    for s in range(1, 6):
        std = float((corrupt(x, "gaussian_noise", s) - 0.5).std())
        c = TABLES["gaussian_noise"][s - 1]
        # 51,200 values: the sample std is within ~0.3% of c; clipping never happens at 0.5 +- 5c
        assert abs(std - c) < 0.01 * c, (s, std, c)


def test_shot_noise_is_poisson():
    x = np.full((40, 32, 32), 0.3, dtype=np.float32)
    out = corrupt(x, "shot_noise", 5)
    c = TABLES["shot_noise"][4]
    k = out * c
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)  # multiples of 1/c
    assert abs(k.mean() - 0.3 * c) < 0.02 * 0.3 * c and abs(k.var() - 0.3 * c) < 0.05 * 0.3 * c


def test_impulse_noise_fraction_matches_amount():
    x = np.full((40, 32, 32, 3), 0.5, dtype=np.float32)
    for s in (1, 5):
        out = corrupt(x, "impulse_noise", s)
        amount = TABLES["impulse_noise"][s - 1]
        salt, pepper = (out == 1).mean(), (out == 0).mean()
        assert abs(salt + pepper - amount) < 0.1 * amount
        assert abs(salt - pepper) < 0.2 * amount
        assert ((out == 0.5) | (out == 0) | (out == 1)).all()


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_contrast_scales_deviation_exactly(severity, digits28):
    x = _rgb(digits28[:10])
    out = corrupt(x, "contrast", severity)
    m = x.mean(axis=(1, 2), keepdims=True)
    c = TABLES["contrast"][severity - 1]
    np.testing.assert_allclose(out - m, c * (x - m), atol=1e-6)


def test_brightness_raises_hsv_value(digits28):
    c = TABLES["brightness"][2]
    g = digits28[:5]
    np.testing.assert_allclose(corrupt(g, "brightness", 3), np.minimum(g + c, 1), atol=1e-6)
    rng = np.random.default_rng(0)
    x = rng.random((3, 6, 6, 3)).astype(np.float32)
    x[0, 0, 0] = 0  # black: S = 0, becomes grey V' = c
    out = corrupt(x, "brightness", 3)
    for img, o in zip(x.reshape(-1, 3), out.reshape(-1, 3)):
        h, s, v = colorsys.rgb_to_hsv(*map(float, img))
        np.testing.assert_allclose(o, colorsys.hsv_to_rgb(h, s, min(v + c, 1.0)), atol=1e-5)
    assert out.mean() > x.mean()


@pytest.mark.parametrize("side", [28, 32])
def test_pixelate_equals_pillow_down_up(side, digits28, digits32):
    x = _rgb(digits28[:3] if side == 28 else digits32[:3])
    for s in (1, 5):
        c = TABLES["pixelate"][s - 1]
        m = int(side * c)
        out = corrupt(x, "pixelate", s)
        for img, o in zip(x, out):
            for ch in range(3):
                im = Image.fromarray(img[..., ch], mode="F")
                ref = np.asarray(im.resize((m, m), Image.Resampling.BOX).resize((side, side), Image.Resampling.BOX))
                np.testing.assert_allclose(o[..., ch], np.clip(ref, 0, 1), atol=1e-5)


def test_jpeg_equals_pillow_round_trip(digits28):
    x = digits28[:3]
    out = corrupt(x, "jpeg_compression", 5)
    import io

    for img, o in zip(x, out):
        buf = io.BytesIO()
        Image.fromarray(np.rint(img * 255).astype(np.uint8), mode="L").save(buf, format="JPEG", quality=40)
        np.testing.assert_array_equal(o, np.asarray(Image.open(buf), dtype=np.float32) / 255)


def test_blur_kernels_are_normalised_and_keep_constants():
    for r, a in TABLES["defocus_blur"]:
        k = defocus_kernel(r, a)
        assert abs(k.sum() - 1) < 1e-9 and (k >= 0).all()
        np.testing.assert_allclose(k, k.T, atol=1e-12)  # a disk is symmetric
    k = motion_kernel(2.0, 30.0)
    assert abs(k.sum() - 1) < 1e-9
    x = np.full((2, 16, 16, 3), 0.4, dtype=np.float32)
    for name in ("defocus_blur", "motion_blur", "gaussian_blur", "zoom_blur", "elastic_transform", "pixelate"):
        np.testing.assert_allclose(corrupt(x, name, 5), 0.4, atol=1e-5)


def test_motion_blur_matches_direct_sum():
    """The FFT correlation against a direct sum over the kernel (interior pixels)."""
    from transferkit.data.corruptions import _correlate

    rng = np.random.default_rng(0)
    x = rng.random((2, 20, 20, 1)).astype(np.float32)
    k = motion_kernel(1.5, 20.0)
    out = _correlate(x, k)
    p = k.shape[0] // 2
    i, j = 10, 9
    direct = sum(k[a, b] * x[0, i + a - p, j + b - p, 0] for a in range(k.shape[0]) for b in range(k.shape[1]))
    assert abs(out[0, i, j, 0] - direct) < 1e-5


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("spec, match", [
    ("digits:corrupt=gausian_noise", r"unknown corruption corrupt='gausian_noise'\. Did you mean 'gaussian_noise'"),
    ("digits:corrupt=fog,severity=6", r"severity=6 must be a finite integer >= 1 and <= 5"),
    ("digits:corrupt=fog,severity=0", r"severity=0"),
    ("digits:corrupt=fog,severity=2.5", r"severity=2.5"),
    ("digits:severity=3", r"severity=3 given without corrupt="),
    ("digits:corrupt_seed=3", r"corrupt_seed=3 given without corrupt="),
    ("digits:corrupt=[]", r"names no corruption"),
    ("digits:corrupt=[fog,blurr]", r"unknown corruption corrupt='blurr'"),
    ("digits:corrupt=fog,corrupt_seed=-1", r"corrupt_seed=-1"),
])
def test_bad_options_one_line_errors(spec, match, monkeypatch):
    import transferkit.data.digits as digits

    monkeypatch.setattr(digits, "_resized_digits", lambda size: pytest.fail("loaded before validating"))
    with pytest.raises(ConfigError, match=match) as e:
        load_dataset(spec)
    assert "\n" not in str(e.value)


def test_corrupt_on_a_table_is_refused_before_reading(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b,label\n1,2,0\n3,4,1\n")
    with pytest.raises(ConfigError, match="image datasets only"):
        load_dataset(f"{p}:corrupt=fog")


def test_corrupt_on_tabular_npz_is_refused(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, x=np.zeros((4, 3), dtype=np.float32), y=np.arange(4))
    with pytest.raises(ConfigError, match="image datasets only, and this one is tabular"):
        load_dataset(f"{p}:corrupt=fog")


# ----------------------------------------------------------------------------- the spec hook


def test_hook_on_digits():
    ds = load_dataset("digits:size=28,corrupt=gaussian_noise,severity=5,corrupt_seed=2")
    clean = load_dataset("digits:size=28")
    assert ds.name == "digits[gaussian_noise@5]" and ds.spec == "digits:size=28,corrupt=gaussian_noise,severity=5,corrupt_seed=2"
    assert ds.meta["corruption"] == {"names": ["gaussian_noise"], "severity": 5, "seed": 2}
    np.testing.assert_array_equal(ds.inputs, corrupt(clean.inputs, "gaussian_noise", 5, seed=2))
    np.testing.assert_array_equal(ds.labels, clean.labels)
    assert ds.fingerprint() != clean.fingerprint()
    d3 = load_dataset("digits:corrupt=[fog,pixelate]")
    assert d3.name == "digits[fog@3+pixelate@3]"
    np.testing.assert_array_equal(d3.inputs, corrupt(load_dataset("digits").inputs, ["fog", "pixelate"], 3))
    over = load_dataset("digits", corrupt="contrast", severity=2)
    assert over.spec == "digits:corrupt=contrast,severity=2"


def _idx(path, arr):
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(head + arr.astype(np.uint8).tobytes())
    return path


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur", "elastic_transform", "pixelate"])
def test_idx_lazy_equals_eager(tmp_path, name):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    y = (np.arange(30) % 3).astype(np.uint8)
    im, lb = _idx(tmp_path / "i-idx3-ubyte", x), _idx(tmp_path / "l-idx1-ubyte", y)
    lazy = load_dataset(f"idx:images={im},labels={lb},corrupt={name},severity=4,corrupt_seed=7")
    assert isinstance(lazy.inputs, CorruptedImages) and lazy.name.endswith(f"[{name}@4]")
    np.savez(tmp_path / "same.npz", x=x, y=y)
    eager = load_dataset(f"{tmp_path / 'same.npz'}:corrupt={name},severity=4,corrupt_seed=7")
    assert isinstance(eager.inputs, np.ndarray)
    for i in (0, 7, 29, -1):
        np.testing.assert_allclose(lazy.inputs[i], eager.inputs[i], atol=1e-6)
    np.testing.assert_allclose(lazy.inputs[[3, 1, 2]], eager.inputs[[3, 1, 2]], atol=1e-6)
    np.testing.assert_allclose(lazy.inputs[5:9], eager.inputs[5:9], atol=1e-6)
    sub = lazy.subset([4, 20, 11])  # a subset keeps each image's own seed
    np.testing.assert_allclose(np.stack([sub.inputs[k] for k in range(3)]), eager.inputs[[4, 20, 11]], atol=1e-6)
    assert sub.inputs.fingerprint() != lazy.inputs.fingerprint() != lazy.inputs.base.fingerprint()
    base = lazy.inputs.base  # the feature cache key tells corruptions, severities and seeds apart
    fps = {CorruptedImages(base, *args).fingerprint() for args in
           ((["fog"], 4, 7), ([name], 3, 7), ([name], 4, 8), ([name], 4, 7))}
    assert len(fps) == 4 and lazy.inputs.fingerprint() in fps
    import pickle

    again = pickle.loads(pickle.dumps(lazy.inputs))
    np.testing.assert_array_equal(again[3], lazy.inputs[3])


def test_idx_lazy_does_not_materialise(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(6000, 28, 28), dtype=np.uint8)
    im = _idx(tmp_path / "i-idx3-ubyte", x)
    lb = _idx(tmp_path / "l-idx1-ubyte", (np.arange(6000) % 2).astype(np.uint8))
    tracemalloc.start()
    ds = load_dataset(f"idx:images={im},labels={lb},corrupt=gaussian_noise")
    ds.inputs[5999]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000, peak  # 6,000 float32 images would be 18.8 MB


def test_folder_lazy_equals_eager(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "pets"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{k}.png")
    clean = load_dataset(f"{root}:size=16")
    ds = load_dataset(f"{root}:size=16,corrupt=shot_noise,severity=2")
    assert isinstance(ds.inputs, CorruptedImages) and ds.name.endswith("[shot_noise@2]")
    stacked = np.stack([clean.inputs[i] for i in range(len(clean))])
    ref = corrupt(stacked, "shot_noise", 2, seed=0)
    for i in range(len(ds)):
        np.testing.assert_allclose(ds.inputs[i], ref[i], atol=1e-6)
    part = ds.inputs[[5, 0]]  # the folder's own indexing gives a lazy view: so does the wrapper
    assert isinstance(part, CorruptedImages)
    np.testing.assert_allclose(part[0], ref[5], atol=1e-6)
