"""Use a finished run: rebuild a fitted strategy from its directory and apply it to new data.

A run directory (``transferkit run exp.yaml --out DIR``) holds ``config.yaml`` and, per strategy
and seed, ``STRATEGY/seedN/model.safetensors``: tensors only (never a pickle), with the
backbone and strategy names and what the strategy needs to rebuild itself in the file's
header. :func:`load_run` rebuilds the fitted strategy from the two (the same class the run
used, with the run's parameters), so ``load_run(DIR).predict(data)`` gives the run's
predictions; ``model_card.json`` (written with every run) gives the class names and the
table's feature columns. :func:`predict_to_csv` is ``transferkit predict``: the data loaded
with the run's preprocessing (the table's feature columns by name, the image size), every
mismatch a one-line error before anything is written, and the predictions written
atomically to a CSV file outside every run directory and input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validation import suggest
from .data.tables import LABEL_NAMES
from .errors import ConfigError, DataError

MODEL = "model.safetensors"
CARD_JSON = "model_card.json"


@dataclass
class RunRef:
    """Where one trained model of a run lives: the experiment folder, strategy key and seed."""

    root: Path
    key: str
    seed: int
    cfg: object
    scfg: object
    facts: dict = field(default_factory=dict)

    @property
    def seed_dir(self) -> Path:
        return self.root / self.key / f"seed{self.seed}"

    @property
    def model_path(self) -> Path:
        return self.seed_dir / MODEL


def _read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _not_a_run(run_dir) -> DataError:
    return DataError(f"{str(run_dir)!r} is not a transferkit run directory (no config.yaml, and not a STRATEGY/seedN "
                     "folder of one with a model.safetensors); give the --out folder of 'transferkit run'.")


def locate_run(run_dir, strategy: str | None = None, seed: int | None = None) -> RunRef:
    """The model :func:`load_run` loads (see there for the rules); errors are one line."""
    from .config import load_config

    p = Path(os.path.expanduser(str(run_dir)))
    if not p.is_dir():
        raise DataError(f"run directory {str(run_dir)!r} does not exist or is not a folder; give the --out folder of "
                        "'transferkit run' (or one of its STRATEGY/seedN folders).")
    given_key = given_seed = None
    if (p / "config.yaml").is_file():
        root = p
    elif (p / MODEL).is_file() and p.name.startswith("seed") and p.name[4:].isdigit() \
            and (p.parent.parent / "config.yaml").is_file():
        root, given_key, given_seed = p.parent.parent, p.parent.name, int(p.name[4:])
        if strategy is not None and strategy != given_key:
            raise ConfigError(f"{str(run_dir)!r} is the folder of strategy {given_key!r}, but strategy={strategy!r} "
                              "was asked for; drop --strategy or give the experiment folder.")
        if seed is not None and seed != given_seed:
            raise ConfigError(f"{str(run_dir)!r} is the folder of seed {given_seed}, but seed={seed} was asked for; "
                              "drop --seed or give the experiment folder.")
        strategy, seed = given_key, given_seed
    else:
        raise _not_a_run(run_dir)
    cfg = load_config(root / "config.yaml")
    keys = [s.key for s in cfg.strategies]
    if strategy is None:
        strategy = _best_strategy(root, keys)
    if strategy not in keys:
        raise ConfigError(f"strategy {strategy!r} is not in the run {str(root)!r}." + suggest(strategy, keys)
                          + f" Choose one of {', '.join(keys)} (--strategy).")
    trained = [s for s in cfg.seeds if (root / strategy / f"seed{s}" / MODEL).is_file()]
    if seed is None:
        if not trained:
            raise DataError(f"strategy {strategy!r} of the run {str(root)!r} has no trained model (no "
                            f"{strategy}/seedN/{MODEL}); finish the run first ('transferkit run --resume {root}').")
        seed = trained[0]
    elif seed not in trained:
        have = ", ".join(map(str, trained)) or "none"
        raise ConfigError(f"seed {seed} of strategy {strategy!r} has no trained model in {str(root)!r}; seeds with "
                          f"one: {have} (--seed).")
    scfg = cfg.strategies[keys.index(strategy)]
    return RunRef(root, strategy, int(seed), cfg, scfg, facts=run_facts(root, cfg))


def _best_strategy(root: Path, keys: list[str]) -> str:
    """The strategy with the best mean validation accuracy in ``results.json``; with one
    strategy, that one; else an error asking for ``strategy``."""
    res = _read_json(root / "results.json")
    summary = res.get("summary") if isinstance(res, dict) else None
    vals = {}
    if isinstance(summary, dict):
        for k in keys:
            v = (summary.get(k) or {}).get("val_accuracy_mean")
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                vals[k] = float(v)
    if vals:
        return max(vals, key=lambda k: (vals[k], -keys.index(k)))
    if len(keys) == 1:
        return keys[0]
    raise ConfigError(f"the run {str(root)!r} has several strategies and no validation accuracy to choose among them; "
                      f"pass strategy (--strategy): one of {', '.join(keys)}.")


def run_facts(root: Path, cfg) -> dict:
    """What prediction needs to know about the run's data: ``model_card.json``'s ``data``
    section (modality, class names, feature/label/text columns, the loading options), or,
    for a run without one, the same read from its target dataset when it can still be loaded."""
    card = _read_json(root / CARD_JSON)
    if isinstance(card, dict) and isinstance(card.get("data"), dict):
        return card["data"]
    try:
        from .data.spec import load_dataset
        from .modelcard import dataset_facts

        return dataset_facts(load_dataset(cfg.target), cfg.target)
    except Exception:  # the data may be gone: predict still works, with fewer checks
        return {}


def _output_width(state: dict, meta: dict) -> int | None:
    n = meta.get("transferkit.n_classes")
    if n is not None and str(n).isdigit():
        return int(n)
    for k in ("head.fc.bias", "head.net.4.bias", "head.bias"):
        if k in state and state[k].ndim == 1:
            return int(state[k].shape[0])
    return None


def class_names(facts: dict, width: int | None) -> np.ndarray:
    """The names of the model's outputs: the target's classes (then the source's, when the
    model is wider), else ``"0", "1", ...``."""
    names = [str(c) for c in (facts.get("classes") or [])]
    src = [str(c) for c in (facts.get("source_classes") or [])]
    n = width if width is not None else max(len(names), len(src))
    out = [names[i] if i < len(names) else (src[i] if i < len(src) else str(i)) for i in range(n)]
    return np.array(out, dtype=str)


def load_run(run_dir, strategy: str | None = None, seed: int | None = None, *, device: str | None = None):
    """The fitted strategy of a finished run, rebuilt from ``config.yaml`` + ``model.safetensors``.

    Parameters
    ----------
    run_dir
        The experiment folder (``transferkit run ... --out DIR``) or one of its
        ``STRATEGY/seedN`` folders.
    strategy
        The strategy key (its ``label``, else its name). Default: the strategy with the best
        mean validation accuracy in ``results.json``; a run without validation accuracies and
        several strategies needs it (the error lists them).
    seed
        Default: the first seed of the config that has a trained model.
    device
        Where the model runs (default: the run's ``device``).

    Returns
    -------
    Strategy
        The class the run trained (``FineTune``, ``FeatureExtraction``, ``Adapt``, ...) with the
        run's parameters and fitted state: ``predict(dataset)`` gives class indices (into
        ``classes_``), ``predict_proba(dataset)`` ``(n, K)`` probabilities, ``classes_`` the
        class names; ``run_`` says which run, strategy and seed it is. Only safetensors are read.

    Examples
    --------
    >>> import transferkit as tk  # doctest: +SKIP
    >>> model = tk.load_run("runs/demo")  # doctest: +SKIP
    >>> model.classes_[model.predict(tk.load_dataset("digits:rotate=30"))]  # doctest: +SKIP
    """
    ref = run_dir if isinstance(run_dir, RunRef) else locate_run(run_dir, strategy, seed)
    return _load(ref, device)


def _load(ref: RunRef, device=None):
    from ._io import read_model_file
    from ._registry import get
    from .experiment import _backbone_factory, _make_strategy

    path = ref.model_path
    state, meta = read_model_file(path, "the run's model is damaged: train it again.")
    cfg, scfg = ref.cfg, ref.scfg
    saved = meta.get("transferkit.strategy")
    if saved is not None and saved != scfg.name:
        raise DataError(f"{str(path)!r} was saved by strategy {saved!r} but config.yaml says {scfg.name!r} for "
                        f"{ref.key!r}; the folder and its config do not belong together.")
    cfg.backbone = _concrete_backbone(cfg.backbone, meta, ref.facts)
    factory = _backbone_factory(cfg)
    strat = _make_strategy(get("strategy", scfg.name), scfg, cfg, ref.seed, factory)
    if device is not None:
        strat.set_params(device=device)
    if getattr(strat, "uses_members", False):  # an ensemble: its members from their own folders, same seed
        members = {k: _load(_member_ref(ref, k, path), device) for k in strat.saved_members(meta, str(path))}
        strat.load_state(state, meta, where=str(path), members=members)
    else:
        strat.load_state(state, meta, where=str(path))
    # a strategy that saves its own output names (open_set: the source's classes and "unknown") keeps them
    own = getattr(strat, "classes_", None) if "transferkit.classes" in meta else None
    strat.classes_ = np.asarray(own, dtype=str) if own is not None else class_names(ref.facts, _output_width(state, meta))
    strat.run_ = {"run_dir": str(ref.root), "strategy": ref.key, "method": scfg.name, "seed": ref.seed,
                  "backbone": cfg.backbone.name, "model": str(path)}
    return strat


def _member_ref(ref: RunRef, key: str, path: Path) -> RunRef:
    """Where the member ``key`` of the ensemble at ``path`` lives: the same run and seed."""
    keys = [s.key for s in ref.cfg.strategies]
    if key not in keys:
        raise DataError(f"{str(path)!r} combines the strategy {key!r}, which config.yaml does not have; the folder and "
                        "its config do not belong together.")
    member = RunRef(ref.root, key, ref.seed, ref.cfg, ref.cfg.strategies[keys.index(key)], ref.facts)
    from ._registry import get

    if getattr(get("strategy", member.scfg.name), "combines_predictions", False):
        raise DataError(f"{str(path)!r} combines {key!r}, which is itself an ensemble; ensembles do not nest: the "
                        "folder and its config do not belong together.")
    if not member.model_path.is_file():
        raise DataError(f"the ensemble {ref.key!r} (seed {ref.seed}) combines {key!r}, but {str(member.model_path)!r} "
                        f"is missing; finish the run ('transferkit run --resume {ref.root}').")
    return member


def seed_ensemble(run_dir, strategy: str | None = None, data=None, *, seeds=None, device: str | None = None):
    r"""A deep ensemble over the seeds a run already trained: the mean of the predicted
    probabilities of one strategy's model of every seed (Lakshminarayanan et al., 2017).

    .. math:: \bar p(y \mid x) = \frac1S \sum_{s=1}^S p_{\theta_s}(y \mid x)

    The seeds of an experiment differ in their initialisation, data order and augmentation (and
    in the few-label draw of ``split.labels_per_class``), which is the diversity a deep ensemble
    needs; averaging their probabilities usually lowers the NLL and calibration error of a single
    model, most of all under shift (Ovadia et al., 2019). Costs one forward pass per seed.

    Parameters
    ----------
    run_dir
        The experiment folder (``transferkit run ... --out DIR``).
    strategy
        The strategy key; default as in :func:`load_run` (the best mean validation accuracy).
    data
        A :class:`~transferkit.data.DomainDataset`, or a dataset spec loaded as the run's data
        was (:func:`load_for_run`).
    seeds
        The seeds to average (default: every seed with a trained model, at least two).
    device
        Where the models run (default: the run's ``device``).

    Returns
    -------
    (n, K) ndarray
        The ensemble's class probabilities (``.argmax(1)``: its predictions, indices into the
        run's classes).

    References
    ----------
    Lakshminarayanan, Pritzel, Blundell. "Simple and scalable predictive uncertainty estimation
    using deep ensembles", NeurIPS 2017.
    """
    from .metrics.uncertainty import ensemble_probs
    from .strategies.base import softmax

    if data is None:
        raise ConfigError("seed_ensemble needs data: a DomainDataset or a dataset spec (e.g. 'digits:rotate=30').")
    first = locate_run(run_dir, strategy)
    trained = [s for s in first.cfg.seeds if (first.root / first.key / f"seed{s}" / MODEL).is_file()]
    if seeds is None:
        seeds = trained
    else:
        if isinstance(seeds, (int, str)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"seeds={seeds!r} must be a list of seeds of the run, e.g. seeds=[0, 1, 2].")
        missing = [s for s in seeds if s not in trained]
        if missing:
            raise ConfigError(f"seed {missing[0]} of strategy {first.key!r} has no trained model in "
                              f"{str(first.root)!r}; seeds with one: {', '.join(map(str, trained)) or 'none'}.")
    if len(seeds) < 2:
        raise ConfigError(f"strategy {first.key!r} of {str(first.root)!r} has {len(seeds)} trained seed(s); a deep "
                          "ensemble averages at least two (train with seeds: 3 or more).")
    ds = data if hasattr(data, "inputs") else load_for_run(data, first.facts)
    what = f"{ds.name!r}" if hasattr(data, "inputs") else f"DATA {str(data)!r}"
    probs = []
    for s in seeds:
        model = _load(RunRef(first.root, first.key, int(s), first.cfg, first.scfg, first.facts), device)
        probs.append(softmax(apply(model, ds, what)))  # what predict_proba gives, with apply's one-line errors
    return ensemble_probs(probs)


def _concrete_backbone(b, meta: dict, facts: dict):
    """The config's backbone section as the run built it: ``auto`` (or an identity backbone
    without its width) made concrete from the file's backbone name and the data's width."""
    import dataclasses

    name = b.name
    if name == "auto" and meta.get("transferkit.backbone"):
        name = meta["transferkit.backbone"]
    if name == "none":
        name = "identity"
    options = dict(b.options or {})
    if name == "identity" and "in_features" not in options and facts.get("n_features"):
        options["in_features"] = int(facts["n_features"])
    return dataclasses.replace(b, name=name, options=options)


# ---------------------------------------------------------------------------------- data
def _table_columns(path: Path) -> list[str] | None:
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names]
        import pandas as pd

        return [str(c) for c in pd.read_csv(path, nrows=0, sep="\t" if path.suffix.lower() == ".tsv" else ",").columns]
    except Exception:  # the table loader reports an unreadable file in its own words
        return None


def _shown(cols, k: int = 8) -> str:
    cols = [str(c) for c in cols]
    return ", ".join(cols[:k]) + (f", ... ({len(cols)} in all)" if len(cols) > k else "")


def load_for_run(spec, facts: dict):
    """``spec`` loaded as the run's data was: a table's feature columns by name (the run's, in
    its order), its label and text columns, and the run's ``size=`` for images of the same
    kind; a mismatch with what the model takes is a one-line :class:`DataError`."""
    from .data.spec import TABLE_SUFFIXES, _registered, load_dataset, parse_spec

    name, options = parse_spec(spec)
    over: dict = {}
    path = Path(os.path.expanduser(name))
    modality = facts.get("modality")
    run_cols = facts.get("feature_columns")
    if name not in _registered() and path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        columns = _table_columns(path)
        if modality == "image":
            raise DataError(f"DATA {str(spec)!r} is a table but the run's model takes images; give images (a folder of "
                            "class subfolders, an .npz of images, or the run's dataset).")
        if modality == "tabular" and run_cols:
            if "features" in options:
                given = options["features"]
                given = [f.strip() for f in given.split(",")] if isinstance(given, str) else [str(f) for f in given]
                if given != list(run_cols):
                    raise DataError(f"DATA {str(spec)!r}: features={given} are not the run's feature columns "
                                    f"[{_shown(run_cols)}] (names and order); leave features= out: the run's columns "
                                    "are taken by name.")
            elif columns is not None:
                missing = [c for c in run_cols if c not in columns]
                if missing:
                    more = f" (and {len(missing) - 1} more: {_shown(missing[1:], 4)})" if len(missing) > 1 else ""
                    raise DataError(f"DATA {str(spec)!r} has no column {missing[0]!r}{more}, which the run's model "
                                    f"reads (its columns, by name and in this order: {_shown(run_cols)}); add the "
                                    "column with the same meaning and units, or give a table that has it.")
                over["features"] = list(run_cols)
        if modality == "text" and "text" not in options and facts.get("text_column"):
            if columns is not None and facts["text_column"] not in columns:
                raise DataError(f"DATA {str(spec)!r} has no text column {facts['text_column']!r}, which the run's model "
                                "reads; rename your text column to it, or give text=COLUMN in the spec.")
            over["text"] = facts["text_column"]
        if "label" not in options and columns is not None:
            lab = facts.get("label_column")
            if lab is not None or not any(c in columns for c in LABEL_NAMES):
                # the run's label column when it had one; else (an unlabeled target) the usual names
                over["label"] = lab if lab in columns else False
    elif name not in _registered() and path.is_file() and path.suffix.lower() == ".npz" and "y" not in options:
        try:
            with np.load(path, allow_pickle=False) as z:
                if not {"y", "Y", "labels"} & set(z.files):
                    over["y"] = None  # inputs to predict: no labels is the usual case, not an error
        except Exception:  # the array loader reports an unreadable file in its own words
            pass
    if "size" not in options and facts.get("size") is not None and not path.is_file():
        kind = "folder" if path.is_dir() and name not in _registered() else name
        if kind == facts.get("kind"):
            over["size"] = facts["size"]
    ds = load_dataset(spec, **over) if over else load_dataset(spec)
    check_fits(ds, facts, f"DATA {str(spec)!r}")
    return ds


def check_fits(ds, facts: dict, what: str) -> None:
    """``ds`` must be what the run's model takes: the modality and a table's feature count."""
    modality = facts.get("modality")
    if modality and ds.modality != modality:
        hint = {"image": "images (a folder of class subfolders, an .npz of images)",
                "tabular": "a table of numeric columns (.csv, .parquet, or an .npz of a 2-D array)",
                "text": "text (a table with text=COLUMN)"}.get(modality, modality)
        raise DataError(f"{what} is {ds.modality} data but the run's model takes {modality} inputs; give {hint}.")
    n = facts.get("n_features")
    if ds.modality == "tabular" and n and np.ndim(ds.inputs) == 2 and np.shape(ds.inputs)[1] != int(n):
        cols = facts.get("feature_columns")
        shown = f" ({_shown(cols)})" if cols else ""
        raise DataError(f"{what} has {np.shape(ds.inputs)[1]} feature columns but the run's model takes {n}{shown}; "
                        "give the same features in the same order.")


def true_labels(ds, classes: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """``ds``'s labels as indices into the model's ``classes`` (by class *name*; -1 where
    unlabeled or a class the model does not know), and the names of the unknown classes."""
    if ds.labels is None or not (ds.labels >= 0).any():
        return None, []
    names = [str(c) for c in ds.classes] if ds.classes is not None else [str(i) for i in range(int(ds.labels.max()) + 1)]
    index = {c: i for i, c in enumerate(classes.tolist())}
    table = np.array([index.get(c, -2) for c in names])
    y = np.where(ds.labels >= 0, table[np.maximum(ds.labels, 0)], -1)
    unknown = sorted({names[i] for i in np.unique(ds.labels[(ds.labels >= 0) & (y == -2)])})
    return y, unknown


def run_split(ref: RunRef, split: str):
    """The run's own ``train``/``val``/``test`` split of its target for the seed (as the run cut it)."""
    from .data.spec import load_dataset
    from .experiment import make_splits

    target = load_dataset(ref.cfg.target)
    parts = dict(zip(("train", "val", "test"), make_splits(target, ref.cfg.split, ref.seed, load=load_dataset)))
    ds = parts[split]
    if ds is None:
        raise ConfigError(f"the run {str(ref.root)!r} has no {split} split (split.val_fraction is 0); choose another "
                          "--split or give DATA.")
    return ds


def apply(strategy, ds, what: str) -> np.ndarray:
    """``strategy.predict_logits(ds)``; a failure of the data (an image that cannot be decoded
    or resized, a table the model cannot take) is one line naming it."""
    from .errors import TransferKitError

    try:
        return np.asarray(strategy.predict_logits(ds))
    except TransferKitError:
        raise
    except (RuntimeError, ValueError, TypeError, OSError) as exc:
        raise DataError(f"the run's model cannot process {what} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); check that the data has the kind, "
                        "size and columns of the run's training data.") from None


# ---------------------------------------------------------------------------------- output files
def check_output_file(out, *, overwrite: bool, inputs=(), what: str = "--out") -> Path:
    """Where ``predict``/``export`` may write a file: never inside a transferkit run directory,
    never over (or inside) an input, never a folder or a symbolic link; an existing file only
    with ``overwrite``. Checked before any work (the file is then written atomically)."""
    from .train.rundir import enclosing_run, input_paths, is_run_dir

    s = str(out)
    if not s or any(ord(c) < 32 or ord(c) == 127 for c in s):
        raise ConfigError(f"{what} {s!r} is not a valid file name; give a path such as predictions.csv.")
    p = Path(os.path.expanduser(s))
    if p.is_symlink():
        raise ConfigError(f"{what} {s!r} is a symbolic link; give a real file path.")
    if p.is_dir():
        raise ConfigError(f"{what} {s!r} is a folder; give a file name, e.g. {what} {os.path.join(s, 'out.csv')}.")
    up = enclosing_run(p, mine_too=True)
    if up is not None or is_run_dir(p.parent):
        raise ConfigError(f"{what} {s!r} lies inside the transferkit run directory {str(up or p.parent)!r}; a run "
                          "directory is never written by predict or export: write the file elsewhere.")
    real = Path(os.path.realpath(p))
    for inp in input_paths(*inputs):
        if real == inp:
            raise ConfigError(f"{what} {s!r} is the input {str(inp)!r}; it would be overwritten: choose another file.")
        if inp.is_dir() and inp in real.parents:
            raise ConfigError(f"{what} {s!r} lies inside the input folder {str(inp)!r} (it would become part of the "
                              "data); write the file elsewhere.")
    if p.exists() and not overwrite:
        raise ConfigError(f"{what} {s!r} exists; pass --overwrite to replace it, or choose another name.")
    return p


def predictions_csv(pred: np.ndarray, proba: np.ndarray, classes: np.ndarray, y_true: np.ndarray | None,
                    true_names=None) -> str:
    """The CSV text: ``row``, ``predicted`` (class name), ``p_<class>`` per class, ``true``."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "predicted", *[f"p_{c}" for c in classes], *(["true"] if y_true is not None else [])])
    for i in range(len(pred)):
        row = [i, classes[pred[i]], *[format(float(v), ".8g") for v in proba[i]]]
        if y_true is not None:
            row.append(true_names[i] if true_names is not None else "")
        w.writerow(row)
    return buf.getvalue()


def predict_to_csv(run_dir, data=None, *, strategy=None, seed=None, split=None, out="predictions.csv",
                   overwrite=False, echo=print, predictor=None) -> dict:
    """``transferkit predict``: apply a run's model to ``data`` (a dataset spec) or to the run's
    own ``split``; write ``out`` (CSV) atomically. Every check runs before the file is written.
    ``predictor``: an object with ``check(strategy)`` (called before any work, raising on a model
    it cannot take) and ``logits(strategy, dataset) -> (n, K)`` used instead of the run's
    own predictions (``--tta``: :func:`transferkit.export.TTAPredictor`). Returns ``{"n",
    "accuracy", "n_labeled", "out", "strategy", "seed"}``."""
    from .train.rundir import write_text

    if (data is None) == (split is None):
        raise ConfigError("predict needs DATA (a dataset spec: a CSV table, an image folder, an .npz file, digits...) "
                          "or --split test|val|train (the run's own split), not both.")
    ref = locate_run(run_dir, strategy, seed)
    inputs = [data] if data is not None else [ref.cfg.target]
    path = check_output_file(out, overwrite=overwrite, inputs=inputs)
    if split is not None:
        ds, what = run_split(ref, split), f"the run's {split} split"
    else:
        ds, what = load_for_run(data, ref.facts), f"DATA {str(data)!r}"
    model = _load(ref)
    if predictor is not None:
        predictor.check(model)
        echo(predictor.describe())
        logits = np.asarray(predictor.logits(model, ds))
    else:
        logits = apply(model, ds, what)
    if logits.ndim != 2 or len(logits) != len(ds):
        raise DataError(f"the run's model gave {logits.shape} outputs for the {len(ds)} rows of {what}; check the data.")
    classes = model.classes_
    pred = logits.argmax(1)
    z = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
    proba = z / z.sum(1, keepdims=True)
    note = None
    if split is not None:  # the run's own labels: already indices of its classes
        y = ds.labels if ds.labels is not None and (ds.labels >= 0).any() else None
        unknown = []
    else:
        y, unknown = true_labels(ds, classes)
        if y is not None and not (y >= 0).any():  # labels, but none of them a class of the model
            note = (f"the labels of {what} ({_shown(unknown, 5)}) are none of the model's classes "
                    f"({_shown(classes.tolist(), 5)}): no accuracy; the 'true' column keeps them.")
    names = None
    if y is not None:  # the true label as the data names it
        own = [str(c) for c in ds.classes] if split is None and ds.classes is not None else None

        def name(lab: int) -> str:
            if lab < 0:
                return ""
            return own[lab] if own is not None else (classes[lab] if lab < len(classes) else str(lab))

        names = [name(int(lab)) for lab in ds.labels]
    write_text(path, predictions_csv(pred, proba, classes, y, names))
    res = {"n": len(ds), "out": str(path), "strategy": ref.key, "seed": ref.seed, "accuracy": None, "n_labeled": 0}
    echo(f"predicted {len(ds)} rows of {what} with {ref.key} (seed {ref.seed}) of {ref.root}")
    if note:
        echo(note)
    if y is not None and (y >= 0).any():
        lab = ds.labels >= 0
        res["n_labeled"] = int(lab.sum())
        res["accuracy"] = float((pred[lab] == y[lab]).mean())
        line = f"accuracy {res['accuracy']:.4f} ({int((pred[lab] == y[lab]).sum())}/{res['n_labeled']} labeled rows)"
        if unknown:
            line += f"; classes the model does not know, counted as errors: {_shown(unknown, 5)}"
        # a predictor with its own record (a compressed model's compress.json) is compared with that
        recorded = getattr(predictor, "recorded", None) or _read_json(ref.seed_dir / "result.json")
        if split == "test" and isinstance(recorded, dict) and recorded.get("accuracy") is not None:
            line += f"; the run recorded {recorded['accuracy']:.4f}"
        echo(line)
    echo(f"written: {path}")
    return res
