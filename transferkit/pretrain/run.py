"""``transferkit pretrain exp.yaml``: self-supervised pretraining of a backbone on unlabeled data.

An experiment file::

    name: fashion-simclr
    data: "fashion_mnist:split=train,n=20000"     # a spec, or a list of specs (source, target, or both)
    backbone: {name: tiny_cnn, image_size: 32, options: {width: 32}}
    pretext: simclr                               # or {name: simclr, temperature: 0.5, projection_dim: 128}
    epochs: 20
    batch_size: 256
    lr: 0.001
    weight_decay: 0.0001
    seed: 0
    eval:                                         # optional: label-using checks of the features, after training
      train: "fashion_mnist:split=train,n=2000"
      test: "fashion_mnist:split=test,n=2000"

Labels in ``data`` are never read (every row trains as unlabeled). ``eval`` scores the frozen
features of the pretrained backbone, and of the same architecture at its random initialisation
(the floor), by a k-nearest-neighbour classifier (cosine, ``k=20``) and a linear probe (logistic
regression) fitted on ``eval.train`` and scored on ``eval.test``; it never changes the backbone.

The run directory holds ``pretrain.yaml`` (the resolved config, read by ``--resume``),
``environment.json``, ``pretrain.log`` (progress lines, also on stderr), ``metrics.jsonl`` (one
row per epoch), ``backbone.safetensors`` (the pretrained backbone: its architecture, options,
image size, pretext and data in the metadata) and ``result.json``. Every strategy loads the
backbone as ``backbone: file:RUN_DIR`` (with its layer groups); ``transferkit list backbones``
lists it; ``assess`` ranks it beside the packaged backbones. Nothing is written before the
config, the data and the pretext have been checked; a killed run continues with
``transferkit pretrain --resume RUN_DIR`` from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import check_name, check_number, suggest
from ..errors import ConfigError

#: The resolved config in a run directory (``--resume`` reads it).
CONFIG_FILE = "pretrain.yaml"
LOG_FILE = "pretrain.log"
RESULT_FILE = "result.json"


@dataclass
class EvalConfig:
    """``eval:``: labeled data for the kNN and linear-probe checks of the features."""

    train: str | dict | None = None
    test: str | dict | None = None
    k: int = 20
    max_rows: int = 5000


@dataclass
class PretrainConfig:
    """A ``transferkit pretrain`` experiment (see the module docstring)."""

    name: str = "pretrain"
    data: object = None
    backbone: object = None
    pretext: object = "simclr"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    seed: int = 0
    eval: EvalConfig | None = None
    output_dir: str | None = None
    device: str | None = None
    # resolved forms (set by config_from_dict)
    pretext_name: str = field(default="", repr=False)
    pretext_options: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("pretext_name"), d.pop("pretext_options")
        d["pretext"] = {"name": self.pretext_name, **self.pretext_options}
        d["backbone"] = dataclasses.asdict(self.backbone)
        return d


def _data_list(value, where: str) -> list:
    from ..config import _check_dataset

    items = value if isinstance(value, list) else [value]
    if value is None or not items:
        raise ConfigError(f"{where} is missing: give the unlabeled data to pretrain on, a dataset spec such as "
                          "\"fashion_mnist:split=train,n=20000\" or a list of specs.")
    for i, it in enumerate(items):
        _check_dataset(f"{where}[{i}]" if isinstance(value, list) else where, it, optional=False)
    return items


def config_from_dict(data: Mapping) -> PretrainConfig:
    """A checked :class:`PretrainConfig` from a mapping; unknown keys fail with the nearest valid key."""
    from .._registry import available
    from ..config import _backbone_config, _check_finite, _check_keys, check_seeds

    if not isinstance(data, Mapping):
        raise ConfigError(f"a pretrain config must be a mapping of keys (name, data, backbone, pretext, ...), got "
                          f"{type(data).__name__}.")
    public = [f.name for f in dataclasses.fields(PretrainConfig) if f.repr]
    for k in data:
        if k not in public:
            raise ConfigError(f"unknown key {k!r} in the pretrain config." + suggest(str(k), public)
                              + f" Valid keys: {', '.join(public)}.")
    _check_finite(dict(data))
    d = dict(data)
    cfg = PretrainConfig(**{k: v for k, v in d.items() if k not in ("eval", "backbone")})
    cfg.name = check_name("name", cfg.name)
    cfg.data = _data_list(cfg.data, "data")
    if d.get("backbone") is None:
        raise ConfigError("backbone is missing: name the backbone to pretrain, e.g. backbone: {name: tiny_cnn, "
                          "image_size: 32} (any registered backbone; see transferkit list backbones).")
    cfg.backbone = _backbone_config(d["backbone"])
    p = cfg.pretext
    if isinstance(p, str):
        name, opts = p, {}
    elif isinstance(p, Mapping) and isinstance(p.get("name"), str):
        name, opts = p["name"], {k: v for k, v in p.items() if k != "name"}
    else:
        raise ConfigError(f"pretext={p!r} must be a pretext name (e.g. simclr) or a mapping {{name: simclr, "
                          "temperature: 0.5}}; see transferkit list pretext.")
    names = available("pretext")
    if name not in names:
        raise ConfigError(f"unknown pretext {name!r}." + suggest(name, names) + f" Available: {', '.join(names)}.")
    cfg.pretext_name, cfg.pretext_options = name, opts
    cfg.epochs = check_number("epochs", cfg.epochs, low=1, high=100_000, integer=True)
    cfg.batch_size = check_number("batch_size", cfg.batch_size, low=2, high=1_000_000, integer=True)
    cfg.lr = check_number("lr", cfg.lr, low=0.0, high=10.0)
    cfg.weight_decay = check_number("weight_decay", cfg.weight_decay, low=0.0, high=10.0)
    cfg.warmup_epochs = check_number("warmup_epochs", cfg.warmup_epochs, low=0.0, high=cfg.epochs)
    cfg.seed = check_seeds([cfg.seed], "seed")[0]
    if d.get("eval") is not None:
        ev = d["eval"]
        if not isinstance(ev, Mapping):
            raise ConfigError(f"eval={ev!r} must be a mapping {{train: SPEC, test: SPEC}} of labeled data.")
        _check_keys(ev, EvalConfig, "eval.")
        e = EvalConfig(**ev)
        for part in ("train", "test"):
            _data_list(getattr(e, part), f"eval.{part}")
        e.k = check_number("eval.k", e.k, low=1, high=1000, integer=True)
        e.max_rows = check_number("eval.max_rows", e.max_rows, low=10, integer=True)
        cfg.eval = e
    return cfg


def load_pretrain_config(path, overrides: list[str] | None = None) -> PretrainConfig:
    """A :class:`PretrainConfig` from a YAML file, with ``key=value`` overrides (``--set``)."""
    from ..config import load_mapping_file

    return load_mapping_file(path, overrides, config_from_dict, examples="examples/pretrain/ for a pretrain file")


# ============================================================================ running
def _load_data(cfg: PretrainConfig):
    from ..data import concat_datasets
    from ..data.spec import load_dataset

    parts = [load_dataset(s) for s in cfg.data]
    if len(parts) == 1:
        ds = parts[0]
    else:
        # pooled rows of several domains; labels do not matter, so class lists need not agree
        ds = concat_datasets([dataclasses.replace(p, labels=None, classes=None) for p in parts], name="pooled")
    return ds.without_labels() if ds.labels is not None else ds


def prepare(cfg: PretrainConfig):
    """Every check before anything is written: the data, the backbone for it, the pretext on it.
    Returns ``(dataset, backbone, pretext)``."""
    from .._registry import get
    from ..config import resolve_backbone_config

    ds = _load_data(cfg)
    bcfg = resolve_backbone_config(cfg.backbone, ds)
    backbone = bcfg.build(seed=cfg.seed)
    if backbone.spec.modality != ds.modality:
        raise ConfigError(f"backbone {bcfg.name!r} takes {backbone.spec.modality} inputs but the pretrain data "
                          f"{ds.name!r} is {ds.modality}; choose a {ds.modality} backbone.")
    cls = get("pretext", cfg.pretext_name)
    pretext = cls(backbone, **{"seed": cfg.seed, **cfg.pretext_options})  # its heads drawn from the run's seed
    if hasattr(pretext, "check_data"):
        pretext.check_data(ds)
    return ds, backbone, pretext


def eval_data(cfg: PretrainConfig) -> dict | None:
    """The labeled ``eval.train`` / ``eval.test`` rows (at most ``eval.max_rows`` each, seeded),
    loaded and checked before anything is written; ``None`` without an ``eval`` section."""
    if cfg.eval is None:
        return None
    from ..data.spec import load_dataset

    e = cfg.eval
    parts = {}
    for part in ("train", "test"):
        ds = load_dataset(e.train if part == "train" else e.test)
        if ds.labels is None or not (ds.labels >= 0).any():
            raise ConfigError(f"eval.{part} ({ds.name!r}) has no labels; the kNN and linear-probe checks need "
                              "labeled data.")
        keep = np.flatnonzero(ds.labels >= 0)
        if len(keep) > e.max_rows:
            keep = np.sort(np.random.default_rng(0).choice(keep, e.max_rows, replace=False))
        parts[part] = ds.subset(keep)
    return parts


def _eval_features(backbone, data: dict | None, k: int) -> dict | None:
    """kNN and linear-probe accuracy of ``backbone``'s frozen features on :func:`eval_data`'s rows."""
    if data is None:
        return None
    from ..features.extractor import extract_features

    (Xtr, ytr), (Xte, yte) = [(extract_features(backbone, data[p].inputs, batch_size=256), data[p].labels)
                              for p in ("train", "test")]
    return {"knn_accuracy": knn_accuracy(Xtr, ytr, Xte, yte, k=k),
            "linear_probe_accuracy": linear_probe_accuracy(Xtr, ytr, Xte, yte),
            "n_train": int(len(ytr)), "n_test": int(len(yte)), "k": k}


def knn_accuracy(Xtr, ytr, Xte, yte, k: int = 20) -> float:
    """Accuracy of a cosine k-nearest-neighbour vote (the SSL literature's monitor, Wu et al.
    2018, unweighted here) of ``Xte`` among ``Xtr``."""
    from sklearn.neighbors import KNeighborsClassifier

    k = min(int(k), len(ytr))
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(Xtr, ytr)
    return float((clf.predict(Xte) == yte).mean())


def linear_probe_accuracy(Xtr, ytr, Xte, yte) -> float:
    """Accuracy of a standardized multinomial logistic regression on frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(Xtr, ytr)
    return float(clf.score(Xte, yte))


class _EpochLog:
    """Trainer callback: one progress line per epoch into the run's log (and the terminal)."""

    def __init__(self, log):
        self.log = log

    def on_epoch_end(self, trainer, epoch, row):
        extra = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                         if k not in ("epoch", "lr", "epoch_time", "train_loss") and isinstance(v, float))
        self.log(f"epoch {epoch + 1}/{trainer.epochs} train_loss={row['train_loss']:.4f} {extra} "
                 f"({row.get('epoch_time', 0.0):.1f} s)")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def pretrain_backbone(cfg: PretrainConfig, ds, backbone, pretext, *, run_dir=None, log=None, resume=None,
                      progress: bool = False):
    """Train ``backbone`` with ``pretext`` on ``ds`` through the one Trainer; returns the Trainer."""
    from ..train import Trainer

    params = [p for p in backbone.parameters() if p.requires_grad] + pretext.trainable_parameters()
    groups = [{"params": params, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "pretrain"}]
    tr = Trainer(backbone, groups, epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
                 schedule=cfg.schedule, warmup_epochs=cfg.warmup_epochs, seed=cfg.seed, device=cfg.device,
                 run_dir=run_dir, progress=progress, objective=pretext, tag=f"pretrain {cfg.pretext_name}",
                 callbacks=[_EpochLog(log)] if log is not None else ())
    tr.fit(ds, resume=resume)
    return tr


def run_pretrain(config, out: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
                 overrides: list[str] | None = None, echo: Callable[[str], None] | None = _stderr) -> dict:
    """Run ``transferkit pretrain``; return the result dict (also in ``RUN_DIR/result.json``).

    ``config``: a :class:`PretrainConfig`, a mapping or a YAML path; with ``resume=True``,
    ``None`` (the config stored in ``out`` is used).
    """
    from ..backbones import save_backbone
    from ..train.rundir import (RunLog, begin_config_run, check_output_dir, config_or_resume, input_paths,
                                mark_complete, open_run_dir, write_json)

    t0 = time.perf_counter()
    cfg, done, inputs = config_or_resume(config, out, resume, command="pretrain", what="pretrain run",
                                         stored=CONFIG_FILE, result=RESULT_FILE, key="pretext", cls=PretrainConfig,
                                         from_mapping=config_from_dict, from_file=load_pretrain_config,
                                         overrides=overrides, echo=echo)
    if done is not None:
        return done
    final = Path(out or cfg.output_dir or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    read = [*inputs, *input_paths(*cfg.data, cfg.backbone.name)]
    check_output_dir(final, overwrite=overwrite, inputs=read, resume=resume)
    ds, backbone, pretext = prepare(cfg)
    ev_data = eval_data(cfg)
    with open_run_dir(final, overwrite=overwrite, resume=resume, inputs=read, kind="pretrain") as d:
        begin_config_run(d, CONFIG_FILE, cfg.to_dict(), [cfg.seed], resume=resume)
        log = RunLog(d / LOG_FILE, echo)
        log(("resuming " if resume else "pretrain ") + f"{final}: {cfg.pretext_name} on {ds.name!r} "
            f"({len(ds)} unlabeled rows), backbone {cfg.backbone.name}, {cfg.epochs} epochs of batch {cfg.batch_size}")
        tr = pretrain_backbone(cfg, ds, backbone, pretext, run_dir=d, log=log, resume=True if resume else False)
        meta = {"transferkit.pretext": cfg.pretext_name,
                "transferkit.data": ", ".join(s if isinstance(s, str) else str(s) for s in cfg.data)[:500]}
        save_backbone(backbone, d / "backbone.safetensors", metadata=meta)
        log("evaluating the features (kNN, linear probe)" if cfg.eval is not None else "no eval section: done")
        ev = _eval_features(backbone, ev_data, cfg.eval.k if cfg.eval else 0)
        floor = None
        if ev is not None:
            floor = _eval_features(cfg.backbone.resolved(ds).build(seed=cfg.seed, pretrained=False), ev_data,
                                   cfg.eval.k)
        hist = tr.history
        res = {
            "name": cfg.name, "pretext": cfg.pretext_name, "pretext_options": cfg.pretext_options,
            "backbone": cfg.backbone.name, "data": [str(s) for s in cfg.data], "n_rows": len(ds),
            "epochs": cfg.epochs, "final_train_loss": hist[-1]["train_loss"] if hist else None,
            "first_train_loss": hist[0]["train_loss"] if hist else None,
            "train_seconds": float(sum(r.get("epoch_time", 0.0) for r in hist)),
            "eval": ev, "eval_random_init": floor, "backbone_file": "backbone.safetensors",
            "load_as": f"file:{final}", "seconds": time.perf_counter() - t0, "output_dir": str(final),
        }
        write_json(d / RESULT_FILE, res)
        mark_complete(d)
        if ev is not None:
            log(f"kNN accuracy {ev['knn_accuracy']:.3f} (random init {floor['knn_accuracy']:.3f}), linear probe "
                f"{ev['linear_probe_accuracy']:.3f} (random init {floor['linear_probe_accuracy']:.3f})")
        log(f"done: {final / 'backbone.safetensors'}; use it as backbone: file:{final}")
    return res


def format_result(res: dict) -> str:
    lines = [f"pretext {res['pretext']} on {res['n_rows']} rows, {res['epochs']} epochs: train loss "
             f"{res['first_train_loss']:.4f} -> {res['final_train_loss']:.4f} ({res['train_seconds']:.0f} s)"]
    ev, fl = res.get("eval"), res.get("eval_random_init")
    if ev:
        lines.append(f"kNN accuracy {ev['knn_accuracy']:.3f} (random init {fl['knn_accuracy']:.3f}); linear probe "
                     f"{ev['linear_probe_accuracy']:.3f} (random init {fl['linear_probe_accuracy']:.3f})")
    lines.append(f"backbone: {res['load_as']}")
    return "\n".join(lines)


__all__ = ["PretrainConfig", "config_from_dict", "format_result", "knn_accuracy", "linear_probe_accuracy",
           "load_pretrain_config", "prepare", "pretrain_backbone", "run_pretrain"]
