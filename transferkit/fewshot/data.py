"""Dataset specs -> :class:`~transferkit.fewshot.base.MetaData`: the rows, labels and class splits
of a few-shot run.

Two phases, so that every problem is found before anything is computed or written:

1. :func:`plan_meta_data` reads the dataset(s) (images stay lazy), turns an attribute into the
   classes when asked (``class_attribute: condition``: drug reviews by condition), keeps the
   classes with enough rows, subsamples rows per class, and assigns the disjoint meta-train /
   meta-val / meta-test classes (:func:`~transferkit.fewshot.episodes.split_classes`). Labels
   only: cheap, and enough to check every N-way / K-shot / Q-query setting.
2. :meth:`MetaPlan.materialize` computes the inputs the encoder takes:

   - ``conv4`` (raw images): a float tensor ``(n, C, H, W)`` in [0, 1];
   - ``identity`` / ``mlp`` on a table: the rows standardized with the mean and standard deviation
     of the **meta-train rows only** (meta-val rows when there is no meta-train split; none when
     neither exists), so no statistic of a meta-test class leaks into the inputs;
   - a backbone name (``efficientnet_lite0``, ``minilm``...): frozen features ``(n, d)`` computed
     once by :class:`~transferkit.features.FeatureExtractor` and cached on disk.

Cross-domain (``{source: ..., target: ...}``): meta-train and meta-val classes come from the
source dataset, meta-test classes from the target (all of them by default). The target's rows
are appended after the source's and its label values offset by the source's class count, so a
source and a target class never share a label value even when their names coincide.

References
----------
Chen et al., "A closer look at few-shot classification", ICLR 2019 (cross-domain protocol:
meta-train on one dataset, meta-test on another).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from .._validation import check_number, check_seed, suggest
from ..errors import ConfigError, DataError
from .episodes import SPLITS, EpisodeSampler, split_classes

#: Where each split's episodes are described in messages.
SPLIT_NAMES = {"train": "meta-train", "val": "meta-val", "test": "meta-test"}


@dataclass
class DatasetSection:
    """One dataset of a few-shot run (the ``data:`` section, or its ``source`` / ``target``).

    Attributes
    ----------
    spec
        A dataset spec for :func:`transferkit.data.load_dataset` (``"flavia"``,
        ``"fashion_mnist:split=train"``).
    class_attribute
        Use this per-row attribute (``meta["attributes"][name]``) as the classes instead of the
        labels (``condition`` of ``drug_reviews``).
    min_rows
        Keep only classes with at least this many rows (0: keep all).
    drop_classes
        Class names left out entirely (``"(unknown)"``).
    rows_per_class
        Keep at most this many rows of each class (a seeded subsample; ``None``: all).
    seed
        Seed of the row subsample and of fractional class splits (fixed across run seeds, so the
        classes and rows are the same for every seed and features are computed once).
    """

    spec: str | dict
    class_attribute: str | None = None
    min_rows: int = 0
    drop_classes: list = field(default_factory=list)
    rows_per_class: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_keys(value: Mapping, cls, where: str) -> None:
    from ..config import _check_keys as check_keys  # the config's own strict-key rule and message

    check_keys(value, cls, where)


def parse_dataset_section(value, where: str = "data") -> DatasetSection:
    """A :class:`DatasetSection` from a spec string or a mapping with strict keys."""
    from ..config import _check_dataset

    if isinstance(value, str):
        value = {"spec": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}={value!r} must be a dataset spec (e.g. \"flavia\") or a mapping such as "
                          "{spec: drug_reviews, class_attribute: condition, min_rows: 10}.")
    _check_keys(value, DatasetSection, f"{where}.")
    if "spec" not in value:
        raise ConfigError(f"{where} needs 'spec': the dataset to load (e.g. spec: flavia).")
    s = DatasetSection(**value)
    _check_dataset(f"{where}.spec", s.spec, optional=False)
    if s.class_attribute is not None and (not isinstance(s.class_attribute, str) or not s.class_attribute):
        raise ConfigError(f"{where}.class_attribute={s.class_attribute!r} must be an attribute name such as condition.")
    s.min_rows = check_number(f"{where}.min_rows", s.min_rows, low=0, integer=True)
    if s.drop_classes is None:
        s.drop_classes = []
    if not isinstance(s.drop_classes, list) or not all(isinstance(c, str) for c in s.drop_classes):
        raise ConfigError(f"{where}.drop_classes={s.drop_classes!r} must be a list of class names.")
    if s.rows_per_class is not None:
        s.rows_per_class = check_number(f"{where}.rows_per_class", s.rows_per_class, low=1, integer=True)
    s.seed = check_seed(f"{where}.seed", s.seed)
    return s


def parse_data(value) -> dict[str, DatasetSection]:
    """The ``data:`` section: ``{"data": section}`` for one dataset, or ``{"source": ..., "target": ...}``
    for a cross-domain run (meta-train/val on the source, meta-test on the target)."""
    if isinstance(value, Mapping) and ("source" in value or "target" in value):
        extra = [k for k in value if k not in ("source", "target")]
        if extra:
            raise ConfigError(f"unknown key data.{extra[0]!r} in a cross-domain data section; give only data.source "
                              "(meta-train and meta-val classes) and data.target (meta-test classes)."
                              + suggest(str(extra[0]), ["source", "target"]))
        missing = [k for k in ("source", "target") if value.get(k) is None]
        if missing:
            raise ConfigError(f"a cross-domain data section needs both source and target; data.{missing[0]} is missing.")
        return {"source": parse_dataset_section(value["source"], "data.source"),
                "target": parse_dataset_section(value["target"], "data.target")}
    return {"data": parse_dataset_section(value, "data")}


@dataclass
class _Loaded:
    """One dataset after class and row selection: a :class:`~transferkit.data.DomainDataset`
    subset, its labels ``0..len(names)-1`` and the class names."""

    dataset: object
    labels: np.ndarray
    names: list[str]


def _load(section: DatasetSection, where: str, load=None) -> _Loaded:
    from ..data.spec import load_dataset

    ds = (load or load_dataset)(section.spec)
    if section.class_attribute is not None:
        attrs = (ds.meta or {}).get("attributes")
        if not isinstance(attrs, dict) or section.class_attribute not in attrs:
            have = sorted(attrs) if isinstance(attrs, dict) else []
            raise ConfigError(
                f"{where}.class_attribute={section.class_attribute!r}: dataset {ds.name!r} has no such per-row "
                "attribute." + suggest(section.class_attribute, have)
                + (f" Attributes: {', '.join(have)}." if have else " It has no attributes; leave class_attribute out."))
        values = np.asarray([str(v) for v in attrs[section.class_attribute]])
        names = sorted(set(values.tolist()))
        labels = np.searchsorted(np.array(names), values).astype(np.int64)
    else:
        if ds.labels is None or not (ds.labels >= 0).any():
            raise DataError(f"{where}: dataset {ds.name!r} has no labels; few-shot episodes need labeled rows "
                            "(or a class_attribute).")
        labels = ds.labels.astype(np.int64)
        names = [str(c) for c in ds.classes] if ds.classes is not None else [str(i) for i in range(int(labels.max()) + 1)]
    for c in section.drop_classes:
        if c not in names:
            raise ConfigError(f"{where}.drop_classes: unknown class {c!r}." + suggest(c, names)
                              + f" Classes: {', '.join(names[:40])}{' ...' if len(names) > 40 else ''}.")
    counts = np.bincount(labels[labels >= 0], minlength=len(names))
    keep = [i for i, n in enumerate(names) if n not in section.drop_classes and counts[i] >= max(section.min_rows, 1)]
    if not keep:
        raise DataError(f"{where}: no class of {ds.name!r} has at least {section.min_rows} rows; lower min_rows.")
    rng = np.random.default_rng([section.seed, 0xF5])
    rows = []
    for c in keep:
        r = np.flatnonzero(labels == c)
        if section.rows_per_class is not None and len(r) > section.rows_per_class:
            r = np.sort(rng.choice(r, size=section.rows_per_class, replace=False))
        rows.append(r)
    idx = np.sort(np.concatenate(rows))
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    sub = ds.subset(idx)
    return _Loaded(sub, remap[labels[idx]], [names[c] for c in keep])


def _split_single(loaded: _Loaded, classes, seed: int) -> dict[str, np.ndarray]:
    return split_classes(loaded.labels, classes, class_names=loaded.names, seed=seed)


@dataclass
class MetaPlan:
    """The labels and class splits of a few-shot run, before its inputs are computed.

    Attributes
    ----------
    labels
        ``(n,)`` label values of every kept row (cross-domain: target rows after source rows,
        their values offset by the number of source classes).
    class_names
        Names aligned with the label values.
    splits
        ``{"train"|"val"|"test": sorted label values}`` (disjoint).
    modality
        ``image``, ``text`` or ``tabular``.
    parts
        The loaded datasets, in row order (one, or source and target).
    cross_domain
        Whether meta-test classes come from another dataset.
    """

    labels: np.ndarray
    class_names: list[str]
    splits: dict[str, np.ndarray]
    modality: str
    parts: list = field(default_factory=list)
    cross_domain: bool = False
    describe: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ checks
    def rows_of(self, value: int) -> int:
        return int((self.labels == value).sum())

    def check_setting(self, n_way: int, k_shot: int, q_query: int, where: str, *, splits=SPLITS,
                      val_n_way: int | None = None) -> None:
        """Every split's episodes are possible: ``n_way`` at most its classes, ``k_shot + q_query``
        at most each class's rows (one-line :class:`ConfigError` naming the split and the class)."""
        for s in splits:
            if s not in self.splits:
                continue
            values = self.splits[s]
            n = val_n_way if (s == "val" and val_n_way is not None) else n_way
            if n > len(values):
                key = "val_n_way" if (s == "val" and val_n_way is not None) else "n_way"
                raise ConfigError(
                    f"{where}: {key}={n} is larger than the {len(values)} {SPLIT_NAMES[s]} classes; use {key} <= "
                    f"{len(values)} or give classes.{s} more classes.")
            need = k_shot + q_query
            small = [(int(c), self.rows_of(int(c))) for c in values if self.rows_of(int(c)) < need]
            if small:
                c, have = min(small, key=lambda t: t[1])
                raise ConfigError(
                    f"{where}: k_shot + q_query = {k_shot} + {q_query} = {need} is larger than the {have} rows of "
                    f"{SPLIT_NAMES[s]} class {self.class_names[c]!r} ({len(small)} class(es) too small); lower k_shot "
                    f"or q_query, or leave such classes out (min_rows: {need}).")

    # ------------------------------------------------------------------ inputs
    def materialize(self, encoder, *, backbone_image_size: int | None = None, cache_dir=None,
                    progress: bool = False, log=None) -> tuple[torch.Tensor, dict]:
        """The inputs of every row and what they are.

        Parameters
        ----------
        encoder
            ``conv4`` (raw images), ``identity`` / ``mlp`` (table rows, standardized on the
            meta-train rows), or a backbone (a name or a built instance: frozen features, cached).
        backbone_image_size
            Input side of an image backbone.
        cache_dir
            Feature cache directory (``None``: the default cache).

        Returns
        -------
        (inputs, info)
            ``inputs``: float32 tensor ``(n, ...)``; ``info``: ``shape`` (one row's shape),
            ``feature_dim`` (for ``(n, d)`` inputs), ``kind`` and, for tables, the
            ``standardized_on`` split.
        """
        if encoder == "conv4":
            xs = []
            for p in self.parts:
                x = np.asarray(p.dataset.inputs[np.arange(len(p.dataset))] if not isinstance(p.dataset.inputs, np.ndarray)
                               else p.dataset.inputs, dtype=np.float32)
                x = x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1)  # (n, C, H, W)
                xs.append(x)
            shapes = {x.shape[1:] for x in xs}
            if len(shapes) > 1:
                raise DataError(f"source and target images differ in shape ({', '.join(map(str, sorted(shapes)))}); "
                                "give both datasets the same size (e.g. size=28 in the specs).")
            t = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs)))
            return t, {"kind": "raw images", "shape": tuple(t.shape[1:]), "feature_dim": None}
        if encoder in ("identity", "mlp"):
            x = np.concatenate([np.asarray(p.dataset.inputs, dtype=np.float64) for p in self.parts])
            on = next((s for s in ("train", "val") if s in self.splits), None)
            if on is not None:
                rows = np.isin(self.labels, self.splits[on])
                mu, sd = x[rows].mean(0), x[rows].std(0)
                sd[sd < 1e-12] = 1.0  # a constant column stays constant (0), not NaN
                x = (x - mu) / sd
            t = torch.from_numpy(x.astype(np.float32))
            return t, {"kind": "table rows", "shape": (x.shape[1],), "feature_dim": int(x.shape[1]),
                       "standardized_on": SPLIT_NAMES[on] if on else None}
        from ..features import FeatureExtractor

        name = encoder if isinstance(encoder, str) else getattr(getattr(encoder, "spec", None), "name", "backbone")
        feats = []
        fe = FeatureExtractor(backbone=encoder, image_size=backbone_image_size, cache_dir=cache_dir,
                              progress=progress).fit()
        for p in self.parts:
            if log is not None:
                log(f"features: {name} on {len(p.dataset)} rows of {p.dataset.name}")
            feats.append(fe.transform(p.dataset))
        x = np.concatenate(feats).astype(np.float32)
        return torch.from_numpy(x), {"kind": f"{name} features", "shape": (x.shape[1],),
                                     "feature_dim": int(x.shape[1])}

    def meta_data(self, inputs: torch.Tensor, *, n_way: int, k_shot: int, q_query: int, seed: int,
                  train_episodes: int = 1, val_episodes: int = 100, test_episodes: int = 600,
                  val_n_way: int | None = None, where: str = "", with_train: bool = True) -> "MetaData":
        """A :class:`MetaData` over ``inputs`` with one sampler per split for this setting.

        Each split's sampler has its own seed derived from ``seed`` (``SeedSequence([seed, i])``),
        so the meta-train, meta-val and meta-test episodes of a run are independent draws and
        the same for every method of that seed (paired comparisons). ``with_train=False`` leaves the
        meta-train sampler out (nothing meta-trains)."""
        from .base import MetaData

        seeds = split_seeds(seed)
        pre = f"{where}: " if where else ""
        samplers = {}
        for s, n_ep in (("train", train_episodes), ("val", val_episodes), ("test", test_episodes)):
            if s not in self.splits or (s == "train" and not with_train):
                continue
            n = val_n_way if (s == "val" and val_n_way is not None) else n_way
            samplers[s] = EpisodeSampler(self.labels, n, k_shot, q_query, classes=self.splits[s],
                                         n_episodes=max(int(n_ep), 1), seed=seeds[s],
                                         where=f"{pre}{SPLIT_NAMES[s]}")
        return MetaData(inputs=inputs, labels=self.labels, class_names=list(self.class_names),
                        meta={"cross_domain": self.cross_domain, **self.describe}, **samplers)


def split_seeds(seed: int) -> dict[str, int]:
    """Independent episode seeds of the three splits for a run seed."""
    out = {}
    for i, s in enumerate(SPLITS):
        out[s] = int(np.random.SeedSequence([int(seed), 0xFE5, i]).generate_state(1)[0])
    return out


def plan_meta_data(data: dict[str, DatasetSection], classes=None, *, load=None) -> MetaPlan:
    """Read the dataset(s) of a ``data:`` section (see :func:`parse_data`) and assign the classes.

    Parameters
    ----------
    data
        ``{"data": section}`` or ``{"source": section, "target": section}``.
    classes
        The ``classes:`` section: ``{train, val, test}`` lists of class names (or label values)
        or fractions; ``None``: 0.6 / 0.2 / 0.2 of one dataset, or, cross-domain, 0.7 / 0.3 of the
        source's classes for meta-train / meta-val and every target class for meta-test.
        Cross-domain lists name source classes in ``train`` / ``val`` and target classes in
        ``test``.
    load
        The dataset loader (:func:`transferkit.data.load_dataset`); for tests.
    """
    if classes is not None and not isinstance(classes, Mapping):
        raise ConfigError(f"classes={classes!r} must be a mapping of train/val/test to class lists or fractions, "
                          "e.g. classes: {train: 0.6, val: 0.2, test: 0.2}.")
    if "data" in data:
        part = _load(data["data"], "data", load)
        splits = _split_single(part, None if classes is None else dict(classes), data["data"].seed)
        part = _keep_used(part, np.concatenate(list(splits.values())))
        return MetaPlan(labels=part.labels, class_names=part.names, splits=splits, modality=part.dataset.modality,
                        parts=[part], describe={"data": part.dataset.name, "n_classes": len(part.names)})
    src = _load(data["source"], "data.source", load)
    tgt = _load(data["target"], "data.target", load)
    if src.dataset.modality != tgt.dataset.modality:
        raise ConfigError(f"data.source {src.dataset.name!r} is {src.dataset.modality} but data.target "
                          f"{tgt.dataset.name!r} is {tgt.dataset.modality}; a cross-domain run needs one modality "
                          "(one encoder takes both).")
    classes = dict(classes) if classes is not None else {"train": 0.7, "val": 0.3}
    unknown = [k for k in classes if k not in SPLITS]
    if unknown:
        raise ConfigError(f"classes has an unknown split {unknown[0]!r}; use train, val and test."
                          + suggest(str(unknown[0]), SPLITS))
    src_part = {k: v for k, v in classes.items() if k in ("train", "val")}
    if not src_part:
        raise ConfigError("a cross-domain run takes its meta-train (and meta-val) classes from data.source; give "
                          "classes.train (and classes.val) as source classes or fractions.")
    splits = split_classes(src.labels, src_part, class_names=src.names, seed=data["source"].seed)
    test = classes.get("test")
    if test is None:
        tv = np.arange(len(tgt.names), dtype=np.int64)
    else:
        if isinstance(test, (int, float)) and not isinstance(test, bool):
            raise ConfigError(f"classes.test={test!r}: in a cross-domain run the meta-test classes are the target's; "
                              "list target classes or leave classes.test out (every target class).")
        tv = split_classes(tgt.labels, {"test": test}, class_names=tgt.names)["test"]
    offset = len(src.names)
    splits["test"] = tv + offset
    src = _keep_used(src, np.concatenate([splits[k] for k in ("train", "val") if k in splits]))
    tgt = _keep_used(tgt, splits["test"], offset)
    labels = np.concatenate([src.labels, tgt.labels + offset])
    return MetaPlan(labels=labels, class_names=src.names + tgt.names, splits=splits, modality=src.dataset.modality,
                    parts=[src, tgt], cross_domain=True,
                    describe={"source": src.dataset.name, "target": tgt.dataset.name,
                              "n_classes": len(src.names) + len(tgt.names)})


def _keep_used(part: _Loaded, values, offset: int = 0) -> _Loaded:
    """Only the rows of classes that some split uses (no features computed for the others)."""
    idx = np.flatnonzero(np.isin(part.labels + offset, values))
    if len(idx) == len(part.labels):
        return part
    return _Loaded(part.dataset.subset(idx), part.labels[idx], part.names)
