"""The multi-task datasets: digits with digit, parity and angle; Multi-Fashion-MNIST's two items."""

from pathlib import Path

import numpy as np
import pytest

from transferkit.data import real
from transferkit.data.multitask import digits_multitask, multi_fashion_mnist, rotate_image
from transferkit.errors import ConfigError

FASHION = Path(real.FASHION_MNIST_DIR)
needs_fashion = pytest.mark.skipif(
    not all((FASHION / f).is_file() for f in real.FASHION_MNIST_SHA256),
    reason="Fashion-MNIST files absent: the Debian package dataset-fashion-mnist is not installed "
           "(apt-get install dataset-fashion-mnist)")


def test_rotation_is_counter_clockwise_in_degrees():
    a = np.zeros((5, 5), np.float32)
    a[0, 4] = 1.0  # top-right corner
    assert np.array_equal(rotate_image(a, 90) > 0.5, np.rot90(a) > 0.5)
    assert np.allclose(rotate_image(a, 0), a)


def test_digits_multitask_targets_are_the_digit_its_parity_and_the_angle_it_was_rotated_by():
    from transferkit.data.digits import _resized_digits

    ds = digits_multitask(n=60, seed=3, size=16)
    att = ds.meta["attributes"]
    assert ds.inputs.shape == (60, 16, 16) and ds.inputs.dtype == np.float32
    assert np.array_equal(att["digit"], ds.labels) and np.array_equal(att["parity"], ds.labels % 2)
    assert att["angle"].dtype == np.float64 and np.all(np.abs(att["angle"]) <= 45) and att["angle"].std() > 10
    x, _ = _resized_digits(16)
    for i in (0, 17, 59):  # each image is its source digit rotated by its recorded angle
        assert np.array_equal(ds.inputs[i], rotate_image(x[att["source_index"][i]], att["angle"][i]).astype(np.float32))
    again = digits_multitask(n=60, seed=3, size=16)
    assert np.array_equal(again.inputs, ds.inputs) and np.array_equal(again.meta["attributes"]["angle"], att["angle"])
    assert not np.array_equal(digits_multitask(n=60, seed=4, size=16).meta["attributes"]["angle"], att["angle"])
    sub = ds.subset([5, 2])
    assert np.array_equal(sub.meta["attributes"]["angle"], att["angle"][[5, 2]])
    assert ds.meta["attribute_classes"]["parity"] == ["even", "odd"]
    assert len(digits_multitask(size=8)) == 1797 and len(digits_multitask(n=2500, size=8)) == 2500


def test_digits_multitask_bad_options():
    with pytest.raises(ConfigError, match="digits_multitask.*n=1"):
        digits_multitask(n=1)
    with pytest.raises(ConfigError, match="max_angle"):
        digits_multitask(max_angle=200)


def test_registered_as_datasets():
    from transferkit._registry import get

    assert get("dataset", "digits_multitask") is digits_multitask
    assert get("dataset", "multi_fashion_mnist") is multi_fashion_mnist


@needs_fashion
def test_multi_fashion_mnist_overlays_two_items_top_left_and_bottom_right():
    src = real.load_fashion_mnist(split="test")
    ds = multi_fashion_mnist(n=50, seed=1, split="test")
    att = ds.meta["attributes"]
    a, b = att["left_index"], att["right_index"]
    assert ds.inputs.shape == (50, 36, 36) and np.all(a != b)
    assert np.array_equal(att["left"], src.labels[a]) and np.array_equal(att["right"], src.labels[b])
    assert np.array_equal(ds.labels, att["left"])
    for i in (0, 49):
        want = np.zeros((36, 36), np.float32)
        want[:28, :28] = src.inputs[int(a[i])]
        want[8:, 8:] = np.maximum(want[8:, 8:], src.inputs[int(b[i])])
        assert np.array_equal(ds.inputs[i], want)
    again = multi_fashion_mnist(n=50, seed=1, split="test")
    assert np.array_equal(again.inputs, ds.inputs)
    assert not np.array_equal(multi_fashion_mnist(n=50, seed=2, split="test").meta["attributes"]["left_index"], a)
    assert multi_fashion_mnist(n=10, seed=1, split="test", size=28).inputs.shape == (10, 28, 28)
    with pytest.raises(ConfigError, match="split='val' must be one of train, test"):
        multi_fashion_mnist(n=10, split="val")
