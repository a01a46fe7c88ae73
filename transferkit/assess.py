"""``transferkit assess``: how far is the target from the source, will transfer help, and which
backbone transfers best, before training anything.

Divergences are measured in the feature space of the first backbone; the transferability of
every backbone is scored on the target's training labels; the Ben-David bound is estimated when
both domains are labeled. A plain verdict states what the numbers suggest and why.

The target is split exactly as ``transferkit run`` splits it (:func:`target_split` calls the
run's own :func:`transferkit.experiment.make_splits`), so the labels assess reads are the labels
a run with the same split and seed trains on, and never its validation or test labels:

* everything label-based (transferability scores, the source-only accuracy, the bound, the
  label shift, the verdict's labels per class) uses the labeled training split only;
* the divergences use the target inputs outside the test split, unlabeled (the training and
  validation inputs, and target samples that have no label); the test split, inputs and
  labels, is never read. A run sees the same inputs: its strategies train on the training
  split and select models on the validation split; only its final score reads the test split.

Without a split, assess uses the run's default (``SplitConfig()``: 60% of the labeled target
trains, the rest is halved into validation and test), so assess never reads the labels a
default run is tested on. A target without labels is assessed on all its inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ._registry import get
from .errors import ConfigError, DataError

# Divergences run by default, with the options used (density estimators work on PCA components).
DEFAULT_DIVERGENCES = ("mmd", "a_distance", "kl_gaussian", "js_gaussian", "kl_knn", "wasserstein",
                       "sliced_wasserstein", "coral_distance", "ks_features", "mannwhitney_features")
_ON_PCA = {"kl_gaussian", "js_gaussian", "kl_knn", "js_knn"}
PCA_COMPONENTS = 32


def _subsample(n: int, k: int, rng) -> np.ndarray:
    return np.sort(rng.choice(n, size=k, replace=False)) if n > k else np.arange(n)


def embed(backbone, dataset, *, cache_dir=None, progress=False) -> np.ndarray:
    """Features of ``dataset``: a backbone's (cached), or the raw inputs for ``backbone="none"``."""
    if backbone == "none":
        X = dataset.inputs
        if not isinstance(X, np.ndarray):
            raise ConfigError(f"backbone 'none' uses raw inputs, but {dataset.name!r} is {dataset.modality}; "
                              "pick a backbone (e.g. --backbone minilm for text).")
        return X.reshape(len(X), -1).astype(np.float32)
    from .features import FeatureExtractor

    return FeatureExtractor(backbone, cache_dir=cache_dir, progress=progress).fit().transform(dataset)


def backbone_scores(model, F, labels, *, seed: int = 0, always_nleep: bool = False) -> dict:
    """Every applicable transferability score of one backbone's features ``F`` (labeled rows).

    LEEP and NCE use the backbone's source classifier when it has one, N-LEEP otherwise;
    ``always_nleep`` adds N-LEEP in every case, so that all backbones can be ranked by it.
    """
    from .metrics import transferability

    probs = None if model == "none" else model.source_probs(F)
    scores = transferability.score_all(F, labels, source_probs=probs, seed=seed)
    if always_nleep and "nleep" not in scores:
        scores.update(transferability.score_all(F, labels, names=["nleep"], seed=seed))
    return scores


def _labeled(ds) -> np.ndarray:
    return np.flatnonzero(ds.labeled_mask)


_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class TargetSplit:
    """Which samples of a target ``assess`` reads, as sorted indices into the target dataset.

    Attributes
    ----------
    train_labeled
        The labeled training samples of the run's split: the only target labels assess reads.
    train_unlabeled
        Training samples whose labels the split hides (``split.unlabeled_fraction``).
    val, test
        The run's validation and test samples (empty when ``split.val`` / ``split.test``
        name other datasets, or for a target without labels).
    pool
        The target inputs assess uses unlabeled (divergences): every input outside ``test``.
    """

    train_labeled: np.ndarray
    train_unlabeled: np.ndarray
    val: np.ndarray
    test: np.ndarray
    pool: np.ndarray


def target_split(target, split=None, *, seed: int = 0, load=None) -> TargetSplit:
    """The split ``transferkit run`` makes of ``target`` for ``seed``, as indices.

    It is computed by the run's own :func:`transferkit.experiment.make_splits`, called on a
    stand-in dataset with the target's labels whose inputs are the sample indices, so the
    indices are those of the run's ``train``/``val``/``test`` datasets by construction (same
    function, same labels, same seed).

    Parameters
    ----------
    target
        A :class:`~transferkit.data.DomainDataset`.
    split
        A :class:`~transferkit.config.SplitConfig` (``None``: its defaults, as a run without a
        ``split:`` section).
    seed
        The run's seed (each seed of a run draws its own split).
    load
        Loads ``split.val`` / ``split.test`` when they name datasets (default:
        :func:`transferkit.data.spec.load_dataset`).
    """
    from .config import SplitConfig
    from .data.domain import DomainDataset
    from .experiment import make_splits

    if split is None:
        split = SplitConfig()
    if load is None:
        from .data.spec import load_dataset as load
    n = len(target)
    if target.labels is None or not (target.labels >= 0).any():
        return TargetSplit(_EMPTY, _EMPTY, _EMPTY, _EMPTY, np.arange(n, dtype=np.int64))
    index = DomainDataset(inputs=np.arange(n, dtype=np.int64), labels=target.labels, name=target.name,
                          modality="tabular", classes=target.classes)
    train, val, test = make_splits(index, split, seed, load=load)
    tr = np.asarray(train.inputs, dtype=np.int64)
    known = train.labels >= 0
    te = np.sort(np.asarray(test.inputs, dtype=np.int64)) if split.test is None else _EMPTY
    va = np.sort(np.asarray(val.inputs, dtype=np.int64)) if val is not None and split.val is None else _EMPTY
    return TargetSplit(train_labeled=np.sort(tr[known]), train_unlabeled=np.sort(tr[~known]), val=va, test=te,
                       pool=np.setdiff1d(np.arange(n, dtype=np.int64), te))


def _split_of(split, labels_per_class):
    """``(SplitConfig, given)``: ``split`` (a SplitConfig or a mapping of its fields) with
    ``labels_per_class`` put in when given, validated; ``given`` is False for the default."""
    import dataclasses

    from .config import SplitConfig, _section
    from ._validation import check_number

    given = split is not None or labels_per_class is not None
    if split is None:
        split = SplitConfig()
    elif isinstance(split, dict):
        split = _section(split, "split", SplitConfig, "split={'labels_per_class': 10}")
    elif not isinstance(split, SplitConfig):
        raise ConfigError(f"split={split!r} must be a SplitConfig or a mapping of its fields, "
                          "e.g. split={'labels_per_class': 10, 'val_fraction': 0.5}.")
    if labels_per_class is not None:
        labels_per_class = check_number("--labels-per-class (labels_per_class)", labels_per_class, low=1,
                                        high=MAX_SAMPLES, integer=True)
        split = dataclasses.replace(split, labels_per_class=labels_per_class)
    split.validate()
    return split, given


#: Bounds of the numeric arguments (beyond them a run takes hours or the memory of the machine).
MAX_PERMUTATIONS = 100_000
MAX_SAMPLES = 10_000_000  # as `--max-samples` on the command line


def _check_args(*, backbones, image_size, n_permutations=None, max_samples=None, seed, configs=False) -> tuple:
    """Validate the numeric arguments of :func:`assess` / :func:`rank_backbones` before any
    data is loaded; return the backbones as a list (names, and with ``configs`` also
    :class:`~transferkit.config.BackboneConfig` objects, e.g. an experiment file's backbone)."""
    from ._validation import check_number, check_seed
    from .config import BackboneConfig

    if isinstance(backbones, (str, BackboneConfig)):
        backbones = [backbones]
    backbones = list(backbones or [])
    if not backbones:
        raise ConfigError("give at least one backbone (--backbone NAME).")
    for b in backbones:
        if configs and isinstance(b, BackboneConfig) and isinstance(b.name, str) and b.name:
            continue
        if not isinstance(b, str) or not b:
            raise ConfigError(f"backbone {b!r} must be a non-empty name (e.g. --backbone tiny_cnn).")
    if image_size is not None:
        image_size = check_number("--image-size (image_size)", image_size, low=8, high=1024, integer=True)
    if n_permutations is not None:
        n_permutations = check_number("--permutations (n_permutations)", n_permutations, low=1,
                                      high=MAX_PERMUTATIONS, integer=True)
    if max_samples is not None:
        max_samples = check_number("--max-samples (max_samples)", max_samples, low=2, high=MAX_SAMPLES,
                                   integer=True)
    seed = check_seed("--seed (seed)", seed)
    return backbones, image_size, n_permutations, max_samples, seed


def _name(b) -> str:
    return b if isinstance(b, str) else b.name


def _build_backbones(names, image_size, seed) -> dict:
    """Each backbone built from ``seed`` (a randomly initialized one is then the same in every
    process and does not depend on which backbones come before it in the list). A
    :class:`~transferkit.config.BackboneConfig` is built as the run builds it (its weights,
    architecture and options; its own ``image_size`` unless ``image_size`` is given)."""
    from .backbones import create_backbone

    out = {}
    for b in names:
        if isinstance(b, str) or b.name == "none":
            out[_name(b)] = "none" if _name(b) == "none" else create_backbone(b, image_size=image_size, seed=seed)
        else:
            out[b.name] = b.build(image_size=image_size, seed=seed)
    return out


def assess(source, target, backbones=("efficientnet_lite0",), *, image_size: int | None = None,
           split=None, labels_per_class: int | None = None, split_from: str | None = None,
           divergences=DEFAULT_DIVERGENCES, n_permutations: int = 200, max_samples: int = 2000,
           seed: int = 0, cache_dir=None, progress: bool = False, echo=lambda *a: None,
           return_features: bool = False) -> dict:
    """Assess a source/target pair and candidate backbones; return the ``assess.json`` dict.

    Parameters
    ----------
    source, target
        Dataset specs or :class:`~transferkit.data.DomainDataset` objects.
    backbones
        Backbone names (or :class:`~transferkit.config.BackboneConfig` objects, as an
        experiment file's); the first defines the feature space of the divergences. ``"none"``
        uses raw (tabular) inputs.
    image_size
        Input side for image backbones.
    split
        How ``transferkit run`` splits the target (a :class:`~transferkit.config.SplitConfig`
        or a mapping of its fields). ``None``: the run's default split. Only the labels of its
        training split are read; its test split is not read at all (see the module docstring).
    labels_per_class
        Shorthand for ``split.labels_per_class`` (``--labels-per-class``); replaces the one of
        ``split`` when both are given.
    split_from
        Where the split comes from (e.g. the experiment file), recorded in the output.
    divergences
        Registered divergence names.
    n_permutations
        Permutations of the MMD test.
    max_samples
        Per-domain subsample (seeded) for the divergences.
    seed
        Seeds every random choice, the target split included (as the run's seed does).
    return_features
        Add ``"features"``: the source and target features of the divergences' subsample
        with their labels (arrays, for the report's t-SNE; remove the key before writing JSON;
        target samples outside the training labels get ``-1``).

    Returns
    -------
    dict
        Divergences, transferability, source-only accuracy, bound and verdict, and
        ``"target_split"``: the split, how many target labels were used (total and per
        class), and how many validation/test samples were held out.
    """
    from .data.spec import load_dataset
    from .diagnostics import ben_david_bound

    backbones, image_size, n_permutations, max_samples, seed = _check_args(
        backbones=backbones, image_size=image_size, n_permutations=n_permutations, max_samples=max_samples, seed=seed,
        configs=True)
    split, split_given = _split_of(split, labels_per_class)
    names = [_name(b) for b in backbones]
    t0 = time.perf_counter()
    src = load_dataset(source) if not hasattr(source, "inputs") else source
    tgt = load_dataset(target) if not hasattr(target, "inputs") else target
    if src.modality != tgt.modality:
        raise DataError(f"source is {src.modality} and target is {tgt.modality}; assess needs one modality.")
    unlabeled_target = tgt.labels is None or not (tgt.labels >= 0).any()
    if split_given and unlabeled_target:
        raise DataError(f"target {tgt.name!r} has no labels, so there is no split to take its training labels from; "
                        "leave out --labels-per-class / the split to assess an unlabeled target on all its inputs.")
    try:
        sp = target_split(tgt, split, seed=seed, load=load_dataset)
    except DataError as exc:
        where = _split_text(split, seed, None) + (f"; from {split_from}" if split_from else "")
        raise DataError(f"the target split ({where}): {exc}") from None
    rng = np.random.default_rng(seed)
    models = _build_backbones(backbones, image_size, seed)
    primary = names[0]
    pool, lt = sp.pool, sp.train_labeled
    at = np.searchsorted(pool, lt)  # rows of the training labels among the pooled target features
    echo(f"target {tgt.name} has no labels: no split, all its inputs are used unlabeled" if unlabeled_target else
         f"target split: {len(lt)} training labels of {tgt.name} ({len(sp.val)} validation labels and "
         f"{len(sp.test)} test samples held out)")
    echo(f"embedding {src.name} ({len(src)}) and {tgt.name} ({len(pool)} of {len(tgt)}: all but the test split) "
         f"with {primary} ...")
    Fs = embed(models[primary], src, cache_dir=cache_dir, progress=progress)
    Ft = embed(models[primary], tgt.subset(pool, name=tgt.name), cache_dir=cache_dir, progress=progress)
    if Fs.shape[1] != Ft.shape[1]:
        raise DataError(f"source and target features differ in dimension ({Fs.shape[1]} vs {Ft.shape[1]}).")
    yt = tgt.labels[lt] if len(lt) else np.zeros(0, dtype=np.int64)  # the only target labels read below

    # ---- divergences on (subsampled) features
    iS, iT = _subsample(len(Fs), max_samples, rng), _subsample(len(Ft), max_samples, rng)
    S, T = Fs[iS], Ft[iT]
    pca = None
    if any(d in _ON_PCA for d in divergences):
        from sklearn.decomposition import PCA

        k = int(min(PCA_COMPONENTS, S.shape[1], len(S) + len(T) - 1))
        pca = PCA(k, random_state=seed).fit(np.vstack([S, T]))
    div: dict[str, dict] = {}
    for name in divergences:
        fn = get("divergence", name)
        opts = {"n_permutations": n_permutations} if name == "mmd" else {}
        a, b = (pca.transform(S), pca.transform(T)) if name in _ON_PCA else (S, T)
        t = time.perf_counter()
        res = fn(a, b, seed=seed, **opts).to_dict()
        res["seconds"] = round(time.perf_counter() - t, 3)
        if name in _ON_PCA:
            res["space"] = f"{pca.n_components_} PCA components of the pooled features"
        div[name] = res
        echo(f"  {name:<22} {res['value']:.4g}" + (f"  p={res['p_value']:.3g}" if "p_value" in res else ""))
    notes = []
    if src.labels is not None and _labeled(src).size and len(lt):
        if split.labels_per_class is not None:
            # a fixed number per class: the training labels' frequencies are the draw's, not the target's
            notes.append(f"label_shift not measured: the training labels are drawn {split.labels_per_class} per "
                         "class, so their frequencies say nothing about the target's")
        else:
            from .metrics.divergence import label_shift

            k = max(src.n_classes, tgt.n_classes)
            div["label_shift"] = label_shift(src.labels[_labeled(src)], yt, k).to_dict()

    # ---- transferability of each backbone on the target's training labels
    trans: dict[str, dict] = {}
    if len(lt) >= 2 and len(np.unique(yt)) >= 2:
        for b in backbones:
            name = _name(b)
            model = models[name]
            F = Ft[at] if name == primary else embed(model, tgt.subset(lt, name=tgt.name), cache_dir=cache_dir,
                                                     progress=progress)
            scores = backbone_scores(model, F, yt, seed=seed)
            trans[name] = {k: v.to_dict() for k, v in scores.items()}
            echo(f"  {name:<22} " + "  ".join(f"{k}={v.value:.4g}" for k, v in scores.items()))

    # ---- source-only accuracy and the bound (both domains labeled, shared label space)
    ls = _labeled(src)
    source_only = bound = None
    if len(ls) and len(lt) and src.n_classes == tgt.n_classes:
        from sklearn.linear_model import LogisticRegression

        from ._compat import one_blas_thread

        with one_blas_thread():
            clf = LogisticRegression(max_iter=3000).fit(Fs[ls], src.labels[ls])
        source_only = float((clf.predict(Ft[at]) == yt).mean())
        try:
            bound = ben_david_bound(Fs[ls], src.labels[ls], Ft[at], yt,
                                    a_distance=div.get("a_distance", {}).get("value"), seed=seed)
        except ValueError as exc:
            bound = {"estimate": None, "note": f"not estimated: {exc}"}
    n_per_class = None
    if len(lt):
        n_per_class = int(np.bincount(yt).min())
    verdict = make_verdict(div, trans, source_only, n_per_class, len(lt))
    extra = {}
    if return_features:
        y_pool = np.full(len(pool), -1, dtype=np.int64)
        y_pool[at] = yt
        extra["features"] = {"source": S, "target": T, "y_source": src.labels[iS] if src.labels is not None else None,
                             "y_target": y_pool[iT] if tgt.labels is not None else None,
                             "classes": tgt.classes, "desc": f"{primary} features"}
    return {
        "source": src.spec or src.name,
        "target": tgt.spec or tgt.name,
        "n_source": len(src),
        "n_target": len(tgt),
        "n_target_labeled": int(tgt.labeled_mask.sum()),
        "target_split": _split_record(tgt, split, split_given, split_from, seed, sp, notes),
        "backbones": names,
        "feature_space": primary,
        "seed": seed,
        "divergences": div,
        "transferability": trans,
        "source_only_accuracy": source_only,
        "bound": bound,
        "verdict": verdict,
        "wall_time": time.perf_counter() - t0,
        **extra,
    }


def _split_text(split, seed: int, split_from: str | None) -> str:
    """The split in words: ``labels_per_class=10, val_fraction=0.5, seed 0 (from exp.yaml)``."""
    if split.labels_per_class is not None:
        parts = [f"labels_per_class={split.labels_per_class}"]
    else:
        parts = [f"train_fraction={split.train_fraction}"]
    if split.unlabeled_fraction:
        parts.append(f"unlabeled_fraction={split.unlabeled_fraction}")
    parts += [f"val={split.val!r}"] if split.val is not None else [f"val_fraction={split.val_fraction}"]
    if split.test is not None:
        parts.append(f"test={split.test!r}")
    return ", ".join(parts) + f", seed {seed}" + (f" (from {split_from})" if split_from else "")


def _split_record(tgt, split, given: bool, split_from, seed: int, sp: TargetSplit, notes: list) -> dict:
    """``assess.json``'s ``target_split``: which split, how many labels per class were read,
    what was held out."""
    import dataclasses

    yt = tgt.labels[sp.train_labeled] if len(sp.train_labeled) else np.zeros(0, dtype=np.int64)
    counts = np.bincount(yt, minlength=tgt.n_classes) if len(yt) else np.zeros(tgt.n_classes, dtype=int)
    cls = tgt.classes if tgt.classes is not None else [str(c) for c in range(len(counts))]
    unlabeled = tgt.labels is None or not (tgt.labels >= 0).any()
    if unlabeled:
        origin = "none: the target has no labels"
    elif split_from:
        origin = split_from
    else:
        origin = "the split given to assess" if given else "the default split of 'transferkit run' (no split given)"
    if unlabeled:
        held = "nothing: the target has no labels; the divergences use all its inputs"
    else:
        held = (f"{len(sp.val)} validation labels and {len(sp.test)} test samples (inputs and labels) of the run's "
                f"split are not read; the divergences use the {len(sp.pool)} target inputs outside the test split, "
                "unlabeled")
    return {
        "split": dataclasses.asdict(split),
        "seed": seed,
        "from": origin,
        "text": "no split (the target has no labels)" if unlabeled else _split_text(split, seed, split_from),
        "n_labels_used": int(len(yt)),
        "labels_per_class_used": {str(c): int(n) for c, n in zip(cls, counts)},
        "n_train_unlabeled": int(len(sp.train_unlabeled)),
        "n_val_held_out": int(len(sp.val)),
        "n_test_held_out": int(len(sp.test)),
        "n_unlabeled_inputs": int(len(sp.pool)),
        "held_out": held,
        "notes": list(notes),
    }


def make_verdict(div: dict, trans: dict, source_only: float | None, labels_per_class: int | None,
                 n_labeled: int) -> dict:
    """A plain verdict and the reasons behind it.

    Rules (stated so a reader can disagree with them): the shift is *significant* when the MMD
    permutation test gives p < 0.05; its size is read from the proxy A-distance (< 0.5 small,
    < 1.5 moderate, else large). With labeled target data: <= 5 labels per class suggests a
    frozen backbone (feature extraction), more suggests fine-tuning with the demo's defaults
    (which beat feature extraction at 10 labels per class on shifted digits). Without labels:
    domain adaptation. The backbone with the highest LogME is recommended.
    """
    reasons, advice = [], []
    mmd = div.get("mmd", {})
    p = mmd.get("p_value")
    a = div.get("a_distance", {}).get("value")
    size = None if a is None else ("small" if a < 0.5 else "moderate" if a < 1.5 else "large")
    significant = p is not None and p < 0.05
    if p is not None:
        n_perm = mmd.get("details", {}).get("n_permutations")
        floor = 1.0 / (n_perm + 1) if n_perm else None
        if significant and floor is not None and p <= floor + 1e-12:
            ptxt = f"MMD p = {p:.2g}, the smallest possible with {n_perm} permutations"
        else:
            ptxt = f"MMD p = {p:.2g}"
        reasons.append(ptxt + (f", A-distance {a:.2f}" if a is not None else ""))
    shift = ("shift is significant" + (f" and {size}" if size else "")) if significant else "no significant shift"
    if source_only is not None:
        reasons.append(f"a source-only linear model reaches {source_only:.2f} accuracy on the target's "
                       f"{n_labeled} training labels")
    if significant and (size == "large" or (source_only is not None and source_only < 0.6)):
        advice.append("a source-only model will likely fail")
    if n_labeled == 0:
        advice.append("no target labels: use domain adaptation (DANN, CDAN or CORAL) and select models without target labels")
    elif labels_per_class is not None and labels_per_class <= 5:
        advice.append(f"with {labels_per_class} labels per class prefer feature extraction (frozen backbone + linear head)")
    elif labels_per_class is not None:
        advice.append(f"with {labels_per_class} labels per class prefer fine-tuning (LP-FT, lower backbone rate, frozen BatchNorm)")
    if significant and n_labeled:
        advice.append("consider domain adaptation on the unlabeled target too (the adapt strategy: JAN by default, or CORAL)")
    best = None
    if trans:
        key = "logme" if all("logme" in v for v in trans.values()) else next(iter(next(iter(trans.values()))))
        best = max(trans, key=lambda b: trans[b][key]["value"])
        if len(trans) > 1:
            advice.append(f"best backbone by {key}: {best}")
    text = f"{shift} ({'; '.join(reasons)})" if reasons else shift
    if advice:
        text += ": " + "; ".join(advice)
    return {"text": text, "shift_significant": significant, "shift_size": size, "best_backbone": best,
            "reasons": reasons, "advice": advice}


def labels_used_text(sp: dict) -> str:
    """``100 (10 per class)`` or ``540 (48 to 60 per class)``: the target labels assess read."""
    counts = list(sp.get("labels_per_class_used", {}).values())
    n = sp.get("n_labels_used", 0)
    if not counts or not n:
        return f"{n}"
    lo, hi = min(counts), max(counts)
    return f"{n} ({lo} per class)" if lo == hi else f"{n} ({lo} to {hi} per class)"


def format_assessment(res: dict) -> str:
    """Tables for the terminal: divergences, transferability, bound, verdict."""
    lines = [f"source: {res['source']}  ({res['n_source']} samples)",
             f"target: {res['target']}  ({res['n_target']} samples, {res['n_target_labeled']} labeled)"]
    sp = res.get("target_split")
    if sp:
        lines += [f"target labels used: {labels_used_text(sp)}", f"  split: {sp['text']}",
                  f"  held out: {sp['held_out']}"]
        lines += [f"  note: {n}" for n in sp.get("notes", [])]
    lines += [f"feature space: {res['feature_space']}", "", f"{'divergence':<22}{'value':>12}{'p-value':>12}  note"]
    for k, v in res["divergences"].items():
        if k == "label_shift":
            continue
        pv = f"{v['p_value']:.3g}" if "p_value" in v else "-"
        note = v.get("space", "")
        if k in ("ks_features", "mannwhitney_features"):
            note = "fraction of features shifted (BH, alpha 0.05)"
        lines.append(f"{k:<22}{v['value']:>12.4g}{pv:>12}  {note}")
    if "label_shift" in res["divergences"]:
        ls = res["divergences"]["label_shift"]
        pv = f"{ls['p_value']:.3g}" if "p_value" in ls else "-"
        lines.append(f"{'label_shift (JS)':<22}{ls['value']:>12.4g}{pv:>12}  class frequencies, chi-square test")
    if res["transferability"]:
        names = sorted({k for v in res["transferability"].values() for k in v})
        lines += ["", f"{'backbone':<26}" + "".join(f"{n:>18}" for n in names)]
        saturated = []
        for b, sc in res["transferability"].items():
            lines.append(f"{b:<26}" + "".join(
                (f"{sc[n]['value']:>17.4g}*" if (sc[n].get("details") or {}).get("saturated") else f"{sc[n]['value']:>18.4g}")
                if n in sc else f"{'-':>18}" for n in names))
            saturated += [b for n in names if n in sc and (sc[n].get("details") or {}).get("saturated")]
        if saturated:
            lines.append("* saturated: no more labeled samples than feature dimensions, so the covariance is singular "
                         "and the score is n_classes - 1 whatever the features; read hscore_shrinkage instead.")
    if res.get("source_only_accuracy") is not None:
        on = "the target's training labels" if sp else "the labeled target"
        lines += ["", f"source-only accuracy on {on}: {res['source_only_accuracy']:.3f}"]
    b = res.get("bound")
    if b and b.get("estimate") is not None:
        lines.append(f"Ben-David bound (estimate): {b['estimate']:.3f} = source error {b['source_error']:.3f} "
                     f"+ A-distance/2 {b['half_a_distance']:.3f} + lambda {b['lambda_hat']:.3f}")
    lines += ["", "verdict: " + res["verdict"]["text"]]
    return "\n".join(lines)


def rank_backbones(target, names, *, image_size: int | None = None, score: str = "logme", seed: int = 0,
                   cache_dir=None) -> list[dict]:
    """Rank candidate backbones for a labeled target without training, best first.

    Parameters
    ----------
    target
        Dataset spec or :class:`~transferkit.data.DomainDataset`; its labeled samples are used.
    names
        Backbone names (``"none"`` for raw tabular inputs).
    score
        The transferability score that orders the list (``logme``, ``hscore_shrinkage``,
        ``nleep``, ``leep``, ``nce``...); every applicable score is returned for each backbone.

    Returns
    -------
    list of dict
        ``{"backbone", "score", "scores": {name: value}}`` sorted by ``score``, descending.
        Backbones without a source classifier get N-LEEP instead of LEEP/NCE; ranking by
        ``leep`` or ``nce`` puts them last.
    """
    from .data.spec import load_dataset

    names, image_size, _, _, seed = _check_args(backbones=names, image_size=image_size, seed=seed)
    tgt = load_dataset(target) if not hasattr(target, "inputs") else target
    lt = _labeled(tgt)
    if len(lt) < 2 or len(np.unique(tgt.labels[lt])) < 2:
        raise DataError(f"target {tgt.name!r} needs labeled samples of at least two classes to rank backbones.")
    out = []
    models = _build_backbones(names, image_size, seed)
    for name in names:
        model = models[name]
        F = embed(model, tgt, cache_dir=cache_dir)[lt]
        sc = backbone_scores(model, F, tgt.labels[lt], seed=seed, always_nleep=True)
        vals = {k: float(v.value) for k, v in sc.items()}
        out.append({"backbone": name, "score": vals.get(score, float("-inf")), "scores": vals})
    if all(r["score"] == float("-inf") for r in out):
        raise ConfigError(f"score={score!r} applies to none of {list(names)}; valid: {sorted(out[0]['scores'])}.")
    return sorted(out, key=lambda r: -r["score"])
