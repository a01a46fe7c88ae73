"""``transferkit fewshot exp.yaml``: meta-train, select on meta-val, evaluate on meta-test episodes.

An experiment file::

    name: flavia-demo
    seeds: 1                              # or [0, 1, 2]
    data: flavia                          # a spec, a mapping, or {source: ..., target: ...}
    classes: {train: 0.5, val: 0.2, test: 0.3}   # lists of class names, or fractions
    encoder: mlp                          # identity | mlp | conv4 | a backbone (cached features)
    methods: [protonet, simpleshot, {name: maml, label: maml-fast, inner_steps: 1, meta_train_steps: 300}]
                                          # omitted: the benchmark's best on meta-val (fewshot/defaults.py)
    settings: [{n_way: 5, k_shot: 1}, {n_way: 5, k_shot: 5}]
    q_query: 15
    test_episodes: 600                    # at least 600 (the literature's protocol)
    val_episodes: 100
    meta_train_steps: 1000

Unknown keys at any level fail with the nearest valid key, as for ``transferkit run``
(:mod:`transferkit.config`'s helpers are used for keys, seeds, names, finite numbers and the
bounded YAML reader).

Protocol, per (method, setting, seed) *cell*: a fresh encoder seeded by the seed; meta-training
(or a baseline's supervised pre-training) on meta-train episodes when the method needs it, its
checkpoint selected on meta-val episodes only; then the meta-val accuracy (every method, also
those without training: it chooses the default method) and the accuracy on ``test_episodes``
meta-test episodes (mean and the normal 95% interval, ``1.96 s / sqrt(n)``). The episodes of a
split depend on the seed only, so every method of a seed sees the same test episodes.

The *default method* is the one with the highest meta-validation accuracy (mean over settings and
seeds); test episodes never enter that choice.

The run directory holds ``fewshot.yaml`` (the resolved config, read by ``--resume``),
``environment.json``, ``fewshot.log`` (progress lines, also on stderr), ``cells/`` (one JSON file
per finished cell, written atomically: a killed run continues with ``--resume`` and keeps them),
``feature-cache/`` (cached backbone features, unless ``cache_dir`` is given), ``results.json`` and
``results.md``. Nothing is written before the whole config, the data and every setting have been
checked.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import check_name, check_number, suggest
from ..errors import ConfigError
from .data import MetaPlan, parse_data, plan_meta_data

#: The resolved config in a run directory (``--resume`` reads it).
CONFIG_FILE = "fewshot.yaml"
#: Progress lines of a run.
LOG_FILE = "fewshot.log"
#: One JSON file per finished (method, setting, seed).
CELLS_DIR = "cells"
#: Fewest meta-test episodes a run may evaluate on (the literature reports 600).
MIN_TEST_EPISODES = 600
#: Encoders that are not a backbone (see :mod:`transferkit.fewshot.encoders`).
ENCODERS = ("identity", "mlp", "conv4")
#: The encoder of ``encoder: auto`` for each modality.
AUTO_ENCODER = {"image": "conv4", "tabular": "mlp", "text": "minilm"}


# ============================================================================ config
@dataclass
class EncoderConfig:
    """The ``encoder:`` section.

    ``name``: ``identity`` (table rows as they are, standardized), ``mlp`` (``hidden``, ``depth``,
    ``out_features``), ``conv4`` (raw images; ``hidden``, ``pool``), a backbone name (frozen
    features computed once and cached; ``image_size`` for image backbones; ``head``: ``identity``
    or ``mlp`` on the features), or ``auto`` (conv4 for images, mlp for tables, minilm features for
    text).
    """

    name: str = "auto"
    hidden: int | None = None
    depth: int = 2
    out_features: int | None = None
    pool: bool = False
    image_size: int | None = None
    head: str = "identity"

    @property
    def is_backbone(self) -> bool:
        return self.name not in ENCODERS and self.name != "auto"

    @property
    def trainable(self) -> str:
        """The module a method trains: ``identity``, ``mlp`` or ``conv4``."""
        return self.head if self.is_backbone else self.name


@dataclass
class MethodConfig:
    name: str
    params: dict = field(default_factory=dict)
    label: str | None = None
    meta_train_steps: int | None = None  # this method's steps (default: the run's meta_train_steps)
    eval_every: int | None = None  # this method's meta-val interval (default: the run's eval_every)

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass
class Setting:
    n_way: int
    k_shot: int

    @property
    def key(self) -> str:
        return f"{self.n_way}way{self.k_shot}shot"

    @property
    def title(self) -> str:
        return f"{self.n_way}-way {self.k_shot}-shot"


@dataclass
class FewShotConfig:
    data: dict
    name: str = "fewshot"
    seeds: list = field(default_factory=lambda: [0])
    classes: dict | None = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    methods: list = field(default_factory=lambda: [MethodConfig(_default_method())])
    settings: list = field(default_factory=lambda: [Setting(5, 1), Setting(5, 5)])
    q_query: int = 15
    test_episodes: int = MIN_TEST_EPISODES
    val_episodes: int = 100
    val_n_way: int | None = None
    meta_train_steps: int = 1000
    eval_every: int = 100
    cache_dir: str | None = None
    output_dir: str | None = None

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "seeds": list(self.seeds),
            "data": {k: v.to_dict() for k, v in self.data.items()} if "data" not in self.data
            else self.data["data"].to_dict(),
            "classes": self.classes,
            "encoder": dataclasses.asdict(self.encoder),
            "methods": [{"name": m.name, **({"label": m.label} if m.label else {}),
                         **({"meta_train_steps": m.meta_train_steps} if m.meta_train_steps is not None else {}),
                         **({"eval_every": m.eval_every} if m.eval_every is not None else {}),
                         **m.params} for m in self.methods],
            "settings": [dataclasses.asdict(s) for s in self.settings],
        }
        for k in ("q_query", "test_episodes", "val_episodes", "val_n_way", "meta_train_steps", "eval_every",
                  "cache_dir", "output_dir"):
            d[k] = getattr(self, k)
        return d

    def steps_of(self, m: MethodConfig) -> int:
        return self.meta_train_steps if m.meta_train_steps is None else m.meta_train_steps

    def eval_every_of(self, m: MethodConfig) -> int:
        return self.eval_every if m.eval_every is None else m.eval_every


def _default_method() -> str:
    """The method an experiment without ``methods`` runs: the benchmark's best on meta-val
    (:mod:`transferkit.fewshot.defaults`)."""
    from .defaults import default_method

    return default_method()


def _method_params(name: str) -> tuple[type, list[str]]:
    from .._registry import get

    cls = get("fewshot", name)  # unknown names fail here with the nearest registered ones
    return cls, cls._param_names()


def _parse_method(item, i: int) -> MethodConfig:
    where = f"methods[{i}]"
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, Mapping) or "name" not in item:
        raise ConfigError(f"{where} must be a method name or a mapping with a 'name' key, got {item!r}.")
    item = dict(item)
    name = item.pop("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name={name!r} must be a few-shot method name (see 'transferkit list fewshot').")
    label = item.pop("label", None)
    if label is not None:
        check_name(f"{where}.label", label)  # it names the method's cell files
    steps = item.pop("meta_train_steps", None)
    if steps is not None:
        steps = check_number(f"{where}.meta_train_steps", steps, low=1, high=10_000_000, integer=True)
    every = item.pop("eval_every", None)
    if every is not None:
        every = check_number(f"{where}.eval_every", every, low=1, high=10_000_000, integer=True)
    params = item.pop("params", {}) or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}.params={params!r} must be a mapping of parameter names to values.")
    params = {**params, **item}
    _, valid = _method_params(name)
    if label is None:
        check_name(f"{where}.name", name)
    for k in params:
        if k not in valid:
            raise ConfigError(f"unknown parameter {where}.{k!r} for few-shot method {name!r}." + suggest(k, valid)
                              + (f" Valid parameters: {', '.join(valid)}." if valid else " It takes no parameters."))
    return MethodConfig(name=name, params=params, label=label, meta_train_steps=steps, eval_every=every)


def _parse_encoder(value) -> EncoderConfig:
    from ..config import _check_bool, _check_keys

    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise ConfigError("'encoder' must be a name (identity, mlp, conv4, a backbone such as efficientnet_lite0) or a "
                          "mapping such as {name: mlp, hidden: 256}.")
    _check_keys(value, EncoderConfig, "encoder.")
    e = EncoderConfig(**value)
    if not isinstance(e.name, str) or not e.name:
        raise ConfigError(f"encoder.name={e.name!r} must be identity, mlp, conv4, auto or a backbone name.")
    if e.is_backbone:
        from .._registry import available

        names = available("backbone")
        if e.name not in names:
            raise ConfigError(f"unknown encoder {e.name!r}: not identity, mlp, conv4 or a backbone."
                              + suggest(e.name, [*ENCODERS, "auto", *names])
                              + " Backbones: see 'transferkit list backbones'.")
        if e.head not in ("identity", "mlp"):
            raise ConfigError(f"encoder.head={e.head!r} must be identity or mlp (what the methods train on the "
                              f"{e.name} features)." + suggest(str(e.head), ["identity", "mlp"]))
    elif e.head != "identity":
        raise ConfigError(f"encoder.head is for backbone features; encoder {e.name!r} is trained as it is, leave "
                          "head out.")
    if e.hidden is not None:
        e.hidden = check_number("encoder.hidden", e.hidden, low=1, high=65536, integer=True)
    e.depth = check_number("encoder.depth", e.depth, low=1, high=16, integer=True)
    if e.out_features is not None:
        e.out_features = check_number("encoder.out_features", e.out_features, low=1, high=65536, integer=True)
    _check_bool("encoder.pool", e.pool)
    if e.image_size is not None:
        e.image_size = check_number("encoder.image_size", e.image_size, low=8, high=1024, integer=True)
    return e


def _parse_settings(value) -> list[Setting]:
    if not isinstance(value, list) or not value:
        raise ConfigError("'settings' must be a non-empty list such as [{n_way: 5, k_shot: 1}, {n_way: 5, k_shot: 5}].")
    out = []
    for i, s in enumerate(value):
        if not isinstance(s, Mapping):
            raise ConfigError(f"settings[{i}]={s!r} must be a mapping such as {{n_way: 5, k_shot: 1}}.")
        bad = [k for k in s if k not in ("n_way", "k_shot")]
        if bad:
            raise ConfigError(f"unknown key settings[{i}].{bad[0]!r}." + suggest(str(bad[0]), ["n_way", "k_shot"])
                              + " Valid keys: n_way, k_shot.")
        missing = [k for k in ("n_way", "k_shot") if k not in s]
        if missing:
            raise ConfigError(f"settings[{i}] needs {missing[0]} (e.g. {{n_way: 5, k_shot: 1}}).")
        out.append(Setting(check_number(f"settings[{i}].n_way", s["n_way"], low=2, high=10_000, integer=True),
                           check_number(f"settings[{i}].k_shot", s["k_shot"], low=1, high=100_000, integer=True)))
    keys = [s.key for s in out]
    dup = [k for k in keys if keys.count(k) > 1]
    if dup:
        raise ConfigError(f"setting {dup[0]} appears twice in settings; list each N-way K-shot once.")
    return out


def config_from_dict(data, *, min_test_episodes: int = MIN_TEST_EPISODES) -> FewShotConfig:
    """A validated :class:`FewShotConfig` from a plain mapping (strict keys, ranges, names).

    ``min_test_episodes`` is the fewest meta-test episodes allowed: 600 for every experiment
    file; the benchmark's tests pass a smaller value (their results say how many were used)."""
    from ..config import _check_finite, _check_keys, _check_str, check_seeds

    if not isinstance(data, Mapping):
        raise ConfigError(f"a few-shot config must be a mapping of keys to values, got {type(data).__name__}.")
    _check_keys(data, FewShotConfig, "")
    if "data" not in data:
        raise ConfigError("the few-shot config needs 'data' (e.g. data: flavia, or data: {source: ..., target: ...}).")
    _check_finite(data)
    d = dict(data)
    check_name("name", d.get("name", "fewshot"))
    d["data"] = parse_data(d["data"])
    d["seeds"] = check_seeds(d.get("seeds", [0]))
    if d.get("classes") is not None and not isinstance(d["classes"], Mapping):
        raise ConfigError(f"classes={d['classes']!r} must be a mapping of train/val/test to class lists or fractions, "
                          "e.g. classes: {train: 0.6, val: 0.2, test: 0.2}.")
    if d.get("classes") is not None:
        d["classes"] = dict(d["classes"])
    d["encoder"] = _parse_encoder(d.get("encoder") or "auto")
    methods = d.get("methods", [_default_method()])
    if not isinstance(methods, list) or not methods:
        raise ConfigError("'methods' must be a non-empty list, e.g. [protonet, simpleshot, maml] "
                          "(see 'transferkit list fewshot').")
    d["methods"] = [_parse_method(m, i) for i, m in enumerate(methods)]
    keys = [m.key for m in d["methods"]]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError(f"method {dup[0]!r} appears twice in methods; give one of them a distinct 'label'.")
    d["settings"] = _parse_settings(d.get("settings", [{"n_way": 5, "k_shot": 1}, {"n_way": 5, "k_shot": 5}]))
    d["q_query"] = check_number("q_query", d.get("q_query", 15), low=1, high=100_000, integer=True)
    d["test_episodes"] = check_number("test_episodes", d.get("test_episodes", MIN_TEST_EPISODES),
                                      low=min_test_episodes, high=1_000_000, integer=True)
    d["val_episodes"] = check_number("val_episodes", d.get("val_episodes", 100), low=1, high=1_000_000, integer=True)
    if d.get("val_n_way") is not None:
        d["val_n_way"] = check_number("val_n_way", d["val_n_way"], low=2, high=10_000, integer=True)
    d["meta_train_steps"] = check_number("meta_train_steps", d.get("meta_train_steps", 1000), low=1,
                                         high=10_000_000, integer=True)
    d["eval_every"] = check_number("eval_every", d.get("eval_every", 100), low=1, high=10_000_000, integer=True)
    for k in ("cache_dir", "output_dir"):
        _check_str(k, d.get(k))
    return FewShotConfig(**d)


def load_fewshot_config(path, overrides=None, *, min_test_episodes: int = MIN_TEST_EPISODES) -> FewShotConfig:
    """Read a few-shot experiment file (``overrides``: ``dotted.key=value`` strings, as ``--set``)."""
    from ..config import load_mapping_file

    return load_mapping_file(path, overrides, lambda d: config_from_dict(d, min_test_episodes=min_test_episodes),
                             examples="examples/fewshot/ for a few-shot experiment file")


# ============================================================================ validation
@dataclass
class Prepared:
    """A config checked against its data: everything a run needs, nothing computed yet."""

    cfg: FewShotConfig
    plan: MetaPlan
    encoder: str  # identity | mlp | conv4 | a backbone name (auto resolved)
    methods: list  # (MethodConfig, class)
    trains: dict  # method key -> whether it meta-trains / pre-trains here
    backbone: object = None  # the feature backbone, built and checked once

    def materialize(self, cache_dir, log=None):
        """The inputs of every row (see :meth:`transferkit.fewshot.data.MetaPlan.materialize`)."""
        return self.plan.materialize(self.encoder if self.backbone is None else self.backbone,
                                     backbone_image_size=self.cfg.encoder.image_size, cache_dir=cache_dir, log=log)


def _instance(m: MethodConfig, cls):
    inst = cls(**m.params)
    inst._check_params()  # the method's own parameter rules, before any training
    return inst


def _trains(inst) -> bool:
    return bool(getattr(inst, "needs_meta_training", False) or getattr(inst, "pretrains", False))


def prepare(cfg: FewShotConfig, *, load=None, check_backbone: bool = True) -> Prepared:
    """Check everything about ``cfg`` in one pass, before any training or disk write.

    Refused with a one-line :class:`~transferkit.errors.ConfigError` (or ``DataError``):
    unknown methods and parameters, overlapping class splits, an N-way setting larger than a
    split's classes, ``k_shot + q_query`` larger than a class's rows, a method that needs
    meta-training without meta-train classes, no meta-test classes, an encoder that does not
    fit the data's modality (a backbone is built and run on two rows).
    """
    methods = []
    for i, m in enumerate(cfg.methods):
        cls, _ = _method_params(m.name)
        try:
            inst = _instance(m, cls)
        except ConfigError as exc:
            raise ConfigError(f"methods[{i}] ({m.key}): {exc}") from None
        methods.append((m, cls, inst))
    plan = plan_meta_data(cfg.data, cfg.classes, load=load)
    if "test" not in plan.splits:
        raise ConfigError("classes has no test split: the run evaluates on meta-test classes; add classes.test "
                          "(class names or a fraction).")
    enc = cfg.encoder.name
    if enc == "auto":
        enc = AUTO_ENCODER[plan.modality]
    probe = _probe_encoder("identity" if enc == "identity" else cfg.encoder.head if enc not in ENCODERS else enc)
    for m, _, inst in methods:
        try:  # some methods need meta-training only with a trainable encoder
            inst.setup(probe, feature_dim=1, seed=0)
        except (RuntimeError, ValueError, TypeError, AttributeError):
            pass  # a method whose setup needs the real encoder: its class attribute decides
        if getattr(inst, "needs_meta_training", False) and "train" not in plan.splits:
            raise ConfigError(
                f"method {m.key!r} needs meta-training but classes has no train split; give classes.train (class "
                "names or a fraction), or use methods that need no meta-training (e.g. simpleshot).")
    if enc == "conv4" and plan.modality != "image":
        raise ConfigError(f"encoder conv4 takes raw images but the data is {plan.modality}; use "
                          + ("mlp or identity" if plan.modality == "tabular" else "a text backbone such as minilm")
                          + ".")
    if enc in ("identity", "mlp") and plan.modality != "tabular":
        raise ConfigError(f"encoder {enc} takes table rows but the data is {plan.modality}; use "
                          + ("conv4 or an image backbone such as efficientnet_lite0" if plan.modality == "image"
                             else "a text backbone such as minilm") + ".")
    if enc not in ENCODERS and check_backbone:
        from ..config import BackboneConfig
        from ..experiment import _check_inputs, check_backbone_input

        bb = BackboneConfig(name=enc, image_size=cfg.encoder.image_size)

        def factory(pretrained=True):
            return bb.build(pretrained=pretrained)

        factory.name = enc
        # the wrong modality, or an image size the backbone cannot take (built once, kept for the features)
        backbone = _check_inputs("few-shot data", plan.parts[0].dataset, factory)
        for p in plan.parts[1:]:
            check_backbone_input(backbone, "few-shot data", p.dataset, enc)
    else:
        backbone = None
    trains = {m.key: _trains(inst) and "train" in plan.splits for m, _, inst in methods}
    odd = sorted({s.n_way for s in cfg.settings if cfg.val_n_way is not None and s.n_way != cfg.val_n_way})
    for m, _, inst in methods:  # a meta-learned n_way-row head cannot score episodes of another n_way
        if odd and trains[m.key] and "val" in plan.splits and getattr(inst, "head_init", None) == "learned":
            raise ConfigError(
                f"methods: {m.key!r} has head_init='learned' (a meta-learned {odd[0]}-way head), but val_n_way="
                f"{cfg.val_n_way} differs from the settings' n_way {odd}; give {m.key!r} head_init: zero, or the "
                "same val_n_way.")
    any_trains = any(trains.values())
    splits = [s for s in ("train", "val", "test") if s != "train" or any_trains]
    for i, s in enumerate(cfg.settings):
        plan.check_setting(s.n_way, s.k_shot, cfg.q_query, f"settings[{i}] ({s.title})", splits=splits,
                           val_n_way=cfg.val_n_way)
        # the samplers themselves, exactly as the cells build them (their own checks agree)
        plan.meta_data(_empty_inputs(plan), n_way=s.n_way, k_shot=s.k_shot, q_query=cfg.q_query, seed=cfg.seeds[0],
                       train_episodes=1, val_episodes=1, test_episodes=1, val_n_way=cfg.val_n_way,
                       where=f"settings[{i}] ({s.title})", with_train=any_trains)
    return Prepared(cfg=cfg, plan=plan, encoder=enc, methods=[(m, cls) for m, cls, _ in methods], trains=trains,
                    backbone=backbone)


def _probe_encoder(kind: str):
    """A stand-in for the cell's encoder: parameter-free for ``identity``, trainable otherwise (a
    method's ``needs_meta_training`` may depend on it)."""
    from torch import nn

    return nn.Identity() if kind == "identity" else nn.Linear(1, 1)


def _empty_inputs(plan: MetaPlan):
    import torch

    return torch.empty((len(plan.labels), 0))


# ============================================================================ encoders
def build_encoder(enc: EncoderConfig, resolved: str, info: dict, seed: int):
    """``(module, feature_dim)`` for a cell: a fresh, seeded encoder over the materialized inputs."""
    import torch
    from torch import nn

    from .encoders import conv4, conv4_dim, mlp

    kind = enc.head if resolved not in ENCODERS else resolved
    torch.manual_seed(int(seed))
    if kind == "conv4":
        c, h, w = info["shape"]
        hidden = enc.hidden or 32
        return conv4(in_channels=c, hidden=hidden, pool=enc.pool), conv4_dim(min(h, w), hidden, enc.pool)
    d = info["feature_dim"]
    if kind == "mlp":
        hidden = enc.hidden or 256
        return mlp(d, hidden=hidden, depth=enc.depth, out_features=enc.out_features), enc.out_features or hidden
    return nn.Identity(), d


# ============================================================================ cells
def cell_name(prefix: str | None, label: str, setting: Setting, seed: int) -> str:
    return f"{prefix + '--' if prefix else ''}{label}--{setting.key}--seed{int(seed)}"


def _valid_cell(row, key: dict) -> bool:
    if not isinstance(row, dict) or any(row.get(k) != v for k, v in key.items()):
        return False
    for k in ("accuracy", "ci95", "meta_train_seconds", "test_seconds"):
        v = row.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (k != "ci95" and not math.isfinite(v)):
            return False
    if not 0 <= row["accuracy"] <= 1:
        return False
    va = row.get("val_accuracy")
    if va is not None and (isinstance(va, bool) or not isinstance(va, (int, float)) or not 0 <= va <= 1):
        return False
    accs = row.get("accuracies")
    return isinstance(accs, list) and len(accs) == row.get("episodes") and all(
        isinstance(a, (int, float)) and 0 <= a <= 1 for a in accs)


def load_cell(path: Path, key: dict) -> dict | None:
    """A stored cell, or ``None`` when it is missing, unreadable or not that cell's."""
    import json

    try:
        row = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return row if _valid_cell(row, key) else None


def _Log(path: Path | None, echo: Callable[[str], None] | None):
    """Progress lines to ``echo`` and the run's log file (:class:`transferkit.train.rundir.RunLog`;
    imported when a run starts, so that importing this module stays light)."""
    from ..train.rundir import RunLog

    return RunLog(path, echo)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class CellSpec:
    """One (method, setting, seed) of a prepared run; ``index`` is its place in :func:`cell_specs`."""

    index: int
    method: MethodConfig
    cls: type
    setting: Setting
    seed: int
    name: str
    key: dict


def cell_definition(cfg: FewShotConfig, m: MethodConfig) -> str:
    """A digest of everything that decides a cell's numbers besides its setting and seed: the data,
    classes, encoder, episode counts and the method's parameters and budget. A stored cell with
    another definition (the config or the benchmark's budgets changed) is measured again."""
    import hashlib
    import json

    d = cfg.to_dict()
    what = {k: d[k] for k in ("data", "classes", "encoder", "q_query", "test_episodes", "val_episodes", "val_n_way")}
    what["method"] = {"name": m.name, "params": m.params, "steps": cfg.steps_of(m), "eval_every": cfg.eval_every_of(m)}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_specs(prep: Prepared, prefix: str | None = None) -> list[CellSpec]:
    """The cells of a run in their fixed order (settings, then seeds, then methods)."""
    out = []
    defs = {m.key: cell_definition(prep.cfg, m) for m, _ in prep.methods}
    for s in prep.cfg.settings:
        for seed in prep.cfg.seeds:
            for m, cls in prep.methods:
                key = {"method": m.key, "setting": s.key, "seed": int(seed), **({"task": prefix} if prefix else {}),
                       "definition": defs[m.key]}
                out.append(CellSpec(len(out), m, cls, s, int(seed), cell_name(prefix, m.key, s, seed), key))
    return out


def run_cell(prep: Prepared, inputs, info: dict, spec: CellSpec, path: Path | None,
             log: Callable[[str], None] = _stderr) -> dict:
    """Run one cell: a fresh seeded encoder and method, meta-training (or pre-training) where the
    method needs it on a view of the data without meta-test sampler, then the meta-val and
    meta-test episodes; the row is written to ``path`` (atomically) before it is returned.

    Wall and CPU seconds (``time.process_time``: what one thread spends, whatever else runs on the
    machine) are recorded for meta-training and for the test episodes."""
    from .._faults import fault_point
    from ..train.rundir import write_json
    from .base import evaluate

    cfg, plan, m, s, name = prep.cfg, prep.plan, spec.method, spec.setting, spec.name
    steps = cfg.steps_of(m)
    md = plan.meta_data(inputs, n_way=s.n_way, k_shot=s.k_shot, q_query=cfg.q_query, seed=spec.seed,
                        train_episodes=steps, val_episodes=cfg.val_episodes, test_episodes=cfg.test_episodes,
                        val_n_way=cfg.val_n_way, with_train=prep.trains[m.key])
    method = spec.cls(**m.params)
    encoder, dim = build_encoder(cfg.encoder, prep.encoder, info, spec.seed)
    method.setup(encoder, feature_dim=dim, seed=spec.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    history = []
    trains = prep.trains[m.key] and md.train is not None
    if trains:
        log(f"{name}: {'meta-training' if method.needs_meta_training else 'pre-training'} {steps} steps")
        # meta-training sees no meta-test sampler at all: selection can only use meta-val
        history = method.meta_train(dataclasses.replace(md, test=None), steps=steps,
                                    log=lambda x: log(f"{name}: {x}"),
                                    eval_every=cfg.eval_every_of(m), val_episodes=cfg.val_episodes) or []
    meta_s, meta_c = time.perf_counter() - t0, time.process_time() - c0
    val = evaluate(method, md, md.val) if md.val is not None else None
    c1 = time.process_time()
    test = evaluate(method, md, md.test, confusion=True)
    row = {**spec.key, "method_name": m.name, "n_way": s.n_way, "k_shot": s.k_shot, "q_query": cfg.q_query,
           "accuracy": test["mean"], "ci95": test["ci95"], "episodes": test["episodes"],
           "accuracies": [round(a, 6) for a in test["accuracies"]],
           "val_accuracy": None if val is None else val["mean"], "val_ci95": None if val is None else val["ci95"],
           "meta_trained": bool(trains), "meta_train_steps": steps if trains else 0,
           "meta_train_seconds": meta_s, "meta_train_cpu_seconds": meta_c,
           "val_seconds": None if val is None else val["seconds"],
           "test_seconds": test["seconds"], "test_cpu_seconds": time.process_time() - c1,
           "history": _plain(history),
           "confusion": test["confusion"].tolist(), "confusion_classes": test["confusion_classes"]}
    if path is not None:
        write_json(path, row)
        fault_point("fewshot.cell")
    log(cell_line(row, name))
    return row


def cell_line(row: dict, name: str) -> str:
    va = row["val_accuracy"] if row["val_accuracy"] is not None else float("nan")
    return (f"{name}: {row['accuracy']:.4f} +- {row['ci95']:.4f} (val {va:.4f}; meta-train "
            f"{row['meta_train_seconds']:.1f} s, test {row['test_seconds']:.1f} s)")


def run_cells(prep: Prepared, inputs, info: dict, cells_dir: Path | None, *, prefix: str | None = None,
              log: Callable[[str], None] = _stderr) -> list[dict]:
    """Every cell of ``prep`` (:func:`cell_specs`) on the materialized ``inputs``, in this process; a
    cell already stored in ``cells_dir`` (and valid) is kept, each new one is written there as soon
    as it is done."""
    out = []
    for spec in cell_specs(prep, prefix):
        path = cells_dir / f"{spec.name}.json" if cells_dir is not None else None
        kept = load_cell(path, spec.key) if path is not None else None
        if kept is not None:
            out.append(kept)
            log(f"{spec.name}: {kept['accuracy']:.4f} +- {kept['ci95']:.4f} (complete, kept)")
            continue
        out.append(run_cell(prep, inputs, info, spec, path, log))
    return out


def _plain(obj):
    """History rows as JSON-safe plain values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return _plain(obj.item())
        except (ValueError, RuntimeError):
            return str(obj)
    return obj


# ============================================================================ summary
def summarize(cells: list[dict], labels: list[str], settings: list[Setting]) -> dict:
    """Per (method, setting): pooled test episodes of every seed -> mean and 95% interval; the
    mean meta-val accuracy, meta-training and test seconds; and the default method (best mean
    meta-val accuracy over settings and seeds, test episodes unused)."""
    from .episodes import mean_ci95

    table = []
    for lab in labels:
        for s in settings:
            cs = [c for c in cells if c["method"] == lab and c["setting"] == s.key]
            if not cs:
                continue
            accs = [a for c in cs for a in c["accuracies"]]
            mean, ci = mean_ci95(accs)
            vals = [c["val_accuracy"] for c in cs if c.get("val_accuracy") is not None]
            table.append({
                "method": lab, "method_name": cs[0].get("method_name", lab), "setting": s.key, "title": s.title,
                "n_way": s.n_way, "k_shot": s.k_shot,
                "accuracy_mean": mean, "ci95": ci if math.isfinite(ci) else None, "episodes": len(accs),
                "n_seeds": len(cs), "seed_means": [c["accuracy"] for c in cs],
                "val_accuracy_mean": float(np.mean(vals)) if len(vals) == len(cs) else None,
                "meta_trained": cs[0].get("meta_trained", False),
                "meta_train_seconds_mean": float(np.mean([c["meta_train_seconds"] for c in cs])),
                "test_seconds_mean": float(np.mean([c["test_seconds"] for c in cs])),
                "meta_train_cpu_seconds_mean": _mean_of(cs, "meta_train_cpu_seconds"),
                "test_cpu_seconds_mean": _mean_of(cs, "test_cpu_seconds"),
            })
    return {"table": table, "default_method": choose_default(table, labels, settings)}


def _mean_of(cells: list[dict], key: str) -> float | None:
    vals = [c.get(key) for c in cells]
    return float(np.mean(vals)) if all(isinstance(v, (int, float)) for v in vals) else None


def choose_default(table: list[dict], labels: list[str], settings: list[Setting]) -> dict:
    """The method with the best meta-validation accuracy, mean over the settings (ties: the first
    listed); ``label`` is ``None`` when there are no meta-val classes."""
    how = ("the highest meta-validation accuracy, mean over the settings and seeds (meta-val classes only; "
           "no test episode is used)")
    scores = {}
    for lab in labels:
        vs = [r["val_accuracy_mean"] for r in table if r["method"] == lab]
        if len(vs) == len(settings) and all(v is not None for v in vs):
            scores[lab] = float(np.mean(vs))
    if not scores:
        return {"label": None, "how": "none: no meta-val classes, so nothing to choose on (test episodes are never "
                                      "used for it)", "val_accuracy": None, "scores": {}}
    best = max(scores, key=lambda k: (scores[k], -labels.index(k)))
    return {"label": best, "how": how, "val_accuracy": scores[best], "scores": scores}


def _pm(mean, ci) -> str:
    return f"{100 * mean:.2f} ± {100 * ci:.2f}" if ci is not None else f"{100 * mean:.2f}"


def markdown_table(table: list[dict], settings: list[Setting], default: str | None = None) -> str:
    """Methods x settings: test accuracy (%) mean ± 95% CI, meta-val accuracy and meta-training time."""
    labels = list(dict.fromkeys(r["method"] for r in table))
    by = {(r["method"], r["setting"]): r for r in table}
    head = ["method"] + [f"{s.title} test acc. % (95% CI)" for s in settings] + \
           [f"{s.title} val acc. %" for s in settings] + ["meta-train s (mean)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lab in labels:
        cells = []
        for s in settings:
            r = by.get((lab, s.key))
            cells.append("—" if r is None else _pm(r["accuracy_mean"], r["ci95"]))
        for s in settings:
            r = by.get((lab, s.key))
            v = None if r is None else r["val_accuracy_mean"]
            cells.append("—" if v is None else f"{100 * v:.2f}")
        secs = [by[(lab, s.key)]["meta_train_seconds_mean"] for s in settings if (lab, s.key) in by]
        cells.append(f"{np.mean(secs):.1f}" if secs else "—")
        name = f"**{lab}** (default)" if lab == default else lab
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ============================================================================ the run
def _confusion_of(cells: list[dict], label: str | None, plan_names: list[str]) -> list[dict]:
    out = []
    if label is None:
        return out
    for setting in dict.fromkeys(c["setting"] for c in cells if c["method"] == label):
        cs = [c for c in cells if c["method"] == label and c["setting"] == setting]
        m = np.sum([np.asarray(c["confusion"], dtype=np.int64) for c in cs], axis=0)
        classes = cs[0]["confusion_classes"]
        out.append({"method": label, "setting": setting, "matrix": m.tolist(), "classes": classes,
                    "class_names": [plan_names[c] for c in classes]})
    return out


def results_of(prep: Prepared, cells: list[dict], info: dict, *, seconds: float | None = None) -> dict:
    cfg, plan = prep.cfg, prep.plan
    labels = [m.key for m, _ in prep.methods]
    summ = summarize(cells, labels, cfg.settings)
    default = summ["default_method"]["label"]
    names = plan.class_names
    res = {
        "kind": "fewshot",
        "name": cfg.name,
        "data": plan.describe,
        "cross_domain": plan.cross_domain,
        "encoder": prep.encoder if prep.encoder in ENCODERS else f"{prep.encoder} features + {cfg.encoder.head}",
        "inputs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in info.items()},
        "classes": {s: [names[c] for c in v] for s, v in plan.splits.items()},
        "settings": [dataclasses.asdict(s) for s in cfg.settings],
        "q_query": cfg.q_query,
        "seeds": list(cfg.seeds),
        "methods": labels,
        "test_episodes": cfg.test_episodes,
        "val_episodes": cfg.val_episodes,
        "val_n_way": cfg.val_n_way,
        "table": summ["table"],
        "default_method": summ["default_method"],
        "confusion": _confusion_of(cells, default, names),
        "cells": [{k: v for k, v in c.items() if k not in ("accuracies", "confusion", "history")} for c in cells],
        "protocol": protocol_text(cfg),
        "warnings": [],
    }
    if seconds is not None:
        res["seconds"] = seconds
    if len(cfg.seeds) == 1:
        res["warnings"].append(f"one seed ({cfg.seeds[0]}): the interval covers the test episodes of one "
                               "meta-training run, not the spread over meta-training seeds.")
    return res


def protocol_text(cfg: FewShotConfig) -> str:
    return (f"disjoint meta-train / meta-val / meta-test classes; per method, setting and seed a fresh seeded encoder, "
            f"meta-training (or supervised pre-training) on meta-train episodes where the method needs it, its "
            f"checkpoint chosen on {cfg.val_episodes} meta-val episodes only; test: {cfg.test_episodes} meta-test "
            f"episodes of {cfg.q_query} queries per class, the same episodes for every method of a seed; accuracy "
            "mean ± 1.96 s/sqrt(n) over the episodes of all seeds; the default method has the best meta-val accuracy")


def _config_inputs(cfg: FewShotConfig) -> list:
    return [s.spec for s in cfg.data.values()] + ([cfg.cache_dir] if cfg.cache_dir else [])


def run_fewshot(config, out=None, *, overwrite: bool = False, resume: bool = False, overrides=None,
                echo: Callable[[str], None] | None = _stderr, inputs=(), load=None) -> dict:
    """Run a few-shot experiment (``transferkit fewshot exp.yaml``); return the results dict.

    Parameters
    ----------
    config
        A :class:`FewShotConfig`, a plain mapping, or the path of an experiment file; with
        ``resume=True``, ignored (pass ``None``): the config stored in ``out`` is used.
    out
        The run directory (default: the config's ``output_dir`` or ``runs/NAME-TIMESTAMP``). It
        obeys :func:`transferkit.train.rundir.open_run_dir`: never the working directory or an
        input's folder; an existing run is replaced only with ``overwrite``, and only once the new
        run is complete.
    resume
        Continue the interrupted run in ``out``: finished cells are kept, the others run.
    overrides
        ``key=value`` strings applied to a config file (``--set``).
    echo
        Where progress lines go (stderr by default; ``None``: only the log file).

    Returns
    -------
    dict
        ``table`` (per method and setting: ``accuracy_mean``, ``ci95``, ``val_accuracy_mean``,
        ``meta_train_seconds_mean``, ``test_seconds_mean``...), ``default_method``, ``confusion``
        (of the default method), ``cells`` and ``output_dir``.
    """
    from ..train.rundir import (begin_config_run, check_output_dir, config_or_resume, mark_complete, open_run_dir,
                                write_json, write_text)

    t_start = time.perf_counter()
    cfg, done, given = config_or_resume(config, out, resume, command="fewshot", what="few-shot run",
                                        stored=CONFIG_FILE, result="results.json", key="table", cls=FewShotConfig,
                                        from_mapping=config_from_dict, from_file=load_fewshot_config,
                                        overrides=overrides, echo=echo)
    if done is not None:
        return done
    inputs = (*inputs, *given)
    final = Path(out or cfg.output_dir or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    read = [*_config_inputs(cfg), *inputs]
    check_output_dir(final, overwrite=overwrite, inputs=read, resume=resume)
    prep = prepare(cfg, load=load)  # every check, before anything is written
    if cfg.cache_dir is not None:
        from ..features import check_cache_dir
        from ..train.rundir import is_inside

        if is_inside(cfg.cache_dir, final):
            raise ConfigError(f"cache_dir={cfg.cache_dir!r} is inside the output directory {str(final)!r}; leave "
                              "cache_dir out (the run keeps its features in feature-cache/) or put it elsewhere.")
        check_cache_dir(cfg.cache_dir)
    with open_run_dir(final, overwrite=overwrite, resume=resume, inputs=read, kind="fewshot") as d:
        begin_config_run(d, CONFIG_FILE, cfg.to_dict(), cfg.seeds, resume=resume)
        log = _Log(d / LOG_FILE, echo)
        log(("resuming " if resume else "few-shot run ") + f"{final}: {len(cfg.methods)} method(s) x "
            f"{len(cfg.settings)} setting(s) x {len(cfg.seeds)} seed(s)")
        inputs_t, info = prep.materialize(cfg.cache_dir or str(d / "feature-cache"), log=log)
        log(f"inputs: {info['kind']} {tuple(inputs_t.shape)}")
        cells = run_cells(prep, inputs_t, info, d / CELLS_DIR, log=log)
        res = results_of(prep, cells, info, seconds=time.perf_counter() - t_start)
        res["output_dir"] = str(final)
        write_json(d / "results.json", res)
        default = res["default_method"]
        write_text(d / "results.md", f"# {cfg.name}\n\n" + markdown_table(res["table"], cfg.settings, default["label"])
                   + f"\n\ndefault method: {default['label'] or 'none'} ({default['how']})\n\n"
                   + res["protocol"] + "\n")
        mark_complete(d)
        log(f"done: {final / 'results.json'} ({res['seconds']:.0f} s)")
    return res


def format_results(res: dict) -> str:
    """The results table (Markdown) and the default method, for the terminal."""
    settings = [Setting(s["n_way"], s["k_shot"]) for s in res["settings"]]
    d = res["default_method"]
    return (markdown_table(res["table"], settings, d["label"])
            + f"\n\ndefault method: {d['label'] or 'none'} ({d['how']})")


__all__ = ["FewShotConfig", "config_from_dict", "format_results", "load_fewshot_config", "prepare", "run_fewshot"]
