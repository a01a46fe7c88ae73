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

Several labeled sources replace ``source`` with ``sources: ["digits:rotate=0", "digits:rotate=30",
...]`` (same modality and class list): the multi-source strategies (``multi_source``,
``domain_generalization``) receive them as a list, every other strategy the pooled sources as one
dataset (the naive pooled-source baseline).

Unknown keys at any level are errors that name the key and suggest the nearest valid one.

Every YAML the package reads goes through :func:`safe_load_yaml`: a ``yaml.SafeLoader`` with
bounded nesting, aliases and expanded size, and no duplicate keys; :func:`read_yaml_file`
adds a size limit and a UTF-8 check. Names that become folders (``name``, a strategy's
``label``) must be safe names (:func:`transferkit._validation.check_name`), seeds are distinct
integers ``0 <= seed < 2**32``, and every number in the config must be finite.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._validation import check_name, check_number, check_seed, suggest
from .errors import ConfigError

#: Bounds of what an experiment file may hold (a config is a few hundred bytes; these only stop
#: hostile or broken input from hanging or exhausting the machine).
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000
MAX_SEEDS = 10_000  # as `--seeds N` on the command line


#: The backbone used for each input modality when the config names none (``backbone: auto``,
#: the default): an ImageNet CNN for images, the MiniLM sentence encoder for text, and the
#: columns themselves for tables.
DEFAULT_BACKBONES: dict[str, str] = {"image": "efficientnet_lite0", "text": "minilm", "tabular": "identity"}

#: Names of "no backbone, use the columns": ``identity`` everywhere (``none`` is accepted as an alias).
NO_BACKBONE_NAMES: tuple[str, ...] = ("identity", "none")

#: How few target labels are drawn (``split.label_draw``).
LABEL_DRAWS: tuple[str, ...] = ("balanced", "prior")


@dataclass
class BackboneConfig:
    name: str = "auto"
    image_size: int | None = None
    pretrained: bool = True
    weights: str | None = None
    arch: str | None = None
    options: dict = field(default_factory=dict)  # passed to the backbone factory (e.g. pooling, in_features)

    def build(self, *, pretrained: bool = True, image_size: int | None = None, seed: int | None = None):
        """The backbone this section describes (the one place a config becomes a backbone):
        ``pretrained=False`` drops the weights (a random initialization of the same
        architecture); ``image_size`` replaces the section's own; ``seed`` seeds a random one."""
        from .backbones import create_backbone

        return create_backbone(self.name, pretrained=pretrained and self.pretrained,
                               weights=self.weights if pretrained else None,
                               image_size=self.image_size if image_size is None else image_size, arch=self.arch,
                               seed=seed, **self.options)

    def resolved(self, dataset) -> "BackboneConfig":
        """This section made concrete for ``dataset`` (see :func:`resolve_backbone_config`)."""
        return resolve_backbone_config(self, dataset)


def resolve_backbone_config(b: BackboneConfig, dataset) -> BackboneConfig:
    """``b`` made concrete for ``dataset``: ``auto`` becomes the modality's default backbone
    (:data:`DEFAULT_BACKBONES`), ``none`` becomes ``identity``, and ``identity`` without
    ``options.in_features`` takes the table's column count. A copy; ``b`` is not changed."""
    name = b.name
    if name == "auto":
        name = DEFAULT_BACKBONES.get(dataset.modality, "efficientnet_lite0")
    if name in NO_BACKBONE_NAMES:
        name = "identity"
    options = dict(b.options or {})
    if name == "identity":
        if dataset.modality != "tabular":
            raise ConfigError(
                f"backbone {b.name!r} uses the columns of a table as features, but {dataset.name!r} is "
                f"{dataset.modality}; choose {'an' if dataset.modality[0] in 'aeiou' else 'a'} {dataset.modality} "
                f"backbone (e.g. {DEFAULT_BACKBONES.get(dataset.modality)}) or leave backbone out (auto).")
        options.setdefault("in_features", int(dataset.inputs.shape[1]))
    return dataclasses.replace(b, name=name, options=options)


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
    val_fraction: 0``: half the target unlabeled for training, half for test.
    ``unlabeled_fraction: 1`` adapts on every target row: the test split is then ``test`` (a
    labeled file) or, without one, the same rows with their labels (the transductive protocol
    of the DA literature; recorded as such). An unlabeled target (a table without its label
    column, ``label=none``) adapts on all its rows too.

    ``label_draw``: ``balanced`` draws ``labels_per_class`` of every class; ``prior`` draws
    ``labels_per_class x n_classes`` labels in the target's own class proportions (at least one
    per class), so an imbalanced target keeps its class priors in the training split."""

    labels_per_class: int | None = None
    train_fraction: float = 0.6
    val_fraction: float = 0.5
    unlabeled_fraction: float = 0.0
    val: str | None = None
    test: str | None = None
    label_draw: str = "balanced"

    def validate(self) -> None:
        for key in ("val", "test"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, (str, dict)) or not v):
                raise ConfigError(f"split.{key}={v!r} must be a dataset spec string or mapping (or left out).")
        check_number("split.unlabeled_fraction", self.unlabeled_fraction, low=0, high=1)
        if self.label_draw not in LABEL_DRAWS:
            raise ConfigError(f"split.label_draw={self.label_draw!r} must be one of {', '.join(LABEL_DRAWS)} "
                              "(balanced: labels_per_class of every class; prior: the same number of labels drawn "
                              "in the target's class proportions)." + suggest(str(self.label_draw), LABEL_DRAWS))
        if self.labels_per_class is not None:
            check_number("split.labels_per_class", self.labels_per_class, low=0, integer=True)
            if self.labels_per_class == 0 and self.unlabeled_fraction == 0:
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
        check_number("diagnose.n_resamples", self.n_resamples, low=100, high=1_000_000, integer=True)
        check_number("diagnose.sharpness_samples", self.sharpness_samples, low=1, high=100_000, integer=True)
        if self.convergence_accuracy is not None:
            check_number("diagnose.convergence_accuracy", self.convergence_accuracy, low=0, high=1,
                         low_inclusive=False)
        lpc = self.labels_per_class if self.labels_per_class is not None else []
        if not isinstance(lpc, list):
            raise ConfigError(f"diagnose.labels_per_class={lpc!r} must be a list such as [1, 2, 5, 10, 20, 50, all].")
        for i, k in enumerate(lpc):
            if k != "all":
                check_number(f"diagnose.labels_per_class[{i}]", k, low=1, integer=True)
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
    sources: list | None = None
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
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name={name!r} must be a strategy name such as 'finetune' "
                          "(see 'transferkit list strategies').")
    label = item.pop("label", None)
    if label is not None:
        check_name(f"{where}.label", label)  # it becomes the folder OUT/<label>/
    params = item.pop("params", {}) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.params={params!r} must be a mapping of parameter names to values.")
    params = dict(params)
    params.update(item)
    valid = _strategy_params(name)  # raises with a suggestion for an unknown strategy
    if label is None:
        check_name(f"{where}.name", name)  # without a label the name is the folder (a plugin may register any)
    for k in params:
        if k not in valid:
            raise ConfigError(
                f"unknown parameter {where}.{k!r} for strategy {name!r}." + suggest(k, valid)
                + f" Valid parameters: {', '.join(valid)}."
            )
    for k, rule in _PARAM_RULES.items():
        if params.get(k) is not None:  # checked here, so a bad value fails before any run starts
            params[k] = check_number(f"{where}.{k}", params[k], **rule)
    if params.get("seed") is not None:
        params["seed"] = check_seed(f"{where}.seed", params["seed"])
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
    "seed": {"low": 0, "high": 2**32 - 1, "integer": True},
}


def _check_finite(obj, where: str = "") -> None:
    """Every float anywhere in the config must be finite: ``lr: .inf`` or ``alpha: .nan`` would
    train to NaN weights and report a meaningless accuracy instead of failing."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{where or 'the config'}={obj!r} is not a finite number; give a finite value.")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def _check_str(param: str, value, *, optional: bool = True) -> None:
    """A non-empty string without NUL characters (paths and device names), or ``None``."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ConfigError(f"{param}={value!r} must be a non-empty string" + (" (or left out)." if optional else "."))


def _check_bool(param: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{param}={value!r} must be true or false.")


def check_seeds(seeds, param: str = "seeds") -> list[int]:
    """``seeds``: a count ``1..MAX_SEEDS`` (seeds ``0..n-1``) or a list of distinct seeds, each an
    integer ``0 <= seed < 2**32``. Duplicates are refused: the same run twice would be
    reported as two seeds with a standard deviation of 0."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        check_number(param, seeds, low=1, high=MAX_SEEDS, integer=True)
        return list(range(seeds))
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"{param}={seeds!r} must be a positive count or a non-empty list of integers "
                          "(e.g. seeds: 3 or seeds: [0, 1, 2]).")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"{param} lists {len(seeds)} seeds; at most {MAX_SEEDS} are allowed.")
    out = [check_seed(f"{param}[{i}]", s) for i, s in enumerate(seeds)]
    from collections import Counter

    dup = sorted(s for s, n in Counter(out).items() if n > 1)
    if dup:
        raise ConfigError(f"{param} lists seed {dup[0]} more than once; each seed runs once, give distinct seeds "
                          "(e.g. [0, 1, 2]).")
    return out


def _check_dataset(param: str, value, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, dict):
        if not value:
            raise ConfigError(f"{param} is an empty mapping; give a dataset spec such as \"digits:rotate=30\".")
        return
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ConfigError(f"{param}={value!r} must be a dataset spec string (e.g. \"digits:rotate=30\") or a mapping.")


def _backbone_config(bb) -> BackboneConfig:
    if isinstance(bb, str):
        bb = {"name": bb}
    if not isinstance(bb, dict):
        raise ConfigError("'backbone' must be a name or a mapping, e.g. backbone: {name: efficientnet_lite0}.")
    _check_keys(bb, BackboneConfig, "backbone.")
    b = BackboneConfig(**bb)
    _check_str("backbone.name", b.name, optional=False)
    if b.name == "none":  # one name for "no backbone, use the columns"
        b.name = "identity"
    if b.image_size is not None:
        b.image_size = check_number("backbone.image_size", b.image_size, low=8, high=1024, integer=True)
    _check_bool("backbone.pretrained", b.pretrained)
    _check_str("backbone.weights", b.weights)
    _check_str("backbone.arch", b.arch)
    if b.options is None:
        b.options = {}
    if not isinstance(b.options, dict):
        raise ConfigError(f"backbone.options={b.options!r} must be a mapping of option names to values, "
                          "e.g. options: {in_features: 4}.")
    for k in b.options:
        if not isinstance(k, str) or not k.isidentifier():
            raise ConfigError(f"backbone.options key {k!r} is not an option name; use names such as in_features.")
        if k in ("pretrained", "weights", "image_size", "arch"):
            raise ConfigError(f"backbone.options.{k} duplicates backbone.{k}; set backbone.{k} instead.")
    return b


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
    _check_finite(data)
    d = dict(data)
    check_name("name", d.get("name", "experiment"))  # the default output folder is runs/NAME-TIMESTAMP
    _check_dataset("target", d["target"], optional=False)
    _check_dataset("source", d.get("source"), optional=True)
    if d.get("sources") is not None:
        if d.get("source") is not None:
            raise ConfigError("give either 'source' (one labeled source) or 'sources' (several), not both; move the "
                              "source into the sources list.")
        if not isinstance(d["sources"], list) or not d["sources"]:
            raise ConfigError("'sources' must be a non-empty list of dataset specs, e.g. sources: "
                              "[\"digits:rotate=0\", \"digits:rotate=30\"].")
        for i, s in enumerate(d["sources"]):
            _check_dataset(f"sources[{i}]", s, optional=False)
    for key in ("output_dir", "cache_dir", "device"):
        _check_str(key, d.get(key))
    _check_bool("progress", d.get("progress", True))
    d["split"] = _section(d.get("split") or {}, "split", SplitConfig, "split: {labels_per_class: 10}")
    d["split"].validate()
    d["backbone"] = _backbone_config(d.get("backbone") or {})
    d["seeds"] = check_seeds(d.get("seeds", [0, 1, 2]))
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


# ---------------------------------------------------------------------------- safe YAML
class _YAMLLimit(Exception):
    """A bound of :class:`BoundedSafeLoader` was exceeded (the message says which and what to do)."""


def _bounded_loader_class():
    import yaml

    class BoundedSafeLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` (plain data only, never Python objects) with bounded resources:
        at most :data:`MAX_YAML_DEPTH` levels of nesting (the composer recurses once per level:
        50,000 levels would end in RecursionError), :data:`MAX_YAML_ALIASES` aliases and
        :data:`MAX_YAML_NODES` nodes once aliases are expanded (a "billion laughs" document is a
        few hundred bytes that expand to 10^9 nodes), and no duplicate mapping keys (YAML keeps
        the last one silently, so a repeated ``lr:`` would hide the first)."""

        def __init__(self, stream):
            super().__init__(stream)
            self._tk_depth = 0
            self._tk_aliases = 0
            self._tk_open: set = set()  # anchors of the collections being composed

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self._tk_aliases += 1
                event = self.peek_event()
                if self._tk_aliases > MAX_YAML_ALIASES:
                    raise _YAMLLimit(f"more than {MAX_YAML_ALIASES} YAML aliases (*name) at line "
                                     f"{event.start_mark.line + 1}; write the values out instead of repeating aliases")
                if event.anchor in self._tk_open:
                    raise _YAMLLimit(f"the alias *{event.anchor} at line {event.start_mark.line + 1} is inside the value "
                                     "it names (a value that contains itself); write the values out")
                return super().compose_node(parent, index)
            if self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
                if self._tk_depth >= MAX_YAML_DEPTH:
                    mark = self.peek_event().start_mark
                    raise _YAMLLimit(f"nested deeper than {MAX_YAML_DEPTH} levels at line {mark.line + 1}; "
                                     "an experiment file needs a few levels, flatten it")
                self._tk_depth += 1
                try:
                    return super().compose_node(parent, index)
                finally:
                    self._tk_depth -= 1
            return super().compose_node(parent, index)

        def compose_sequence_node(self, anchor):
            self._tk_open.add(anchor)
            try:
                return super().compose_sequence_node(anchor)
            finally:
                self._tk_open.discard(anchor)

        def compose_mapping_node(self, anchor):
            self._tk_open.add(anchor)
            try:
                return super().compose_mapping_node(anchor)
            finally:
                self._tk_open.discard(anchor)

        def compose_document(self):
            node = super().compose_document()
            _count_nodes(node)
            return node

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        hash(key)
                    except TypeError:
                        continue  # the base class reports unhashable keys
                    if key in seen:
                        raise _YAMLLimit(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                                         f"{seen[key]}); keep one of them")
                    seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return BoundedSafeLoader


def _count_nodes(root) -> None:
    """Nodes of ``root`` with aliases expanded (memoized per node, so this is linear in the file)."""
    import yaml

    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a recursive alias (&a [*a]) counts once instead of looping
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(c) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        if n > MAX_YAML_NODES:
            raise _YAMLLimit(f"expands to more than {MAX_YAML_NODES:,} values (aliases repeating aliases); "
                             "write the values out instead")
        sizes[id(node)] = n
        return n

    if root is not None:
        size(root)  # depth is bounded by MAX_YAML_DEPTH, so this recursion is too


_LOADER = None


def safe_load_yaml(text: str, where: str, fix: str = "fix the file"):
    """Parse YAML ``text`` with :class:`BoundedSafeLoader`; every problem is a one-line
    :class:`ConfigError` that starts with ``where`` (a file name, or ``--set 'k=v'``).

    The one YAML reader of the package: experiment files, ``--set`` values and the
    ``config.yaml`` of a run directory all go through it."""
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _bounded_loader_class()
    try:
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a SafeLoader subclass
    except _YAMLLimit as exc:
        raise ConfigError(f"{where}: {exc}.") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(f"{where}: YAML cannot hold the control character #x{exc.character:04x} (position "
                          f"{exc.position}); remove it, or write it as an escape in a double-quoted string.") from None
    except yaml.constructor.ConstructorError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{where}: YAML value{at} cannot be read ({problem}); only plain YAML data "
                          "(no !!python or other tags) is allowed, fix it.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{where}: YAML syntax error{at}: {problem}; {fix}.") from None
    except RecursionError:  # defensive: the depth bound should make this unreachable
        raise ConfigError(f"{where}: nested too deeply; flatten it.") from None


def read_yaml_file(path: str | Path, what: str = "config file"):
    """Read and parse a YAML file with the bounds of :func:`safe_load_yaml`: it must exist, be a
    file (not a folder), hold at most :data:`MAX_CONFIG_BYTES` and be UTF-8 text."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a directory, not a file; give the path of the YAML file.")
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist; check the path.")
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {str(p)!r} is {size:,} bytes; an experiment file is at most "
                          f"{MAX_CONFIG_BYTES:,} bytes, check that this is the right file.")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {str(p)!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8.") from None
    return safe_load_yaml(text, str(p))


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file; ``overrides`` are ``dotted.key=value`` strings."""
    return load_mapping_file(path, overrides, config_from_dict)


def load_mapping_file(path: str | Path, overrides: list[str] | None, parse, *,
                      examples: str = "examples/ for an experiment file"):
    """A YAML file whose top level is a mapping, with ``--set`` ``overrides`` applied, given to
    ``parse``; every error names the file (the one reader of ``run``, ``fewshot`` and the rest)."""
    p = Path(path)
    data = read_yaml_file(p)
    if data is None:
        raise ConfigError(f"{p}: the file is empty; see {examples}.")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys to values.")
    for ov in overrides or []:
        apply_override(data, ov)
    try:
        return parse(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def apply_override(data: dict, override: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to a nested mapping in place.

    List items are addressed by index, ``strategies[0].lr=0.01`` or ``strategies.0.lr=0.01``
    (a strategy given by name alone becomes ``{name: ...}`` first)."""
    import re

    if not isinstance(override, str) or "=" not in override:
        raise ConfigError(f"--set {override!r} must look like key=value, e.g. split.labels_per_class=5.")
    key, raw = override.split("=", 1)
    parts: list = []
    for token in key.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", token)
        if m is None or (not m.group(1) and not m.group(2)):
            raise ConfigError(f"--set {override!r}: the key {key!r} has an empty part (or a malformed index); write "
                              "dotted keys such as split.labels_per_class=5 or strategies[0].lr=0.01.")
        if m.group(1):
            parts.append(int(m.group(1)) if m.group(1).isdigit() else m.group(1))
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    value = safe_load_yaml(raw, f"--set {override!r}", fix="fix the value after '=' (quote a string)")
    cur = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(cur, list):
                raise ConfigError(f"--set {override!r}: [{part}] indexes a list, but {key!r} does not name one "
                                  "there; index lists only (e.g. strategies[0].lr=0.01).")
            if not 0 <= part < len(cur):
                raise ConfigError(f"--set {override!r}: index {part} is out of range (the list has {len(cur)} "
                                  f"item(s): 0 to {len(cur) - 1}).")
            if last:
                cur[part] = value
                return
            if isinstance(cur[part], str):  # a strategy given by its name alone
                cur[part] = {"name": cur[part]}
            cur = cur[part]
            continue
        if not isinstance(cur, dict):
            raise ConfigError(f"--set {override!r}: {parts[i - 1]!r} is not a mapping (it is a "
                              f"{type(cur).__name__}, so it has no {part!r}); address list items by index, e.g. "
                              "strategies[0].lr=0.01.")
        if last:
            cur[part] = value
            return
        if cur.get(part) is None:
            cur[part] = {}
        if not isinstance(cur[part], (dict, list)):
            raise ConfigError(f"--set {override!r}: {part!r} is not a mapping or a list, so it has no {parts[i + 1]!r}.")
        cur = cur[part]
