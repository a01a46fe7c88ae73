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
    ``train_fraction`` of the target trains. ``val``/``test`` may instead name datasets.

    Domain adaptation: ``unlabeled_fraction=f`` moves a stratified fraction ``f`` of what is
    left after the labeled draw into the training split *with its labels hidden* (-1), before
    validation and test are cut from the remainder. ``labels_per_class=0`` means no labeled
    target training samples at all (unsupervised adaptation; needs ``unlabeled_fraction``).
    E.g. the digits-shift protocol is ``labels_per_class: 0, unlabeled_fraction: 0.5,
    val_fraction: 0``: half the target unlabeled for training, half for test."""

    labels_per_class: int | None = None
    train_fraction: float = 0.6
    val_fraction: float = 0.5
    unlabeled_fraction: float = 0.0
    val: str | None = None
    test: str | None = None

    def validate(self) -> None:
        check_number("split.unlabeled_fraction", self.unlabeled_fraction, low=0, high=1, high_inclusive=False)
        if self.labels_per_class is not None:
            check_number("split.labels_per_class", self.labels_per_class, low=0, integer=True)
            if self.labels_per_class == 0 and self.unlabeled_fraction == 0:
                from .errors import ConfigError

                raise ConfigError("split.labels_per_class=0 leaves no training data; set split.unlabeled_fraction "
                                  "(e.g. 0.5) for unsupervised adaptation, or use labels_per_class >= 1.")
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
class DiagnoseConfig:
    """The optional ``diagnose:`` section read by ``transferkit diagnose``.

    ``transfer`` and ``baseline`` name a strategy: a key of ``strategies`` (its parameters are
    used) or a registered strategy name (its defaults). ``source_only``: ``"auto"`` adds the
    source-only baseline when a source is given and its label space matches the target's.
    ``method``: ``"t"`` (paired t interval), ``"bootstrap"`` (paired percentile bootstrap with
    ``n_resamples``) or ``"welch"`` (unpaired Welch interval). ``labels_per_class``: the
    sample-efficiency grid (positive integers and ``"all"``; empty: skip the curve).
    ``convergence_accuracy``: validation accuracy for the steps-to-accuracy comparison
    (``None``: 90% of the lowest best validation accuracy of any run, which every run reaches).
    ``sharpness``: top Hessian eigenvalue at the solution, on up to ``sharpness_samples``
    training samples (up to 20 Hessian-vector products per seed and strategy, each about three
    backward passes over those samples). ``forgetting``: source accuracy before/after (needs a labeled source).
    """

    transfer: str = "finetune"
    baseline: str = "scratch"
    source_only: bool | str = "auto"
    method: str = "t"
    confidence: float = 0.95
    n_resamples: int = 10000
    labels_per_class: list = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, "all"])
    convergence_accuracy: float | None = None
    sharpness: bool = True
    sharpness_samples: int = 64
    forgetting: bool = False

    def validate(self, strategy_keys: list[str]) -> None:
        from ._registry import available

        for key in ("transfer", "baseline"):
            v = getattr(self, key)
            valid = list(strategy_keys) + [n for n in available("strategy") if n not in strategy_keys]
            if not isinstance(v, str) or v not in valid:
                raise ConfigError(f"diagnose.{key}={v!r} is not a strategy of this config or a registered strategy."
                                  + suggest(str(v), valid) + f" Valid: {', '.join(valid)}.")
        if self.transfer == self.baseline:
            raise ConfigError(f"diagnose.transfer and diagnose.baseline are both {self.transfer!r}; "
                              "compare two different strategies (e.g. transfer: finetune, baseline: scratch).")
        if self.source_only not in (True, False, "auto"):
            raise ConfigError(f"diagnose.source_only={self.source_only!r} must be true, false or 'auto'.")
        if self.method not in ("t", "bootstrap", "welch"):
            raise ConfigError(f"diagnose.method={self.method!r} must be 't', 'bootstrap' or 'welch'."
                              + suggest(str(self.method), ["t", "bootstrap", "welch"]))
        check_number("diagnose.confidence", self.confidence, low=0, high=1, low_inclusive=False, high_inclusive=False)
        check_number("diagnose.n_resamples", self.n_resamples, low=100, integer=True)
        check_number("diagnose.sharpness_samples", self.sharpness_samples, low=1, integer=True)
        if self.convergence_accuracy is not None:
            check_number("diagnose.convergence_accuracy", self.convergence_accuracy, low=0, high=1,
                         low_inclusive=False)
        lpc = self.labels_per_class if self.labels_per_class is not None else []
        if not isinstance(lpc, list):
            raise ConfigError(f"diagnose.labels_per_class={lpc!r} must be a list such as [1, 2, 5, 10, 20, 50, all].")
        for k in lpc:
            if k != "all":
                check_number("diagnose.labels_per_class[]", k, low=1, integer=True)
        self.labels_per_class = lpc
        for key in ("sharpness", "forgetting"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"diagnose.{key}={getattr(self, key)!r} must be true or false.")


@dataclass
class TrackingConfig:
    """The optional ``tracking:`` section (see :mod:`transferkit.train.tracking`): MLflow runs
    (``tracking_uri``: default ``sqlite:///OUT/mlflow.db``) and TensorBoard scalars
    (``OUT/tensorboard/``); both off by default."""

    mlflow: bool = False
    tensorboard: bool = False
    tracking_uri: str | None = None
    experiment_name: str | None = None

    def validate(self) -> None:
        import importlib.util

        from .errors import MissingDependencyError

        for key in ("mlflow", "tensorboard"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"tracking.{key}={getattr(self, key)!r} must be true or false.")
            if getattr(self, key) and importlib.util.find_spec(key) is None:  # fail before anything runs
                raise MissingDependencyError(f"tracking.{key}: true needs the '{key}' package; install it with "
                                             f"pip install \"transferkit[tracking]\" (or set tracking.{key}: false).")
        for key in ("tracking_uri", "experiment_name"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, str) or not v):
                raise ConfigError(f"tracking.{key}={v!r} must be a non-empty string (or left out).")


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
    diagnose: DiagnoseConfig | None = None  # read by ``transferkit diagnose`` only
    tracking: TrackingConfig | None = None  # MLflow / TensorBoard logging, off when None

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
    for k, rule in _PARAM_RULES.items():
        if params.get(k) is not None:  # checked here, so a bad value fails before any run starts
            params[k] = check_number(f"{where}.{k}", params[k], **rule)
    return StrategyConfig(name=name, params=params, label=label)


#: Range rules for the numeric strategy parameters that several strategies share (``None``
#: stays allowed where the strategy accepts it). A YAML ``1e-3`` (a string for YAML 1.1) is
#: converted to a float here.
_PARAM_RULES: dict[str, dict] = {
    "epochs": {"low": 1, "integer": True},
    "batch_size": {"low": 1, "integer": True},
    "lr": {"low": 0, "low_inclusive": False},
    "backbone_lr_mult": {"low": 0},
    "layer_decay": {"low": 0, "low_inclusive": False},
    "weight_decay": {"low": 0},
    "warmup_epochs": {"low": 0},
    "dropout": {"low": 0, "high": 1, "high_inclusive": False},
    "label_smoothing": {"low": 0, "high": 1, "high_inclusive": False},
    "grad_clip": {"low": 0},
    "early_stopping": {"low": 1, "integer": True},
    "progressive_unfreeze": {"low": 1, "integer": True},
    "image_size": {"low": 8, "high": 1024, "integer": True},
    "seed": {"integer": True},
}


def _section(value, name: str, cls, example: str):
    """A config section (a mapping with strict keys) as its dataclass ``cls``."""
    if not isinstance(value, dict):
        raise ConfigError(f"'{name}' must be a mapping, e.g. {example}.")
    _check_keys(value, cls, f"{name}.")
    return cls(**value)


def config_from_dict(data: dict) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a plain mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"an experiment config must be a mapping of keys to values, got {type(data).__name__}.")
    _check_keys(data, ExperimentConfig, "")
    if "target" not in data:
        raise ConfigError("the experiment config needs a 'target' dataset (e.g. target: \"digits:rotate=30\").")
    d = dict(data)
    d["split"] = _section(d.get("split") or {}, "split", SplitConfig, "split: {labels_per_class: 10}")
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
    if d.get("diagnose") is not None:
        d["diagnose"] = _section(d["diagnose"], "diagnose", DiagnoseConfig,
                                 "diagnose: {transfer: finetune, baseline: scratch}")
        d["diagnose"].validate(keys)
    if d.get("tracking") is not None:
        d["tracking"] = _section(d["tracking"], "tracking", TrackingConfig, "tracking: {mlflow: true, tensorboard: true}")
        d["tracking"].validate()
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
