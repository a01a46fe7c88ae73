"""Small tables for the assess tests: digits as pixel columns, and the issue's generated table.

``identity`` (alias ``none``) needs a table, so the tests that used raw pixels of the digits
images read the same pixels as columns (the same samples and labels, hence the same splits).
"""

from pathlib import Path

import numpy as np

from transferkit.data import DomainDataset
from transferkit.data.spec import load_dataset


def digits_table(spec: str) -> DomainDataset:
    """The digits images of ``spec`` as a table of pixel columns (same samples, labels, classes)."""
    ds = load_dataset(spec)
    return DomainDataset(ds.inputs.reshape(len(ds), -1).astype(np.float32), ds.labels, name=ds.name,
                         modality="tabular", classes=ds.classes)


def digits_npz(folder: Path, spec: str, name: str) -> str:
    """``digits_table(spec)`` written as ``folder/name.npz`` (``x`` 2-D: a table); its path."""
    ds = digits_table(spec)
    p = Path(folder) / f"{name}.npz"
    np.savez(p, x=ds.inputs, y=ds.labels)
    return str(p)


SHIFT_DIRECTION = np.array([1.0, 0.0, 0.0, 0.8, 0.0, 0.0])  # the mean shift of /tmp/tab/gen.py
CLASS_OFFSET = np.array([1.5, 1.0, 0.5, 0.0, 0.0, 0.0])     # where the positive class sits


def make_table(n: int, positive: float, shift: float, seed: int):
    """The issue's generated table (``/tmp/tab/gen.py``): 6 normal columns, the positive class
    moved by :data:`CLASS_OFFSET`, the whole domain by ``shift`` along :data:`SHIFT_DIRECTION`;
    returns ``(X, y)`` with ``y`` in {0: "no", 1: "yes"}."""
    r = np.random.default_rng(seed)
    y = (r.random(n) < positive).astype(int)
    X = r.normal(size=(n, 6)) + y[:, None] * CLASS_OFFSET + shift * SHIFT_DIRECTION
    return X, y


def write_csv(path: Path, X, y=None) -> str:
    """``X`` as columns ``f0..f5`` and, when given, ``label`` (``no``/``yes``)."""
    import pandas as pd

    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    if y is not None:
        df["label"] = np.where(np.asarray(y) == 1, "yes", "no")
    df.to_csv(path, index=False)
    return str(path)
