"""The one exception family.

Every error transferkit raises on purpose derives from :class:`TransferKitError`. Messages name
the parameter, file or value that was wrong and say what to do. The CLI turns these into a
one-line message and exit code 2.
"""

from __future__ import annotations


class TransferKitError(Exception):
    """Base class of every error transferkit raises on purpose."""


class ConfigError(TransferKitError, ValueError):
    """A parameter, config key or spec string is invalid."""


class DataError(TransferKitError, ValueError):
    """Input data is missing, unreadable or inconsistent."""


class WeightsError(TransferKitError, RuntimeError):
    """Model weights cannot be found, loaded safely, or matched to an architecture."""


class MissingDependencyError(TransferKitError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class TransferKitWarning(UserWarning):
    """A result that is valid but may not mean what the user expects (one class, duplicate
    seeds, a degenerate split). The experiment runner records every such warning in
    ``results.json`` (``"warnings"``) and the report shows them."""


class NonNumericDataError(DataError, TypeError):
    """``X`` holds an entry that is neither a number nor a string (a :class:`TypeError`, as
    NumPy and scikit-learn raise for it, and a :class:`~transferkit.errors.DataError`)."""
