"""Write the README's table example: `python examples/tables/make_churn.py [FOLDER]`.

A churn table with five numeric columns f0..f4 and a label (churn / stay): in the source 20% of
the customers churn, in the target 60% (a prior change); the target's two non-informative
columns f3, f4 are offset and rescaled (a covariate shift). `target.csv` has no label column
(the unlabeled target to adapt on); `target_test.csv` is a labeled sample of the same target.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

SOURCE_POS, TARGET_POS = 0.2, 0.6


def table(n: int, pos: float, seed: int, shift: bool = False) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    y = (r.random(n) < pos).astype(int)
    X = r.normal(size=(n, 5)) + np.outer(y, [1.2, 0.9, 0.6, 0.0, 0.0])
    if shift:
        X = X * np.array([1.0, 1.0, 1.0, 2.0, 0.5]) + np.array([0.0, 0.0, 0.0, 1.5, -2.0])
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    df["label"] = np.where(y == 1, "churn", "stay")
    return df


def write(folder) -> None:
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    table(800, SOURCE_POS, 1).to_csv(d / "source.csv", index=False)
    table(800, TARGET_POS, 2, shift=True).drop(columns="label").to_csv(d / "target.csv", index=False)
    table(800, TARGET_POS, 3, shift=True).to_csv(d / "target_test.csv", index=False)


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else ".")
