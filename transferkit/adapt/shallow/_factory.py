"""Build a shallow estimator from its registry name and a mapping of options (a YAML
``options:`` section), with one-line errors for unknown names, unknown options and bad values."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from ..._registry import get
from ..._validation import suggest
from ...errors import ConfigError

__all__ = ["check_options", "make_shallow", "shallow_options"]


def shallow_options(name: str) -> tuple[str, ...]:
    """The options (constructor parameters) of the shallow estimator ``name``, sorted.

    Raises
    ------
    ConfigError
        ``name`` is not a registered shallow estimator (the message names the nearest ones).
    """
    cls = get("shallow_da", name)
    return tuple(sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self"))


def check_options(options, valid, *, what: str, where: str = "options") -> dict:
    """``options`` as a dict whose keys are all in ``valid``; else a one-line :class:`ConfigError`
    naming the first unknown key and the nearest valid one."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}={options!r} must be a mapping of option names to values, "
                          f"e.g. {{{sorted(valid)[0]}: ...}}.")
    valid = sorted(valid)
    for key in options:
        if key not in valid:
            raise ConfigError(f"{where} has an unknown option {key!r} for {what}." + suggest(str(key), valid)
                              + f" Options: {', '.join(valid)}.")
    return dict(options)


def make_shallow(name: str, options: Mapping | None = None, *, where: str = "options"):
    """The shallow estimator ``name`` (registry ``shallow_da``) built with ``options``.

    Every constructor parameter is an option (:func:`shallow_options`); values are checked now,
    before any data is seen, with the checks ``fit`` runs (the data-dependent ones, such as
    ``cv`` against the number of target rows, wait for ``fit``).

    Parameters
    ----------
    name : str
        ``"coral"``, ``"sa"``, ``"tca"``, ``"ot_mapping"``, ``"kmm"``, ``"kliep"``, ...
    options : mapping, optional
        Constructor parameters by name, e.g. ``{"n_components": 10}``. Options not given keep
        their defaults (estimators with randomness default to ``random_state=0``).
    where : str, default "options"
        How the caller calls ``options`` in messages (``"adapt.loss_options"``).

    Returns
    -------
    estimator
        Unfitted.

    Raises
    ------
    ConfigError
        An unknown ``name`` or option (naming the nearest valid one), or a bad value
        (``"adapt.loss_options: n_components must be >= 1, got 0."``).

    Examples
    --------
    >>> make_shallow("sa", {"n_components": 10})
    SubspaceAlignmentAdapter(n_components=10)
    """
    valid = shallow_options(name)
    opts = check_options(options, valid, what=f"shallow estimator {name!r}", where=where)
    est = get("shallow_da", name)(**opts)
    try:
        if hasattr(est, "_check_params"):
            est._check_params()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return est
