"""Typed experiment configuration: YAML in, strict keys, resolved config out.

An experiment file looks like::

    name: demo
    seeds: 3                      # or an explicit list [0, 1, 2]
    source: "digits:subset=0/2"   # optional; recorded, used by later methods
    target: "digits:subset=1/2,rotate=22..45,translate=0.1"
    split: {labels_per_class: 10, val_fraction: 0.5}
    backbone: {name: efficientnet_lite0, image_size: 64}
    strategies:
      - scratch
      - feature_extraction
      - {name: finetune, lr: 0.001, backbone_lr_mult: 0.1}

Unknown keys at any level are errors that name the key and suggest the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._validation import check_number, suggest
from .errors import ConfigError


@dataclass
class BackboneConfig:
    name: str = "efficientnet_lite0"
    image_size: int | None = None
    pretrained: bool = True
    weights: str | None = None
    arch: str | None = None
    options: dict = field(default_factory=dict)  # passed to the backbone factory (e.g. pooling, in_features)


@dataclass
class SplitConfig:
    """How the target is split. With ``labels_per_class=k``, ``k`` labeled samples per class
    train and the rest is divided into validation (``val_fraction``) and test. Without it,
    ``train_fraction`` of the target trains. ``val``/``test`` may instead name datasets."""

    labels_per_class: int | None = None
    train_fraction: float = 0.6
    val_fraction: float = 0.5
    val: str | None = None
    test: str | None = None

    def validate(self) -> None:
        if self.labels_per_class is not None:
            check_number("split.labels_per_class", self.labels_per_class, low=1, integer=True)
        check_number("split.train_fraction", self.train_fraction, low=0, high=1, low_inclusive=False, high_inclusive=False)
        check_number("split.val_fraction", self.val_fraction, low=0, high=1, high_inclusive=False)


@dataclass
class StrategyConfig:
    name: str
    params: dict = field(default_factory=dict)
    label: str | None = None  # column name in tables; defaults to ``name``

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass
class ExperimentConfig:
    target: str | dict
    name: str = "experiment"
    source: str | dict | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    split: SplitConfig = field(default_factory=SplitConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    strategies: list[StrategyConfig] = field(default_factory=lambda: [StrategyConfig("feature_extraction")])
    output_dir: str | None = None
    cache_dir: str | None = None
    device: str | None = None
    progress: bool = True

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["strategies"] = [
            {"name": s.name, **({"label": s.label} if s.label else {}), **s.params} for s in self.strategies
        ]
        return d


def _check_keys(data: dict, cls, where: str) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in valid:
            raise ConfigError(f"unknown key {where}{k!r}." + suggest(str(k), valid) + f" Valid keys: {', '.join(valid)}.")


def _strategy_params(name: str) -> list[str]:
    from ._registry import get

    cls = get("strategy", name)
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "backbone")]


def _parse_strategy(item: Any, i: int) -> StrategyConfig:
    where = f"strategies[{i}]"
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise ConfigError(f"{where} must be a strategy name or a mapping with a 'name' key, got {item!r}.")
    item = dict(item)
    name = item.pop("name")
    label = item.pop("label", None)
    params = item.pop("params", {}) or {}
    params.update(item)
    valid = _strategy_params(name)  # raises with a suggestion for an unknown strategy
    for k in params:
        if k not in valid:
            raise ConfigError(
                f"unknown parameter {where}.{k!r} for strategy {name!r}." + suggest(k, valid)
                + f" Valid parameters: {', '.join(valid)}."
            )
    return StrategyConfig(name=name, params=params, label=label)


def config_from_dict(data: dict) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a plain mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"an experiment config must be a mapping of keys to values, got {type(data).__name__}.")
    _check_keys(data, ExperimentConfig, "")
    if "target" not in data:
        raise ConfigError("the experiment config needs a 'target' dataset (e.g. target: \"digits:rotate=30\").")
    d = dict(data)
    split = d.get("split") or {}
    if not isinstance(split, dict):
        raise ConfigError("'split' must be a mapping, e.g. split: {labels_per_class: 10}.")
    _check_keys(split, SplitConfig, "split.")
    d["split"] = SplitConfig(**split)
    d["split"].validate()
    bb = d.get("backbone") or {}
    if isinstance(bb, str):
        bb = {"name": bb}
    if not isinstance(bb, dict):
        raise ConfigError("'backbone' must be a name or a mapping, e.g. backbone: {name: efficientnet_lite0}.")
    _check_keys(bb, BackboneConfig, "backbone.")
    d["backbone"] = BackboneConfig(**bb)
    if d["backbone"].image_size is not None:
        check_number("backbone.image_size", d["backbone"].image_size, low=8, high=1024, integer=True)
    seeds = d.get("seeds", [0, 1, 2])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        check_number("seeds", seeds, low=1, integer=True)
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"seeds={seeds!r} must be a positive count or a non-empty list of integers.")
    d["seeds"] = seeds
    strategies = d.get("strategies", ["feature_extraction"])
    if not isinstance(strategies, list) or not strategies:
        raise ConfigError("'strategies' must be a non-empty list, e.g. [scratch, feature_extraction, finetune].")
    d["strategies"] = [_parse_strategy(s, i) for i, s in enumerate(strategies)]
    keys = [s.key for s in d["strategies"]]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError(f"strategy {dup[0]!r} appears twice; give one of them a distinct 'label'.")
    return ExperimentConfig(**d)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file; ``overrides`` are ``dotted.key=value`` strings."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; check the path.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: YAML syntax error{where}: {getattr(exc, 'problem', exc)}; fix the file.") from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty; see examples/ for an experiment file.")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys to values.")
    for ov in overrides or []:
        apply_override(data, ov)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def apply_override(data: dict, override: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to a nested mapping in place."""
    import yaml

    if "=" not in override:
        raise ConfigError(f"--set {override!r} must look like key=value, e.g. split.labels_per_class=5.")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw)
    cur = data
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(cur.get(part), dict):
            cur[part] = {} if cur.get(part) is None else cur[part]
            if not isinstance(cur[part], dict):
                raise ConfigError(f"--set {override!r}: {part!r} is not a mapping.")
        cur = cur[part]
    cur[parts[-1]] = value
