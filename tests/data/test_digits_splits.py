"""The built-in digits domain, its shift transforms, and seeded splits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from transferkit.data import Shift, load_dataset, load_digits_domain, sample_per_class, stratified_split
from transferkit.errors import ConfigError, DataError

SIZE = 16  # small images keep the shift tests fast


def _rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x}


# ----------------------------------------------------------------------------- digits


def test_digits_basic():
    ds = load_digits_domain(size=SIZE)
    assert ds.modality == "image" and ds.inputs.shape == (1797, SIZE, SIZE)
    assert ds.inputs.dtype == np.float32 and 0 <= ds.inputs.min() and ds.inputs.max() <= 1
    assert ds.classes == [str(i) for i in range(10)]


def test_digits_subsets_disjoint_and_stratified():
    full = load_digits_domain(size=SIZE)
    a = load_digits_domain(size=SIZE, subset="0/2")
    b = load_digits_domain(size=SIZE, subset="1/2")
    assert len(a) + len(b) == len(full)
    # every digits image is distinct, so disjoint contents mean disjoint samples
    assert len(_rows(full.inputs)) == len(full)
    assert not (_rows(a.inputs) & _rows(b.inputs))
    assert _rows(a.inputs) | _rows(b.inputs) == _rows(full.inputs)
    ca, cb = np.bincount(a.labels, minlength=10), np.bincount(b.labels, minlength=10)
    assert (np.abs(ca - cb) <= 1).all()
    np.testing.assert_array_equal(ca + cb, np.bincount(full.labels))
    # the partition is fixed: a shifted target with another seed still uses the same images
    again = load_digits_domain(size=SIZE, subset="0/2", seed=5)
    np.testing.assert_array_equal(again.inputs, a.inputs)


def test_digits_bad_subset():
    with pytest.raises(ConfigError, match=r"subset='2/2' must look like i/n"):
        load_digits_domain(size=SIZE, subset="2/2")


def test_shift_seeded_deterministic_and_seeds_differ():
    spec = f"digits:size={SIZE},subset=0/4,rotate=-30..30,translate=0.1,scale=0.9..1.1,noise=0.05"
    a = load_dataset(spec + ",seed=1")
    b = load_dataset(spec + ",seed=1")
    c = load_dataset(spec + ",seed=2")
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert not np.allclose(a.inputs, c.inputs)
    assert 0 <= c.inputs.min() and c.inputs.max() <= 1


def test_rotate_zero_leaves_images_unchanged():
    base = load_digits_domain(size=SIZE, subset="0/4")
    np.testing.assert_array_equal(load_digits_domain(size=SIZE, subset="0/4", rotate=0).inputs, base.inputs)
    # also through the transform itself, not only the identity shortcut in digits
    img = np.random.default_rng(0).random((3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(Shift.from_options(rotate="0..0", scale=1.0).apply(img, seed=3), img, atol=1e-7)


def test_invert_is_one_minus_x():
    base = load_digits_domain(size=SIZE, subset="0/4")
    inv = load_dataset(f"digits:size={SIZE},subset=0/4,invert=true")
    np.testing.assert_allclose(inv.inputs, 1.0 - base.inputs, atol=1e-7)


def test_rotate_90_is_counter_clockwise_like_rot90():
    # an asymmetric "L" in a square image: the square grid maps onto itself under 90 degrees
    img = np.zeros((9, 9), np.float32)
    img[1, 2:8] = 1.0
    img[1:5, 7] = 0.5
    out = Shift.from_options(rotate=90).apply(img[None])[0]
    np.testing.assert_allclose(out, np.rot90(img), atol=1e-6)  # k=1: counter-clockwise
    assert not np.allclose(out, np.rot90(img, -1))
    color = np.stack([img, img.T, 1 - img], axis=-1)
    out = Shift.from_options(rotate=90).apply(color[None])[0]
    np.testing.assert_allclose(out, np.rot90(color, axes=(0, 1)), atol=1e-6)
    # -90 (a range collapsing to one value) is clockwise
    out = Shift.from_options(rotate="-90..-90").apply(img[None])[0]
    np.testing.assert_allclose(out, np.rot90(img, -1), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_translate_moves_centre_of_mass(seed):
    h = w = 32
    t = 0.2
    img = np.zeros((h, w), np.float32)
    img[13:19, 12:18] = 1.0  # interior blob: bilinear resampling keeps its mass and moves its centre exactly
    out = Shift.from_options(translate=t).apply(img[None], seed=seed)[0]
    # Shift draws (dy, dx) ~ U[-t, t] * (H, W) per image, in that order, and moves the content by +(dy, dx)
    dy, dx = np.random.default_rng(seed).uniform(-t, t, size=2) * (h, w)
    before, after = np.array(ndimage.center_of_mass(img)), np.array(ndimage.center_of_mass(out))
    np.testing.assert_allclose(after - before, [dy, dx], atol=1e-3)
    assert (np.abs(after - before) <= t * h).all()
    np.testing.assert_allclose(out.sum(), img.sum(), rtol=1e-5)


def test_shift_option_errors():
    with pytest.raises(ConfigError, match=r"translate=0.7 must be a finite number >= 0 and < 0.5"):
        Shift.from_options(translate=0.7)
    with pytest.raises(ConfigError, match=r"rotate='45\.\.x' must be a number or a range low\.\.high"):
        Shift.from_options(rotate="45..x")
    with pytest.raises(ConfigError, match=r"low end is above its high end; write it as rotate=22\.\.45"):
        Shift.from_options(rotate="45..22")


# Every option of the digits dataset and of its shift transform, with values that used to be
# accepted (NaN, inf, 'maybe', a negative seed) or to exhaust the memory (blur=1e9, n=1e8 parts).
BAD_DIGITS = {
    "rotate=nan": ("rotate='nan'", "finite"),
    "rotate=inf": ("rotate='inf'", "finite"),
    "rotate=1..nan": ("rotate='1..nan'", "finite"),
    "rotate=45..22": ("low end is above its high end", "rotate=22..45"),
    "rotate=1e308": ("rotate=1e+308", "-360 and <= 360"),
    "rotate=[1,2,3]": ("rotate=[1, 2, 3]", "exactly two numbers"),
    "rotate=abc": ("rotate='abc'", "a number or a range"),
    "noise=inf": ("noise='inf'", "finite number >= 0 and <= 1"),
    "noise=-0.1": ("noise=-0.1", ">= 0"),
    "noise=abc": ("noise='abc'", "finite number"),
    "blur=1e9": ("blur=1000000000.0", "at most the image side (16)"),
    "blur=nan": ("blur='nan'", "finite"),
    "blur=-1": ("blur=-1", ">= 0"),
    "translate=x": ("translate='x'", "fraction of the image size"),
    "translate=0.1..0.2": ("translate='0.1..0.2'", "finite number"),
    "translate=nan": ("translate='nan'", "finite"),
    "scale=0": ("scale=0", ">= 0.1 and <= 10"),
    "scale=1e-300": ("scale=1e-300", "zoom factor"),
    "scale=inf": ("scale='inf'", "finite"),
    "scale=2..1": ("low end is above its high end", "scale=1..2"),
    "invert=maybe": ("invert='maybe'", "invert=true or invert=false"),
    "invert=2": ("invert=2", "not a boolean"),
    "invert=nan": ("invert='nan'", "not a boolean"),
    "seed=-1": ("seed=-1", ">= 0"),
    "seed=1.5": ("seed=1.5", "whole number"),
    "seed=nan": ("seed='nan'", "finite integer"),
    "seed=true": ("seed=True", "finite integer"),
    "size=0": ("size=0", ">= 8 and <= 512"),
    "size=4096": ("size=4096", "<= 512"),
    "size=inf": ("size='inf'", "finite integer"),
    "size=16.5": ("size=16.5", "whole number"),
    "size=abc": ("size='abc'", "finite integer"),
    "subset=0/100000000": ("subset='0/100000000'", "n <= 100"),
    "subset=a/b": ("subset='a/b'", "i/n"),
    "subset=-1/2": ("subset='-1/2'", "i/n"),
    "rotat=3": ("unknown option 'rotat'", "Did you mean 'rotate'"),
}


@pytest.mark.parametrize("opt", list(BAD_DIGITS))
def test_digits_bad_option_values_are_one_line_config_errors(opt):
    spec = f"digits:size=16,{opt}" if not opt.startswith("size=") else f"digits:{opt}"
    with pytest.raises(ConfigError) as err:
        load_dataset(spec)
    msg = str(err.value)
    assert msg.startswith("digits: ") and "\n" not in msg, msg
    for frag in BAD_DIGITS[opt]:
        assert frag in msg, (frag, msg)


@pytest.mark.parametrize("value, expected", [("true", True), ("TRUE", True), ("1", True), ("yes", True),
                                             ("false", False), ("0", False), ("No", False)])
def test_invert_accepts_strict_booleans(value, expected):
    assert Shift.from_options(invert=value).invert is expected


def test_blur_bounded_by_the_image_side_and_seed_checked_without_a_shift():
    assert Shift.from_options(blur=16, size=16).blur == 16
    with pytest.raises(ConfigError, match="at most the image side"):
        Shift.from_options(blur=17, size=16)
    with pytest.raises(ConfigError, match="seed=-1"):
        load_digits_domain(size=SIZE, seed=-1)  # no shift: the seed was unused, and never checked


def test_valid_shift_options_still_work():
    ds = load_dataset("digits:size=16,subset=0/4,rotate=10..20,translate=0.1,scale=0.9..1.1,noise=0.1,"
                      "blur=1,invert=no,seed=3")
    assert np.isfinite(ds.inputs).all() and 0 < ds.inputs.mean() < 1
    assert Shift.from_options(rotate=[10, 20], scale=(0.9, 1.1)).rotate == (10.0, 20.0)


# ----------------------------------------------------------------------------- splits


def _labels() -> np.ndarray:
    # classes of 50, 30 and 20 samples, interleaved, plus two unlabeled samples
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    y = np.random.default_rng(0).permutation(y)
    return np.concatenate([y, [-1, -1]])


@pytest.mark.parametrize("k", [1, 5, 20])
def test_sample_per_class_exactly_k(k):
    y = _labels()
    picked, rest = sample_per_class(y, k, seed=0)
    assert np.bincount(y[picked], minlength=3).tolist() == [k, k, k]
    assert not set(picked) & set(rest)
    assert sorted(np.concatenate([picked, rest]).tolist()) == list(range(len(y)))
    again, _ = sample_per_class(y, k, seed=0)
    np.testing.assert_array_equal(picked, again)
    if k == 5:
        assert not np.array_equal(picked, sample_per_class(y, k, seed=1)[0])


def test_sample_per_class_short_class_is_named():
    y = np.array([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(DataError, match=r"mnist: class 2 has only 1 labeled samples, fewer than labels_per_class=2"):
        sample_per_class(y, 2, dataset="mnist")


def test_sample_per_class_no_labels():
    with pytest.raises(DataError, match="needs labeled samples"):
        sample_per_class(np.array([-1, -1]), 1)
    with pytest.raises(DataError, match="has none"):
        sample_per_class(None, 1)
    with pytest.raises(ConfigError, match="labels_per_class must be >= 1"):
        sample_per_class(np.array([0, 1]), 0)


def test_stratified_split_disjoint_covering_proportional():
    y = _labels()[:-2]
    fractions = [0.6, 0.2, 0.2]
    parts = stratified_split(y, fractions, seed=0)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(set(allidx.tolist())) == len(y)  # disjoint and covering
    for part, f in zip(parts, fractions):
        counts = np.bincount(y[part], minlength=3)
        np.testing.assert_allclose(counts, f * np.bincount(y), atol=1)
    for a, b in zip(parts, stratified_split(y, fractions, seed=0)):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, stratified_split(y, fractions, seed=1)))


def test_stratified_split_small_class_in_every_part():
    y = np.array([0] * 10 + [1] * 3)
    parts = stratified_split(y, [0.5, 0.3, 0.2], seed=0)
    assert all((y[p] == 1).sum() == 1 for p in parts)


def test_stratified_split_bad_fractions():
    with pytest.raises(DataError, match=r"fractions \[0.5, 0.6\] must be >= 0 and sum to 1"):
        stratified_split(np.array([0, 1]), [0.5, 0.6])


def test_pad_frames_the_digit_inside_an_empty_border():
    import numpy as np

    from transferkit.data import load_dataset
    from transferkit.errors import ConfigError

    framed = load_dataset("digits:size=28,pad=4")
    inner = load_dataset("digits:size=20")
    assert framed.inputs.shape == (1797, 28, 28)
    # the MNIST framing: the 20x20 resize, centred, and nothing outside it
    np.testing.assert_array_equal(framed.inputs[:, 4:24, 4:24], inner.inputs)
    border = np.ones((28, 28), bool)
    border[4:24, 4:24] = False
    assert framed.inputs[:, border].max() == 0.0
    np.testing.assert_array_equal(load_dataset("digits:size=28,pad=0").inputs, load_dataset("digits:size=28").inputs)
    with pytest.raises(ConfigError, match=r"digits: pad=13 .*at most 12 for size=28"):
        load_dataset("digits:size=28,pad=13")
