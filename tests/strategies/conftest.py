"""Fixtures shared by the strategy tests."""

import numpy as np
import pytest

from transferkit.data import DomainDataset, load_digits_domain


@pytest.fixture(scope="module")
def domains():
    """Labeled source digits, the inverted target digits, and the target with its labels hidden."""
    src = load_digits_domain(size=12, subset="0/2")
    tgt = load_digits_domain(size=12, subset="1/2", invert=True)
    unl = DomainDataset(tgt.inputs, np.full(len(tgt), -1), "target", "image", classes=tgt.classes)
    return src, tgt, unl
