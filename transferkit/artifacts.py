"""What a run directory keeps so that its report can be regenerated without retraining.

Two small files per (strategy, seed) run, written by the experiment runner after ``fit``:

``predictions.npz``
    ``y_true`` and ``y_pred`` (int64, the test split, every sample) and ``classes`` (class
    names as a unicode array; empty when the dataset has none). The confusion matrix is
    computed from it.
``features.npz`` (the first seed of each strategy only)
    A seeded subsample of at most ``n_per_domain`` test-split target samples and as many
    source samples, embedded *before* adaptation (the starting backbone: the pretrained one, or
    the frozen backbone of a cached-feature strategy) and *after* it (the fine-tuned backbone,
    or the adapter's bottleneck). Each set is stored as its projection on the first 50
    principal components of the pooled source + target rows (float32): t-SNE is run on 50
    principal components anyway (van der Maaten & Hinton 2008 recommend the same), and the
    file stays around 100 KB. Keys: ``before_source``, ``before_target``, ``after_source``,
    ``after_target`` (each present only where it applies), ``y_source``, ``y_target``,
    ``classes``, and ``before_desc``/``after_desc`` describing each space.

What "before" and "after" are, per strategy (read from fitted attributes, no method needed):

- a strategy on cached frozen features (``feature_extraction``, ``adapt``, ``two_stage``)
  has ``extractor_``: before = those backbone features; after = the adapter's bottleneck
  features (``model_.features``) when it has an adapter, else none (nothing was adapted);
- a fine-tuned model (``finetune``, ``scratch``) has ``model_.backbone``: after = the trained
  backbone's features; before = a freshly created pretrained backbone's features when the
  strategy starts from pretrained weights (``scratch`` starts from random weights: no before).

The experiment runner writes these files and the report reads them, so this module sits below
both (and above ``strategies`` and ``features``, which it uses to embed the samples);
``transferkit.reports.artifacts`` re-exports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PREDICTIONS = "predictions.npz"
FEATURES = "features.npz"
PCA_COMPONENTS = 50


def save_predictions(strategy, test, run_dir: str | Path, y_pred=None) -> Path:
    """Write ``predictions.npz`` (test labels and predictions) into ``run_dir``; ``y_pred``:
    the strategy's predictions on ``test`` when the caller already has them."""
    y_pred = np.asarray(strategy.predict(test) if y_pred is None else y_pred, dtype=np.int64)
    y_true = np.asarray(test.labels if test.labels is not None else np.full(len(test), -1), dtype=np.int64)
    classes = np.array([str(c) for c in (test.classes or [])], dtype=str)
    path = Path(run_dir) / PREDICTIONS
    _save_npz(path, y_true=y_true, y_pred=y_pred, classes=classes)
    return path


def _subsample(n: int, k: int, rng) -> np.ndarray:
    return np.sort(rng.choice(n, size=k, replace=False)) if n > k else np.arange(n)


def _module_device(module):
    try:
        return next(module.parameters()).device
    except StopIteration:
        return "cpu"


def strategy_features(strategy, dataset) -> tuple[np.ndarray | None, np.ndarray | None, str, str]:
    """``(before, after, before_desc, after_desc)`` features of ``dataset`` for a fitted strategy
    (see the module docstring); either array may be ``None``."""
    import torch

    from .features import FeatureExtractor

    model = getattr(strategy, "model_", None)
    extractor = getattr(strategy, "extractor_", None)
    if extractor is not None:
        before = extractor.transform(dataset)
        after, adesc = None, ""
        if model is not None and hasattr(model, "bottleneck") and hasattr(model, "features"):
            was = model.training
            model.eval()
            with torch.no_grad():
                dev = _module_device(model)
                after = model.features(torch.as_tensor(before, dtype=torch.float32, device=dev)).float().cpu().numpy()
            model.train(was)
            adesc = "adapter bottleneck features"
        return before, after, "frozen backbone features", adesc
    if model is not None and hasattr(model, "backbone"):
        bb = model.backbone
        after = FeatureExtractor(bb, cache_dir=False, device=_module_device(bb)).fit().transform(dataset)
        before, bdesc = None, ""
        if getattr(strategy, "pretrained", False):
            from .strategies.base import resolve_backbone

            # seeded as the strategy seeded its own start (FineTune._build_model), so a randomly
            # initialized "pretrained" backbone is the same one; the caller's RNG state is kept
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(getattr(strategy, "seed", 0))
                start = resolve_backbone(strategy.backbone, True, getattr(strategy, "image_size", None))
            before = FeatureExtractor(start, cache_dir=False).fit().transform(dataset)
            bdesc = "pretrained backbone features"
        return before, after, bdesc, "fine-tuned backbone features"
    return None, None, "", ""


def _pca(source: np.ndarray | None, target: np.ndarray, seed: int) -> tuple[np.ndarray | None, np.ndarray]:
    from sklearn.decomposition import PCA

    from ._compat import one_blas_thread

    X = target if source is None else np.vstack([source, target])
    k = int(min(PCA_COMPONENTS, X.shape[1], len(X)))
    with one_blas_thread():
        Z = PCA(k, svd_solver="full", random_state=seed).fit_transform(X.astype(np.float64)).astype(np.float32)
    if source is None:
        return None, Z
    return Z[: len(source)], Z[len(source):]


def save_features(strategy, test, run_dir: str | Path, *, source=None, n_per_domain: int = 300,
                  seed: int = 0) -> Path | None:
    """Write ``features.npz`` (see the module docstring) into ``run_dir``; ``None`` when the
    strategy exposes no features."""
    rng = np.random.default_rng(seed)
    tgt = test.subset(_subsample(len(test), n_per_domain, rng))
    src = None
    if source is not None:
        lab = np.flatnonzero(source.labeled_mask) if source.labels is not None else np.arange(len(source))
        src = source.subset(lab[_subsample(len(lab), n_per_domain, rng)])
    out: dict[str, np.ndarray] = {}
    bt, at, bdesc, adesc = strategy_features(strategy, tgt)
    if bt is None and at is None:
        return None
    bs = as_ = None
    if src is not None:
        bs, as_, _, _ = strategy_features(strategy, src)
    for stage, s, t, desc in (("before", bs, bt, bdesc), ("after", as_, at, adesc)):
        if t is None:
            continue
        ps, pt = _pca(s, t, seed)
        out[f"{stage}_target"] = pt
        if ps is not None:
            out[f"{stage}_source"] = ps
        out[f"{stage}_desc"] = np.array(desc)
    out["y_target"] = np.asarray(tgt.labels if tgt.labels is not None else np.full(len(tgt), -1), dtype=np.int64)
    if src is not None:
        out["y_source"] = np.asarray(src.labels, dtype=np.int64)
    out["classes"] = np.array([str(c) for c in (test.classes or [])], dtype=str)
    path = Path(run_dir) / FEATURES
    _save_npz(path, **out)
    return path


def save_domain_features(run_dir: str | Path, source: np.ndarray, target: np.ndarray, y_source=None, y_target=None,
                         classes=None, desc: str = "features", *, n_per_domain: int = 300, seed: int = 0) -> Path:
    """Write ``features.npz`` for two feature matrices (``assess``: the domains before any
    adaptation): a seeded subsample of ``n_per_domain`` rows per domain, PCA-50."""
    rng = np.random.default_rng(seed)
    i_s, i_t = _subsample(len(source), n_per_domain, rng), _subsample(len(target), n_per_domain, rng)
    ps, pt = _pca(np.asarray(source)[i_s], np.asarray(target)[i_t], seed)

    def labels(y, idx):
        return np.full(len(idx), -1, dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)[idx]

    path = Path(run_dir) / FEATURES
    _save_npz(path, before_source=ps, before_target=pt, before_desc=np.array(desc), y_source=labels(y_source, i_s),
              y_target=labels(y_target, i_t), classes=np.array([str(c) for c in (classes or [])], dtype=str))
    return path


def save_run_artifacts(strategy, run_dir: str | Path, test, *, source=None, features: bool = True,
                       seed: int = 0, y_pred=None) -> None:
    """The experiment runner's one call: predictions always, features when ``features``, and
    ``metrics.jsonl`` from the strategy's ``history_`` when its training loop wrote none (the
    feature-space adapters train outside the Trainer)."""
    save_predictions(strategy, test, run_dir, y_pred=y_pred)
    hist = getattr(strategy, "history_", None)
    mfile = Path(run_dir) / "metrics.jsonl"
    if hist and not mfile.exists():
        import json

        from .train.rundir import write_text

        write_text(mfile, "".join(json.dumps(_plain(r)) + "\n" for r in hist))
    if features:
        try:
            save_features(strategy, test, run_dir, source=source, seed=seed)
        except Exception as exc:  # a report extra must never cost a finished run
            import warnings

            warnings.warn(f"{run_dir}: features for the report's t-SNE not saved ({type(exc).__name__}: {exc}); "
                          "the report will skip that plot.", RuntimeWarning, stacklevel=2)


def _plain(row: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()
            if isinstance(v, (int, float, str, bool, type(None))) or hasattr(v, "item")}


#: Bounds of what the report reads from an ``.npz`` (the files written here are ~100 KB).
MAX_NPZ_BYTES = 256 << 20


def load_npz(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """An ``.npz`` written here, read without pickle (``allow_pickle=False``: a pickle, or an
    archive holding object arrays, is refused and never unpickled). Every problem is a one-line
    :class:`~transferkit.errors.DataError` naming the file; ``required``: keys it must hold."""
    import zipfile

    from .errors import DataError

    p = Path(path)
    fix = "delete it and re-run the command that wrote it (or restore it from a copy)"
    try:
        size = p.stat().st_size
        if size > MAX_NPZ_BYTES:
            raise DataError(f"{p}: {size:,} bytes is too large for a report artifact; {fix}.")
        with open(p, "rb") as fh:
            head = fh.read(4)
        if head[:1] == b"\x80":
            raise DataError(f"{p}: is a pickle, not an .npz archive; transferkit never unpickles files: {fix}.")
        z = np.load(p, allow_pickle=False)
        if not hasattr(z, "files"):  # a single .npy array
            raise DataError(f"{p}: is a single .npy array, not an .npz archive; {fix}.")
        with z:
            out = {k: z[k] for k in z.files}
    except DataError:
        raise
    except ValueError as exc:
        why = ("it holds pickled objects, which transferkit never loads" if "pickle" in str(exc).lower()
               else " ".join(str(exc).split())[:160])
        raise DataError(f"{p}: cannot be read as an .npz archive ({why}); {fix}.") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as exc:
        raise DataError(f"{p}: is damaged or not an .npz archive ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:160]}); {fix}.") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise DataError(f"{p}: has no {', '.join(map(repr, missing))} (it holds {sorted(out)[:8]}); {fix}.")
    return out


def _save_npz(path: Path, **arrays) -> None:
    from ._io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez_compressed(f, **arrays)
