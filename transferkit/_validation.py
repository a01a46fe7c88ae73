"""Parameter rules and the one error format."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError, MissingDependencyError


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a ``" Did you mean 'x'?"`` hint, or an empty string."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


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
    """Check a numeric parameter against a range; return it (as int when ``integer``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value) if not integer else int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{param} must be a number, got {value!r}.") from None
    if integer:
        if int(value) != value:
            raise ConfigError(f"{param} must be an integer, got {value!r}.")
        value = int(value)
    if value != value:  # NaN
        raise ConfigError(f"{param} must be a number, got NaN.")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ConfigError(f"{param} must be {op} {low}, got {value!r}.")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ConfigError(f"{param} must be {op} {high}, got {value!r}.")
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
