"""Tables (CSV, TSV, Parquet) as text or tabular domains."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import require, suggest
from ..errors import ConfigError, DataError
from ._options import check_n_classes, check_two_classes
from .domain import UNLABELED, DomainDataset

TABLE_SUFFIXES: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}

#: Column names taken as the label when ``label`` is not given (first match, case-sensitive).
LABEL_NAMES: tuple[str, ...] = ("label", "labels", "target", "class", "y")


def _read(path: Path, shown: str):
    import pandas as pd

    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{shown!r}: unsupported table format {path.suffix or '(no extension)'!r}; "
            f"use one of {', '.join(TABLE_SUFFIXES)}."
        )
    try:
        if kind == "parquet":
            require("pyarrow", "tables", "reading Parquet files")
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",")
    except pd.errors.EmptyDataError:
        raise DataError(f"table {shown!r} is empty (no header, no rows); write a header row and data rows.") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"table {shown!r} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
            f"{exc.start} is invalid UTF-8); re-save it as UTF-8 {kind.upper()} (e.g. 'iconv -f latin1 -t utf-8 "
            f"old.{kind} > new.{kind}', or in pandas df.to_csv(path, encoding='utf-8'))."
        ) from None
    except ImportError:
        raise
    except Exception as exc:  # ParserError, ArrowInvalid, OSError, ...
        raise DataError(
            f"cannot read {shown!r} as {kind.upper()} ({type(exc).__name__}: {str(exc).strip()[:300]}); "
            f"check that the file is a valid {kind.upper()} file"
            + (" with a consistent number of fields per row" if kind != "parquet" else "") + "."
        ) from None


def _missing_column(shown: str, role: str, col: str, columns: Sequence[str]) -> DataError:
    return DataError(
        f"table {shown!r}: {role} column {col!r} not found." + suggest(col, columns)
        + f" Available columns: {', '.join(map(repr, columns))}."
    )


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    """1-based data row numbers (header not counted) of ``mask``, shortened."""
    rows = np.flatnonzero(mask) + 1
    text = ", ".join(str(r) for r in rows[:limit])
    return text + (", ..." if len(rows) > limit else "")


def _check_label_classes(shown: str, label_col, labels, classes) -> None:
    if labels is not None:
        check_two_classes(f"table {shown!r}: label column {label_col!r}", labels, names=classes,
                          fix="Add rows of other classes, or name another column with label=COLUMN.")


def encode_labels(values: Any, *, what: str) -> tuple[np.ndarray, list[str] | None]:
    """Map label values to ``0..K-1`` with sorted class names; missing values become ``-1``.

    Whole numbers are sorted numerically (``"2"`` before ``"10"``), anything else as strings.
    Non-whole numbers raise :class:`DataError` (they look like a regression target).

    Parameters
    ----------
    values
        A pandas Series or 1-D array of labels.
    what
        How to name the labels in messages, e.g. ``"table 'a.csv': label column 'y'"``.

    Returns
    -------
    (labels, classes)
        int64 array ``(n,)`` and the class names (``str``) index-aligned with the labels
        (``None`` when every value is missing).
    """
    import pandas as pd

    s = pd.Series(values)
    missing = s.isna().to_numpy()
    present = s[~missing]
    labels = np.full(len(s), UNLABELED, dtype=np.int64)
    if len(present) == 0:
        return labels, None
    if pd.api.types.is_bool_dtype(present) or present.map(lambda v: isinstance(v, (bool, np.bool_))).all():
        keys = present.astype(bool).to_numpy()
        classes_raw = sorted(set(keys.tolist()))
        names = [str(c) for c in classes_raw]
    elif pd.api.types.is_numeric_dtype(present):
        arr = present.to_numpy(dtype=float)
        if not np.isfinite(arr).all():
            raise DataError(f"{what} holds infinite values; use integer or string class labels.")
        frac = arr != np.round(arr)
        if frac.any():
            raise DataError(
                f"{what} holds non-integer numbers (e.g. {arr[frac][0]!r}); labels must be classes "
                "(integers or strings), not continuous values."
            )
        keys = arr.astype(np.int64)
        classes_raw = sorted(set(keys.tolist()))
        names = [str(c) for c in classes_raw]
    else:
        keys = present.astype(str).to_numpy()
        classes_raw = sorted(set(keys.tolist()))
        names = list(classes_raw)
    check_n_classes(what, len(classes_raw), source="the distinct label values")
    index = {c: i for i, c in enumerate(classes_raw)}
    labels[~missing] = [index[k] for k in keys.tolist()]
    return labels, names


def load_table(
    path: str | os.PathLike,
    text: str | None = None,
    label: str | bool | None = None,
    features: Sequence[str] | str | None = None,
    name: str | None = None,
) -> DomainDataset:
    """Load a ``.csv``, ``.tsv`` or ``.parquet`` table as a text or tabular :class:`DomainDataset`.

    Parameters
    ----------
    path
        The table file. CSV is comma-separated, TSV tab-separated, both with a header row and
        UTF-8 text; Parquet needs ``pyarrow`` (``pip install 'transferkit[tables]'``).
    text
        Name of a string column: the dataset is ``modality="text"`` with those strings as inputs.
    label
        Name of the label column. Its values (strings or whole numbers) become ``0..K-1`` in
        sorted order (numbers numerically), with ``classes`` the sorted names; missing values
        (empty cells) become ``-1`` (unlabeled). ``None`` (default) uses the first column named
        one of ``label, labels, target, class, y`` if there is one, else no labels; ``False``
        means no labels.
    features
        Numeric columns used as a ``modality="tabular"`` float32 matrix ``(n, d)``, as a list
        or one comma-separated string. Default (when ``text`` is not given): every numeric
        (or boolean) column except the label.
    name
        Domain name; defaults to the file name without its extension.

    Raises
    ------
    DataError
        The file is missing, unreadable or empty; a named column is absent (the message lists
        the columns and the nearest name); the text column is not strings; feature columns are
        not numeric or contain NaN/inf (the message names the column and rows).
    ConfigError
        Both ``text`` and ``features`` are given.
    """
    p = Path(path).expanduser()
    shown = str(path)
    if text is not None and features is not None:
        raise ConfigError(
            f"table {shown!r}: give either text= (a text dataset) or features= (a tabular dataset), not both."
        )
    if not p.exists():
        raise DataError(f"table file {shown!r} does not exist (looked at {str(p.absolute())!r}); check the path.")
    if p.is_dir():
        raise DataError(
            f"table {shown!r} is a directory, expected a file: give a .csv, .tsv or .parquet file "
            "(an image folder is given without a table suffix)."
        )
    df = _read(p, shown)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if len(columns) == 1 and p.suffix.lower() in (".csv", ".tsv"):
        seps = [s for s in (";", "\t", "|", ",") if s in columns[0]]
        if seps:
            used = "a tab" if seps[0] == "\t" else repr(seps[0])
            raise DataError(
                f"table {shown!r} reads as one column {columns[0][:60]!r}: its fields look separated by {used}; "
                "save it comma-separated as .csv (or tab-separated as .tsv)."
            )
    if len(df) == 0:
        raise DataError(
            f"table {shown!r} has a header ({', '.join(map(repr, columns[:8]))}) but no data rows; "
            "add rows to the file."
        )

    # --- label
    label_col: str | None
    if label is None:
        label_col = next((c for c in LABEL_NAMES if c in columns), None)
    elif label is False or label == "":
        label_col = None
    else:
        label_col = str(label)
        if label_col not in columns:
            raise _missing_column(shown, "label", label_col, columns)
    labels, classes = None, None
    if label_col is not None:
        labels, classes = encode_labels(df[label_col], what=f"table {shown!r}: label column {label_col!r}")

    meta: dict[str, Any] = {"kind": "table", "path": str(p), "label_column": label_col}
    ds_name = name or p.stem

    # --- text
    if text is not None:
        text = str(text)
        if text not in columns:
            raise _missing_column(shown, "text", text, columns)
        if text == label_col:
            raise ConfigError(
                f"table {shown!r}: text column and label column are both {text!r}; pick different columns."
            )
        col = df[text]
        na = col.isna().to_numpy()
        if na.any():
            raise DataError(
                f"table {shown!r}: text column {text!r} has {int(na.sum())} empty value(s) (data rows {_rows(na)}); "
                "fill or drop those rows."
            )
        not_str = ~col.map(lambda v: isinstance(v, str)).to_numpy()
        if not_str.any():
            first = col[not_str].iloc[0]
            raise DataError(
                f"table {shown!r}: text column {text!r} must hold strings, but {int(not_str.sum())} value(s) "
                f"are {type(first).__name__} (e.g. {first!r}, data rows {_rows(not_str)}); pick a string "
                "column for text=, or use features= for numeric columns."
            )
        meta["text_column"] = text
        _check_label_classes(shown, label_col, labels, classes)
        return DomainDataset(
            inputs=col.tolist(), labels=labels, name=ds_name, modality="text", classes=classes, meta=meta
        )

    # --- numeric features
    import pandas as pd

    if features is None:
        feats = [
            c for c in columns
            if c != label_col and (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))
        ]
        for c in columns:  # a numeric column with a few text cells would be dropped without a word
            numeric = pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
            if c == label_col or c in feats or numeric:
                continue
            nums = pd.to_numeric(df[c], errors="coerce")
            ok, given = int(nums.notna().sum()), int(df[c].notna().sum())
            if given and ok >= max(1, given // 2) and ok < given:
                bad_rows = np.flatnonzero(nums.isna().to_numpy() & df[c].notna().to_numpy())
                r = int(bad_rows[0])
                raise DataError(
                    f"table {shown!r}: column {c!r} holds numbers but {given - ok} cell(s) are not numbers "
                    f"(row {r + 1}: {str(df[c].iloc[r])[:40]!r}); fix those cells, or list the columns to use "
                    "with features=[...].")
        if not feats:
            strings = [c for c in columns if c != label_col]
            raise DataError(
                f"table {shown!r} has no numeric feature columns"
                + (f" (other columns: {', '.join(map(repr, strings))})" if strings else "")
                + "; for a text dataset pass text=COLUMN, or convert the features to numbers."
            )
    else:
        feats = [f.strip() for f in features.split(",")] if isinstance(features, str) else [str(f) for f in features]
        feats = [f for f in feats if f]
        if not feats:
            raise ConfigError(f"table {shown!r}: features= is empty; name at least one numeric column.")
        for f in feats:
            if f not in columns:
                raise _missing_column(shown, "feature", f, columns)
        if label_col in feats:
            raise ConfigError(
                f"table {shown!r}: column {label_col!r} is the label; remove it from features= "
                "(or choose another label column)."
            )
        bad = [f for f in feats if not (pd.api.types.is_numeric_dtype(df[f]) or pd.api.types.is_bool_dtype(df[f]))]
        if bad:
            desc = ", ".join(f"{b!r} ({df[b].dtype}, e.g. {df[b].dropna().iloc[0]!r})" if df[b].notna().any()
                             else f"{b!r} ({df[b].dtype})" for b in bad)
            raise DataError(
                f"table {shown!r}: feature column(s) {desc} are not numeric; convert them to numbers "
                "(e.g. one-hot encode categories) or leave them out of features=."
            )
    x = df[feats].to_numpy(dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        j = int(np.flatnonzero(~finite.all(axis=0))[0])
        rows = ~finite[:, j]
        others = [feats[k] for k in np.flatnonzero(~finite.all(axis=0))[1:]]
        raise DataError(
            f"table {shown!r}: feature column {feats[j]!r} has {int(rows.sum())} missing or infinite "
            f"value(s) (NaN/inf; data rows {_rows(rows)})"
            + (f"; also in {', '.join(map(repr, others))}" if others else "")
            + "; fill them (e.g. with the column mean) or drop those rows."
        )
    with np.errstate(over="ignore"):  # checked just below
        x32 = x.astype(np.float32)
    over = ~np.isfinite(x32)  # finite in float64, inf in float32 (|x| > 3.4e38, e.g. 1e308)
    if over.any():
        cols = np.flatnonzero(over.any(axis=0))
        j = int(cols[0])
        rows = over[:, j]
        raise DataError(
            f"table {shown!r}: feature column {feats[j]!r} has {int(rows.sum())} value(s) too large for float32 "
            f"(|x| > {float(np.finfo(np.float32).max):.3g}, e.g. {float(x[rows, j][0]):g}; data rows {_rows(rows)})"
            + (f"; also in {', '.join(repr(feats[k]) for k in cols[1:])}" if len(cols) > 1 else "")
            + "; rescale the column (e.g. standardize it or take logs) or drop those rows."
        )
    meta["feature_columns"] = feats
    _check_label_classes(shown, label_col, labels, classes)
    return DomainDataset(
        inputs=x32, labels=labels, name=ds_name, modality="tabular", classes=classes, meta=meta
    )
