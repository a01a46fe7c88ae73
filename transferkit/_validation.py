"""Parameter rules and the one error format."""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError, DataError, MissingDependencyError


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a ``" Did you mean 'x'?"`` hint, or an empty string."""
    name = str(name)
    scored = []
    for choice in dict.fromkeys(str(c) for c in choices):
        matcher = difflib.SequenceMatcher(None, name, choice)
        if matcher.real_quick_ratio() >= 0.5 and matcher.quick_ratio() >= 0.5:
            score = matcher.ratio()
            if score >= 0.5:
                scored.append((-score, choice))
    # Closest first; equally close names in their natural order (lite0 before lite1 before lite2),
    # not difflib's reverse-alphabetical tie order.
    close = [c for _, c in sorted(scored)[:3]]
    if not close:
        return ""
    quoted = [repr(c) for c in close]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return " Did you mean " + listed + "?"


def check_choice(param: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"{param}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}."
            + suggest(str(value), choices)
        )
    return value


def check_number(
    param: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> Any:
    """Check a numeric parameter against a range; return it (as int when ``integer``).

    Booleans are not numbers here (``true`` for an epoch count is a mistake, not 1); NaN and
    infinity are refused (``lr: .inf`` would train to NaN weights and report chance accuracy).
    A string such as YAML 1.1's ``1e-3`` is converted."""
    if isinstance(value, bool):
        raise ConfigError(f"{param} must be a number, got {value!r}.")
    if not isinstance(value, (int, float)):
        converted = None
        for conv in ((int, float) if integer else (float,)):  # "1e3" is a whole number written as a float
            try:
                converted = conv(value)
                break
            except (TypeError, ValueError, OverflowError):
                continue
        if converted is None:
            raise ConfigError(f"{param} must be a number, got {value!r}.")
        value = converted
    if value != value:  # NaN
        raise ConfigError(f"{param} must be a finite number, got NaN.")
    if value in (float("inf"), float("-inf")):
        raise ConfigError(f"{param} must be a finite number, got {value!r}.")
    if integer:
        if int(value) != value:
            raise ConfigError(f"{param} must be an integer, got {value!r}.")
        value = int(value)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ConfigError(f"{param} must be {op} {low}, got {value!r}.")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ConfigError(f"{param} must be {op} {high}, got {value!r}.")
    return value


#: What :func:`check_name` allows: it becomes one folder name, on every file system.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
MAX_NAME_LENGTH = 100


def check_name(param: str, value: Any) -> str:
    """Check a name that becomes a file or folder name (a strategy label, an experiment name).

    Allowed: 1 to :data:`MAX_NAME_LENGTH` letters, digits, ``_ . + -``, not starting with ``.``
    or ``-``. So no path separators, no ``.``/``..``, no hidden files, no control characters
    and nothing a shell or another file system reads differently."""
    allowed = (f"use 1 to {MAX_NAME_LENGTH} letters, digits, '_', '.', '+' or '-', not starting with '.' or '-' "
               "(it becomes a folder name)")
    if not isinstance(value, str):
        raise ConfigError(f"{param}={value!r} must be a string; {allowed}.")
    if not value:
        raise ConfigError(f"{param} is empty; {allowed}.")
    if len(value) > MAX_NAME_LENGTH:
        raise ConfigError(f"{param}={value[:40]!r}... is {len(value)} characters long; {allowed}.")
    if not _SAFE_NAME.fullmatch(value):
        bad = next((c for c in value if not (c.isascii() and (c.isalnum() or c in "_.+-"))), value[0])
        what = "starts with" if bad == value[0] and value[0] in ".-" else "contains"
        raise ConfigError(f"{param}={value!r} is not a safe name: it {what} {bad!r}; {allowed}.")
    return value


def check_seed(param: str, value: Any) -> int:
    """A random seed: an integer ``0 <= seed < 2**32`` (what NumPy and torch both accept)."""
    if isinstance(value, bool) or not isinstance(value, int) and not (hasattr(value, "__index__")):
        raise ConfigError(f"{param}={value!r} must be a whole number 0 <= seed < 2**32.")
    value = int(value)
    if not 0 <= value < 2**32:
        raise ConfigError(f"{param}={value} is out of range; a seed is a whole number 0 <= seed < 2**32 "
                          "(e.g. 0, 1, 2).")
    return value


def require(module: str, extra: str, what: str | None = None):
    """Import an optional dependency or raise an error naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what or module} needs the optional package '{module.split('.')[0]}' "
            f"({exc}). Install it with: pip install 'transferkit[{extra}]'"
        ) from exc


# Array checks shared by every layer (metrics, the shallow adapters, nn.bandwidth, training's
# selection scorers): they live here, at the bottom, so no layer has to import one above it.
# NumPy is imported inside them so that importing this module stays light (the CLI's --help).


def as_2d(X, name: str, *, min_rows: int = 2, dtype=None):
    """``X`` (array-like or torch tensor) as a finite 2-D float array (``dtype``, default
    float64); a 1-D input is one feature."""
    import numpy as np

    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    try:
        A = np.asarray(X, dtype=np.float64 if dtype is None else dtype)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a numeric array, got {type(X).__name__}.") from None
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2:
        raise DataError(f"{name} must have shape (n_samples, n_features), got {A.shape}.")
    if A.shape[0] < min_rows:
        raise DataError(f"{name} has {A.shape[0]} samples; at least {min_rows} are needed.")
    if not np.isfinite(A).all():
        bad = int((~np.isfinite(A)).any(axis=1).sum())
        raise DataError(f"{name} contains NaN or infinite values in {bad} rows; clean or drop them first.")
    return A


def check_labels(y, n: int, name: str = "labels"):
    """Integer class labels ``0..K-1`` of length ``n`` (no unlabeled ``-1`` allowed)."""
    import numpy as np

    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{name} must have shape ({n},), got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{name} must be integer class indices, got dtype {y.dtype}.")
    if (y < 0).any():
        raise DataError(f"{name} contains negative values (unlabeled samples?); pass labeled samples only.")
    return y.astype(np.int64)
