"""``keep_classes=[...]``: any labeled dataset restricted to some classes, label indices unchanged."""

import numpy as np
import pytest

from transferkit.data.spec import load_dataset
from transferkit.errors import ConfigError


def test_classes_keeps_the_rows_of_those_classes_and_the_full_label_space():
    full = load_dataset("digits")
    part = load_dataset("digits:keep_classes=[1,3,5]")
    want = np.flatnonzero(np.isin(full.labels, [1, 3, 5]))
    assert len(part) == len(want) and np.array_equal(part.labels, full.labels[want])
    assert np.array_equal(np.asarray(part.inputs), np.asarray(full.inputs)[want])
    assert part.classes == full.classes and part.n_classes == 10  # indices still line up with a full source
    assert part.name.endswith("[classes=1,3,5]") and part.meta["kept_classes"] == [1, 3, 5]
    assert part.spec == "digits:keep_classes=[1,3,5]"


def test_classes_by_name_equals_by_index():
    a = load_dataset("digits:keep_classes=[2,7]")
    b = load_dataset({"name": "digits", "keep_classes": ["2", "7"]})
    assert np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("spec, msg", [
    ("digits:keep_classes=[10]", r"indices run 0..9"),
    ("digits:keep_classes=[cat]", r"'cat', which is not a class"),
    ("digits:keep_classes=[1,1]", r"twice"),
    ("digits:keep_classes=[]", r"non-empty list"),
])
def test_bad_classes_is_one_line(spec, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        load_dataset(spec)
    assert "\n" not in str(e.value)
