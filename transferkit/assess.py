"""``transferkit assess``: how far is the target from the source, will transfer help, and which
backbone transfers best, before training anything.

Divergences are measured in the feature space of the first backbone; the transferability of
every backbone is scored on the target's training labels; the Ben-David bound is estimated when
both domains are labeled; the target's class priors are estimated without its labels (MLLS and
BBSE on a source-only logistic regression). A plain verdict states what the numbers suggest and
why, for the data's modality and backbone (a table's columns, a text encoder, an image CNN).

The target is split exactly as ``transferkit run`` splits it (:func:`target_split` calls the
run's own :func:`transferkit.experiment.make_splits`), so the labels assess reads are the labels
a run with the same split and seed trains on, and never its validation or test labels:

* everything label-based (transferability scores, the source-only accuracy, the target oracle,
  the bound, the observed label shift, the verdict's labels per class) uses the labeled
  training split only;
* the divergences and the label-free prior estimate use the target inputs outside the test
  split, unlabeled (the training and validation inputs, and target samples that have no
  label); the test split, inputs and labels, is never read. A run sees the same inputs: its
  strategies train on the training split and select models on the validation split; only its
  final score reads the test split.

Without a split, assess uses the run's default (``SplitConfig()``: 60% of the labeled target
trains, the rest is halved into validation and test), so assess never reads the labels a
default run is tested on. A target without labels is assessed on all its inputs.

The verdict has a label-free part (the shift, the advice for the modality, the estimated prior
change), computed the same way whether or not the target has labels, and label-based extras
added after it (source-only accuracy, the target oracle's headroom, few-label advice, the best
backbone, the observed prior change, the bound's caveats).
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


def _is_identity(backbone) -> bool:
    """``identity`` (alias ``none``): no network, the table's columns are the features."""
    if isinstance(backbone, str):
        return backbone in ("identity", "none")
    return getattr(getattr(backbone, "spec", None), "name", None) == "identity"


def _check_tabular(name: str, dataset) -> None:
    if dataset.modality != "tabular" or not isinstance(dataset.inputs, np.ndarray) or dataset.inputs.ndim != 2:
        from .config import DEFAULT_BACKBONES

        m = dataset.modality
        raise ConfigError(f"backbone {name!r} uses the columns of a table as features, but {dataset.name!r} is {m}; "
                          f"give {'an' if m[:1] in 'aeiou' else 'a'} {m} backbone (e.g. --backbone "
                          f"{DEFAULT_BACKBONES.get(m, 'efficientnet_lite0')}) or leave --backbone out.")


def embed(backbone, dataset, *, cache_dir=None, progress=False) -> np.ndarray:
    """Features of ``dataset``: a backbone's (cached), or a table's columns for ``identity``."""
    if _is_identity(backbone):
        _check_tabular("identity", dataset)
        return np.asarray(dataset.inputs, dtype=np.float32)
    from .features import FeatureExtractor

    return FeatureExtractor(backbone, cache_dir=cache_dir, progress=progress).fit().transform(dataset)


def backbone_scores(model, F, labels, *, seed: int = 0, always_nleep: bool = False) -> dict:
    """Every applicable transferability score of one backbone's features ``F`` (labeled rows).

    LEEP and NCE use the backbone's source classifier when it has one, N-LEEP otherwise;
    ``always_nleep`` adds N-LEEP in every case, so that all backbones can be ranked by it.
    """
    from .metrics import transferability

    probs = None if isinstance(model, str) else model.source_probs(F)
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
    :class:`~transferkit.config.BackboneConfig` objects, e.g. an experiment file's backbone),
    or ``None`` when none was given (the data's default, chosen once it is loaded)."""
    from ._validation import check_number, check_seed
    from .config import BackboneConfig

    if isinstance(backbones, (str, BackboneConfig)):
        backbones = [backbones]
    elif backbones is not None:  # None: chosen from the data once it is loaded (resolve_backbones)
        backbones = list(backbones)
        if not backbones:
            raise ConfigError("give at least one backbone (--backbone NAME), or none at all to use the data's "
                              "default (identity for a table, efficientnet_lite0 for images, minilm for text).")
    for b in backbones or []:
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


def resolve_backbones(backbones, dataset) -> list:
    """The backbones made concrete for ``dataset``, with canonical names, duplicates dropped.

    ``None`` (no backbone given) is the modality's default (``identity`` for a table,
    ``efficientnet_lite0`` for images, ``minilm`` for text, as a run's ``backbone: auto``);
    ``auto`` is the same; ``none`` is ``identity``, which needs a table. A
    :class:`~transferkit.config.BackboneConfig` is resolved as the run resolves it
    (:func:`transferkit.config.resolve_backbone_config`: ``identity`` takes ``in_features``
    from the table's column count).
    """
    from .config import DEFAULT_BACKBONES, NO_BACKBONE_NAMES, BackboneConfig, resolve_backbone_config

    default = DEFAULT_BACKBONES.get(dataset.modality, "efficientnet_lite0")
    out, seen = [], set()
    for b in backbones if backbones is not None else [default]:
        if isinstance(b, BackboneConfig):
            if b.name in NO_BACKBONE_NAMES:
                _check_tabular(b.name, dataset)
            b = resolve_backbone_config(b, dataset)
        else:
            name = default if b == "auto" else b
            if name in NO_BACKBONE_NAMES:
                _check_tabular(name, dataset)
                name = "identity"
            b = name
        if _name(b) not in seen:
            seen.add(_name(b))
            out.append(b)
    return out


def _build_backbones(names, image_size, seed, dataset=None) -> dict:
    """Each backbone built from ``seed`` (a randomly initialized one is then the same in every
    process and does not depend on which backbones come before it in the list). A
    :class:`~transferkit.config.BackboneConfig` is built as the run builds it (its weights,
    architecture and options; its own ``image_size`` unless ``image_size`` is given);
    ``identity`` is as wide as ``dataset``'s table."""
    from .backbones import create_backbone

    out = {}
    for b in names:
        if isinstance(b, str):
            kw = {"in_features": int(dataset.inputs.shape[1])} if b == "identity" and dataset is not None else {}
            out[b] = create_backbone(b, image_size=image_size, seed=seed, **kw)
        else:
            out[b.name] = b.build(image_size=image_size, seed=seed)
    return out


def backbone_context(model, dataset) -> dict:
    """What the advice depends on: the data's modality, whether the features are the raw
    columns, and which normalization layers the backbone has (``batchnorm``, ``layernorm``,
    ``groupnorm`` or ``None``), read from its modules rather than assumed from its name."""
    raw = _is_identity(model)
    norm = None
    if not raw and not isinstance(model, str):
        from torch import nn

        kinds = [m for m in model.modules()]
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in kinds):
            norm = "batchnorm"
        elif any(isinstance(m, nn.LayerNorm) for m in kinds):
            norm = "layernorm"
        elif any(isinstance(m, nn.GroupNorm) for m in kinds):
            norm = "groupnorm"
    name = model if isinstance(model, str) else getattr(getattr(model, "spec", None), "name", None)
    return {"modality": dataset.modality, "backbone": name, "raw_columns": raw, "norm": norm}


#: Headroom below which adaptation has little room: the target oracle less than this far above
#: source-only (or within one standard error of it).
SMALL_HEADROOM = 0.02


def target_oracle(F, y, source_model, *, seed: int = 0) -> dict | None:
    """How far a linear model trained on the target's own training labels gets, against the
    source-only model on the same rows: stratified k-fold cross-validation (k = min(5, the
    smallest class)), the same logistic regression as the source-only model, fold by fold.

    Returns ``{"accuracy", "accuracy_se", "source_only", "headroom", "headroom_se", "n_folds",
    "n_labels", "small"}`` (``small``: headroom < :data:`SMALL_HEADROOM` or within its standard
    error), or ``None`` when a class has fewer than two labels.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from ._compat import one_blas_thread

    counts = np.bincount(y)
    counts = counts[counts > 0]
    if len(counts) < 2 or counts.min() < 2:
        return None
    k = int(min(5, counts.min()))
    acc, so = [], []
    with one_blas_thread():
        for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(F, y):
            clf = LogisticRegression(max_iter=3000).fit(F[tr], y[tr])
            acc.append(float((clf.predict(F[te]) == y[te]).mean()))
            so.append(float((source_model.predict(F[te]) == y[te]).mean()))
    acc, so = np.array(acc), np.array(so)
    diff = acc - so
    se = float(acc.std(ddof=1) / np.sqrt(k))
    dse = float(diff.std(ddof=1) / np.sqrt(k))
    head = float(diff.mean())
    return {"accuracy": float(acc.mean()), "accuracy_se": se, "source_only": float(so.mean()), "headroom": head,
            "headroom_se": dse, "n_folds": k, "n_labels": int(len(y)),
            "small": bool(head < SMALL_HEADROOM or head <= dse)}


#: A class whose estimated target prior (and the upper end of its interval) is below this looks absent
#: from the target: the verdict calls the target partial.
ABSENT_PRIOR = 0.01
#: A prior change smaller than this (absolute, in every class) is not acted on, even when significant.
MIN_PRIOR_CHANGE = 0.05
#: Components the label-shift check's domain classifier works on (PCA of the pooled features, when wider).
CHECK_COMPONENTS = 32


def _weighted_domain_error(S, ws, T, seed: int) -> tuple[float, float]:
    """Cross-validated error of a standardized logistic-regression domain classifier between
    the source weighted by ``ws`` (rescaled to the target's total weight) and the target;
    returns ``(error, n_effective)`` (Kish's effective sample size of all the weights)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    X = np.vstack([S, T]).astype(np.float64)
    d = np.r_[np.zeros(len(S), dtype=int), np.ones(len(T), dtype=int)]
    w = np.r_[ws * (len(T) / ws.sum()), np.ones(len(T))]
    wrong = 0.0
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, d):
        sc = StandardScaler().fit(X[tr])
        clf = LogisticRegression(max_iter=2000).fit(sc.transform(X[tr]), d[tr], sample_weight=w[tr])
        wrong += float((w[te] * (clf.predict(sc.transform(X[te])) != d[te])).sum())
    return wrong / w.sum(), float(w.sum() ** 2 / (w ** 2).sum())


def estimate_label_shift(Fs, ys, Ft, n_classes: int, *, classes=None, seed: int = 0,
                         n_bootstrap: int = 200) -> dict:
    """The target's class priors without target labels, and whether a prior change explains the shift.

    A logistic regression (standardized features) is trained on 70% of the labeled source rows;
    its probabilities on the other 30% (for BBSE's confusion matrix) and on the target inputs
    go to :func:`transferkit.adapt.label_shift.estimate_target_priors` with ``method="mlls"``
    (the estimate used) and ``method="bbse"`` (a cross-check), each with a bootstrap CI.

    Both assume *label shift*: only the class priors moved, ``p(x | y)`` did not. The check:
    reweight every source row by ``q_y / p_y`` (the MLLS estimate over the source priors) and
    measure the proxy A-distance between the reweighted source and the target with a
    cross-validated domain classifier. If a prior change explains the shift, the reweighted
    source is as hard to tell from the target as two samples of one domain (A-distance near 0);
    ``explained`` is False when the domain classifier still beats chance (one-sided z-test,
    5%) by an A-distance of at least 0.1: the inputs moved in a way a prior change does not
    explain, and the estimate, which assumes it does, is unreliable.

    Returns
    -------
    dict
        ``{"mlls": LabelShiftEstimate.to_dict(), "bbse": ..., "classes", "source_priors",
        "priors", "ci_low", "ci_high", "changed", "max_change", "explained",
        "a_distance_before", "a_distance_reweighted", "n_source", "n_target", "notes"}``,
        or ``{"estimate": None, "note": why}`` when it cannot be estimated.
    """
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ._compat import one_blas_thread
    from .adapt.label_shift import estimate_target_priors

    counts = np.bincount(ys, minlength=n_classes)
    if n_classes < 2 or counts.min() < 4:
        few = [str(classes[c]) if classes is not None else str(c) for c in np.flatnonzero(counts < 4)]
        return {"estimate": None, "note": f"not estimated: the source has fewer than 4 labels of class(es) "
                                          f"{', '.join(few[:5])}, too few to fit and check a classifier"}
    fit, held = train_test_split(np.arange(len(ys)), test_size=0.3, stratify=ys, random_state=seed)
    notes = []
    with one_blas_thread(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(Fs[fit], ys[fit])
        Ps, Pt = clf.predict_proba(Fs[held]), clf.predict_proba(Ft)
        est = {m: estimate_target_priors(Ps, ys[held], Pt, method=m, n_classes=n_classes, n_bootstrap=n_bootstrap,
                                         seed=seed) for m in ("mlls", "bbse")}
        mlls = est["mlls"]
        X, Y = Fs, Ft
        if Fs.shape[1] > CHECK_COMPONENTS:
            from sklearn.decomposition import PCA

            pca = PCA(CHECK_COMPONENTS, random_state=seed).fit(np.vstack([Fs, Ft]))
            X, Y = pca.transform(Fs), pca.transform(Ft)
        err0, _ = _weighted_domain_error(X, np.ones(len(ys)), Y, seed)
        err1, n_eff = _weighted_domain_error(X, np.asarray(mlls.weights)[ys], Y, seed)
    notes += [str(w.message).splitlines()[0] for w in caught
              if not issubclass(w.category, (DeprecationWarning, FutureWarning))]
    a0, a1 = max(0.0, 2 * (1 - 2 * err0)), max(0.0, 2 * (1 - 2 * err1))
    z = (0.5 - err1) / np.sqrt(0.25 / n_eff)
    explained = not (z > 1.645 and a1 >= 0.1)
    p, q = np.asarray(mlls.source_priors), np.asarray(mlls.priors)
    lo, hi = np.asarray(mlls.ci_low), np.asarray(mlls.ci_high)
    outside = (lo > p) | (hi < p)
    max_change = float(np.abs(q - p).max())
    names = list(classes) if classes is not None else [str(c) for c in range(n_classes)]
    return {
        "method": "mlls", "classes": [str(c) for c in names],
        "source_priors": p.tolist(), "priors": q.tolist(), "ci_low": lo.tolist(), "ci_high": hi.tolist(),
        "changed": bool(outside.any() and max_change >= MIN_PRIOR_CHANGE), "max_change": max_change,
        "explained": bool(explained), "a_distance_before": a0, "a_distance_reweighted": a1,
        "n_source": int(len(ys)), "n_target": int(len(Ft)),
        "mlls": mlls.to_dict(), "bbse": est["bbse"].to_dict(),
        "assumption": "label shift: only the class priors moved, p(x | y) is the same in both domains",
        "notes": notes,
    }


def bound_caveats(bound: dict) -> list[str]:
    """The Ben-David bound estimate's caveats in plain words (always the first one; the second
    when the estimate exceeds 1 or the A-distance is at its maximum of 2)."""
    est = bound.get("estimate")
    if est is None:
        return []
    half_a = bound.get("half_a_distance", 0.0)
    out = ["an estimate, not a guarantee: every term (source error, A-distance, lambda) is estimated with a "
           "linear classifier and 5-fold cross-validation, and lambda uses the target's training labels; it "
           "concerns linear classifiers on these features, not a fine-tuned or adapted model"]
    if est > 1 or half_a >= 0.995:
        why = []
        if est > 1:
            why.append(f"the bound is {est:.2f} > 1, so it is vacuous: an error rate cannot exceed 1, and a bound "
                       "above 1 says nothing about the target error")
        if half_a >= 0.995:
            why.append(f"the A-distance is at its maximum ({2 * half_a:.2f} of 2): a linear classifier tells the "
                       "domains apart almost perfectly in this feature space, so the bound cannot be tight")
        out.append("; ".join(why) + ". It does not mean that transfer must fail (the measured source-only "
                   "accuracy and the target oracle say how a model does); it means the domains are far apart in "
                   "this feature space")
    else:
        out.append(f"read it as: a linear classifier with this source error could err on up to {est:.0%} of the "
                   "target under these estimates; it is usually loose (pessimistic)")
    return out


def assess(source, target, backbones=None, *, image_size: int | None = None,
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
        experiment file's); the first defines the feature space of the divergences.
        ``"identity"`` (alias ``"none"``) uses a table's columns as they are (its width taken
        from the data). ``None`` (default): the data's default, as a run's ``backbone: auto``
        (``identity`` for a table, ``efficientnet_lite0`` for images, ``minilm`` for text).
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
        Per-domain subsample (seeded) for the divergences and the prior estimate.
    seed
        Seeds every random choice, the target split included (as the run's seed does).
    echo
        Called with progress lines (what is being computed, not the numbers: those are in the
        returned dict and :func:`format_assessment`'s tables).
    return_features
        Add ``"features"``: the source and target features of the divergences' subsample
        with their labels (arrays, for the report's t-SNE; remove the key before writing JSON;
        target samples outside the training labels get ``-1``).

    Returns
    -------
    dict
        Divergences, transferability, source-only accuracy, the target oracle, the label-free
        prior estimate (``label_shift_estimate``), the bound (with ``caveats``) and the verdict
        (with its ``label_free`` part), and ``"target_split"``: the split, how many target
        labels were used (total and per class), and how many validation/test samples were
        held out.
    """
    from .data.spec import load_dataset
    from .diagnostics import ben_david_bound

    backbones, image_size, n_permutations, max_samples, seed = _check_args(
        backbones=backbones, image_size=image_size, n_permutations=n_permutations, max_samples=max_samples, seed=seed,
        configs=True)
    split, split_given = _split_of(split, labels_per_class)
    t0 = time.perf_counter()
    src = load_dataset(source) if not hasattr(source, "inputs") else source
    tgt = load_dataset(target) if not hasattr(target, "inputs") else target
    if src.modality != tgt.modality:
        raise DataError(f"source is {src.modality} and target is {tgt.modality}; assess needs one modality.")
    backbones = resolve_backbones(backbones, tgt)
    names = [_name(b) for b in backbones]
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
    models = _build_backbones(backbones, image_size, seed, tgt)
    primary = names[0]
    context = backbone_context(models[primary], tgt)
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
    # one progress line: the values are printed once, in format_assessment's table
    echo(f"measuring {len(divergences)} divergences ...")
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
    notes = []
    ls = _labeled(src)
    if src.labels is not None and ls.size and len(lt):
        if split.labels_per_class is not None and getattr(split, "label_draw", "balanced") == "balanced":
            # a fixed number per class: the training labels' frequencies are the draw's, not the target's
            notes.append(f"label_shift not measured: the training labels are drawn {split.labels_per_class} per "
                         "class, so their frequencies say nothing about the target's")
        else:
            from .metrics.divergence import label_shift

            k = max(src.n_classes, tgt.n_classes)
            div["label_shift"] = label_shift(src.labels[ls], yt, k).to_dict()

    # ---- the target's class priors without its labels (the same inputs as the divergences)
    prior_est = None
    if ls.size and tgt.n_classes in (0, src.n_classes):  # an unlabeled target: the source's label space
        echo("estimating the target's class priors without its labels (MLLS, BBSE) ...")
        il = ls[_subsample(len(ls), max_samples, np.random.default_rng([seed, 1]))]
        prior_est = estimate_label_shift(Fs[il], src.labels[il], T, src.n_classes, classes=tgt.classes or src.classes,
                                         seed=seed)

    # ---- transferability of each backbone on the target's training labels
    trans: dict[str, dict] = {}
    if len(lt) >= 2 and len(np.unique(yt)) >= 2:
        echo(f"scoring {len(backbones)} backbone(s) on the target's {len(lt)} training labels ...")
        for b in backbones:
            name = _name(b)
            model = models[name]
            F = Ft[at] if name == primary else embed(model, tgt.subset(lt, name=tgt.name), cache_dir=cache_dir,
                                                     progress=progress)
            scores = backbone_scores(model, F, yt, seed=seed)
            trans[name] = {k: v.to_dict() for k, v in scores.items()}

    # ---- source-only accuracy, the target oracle and the bound (both domains labeled, shared label space)
    source_only = bound = oracle = None
    if len(ls) and len(lt) and src.n_classes == tgt.n_classes:
        from sklearn.linear_model import LogisticRegression

        from ._compat import one_blas_thread

        with one_blas_thread():
            clf = LogisticRegression(max_iter=3000).fit(Fs[ls], src.labels[ls])
        source_only = float((clf.predict(Ft[at]) == yt).mean())
        oracle = target_oracle(Ft[at], yt, clf, seed=seed)
        try:
            bound = ben_david_bound(Fs[ls], src.labels[ls], Ft[at], yt,
                                    a_distance=div.get("a_distance", {}).get("value"), seed=seed)
            bound["caveats"] = bound_caveats(bound)
            bound["vacuous"] = bool(bound["estimate"] > 1)
        except ValueError as exc:
            bound = {"estimate": None, "note": f"not estimated: {exc}"}
    n_per_class = None
    if len(lt):
        n_per_class = int(np.bincount(yt).min())
    verdict = make_verdict(div, trans, source_only, n_per_class, len(lt), context=context, oracle=oracle,
                           priors=prior_est, bound=bound, balanced_draw=_balanced_draw(split),
                           classes=tgt.classes or src.classes)
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
        "modality": tgt.modality,
        "target_split": _split_record(tgt, split, split_given, split_from, seed, sp, notes),
        "backbones": names,
        "feature_space": primary,
        "backbone_context": context,
        "seed": seed,
        "divergences": div,
        "transferability": trans,
        "source_only_accuracy": source_only,
        "target_oracle": oracle,
        "label_shift_estimate": prior_est,
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


def _class_change(names, p, q, lo=None, hi=None, top: int = 2) -> str:
    """``'yes' 0.18 -> 0.42 [0.39, 0.45]``: the classes whose prior moved most (two classes: the
    rarer one in the source)."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    order = sorted(range(len(p)), key=lambda c: (-round(abs(q[c] - p[c]), 9), p[c]))[:1 if len(p) == 2 else top]
    parts = []
    for c in order:
        band = f" [{lo[c]:.2f}, {hi[c]:.2f}]" if lo is not None and lo[c] is not None and np.isfinite(lo[c]) else ""
        parts.append(f"{str(names[c])!r} {p[c]:.2f} -> {q[c]:.2f}{band}")
    return ", ".join(parts)


def _imbalanced(q) -> bool:
    q = np.asarray(q, dtype=float)
    return bool(len(q) and np.abs(q - 1 / len(q)).max() >= MIN_PRIOR_CHANGE)


def _adapt_advice(ctx: dict) -> str:
    """Domain adaptation that applies to the modality and backbone."""
    m, bb = ctx.get("modality"), ctx.get("backbone")
    if m == "tabular" and ctx.get("raw_columns"):
        return ("adapt the columns at the feature level (the adapt strategy with method: coral, closed form, or "
                "method: jan) on standardised columns, against the source_only_lr baseline (logistic regression on "
                "the source)")
    if m == "tabular":
        return (f"adapt {bb}'s features at the feature level (the adapt strategy with method: coral or jan), against "
                "the source_only_lr baseline (logistic regression on the source)")
    if m == "text":
        return (f"adapt the frozen {bb} embeddings at the feature level (the adapt strategy with method: coral or jan), "
                "against the source_only_lr baseline")
    return ("use domain adaptation on the unlabeled target (the adapt strategy: JAN by default, or CORAL; DANN or "
            "CDAN with level: backbone on a GPU)")


def _baseline(ctx: dict) -> str:
    if ctx.get("modality") in ("tabular", "text"):
        return "source_only_lr: logistic regression on the source" + (
            "'s standardised columns" if ctx.get("raw_columns") else f" {ctx.get('backbone')} features")
    return "source_only"


def _few_label_advice(ctx: dict, k: int) -> str:
    """How to use ``k`` target labels per class with this modality and backbone."""
    m, bb, norm = ctx.get("modality"), ctx.get("backbone"), ctx.get("norm")
    if m == "tabular" and ctx.get("raw_columns"):
        return (f"with {k} labels per class there is no backbone to fine-tune: train on them too (the adapt strategy "
                "with target_labels: true, feature level) and compare with target_only (the target's labels alone)")
    if k <= 5:
        frozen = "frozen embeddings + a linear head" if m == "text" else "frozen backbone + linear head"
        return f"with {k} labels per class prefer feature extraction ({frozen})"
    if m == "text":
        return (f"with {k} labels per class fine-tuning (LP-FT, lower backbone rate; {bb} uses LayerNorm, nothing to "
                "freeze) can beat frozen embeddings (feature_extraction), which are much cheaper on a CPU")
    how = "LP-FT, lower backbone rate" + (", frozen BatchNorm" if norm == "batchnorm" else "")
    return f"with {k} labels per class prefer fine-tuning ({how})"


def make_verdict(div: dict, trans: dict, source_only: float | None, labels_per_class: int | None,
                 n_labeled: int, *, context: dict | None = None, oracle: dict | None = None,
                 priors: dict | None = None, bound: dict | None = None, balanced_draw: int | None = None,
                 classes=None) -> dict:
    """A plain verdict and the reasons behind it.

    Rules (stated so a reader can disagree with them). The **label-free part**, the same with
    or without target labels: the shift is *significant* when the MMD permutation test gives
    p < 0.05; its size is read from the proxy A-distance (< 0.5 small, < 1.5 moderate, else
    large, when a source-only model will likely fail). A significant shift suggests domain
    adaptation of the kind that fits the data (``context``: feature-level ``coral``/``jan``
    against ``source_only_lr`` for a table's columns and for frozen text embeddings; the adapt
    strategy for images); no shift suggests the source-only baseline. The estimated target
    priors (``priors``, no target labels) suggest the prior correction ``label_shift: mlls``
    when they differ from the source's (bootstrap CI excludes the source prior and the change
    is >= :data:`MIN_PRIOR_CHANGE`) and a prior change explains the shift; when it does not,
    the estimate is called unreliable. An imbalanced target with a balanced k-per-class label
    draw (``balanced_draw`` = k) suggests ``split.label_draw: prior``.

    The **label-based extras**, added after it: the source-only accuracy (< 0.6 with a
    significant shift: likely to fail); the target oracle's headroom (``oracle``: too small
    to adapt when < 2 points or within its standard error: use source-only); with <= 5 labels
    per class feature extraction, with more fine-tuning (BatchNorm frozen only where the
    backbone has it; none for a table's columns); the backbone with the highest LogME; the
    observed prior change of the training labels; the bound's caveats when it is vacuous.
    """
    ctx = context or {}
    names = list(classes) if classes is not None else None
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
    fails = significant and size == "large"
    if fails:
        advice.append("a source-only model will likely fail")
    if significant:
        advice.append(_adapt_advice(ctx))
    elif p is not None:
        advice.append(f"the source model should transfer as it is: start from the source-only baseline "
                      f"({_baseline(ctx)}); adaptation has little to correct")
    # the estimated prior change (no target labels)
    ls_advised = False
    pe = priors if priors and priors.get("priors") is not None else None
    if pe is not None:
        cn = names or pe.get("classes")
        change = _class_change(cn, pe["source_priors"], pe["priors"], pe["ci_low"], pe["ci_high"])
        if not pe["explained"]:
            reasons.append(f"estimated target priors (MLLS, no target labels): {change}, unreliable here: "
                           "reweighting the source by them leaves the domains apart (A-distance "
                           f"{pe['a_distance_before']:.2f} -> {pe['a_distance_reweighted']:.2f}), so the inputs "
                           "moved too, not only the priors, which the estimate assumes")
            advice.append("judge a prior correction (label_shift: mlls) on labeled target data, after aligning the "
                          "features (adapt with method: coral or jan)")
        elif pe["changed"]:
            reasons.append(f"the class priors moved (MLLS estimate, no target labels): {change}, and this explains "
                           f"the shift (reweighting the source by it: A-distance {pe['a_distance_before']:.2f} -> "
                           f"{pe['a_distance_reweighted']:.2f})")
            advice.append("correct for the prior change: label_shift: mlls (prior correction) on the adapt or "
                          "source_only strategies")
            ls_advised = True
        else:
            reasons.append(f"no significant change of the class priors (MLLS estimate, no target labels: {change})")
        absent = [str(cn[i]) if cn is not None and i < len(cn) else str(i) for i in range(len(pe["priors"]))
                  if pe["ci_high"][i] < ABSENT_PRIOR and pe["source_priors"][i] > 0]
        if absent and len(absent) < len(pe["priors"]):
            reasons.append(f"class(es) {', '.join(absent[:8])}{' ...' if len(absent) > 8 else ''} look absent from "
                           f"the target (estimated prior below {ABSENT_PRIOR:.0%}, its interval too)")
            advice.append("a partial target (fewer classes than the source): plain alignment (dann, jan) pulls the "
                          "target onto the absent classes; use adapt with method: pada or ba3us, or label_shift: "
                          "mlls+reweight")
        if pe["explained"] and balanced_draw is not None and _imbalanced(pe["priors"]):
            advice.append(f"a balanced draw of {balanced_draw} labels per class misrepresents this imbalanced target "
                          "(estimated priors above): draw them with split.label_draw: prior")
    label_free = {"text": f"{shift} ({'; '.join(reasons)})" if reasons else shift, "reasons": list(reasons),
                  "advice": list(advice)}
    if advice:
        label_free["text"] += ": " + "; ".join(advice)

    # ---- label-based extras
    lreasons, ladvice, caveats = [], [], []
    if n_labeled == 0:
        ladvice.append("no target labels: select models without them (the adapt strategy's unsupervised selection, "
                       "e.g. selection: dev)")
    if source_only is not None:
        lreasons.append(f"a source-only linear model reaches {source_only:.2f} accuracy on the target's "
                        f"{n_labeled} training labels")
        if significant and not fails and source_only < 0.6:
            ladvice.append("a source-only model will likely fail")
    if oracle:
        o = oracle
        lreasons.append(f"a linear model trained on those labels (the target oracle, {o['n_folds']}-fold CV) reaches "
                        f"{o['accuracy']:.3f} ± {o['accuracy_se']:.3f}, {100 * o['headroom']:+.1f} ± "
                        f"{100 * o['headroom_se']:.1f} points from source-only on the same folds")
        if o["small"]:
            ladvice.append(f"adaptation has little room: the target oracle is only {100 * o['headroom']:.1f} points "
                           f"above source-only (standard error {100 * o['headroom_se']:.1f}); use source-only "
                           f"({_baseline(ctx)}) or the simplest model")
    if n_labeled and labels_per_class is not None:
        ladvice.append(_few_label_advice(ctx, labels_per_class))
    observed = div.get("label_shift")
    obs = _observed_priors(observed) if observed and observed.get("p_value") is not None else None
    if obs is not None:
        ps_obs, q_obs = obs
        cn = names or (pe or {}).get("classes") or [str(c) for c in range(len(q_obs))]
        moved = observed["p_value"] < 0.05 and np.abs(np.asarray(q_obs) - ps_obs).max() >= MIN_PRIOR_CHANGE
        lreasons.append(f"the target's training labels: {_class_change(cn, ps_obs, q_obs)} "
                        f"(chi-square p = {observed['p_value']:.2g})")
        if moved and oracle and oracle["small"]:
            ladvice.append("the class priors changed (the training labels show it), but source-only is within "
                           f"{100 * oracle['headroom']:.1f} points of the target oracle: a prior correction has "
                           "little to gain")
        elif moved and not ls_advised:
            ladvice.append("the class priors changed (the training labels show it): label_shift: mlls (prior "
                           "correction)" + ("" if pe is None or pe["explained"] else
                                            ", after feature alignment, since the inputs moved too"))
    best = None
    if trans:
        key = "logme" if all("logme" in v for v in trans.values()) else next(iter(next(iter(trans.values()))))
        best = max(trans, key=lambda b: trans[b][key]["value"])
        if len(trans) > 1:
            ladvice.append(f"best backbone by {key}: {best}")
    if bound and bound.get("estimate") is not None:
        caveats = list(bound.get("caveats") or bound_caveats(bound))
        if bound["estimate"] > 1:
            lreasons.append(f"the Ben-David bound estimate ({bound['estimate']:.2f}) is vacuous: above 1, so it says "
                            "nothing about the target error")
    text = label_free["text"]
    if n_labeled == 0 and ladvice:
        text += ". " + "; ".join(ladvice)
    elif lreasons or ladvice:  # the same shape as the label-free part: (reasons): advice
        text += ". With the target's labels" + (f" ({'; '.join(lreasons)})" if lreasons else "") + (
            ": " + "; ".join(ladvice) if ladvice else "")
    return {"text": text, "shift_significant": significant, "shift_size": size, "best_backbone": best,
            "reasons": reasons + lreasons, "advice": advice + ladvice, "label_free": label_free,
            "label_based": {"reasons": lreasons, "advice": ladvice}, "caveats": caveats,
            "prior_correction": bool(ls_advised or any("label_shift: mlls (prior correction)" in s for s in ladvice)),
            "small_headroom": bool(oracle and oracle["small"]), "context": ctx}


def _balanced_draw(split) -> int | None:
    """``k`` when the split draws ``k`` training labels of every class (``label_draw: balanced``)."""
    k = split.labels_per_class
    return k if k and getattr(split, "label_draw", "balanced") == "balanced" else None


def _observed_priors(ls: dict):
    """``(source, target)`` class frequencies behind a ``label_shift`` result, or ``None``."""
    d = ls.get("details") or {}
    if "source_distribution" in d and "target_distribution" in d:
        return np.asarray(d["source_distribution"], dtype=float), np.asarray(d["target_distribution"], dtype=float)
    return None


def labels_used_text(sp: dict) -> str:
    """``100 (10 per class)`` or ``540 (48 to 60 per class)``: the target labels assess read."""
    counts = list(sp.get("labels_per_class_used", {}).values())
    n = sp.get("n_labels_used", 0)
    if not counts or not n:
        return f"{n}"
    lo, hi = min(counts), max(counts)
    return f"{n} ({lo} per class)" if lo == hi else f"{n} ({lo} to {hi} per class)"


def _space_text(res: dict) -> str:
    ctx = res.get("backbone_context") or {}
    fs = res["feature_space"]
    if ctx.get("raw_columns"):
        return f"{fs} (the table's columns as they are)"
    if ctx.get("norm"):
        return f"{fs} ({ctx.get('modality')} backbone with {ctx['norm']})"
    return str(fs)


def format_assessment(res: dict) -> str:
    """Tables for the terminal: divergences, label shift, transferability, bound, verdict."""
    lines = [f"source: {res['source']}  ({res['n_source']} samples)",
             f"target: {res['target']}  ({res['n_target']} samples, {res['n_target_labeled']} labeled)"]
    sp = res.get("target_split")
    if sp:
        lines += [f"target labels used: {labels_used_text(sp)}", f"  split: {sp['text']}",
                  f"  held out: {sp['held_out']}"]
        lines += [f"  note: {n}" for n in sp.get("notes", [])]
    lines += [f"feature space: {_space_text(res)}", "", f"{'divergence':<22}{'value':>12}{'p-value':>12}  note"]
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
    pe = res.get("label_shift_estimate")
    if pe and pe.get("priors") is not None:
        obs = _observed_priors(res["divergences"].get("label_shift") or {})
        lines += ["", f"class priors without target labels (source-only logistic regression on {pe['n_source']} "
                      f"source / {pe['n_target']} target rows; 95% bootstrap CI):",
                  f"  {'class':<14}{'source':>8}{'target (MLLS)':>24}{'BBSE':>8}" + (f"{'observed':>10}" if obs else "")]
        shown = pe["classes"] if len(pe["classes"]) <= 20 else pe["classes"][:20]
        for c, name in enumerate(shown):
            band = f"{pe['priors'][c]:.3f} [{pe['ci_low'][c]:.2f}, {pe['ci_high'][c]:.2f}]"
            lines.append(f"  {str(name)[:13]:<14}{pe['source_priors'][c]:>8.3f}{band:>24}"
                         f"{pe['bbse']['priors'][c]:>8.3f}" + (f"{obs[1][c]:>10.3f}" if obs else ""))
        if len(pe["classes"]) > 20:
            lines.append(f"  ... {len(pe['classes']) - 20} more classes in assess.json")
        lines.append(f"  check: A-distance {pe['a_distance_before']:.3f} before, {pe['a_distance_reweighted']:.3f} after "
                     "reweighting the source by the estimate (" + (
                         "a prior change explains the shift" if pe["explained"] else
                         "the inputs moved too: the estimate, which assumes only the priors moved, is unreliable")
                     + ")" + ("; observed = the target's training labels" if obs else ""))
    elif pe and pe.get("note"):
        lines += ["", f"class priors without target labels: {pe['note']}"]
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
    o = res.get("target_oracle")
    if o:
        lines.append(f"target oracle (logistic regression on those labels, {o['n_folds']}-fold CV): "
                     f"{o['accuracy']:.3f} ± {o['accuracy_se']:.3f}; headroom over source-only "
                     f"{100 * o['headroom']:+.1f} ± {100 * o['headroom_se']:.1f} points")
    b = res.get("bound")
    if b and b.get("estimate") is not None:
        lines.append(f"Ben-David bound (estimate): {b['estimate']:.3f} = source error {b['source_error']:.3f} "
                     f"+ A-distance/2 {b['half_a_distance']:.3f} + lambda {b['lambda_hat']:.3f}")
        lines += [f"  caveat: {c}" for c in b.get("caveats") or []]
    v = res["verdict"]
    lf = v.get("label_free")
    if lf:
        lines += ["", "verdict: " + lf["text"]]
        lb = v.get("label_based") or {}
        if not lb.get("reasons") and lb.get("advice"):  # no target labels: what follows from that
            lines.append("  " + "; ".join(lb["advice"]))
        elif lb.get("reasons") or lb.get("advice"):
            lines.append("  with the target's labels" + (f" ({'; '.join(lb['reasons'])})" if lb.get("reasons") else "")
                         + (": " + "; ".join(lb["advice"]) if lb.get("advice") else ""))
    else:  # an assess.json written before the verdict had a label-free part
        lines += ["", "verdict: " + v["text"]]
    return "\n".join(lines)


def rank_backbones(target, names, *, image_size: int | None = None, score: str = "logme", seed: int = 0,
                   cache_dir=None) -> list[dict]:
    """Rank candidate backbones for a labeled target without training, best first.

    Parameters
    ----------
    target
        Dataset spec or :class:`~transferkit.data.DomainDataset`; its labeled samples are used.
    names
        Backbone names (``"identity"``, alias ``"none"``, for a table's columns; ``None``: the
        data's default backbone).
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
    names = resolve_backbones(names, tgt)
    out = []
    models = _build_backbones(names, image_size, seed, tgt)
    for name in names:
        model = models[name]
        F = embed(model, tgt, cache_dir=cache_dir)[lt]
        sc = backbone_scores(model, F, tgt.labels[lt], seed=seed, always_nleep=True)
        vals = {k: float(v.value) for k, v in sc.items()}
        out.append({"backbone": name, "score": vals.get(score, float("-inf")), "scores": vals})
    if all(r["score"] == float("-inf") for r in out):
        raise ConfigError(f"score={score!r} applies to none of {list(names)}; valid: {sorted(out[0]['scores'])}.")
    return sorted(out, key=lambda r: -r["score"])
