"""Strict parsing of dataset and transform options (spec values such as ``rotate=22..45``).

Every option value reaches a loader either from a spec string (already parsed by
:func:`transferkit.data.spec.parse_value`: ``"nan"`` and ``"maybe"`` stay strings, ``1e309``
becomes ``inf``) or from Python. These helpers turn it into a number, a range or a boolean, or
raise one :class:`~transferkit.errors.ConfigError` line that names the dataset, the option, the
value and what to write instead. Non-finite numbers are never accepted: a NaN angle silently
turned every image black, an infinite noise level made every pixel a coin flip.

Bounds that protect memory live next to the options they guard (``MAX_IMAGE_SIZE``,
``MAX_CLASSES``): a spec string or a label value must not be able to ask for gigabytes.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError, DataError

#: Largest image side a dataset option may ask for (``size``): one float32 RGB image of
#: 1024 x 1024 is 12 MiB, a batch of 64 of them 768 MiB.
MAX_IMAGE_SIZE = 1024

#: Largest number of classes a dataset may imply (max label + 1, class names, class folders).
#: A head over 100,000 classes is already 200 M weights on a 2048-wide backbone; beyond it a
#: label value is almost surely an identifier, not a class index.
MAX_CLASSES = 100_000

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def _to_float(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is not a number (bools are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an int beyond float range
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.generic) and value.dtype.kind in "iuf":
            return float(value)
    except (TypeError, ValueError):
        pass
    return None


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else f"{v:g}"


def _bounds(low, high, low_inclusive, high_inclusive) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_inclusive else '>'} {_fmt(low)}")
    if high is not None:
        parts.append(f"{'<=' if high_inclusive else '<'} {_fmt(high)}")
    return " and ".join(parts)


def number(what: str, param: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_inclusive: bool = True, high_inclusive: bool = True, integer: bool = False,
           hint: str = "") -> float | int:
    """A finite number (``int`` when ``integer``) within the bounds, or a :class:`ConfigError`.

    ``what`` names the dataset (``"digits"``, ``"image folder 'imgs'"``); ``hint`` is appended
    to the message (what the option means, a typical value).
    """
    rule = ("a finite integer" if integer else "a finite number") + (
        f" {_bounds(low, high, low_inclusive, high_inclusive)}" if low is not None or high is not None else "")
    tail = f"{'; ' + hint if hint else ''}."
    v = _to_float(value)
    if v is None or not math.isfinite(v):
        raise ConfigError(f"{what}: {param}={value!r} must be {rule}{tail}")
    if integer:
        if v != int(v):
            raise ConfigError(f"{what}: {param}={value!r} must be {rule} (a whole number){tail}")
        v = int(value) if isinstance(value, int) and not isinstance(value, bool) else int(v)
    if low is not None and (v < low or (v == low and not low_inclusive)):
        raise ConfigError(f"{what}: {param}={value!r} must be {rule}{tail}")
    if high is not None and (v > high or (v == high and not high_inclusive)):
        raise ConfigError(f"{what}: {param}={value!r} must be {rule}{tail}")
    return v


def number_range(what: str, param: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True, hint: str = "", example: str = "22..45") -> tuple[float, float]:
    """A scalar ``v`` (-> ``(v, v)``), a range ``"a..b"`` or a pair ``[a, b]`` of finite numbers
    within the bounds with ``a <= b``; otherwise a :class:`ConfigError`."""
    form = f"a number or a range low..high (e.g. {param}={example})"
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"{what}: {param}={value!r} must be {form}; a list needs exactly two numbers.")
        parts = list(value)
    elif isinstance(value, str) and ".." in value:
        parts = value.split("..", 1)
    else:
        parts = [value, value]
    ends = []
    for p in parts:
        v = _to_float(p)
        if v is None or not math.isfinite(v):
            raise ConfigError(f"{what}: {param}={value!r} must be {form} of finite numbers"
                              f"{', ' + _bounds(low, high, low_inclusive, True) if low is not None or high is not None else ''}"
                              f"{'; ' + hint if hint else ''}.")
        ends.append(v)
    lo, hi = ends
    if lo > hi:
        raise ConfigError(f"{what}: {param}={value!r}: the range's low end is above its high end; "
                          f"write it as {param}={_fmt(hi)}..{_fmt(lo)}.")
    for v in (lo, hi):
        if (low is not None and (v < low or (v == low and not low_inclusive))) or (high is not None and v > high):
            raise ConfigError(f"{what}: {param}={value!r} must lie in the range "
                              f"{_bounds(low, high, low_inclusive, True)}{'; ' + hint if hint else ''}.")
    return lo, hi


def boolean(what: str, param: str, value: Any) -> bool:
    """``true/false``, ``1/0``, ``yes/no`` (any case) or a Python bool; anything else is an error
    (``invert=maybe`` used to mean false without a word)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{what}: {param}={value!r} is not a boolean; write {param}=true or {param}=false "
                      "(also accepted: 1/0, yes/no).")


def text(what: str, param: str, value: Any) -> str | None:
    """An optional non-empty string option (``name``); numbers are accepted as their text."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
        raise ConfigError(f"{what}: {param}={value!r} must be a non-empty string.")
    return str(value).strip()


def check_n_classes(what: str, n_classes: int, *, n_labeled: int | None = None, source: str = "") -> None:
    """Refuse a label space larger than :data:`MAX_CLASSES` before anything is built for it."""
    if n_classes > MAX_CLASSES:
        raise DataError(
            f"{what}: {source or 'the labels'} imply {n_classes:,} classes, more than the limit of "
            f"{MAX_CLASSES:,} (classes = the largest label + 1, or the number of class names); "
            "labels must be class indices 0..K-1 (-1 = unlabeled), not identifiers: re-encode them "
            "(e.g. with np.unique(y, return_inverse=True))."
        )


def check_two_classes(what: str, labels, *, names=None, fix: str = "") -> None:
    """Refuse labeled data whose labeled samples all belong to one class (classification needs
    at least two). Unlabeled data (every label -1, or ``labels is None``) passes."""
    import numpy as np

    if labels is None:
        return
    y = np.asarray(labels)
    y = y[y >= 0]
    if len(y) == 0:
        return
    found = np.unique(y)
    if len(found) < 2:
        name = f" ({names[int(found[0])]!r})" if names is not None and int(found[0]) < len(names) else ""
        raise DataError(
            f"{what}: all {len(y)} labeled samples belong to one class{name}; found 1 class, "
            f"classification needs at least 2. {fix or 'Add samples of other classes, or check the label column.'}"
        )
