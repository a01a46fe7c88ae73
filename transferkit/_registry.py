"""One registry for every pluggable kind.

Kinds: ``backbone``, ``dataset``, ``strategy``, ``da_loss``, ``shallow_da``, ``penalty``,
``divergence``, ``transferability``, ``scorer``, ``fewshot``, ``tta``, ``pretext`` (self-supervised
pretext tasks), ``mtl_weighting`` (how several task losses become one update), ``rl_transfer`` (policy
transfer methods). A method registers itself with
``@register("strategy", "finetune")`` next to its definition (timm's ``@register_model``).
Unknown names fail with the nearest valid names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ._validation import suggest
from .errors import ConfigError

KINDS = (
    "backbone",
    "dataset",
    "strategy",
    "da_loss",
    "shallow_da",
    "penalty",
    "divergence",
    "transferability",
    "scorer",
    "fewshot",
    "tta",
    "pretext",
    "mtl_weighting",
    "rl_transfer",
)

# Modules whose import fills each kind; imported lazily so `import transferkit` stays light.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "backbone": ("transferkit.backbones",),
    "dataset": ("transferkit.data",),
    # compress.strategy: distill (it reads a teacher run through inference, above strategies)
    "strategy": ("transferkit.strategies", "transferkit.compress.strategy"),
    "divergence": ("transferkit.metrics",),
    "transferability": ("transferkit.metrics",),
    "scorer": ("transferkit.train.selection",),
    "da_loss": ("transferkit.adapt.deep", "transferkit.adapt.multi_source"),  # multi_source: the one-source 'moment'
    "shallow_da": ("transferkit.adapt.shallow",),
    "penalty": ("transferkit.finetune.penalties",),
    "fewshot": ("transferkit.fewshot",),
    "tta": ("transferkit.tta",),
    "pretext": ("transferkit.pretrain",),
    "mtl_weighting": ("transferkit.pretrain",),
    "rl_transfer": ("transferkit.rl",),
}

_REGISTRY: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
_DOCS: dict[str, dict[str, str]] = {k: {} for k in KINDS}


def register(kind: str, name: str, *, doc: str | None = None) -> Callable[[Any], Any]:
    """Decorator registering ``obj`` under ``kind``/``name`` (snake_case)."""
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown registry kind {kind!r}." + suggest(kind, KINDS))

    def deco(obj: Any) -> Any:
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not obj:
            raise ConfigError(f"{kind} {name!r} is registered twice.")
        _REGISTRY[kind][name] = obj
        text = doc or (obj.__doc__ or "").strip().splitlines()
        _DOCS[kind][name] = text if isinstance(text, str) else (text[0] if text else "")
        return obj

    return deco


def _load(kind: str) -> None:
    for mod in _PROVIDERS.get(kind, ()):
        importlib.import_module(mod)


def get(kind: str, name: str) -> Any:
    """Look up a registered object; unknown names raise with the nearest valid names."""
    _load(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        names = sorted(_REGISTRY[kind])
        raise ConfigError(
            f"unknown {kind} {name!r}." + suggest(name, names)
            + f" Valid {kind} names: {', '.join(names)}."
        ) from None


def available(kind: str) -> list[str]:
    """Sorted names registered under ``kind``."""
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown registry kind {kind!r}." + suggest(kind, KINDS))
    _load(kind)
    return sorted(_REGISTRY[kind])


def describe(kind: str) -> dict[str, str]:
    """Name -> one-line description for ``kind``."""
    _load(kind)
    return {n: _DOCS[kind].get(n, "") for n in sorted(_REGISTRY[kind])}
