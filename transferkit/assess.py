"""``transferkit assess``: how far is the target from the source, will transfer help, and which
backbone transfers best, before training anything.

Divergences are measured in the feature space of the first backbone; the transferability of
every backbone is scored on the labeled target samples; the Ben-David bound is estimated when
both domains are labeled. A plain verdict states what the numbers suggest and why.
"""

from __future__ import annotations

import time

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


#: Bounds of the numeric arguments (beyond them a run takes hours or the memory of the machine).
MAX_PERMUTATIONS = 100_000
MAX_SAMPLES = 10_000_000  # as `--max-samples` on the command line


def _check_args(*, backbones, image_size, n_permutations=None, max_samples=None, seed) -> tuple:
    """Validate the numeric arguments of :func:`assess` / :func:`rank_backbones` before any
    data is loaded; return the backbone names as a list."""
    from ._validation import check_number, check_seed

    if isinstance(backbones, str):
        backbones = [backbones]
    backbones = list(backbones or [])
    if not backbones:
        raise ConfigError("give at least one backbone (--backbone NAME).")
    for b in backbones:
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


def _build_backbones(names, image_size, seed) -> dict:
    """Each backbone built from ``seed`` (a randomly initialized one is then the same in every
    process and does not depend on which backbones come before it in the list)."""
    from .backbones import create_backbone

    return {name: "none" if name == "none" else create_backbone(name, image_size=image_size, seed=seed)
            for name in names}


def assess(source, target, backbones=("efficientnet_lite0",), *, image_size: int | None = None,
           divergences=DEFAULT_DIVERGENCES, n_permutations: int = 200, max_samples: int = 2000,
           seed: int = 0, cache_dir=None, progress: bool = False, echo=lambda *a: None,
           return_features: bool = False) -> dict:
    """Assess a source/target pair and candidate backbones; return the ``assess.json`` dict.

    Parameters
    ----------
    source, target
        Dataset specs or :class:`~transferkit.data.DomainDataset` objects.
    backbones
        Backbone names; the first defines the feature space of the divergences. ``"none"``
        uses raw (tabular) inputs.
    image_size
        Input side for image backbones.
    divergences
        Registered divergence names.
    n_permutations
        Permutations of the MMD test.
    max_samples
        Per-domain subsample (seeded) for the divergences.
    seed
        Seeds every random choice.
    return_features
        Add ``"features"``: the source and target features of the divergences' subsample
        with their labels (arrays, for the report's t-SNE; remove the key before writing JSON).
    """
    from .data.spec import load_dataset
    from .diagnostics import ben_david_bound

    backbones, image_size, n_permutations, max_samples, seed = _check_args(
        backbones=backbones, image_size=image_size, n_permutations=n_permutations, max_samples=max_samples, seed=seed)
    t0 = time.perf_counter()
    src = load_dataset(source) if not hasattr(source, "inputs") else source
    tgt = load_dataset(target) if not hasattr(target, "inputs") else target
    if src.modality != tgt.modality:
        raise DataError(f"source is {src.modality} and target is {tgt.modality}; assess needs one modality.")
    rng = np.random.default_rng(seed)
    models = _build_backbones(backbones, image_size, seed)
    primary = backbones[0]
    echo(f"embedding {src.name} ({len(src)}) and {tgt.name} ({len(tgt)}) with {primary} ...")
    Fs = embed(models[primary], src, cache_dir=cache_dir, progress=progress)
    Ft = embed(models[primary], tgt, cache_dir=cache_dir, progress=progress)
    if Fs.shape[1] != Ft.shape[1]:
        raise DataError(f"source and target features differ in dimension ({Fs.shape[1]} vs {Ft.shape[1]}).")

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
    if src.labels is not None and tgt.labels is not None and _labeled(src).size and _labeled(tgt).size:
        from .metrics.divergence import label_shift

        k = max(src.n_classes, tgt.n_classes)
        div["label_shift"] = label_shift(src.labels[_labeled(src)], tgt.labels[_labeled(tgt)], k).to_dict()

    # ---- transferability of each backbone on the labeled target
    trans: dict[str, dict] = {}
    lt = _labeled(tgt)
    if len(lt) >= 2 and len(np.unique(tgt.labels[lt])) >= 2:
        for name, model in models.items():
            F = Ft if name == primary else embed(model, tgt, cache_dir=cache_dir, progress=progress)
            scores = backbone_scores(model, F[lt], tgt.labels[lt], seed=seed)
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
        source_only = float((clf.predict(Ft[lt]) == tgt.labels[lt]).mean())
        try:
            bound = ben_david_bound(Fs[ls], src.labels[ls], Ft[lt], tgt.labels[lt],
                                    a_distance=div.get("a_distance", {}).get("value"), seed=seed)
        except ValueError as exc:
            bound = {"estimate": None, "note": f"not estimated: {exc}"}
    n_per_class = None
    if len(lt):
        n_per_class = int(np.bincount(tgt.labels[lt]).min())
    verdict = make_verdict(div, trans, source_only, n_per_class, len(lt))
    extra = {}
    if return_features:
        extra["features"] = {"source": S, "target": T, "y_source": src.labels[iS] if src.labels is not None else None,
                             "y_target": tgt.labels[iT] if tgt.labels is not None else None,
                             "classes": tgt.classes, "desc": f"{primary} features"}
    return {
        "source": src.spec or src.name,
        "target": tgt.spec or tgt.name,
        "n_source": len(src),
        "n_target": len(tgt),
        "n_target_labeled": int(len(lt)),
        "backbones": list(backbones),
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
        reasons.append(f"a source-only linear model reaches {source_only:.2f} accuracy on the labeled target")
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


def format_assessment(res: dict) -> str:
    """Tables for the terminal: divergences, transferability, bound, verdict."""
    lines = [f"source: {res['source']}  ({res['n_source']} samples)",
             f"target: {res['target']}  ({res['n_target']} samples, {res['n_target_labeled']} labeled)",
             f"feature space: {res['feature_space']}", "", f"{'divergence':<22}{'value':>12}{'p-value':>12}  note"]
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
        for b, sc in res["transferability"].items():
            lines.append(f"{b:<26}" + "".join(f"{sc[n]['value']:>18.4g}" if n in sc else f"{'-':>18}" for n in names))
    if res.get("source_only_accuracy") is not None:
        lines += ["", f"source-only accuracy on the labeled target: {res['source_only_accuracy']:.3f}"]
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
