"""Run an experiment: every strategy x every seed on the same target splits, one table.

Baselines are first-class: ``scratch`` trains under the same budget and splits as the method
it is compared with. Model selection uses the labeled validation split only; the test split
is scored once, after ``fit``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from . import _dist
from ._faults import fault_point
from ._registry import get
from .config import ExperimentConfig, check_seeds
from .errors import ConfigError, DataError


def make_splits(target, split=None, seed: int = 0, load=None, **split_options) -> tuple:
    """``(train, val, test)`` datasets from the target.

    ``split`` is a :class:`transferkit.config.SplitConfig`, or give its fields as keywords:
    ``make_splits(target, labels_per_class=10, val_fraction=0.5, seed=0)``. ``val``/``test``
    of ``None`` are possible (``val_fraction=0``; ``test`` is ``None`` for a target without
    labels and no ``split.test``: a label-free run). A test split that is the unlabeled training
    rows themselves (``unlabeled_fraction=1`` without ``split.test``) has
    ``test.meta["transductive"]``.
    """
    from .config import SplitConfig
    from .data import sample_per_class, sample_prior_matched, stratified_split

    if split is None:
        split = SplitConfig(**split_options)
        split.validate()

    if target.labels is None or not (target.labels >= 0).any():
        return _unlabeled_splits(target, split, load)
    idx = np.flatnonzero(target.labels >= 0)
    y = target.labels[idx]
    if split.labels_per_class == 0:
        tr, rest = np.array([], dtype=int), np.arange(len(y))
    elif split.labels_per_class is not None and split.label_draw == "prior":
        tr, rest = sample_prior_matched(y, split.labels_per_class * len(np.unique(y)), seed, dataset=target.name)
    elif split.labels_per_class is not None:
        tr, rest = sample_per_class(y, split.labels_per_class, seed, dataset=target.name)
    else:
        tr, rest = stratified_split(y, [split.train_fraction, 1 - split.train_fraction], seed, dataset=target.name)
    if split.unlabeled_fraction > 0:  # part (or all) of the rest trains with its labels hidden (domain adaptation)
        if split.unlabeled_fraction >= 1:
            unl, rest = rest, np.array([], dtype=int)
        else:
            un, rest2 = stratified_split(y[rest], [split.unlabeled_fraction, 1 - split.unlabeled_fraction], seed,
                                         dataset=target.name)
            unl, rest = rest[un], rest[rest2]
        order = np.r_[tr, unl]
        train = target.subset(idx[order], name=f"{target.name}/train")
        train.labels = np.where(np.arange(len(order)) < len(tr), train.labels, -1)
        if split.unlabeled_fraction >= 1 and split.test is None:
            # the transductive protocol: scored on the rows it adapted on, labels unseen
            if len(unl) == 0:
                raise DataError(f"target {target.name!r}: split.unlabeled_fraction=1 leaves no unlabeled rows to adapt "
                                "on and score; use fewer labels per class or give split.test.")
            test = target.subset(idx[unl], name=f"{target.name}/test (= the unlabeled training rows)")
            test.meta = {**(test.meta or {}), "transductive": True}
            return train, load(split.val) if split.val is not None else None, test
    else:
        train = target.subset(idx[tr], name=f"{target.name}/train")
    rest_idx = idx[rest]
    val = test = None
    if split.val is not None:
        val = load(split.val)
    if split.test is not None:
        test = load(split.test)
    if val is None and test is None:
        if split.val_fraction > 0:
            va, te = stratified_split(target.labels[rest_idx], [split.val_fraction, 1 - split.val_fraction], seed)
            val, test = target.subset(rest_idx[va], name=f"{target.name}/val"), target.subset(rest_idx[te], name=f"{target.name}/test")
        else:
            test = target.subset(rest_idx, name=f"{target.name}/test")
    elif test is None:
        test = target.subset(rest_idx, name=f"{target.name}/test")
    elif val is None and split.val_fraction > 0:
        val = target.subset(rest_idx, name=f"{target.name}/val")
    if test is None or len(test) == 0:
        fix = ("give a labeled test file with split.test, or lower split.unlabeled_fraction" if split.unlabeled_fraction
               else "use fewer labels per class")
        raise DataError(f"target {target.name!r}: no samples left for the test split; {fix}.")
    if split.labels_per_class is None and not (train.labels >= 0).any():
        raise DataError(f"target {target.name!r}: split.train_fraction={split.train_fraction} leaves no labeled "
                        f"training samples out of {len(y)}; raise train_fraction (e.g. 0.6) or set labels_per_class.")
    return train, val, test


def _unlabeled_splits(target, split, load):
    """The splits of a target without labels: every row adapts (labels hidden: there are none);
    the test split is ``split.test`` (a labeled file) or, without one, ``None``: the run is then
    label-free (it reports what can be measured without labels, and says so)."""
    if split.labels_per_class:
        raise DataError(
            f"target {target.name!r} has no labels, so split.labels_per_class={split.labels_per_class} cannot be "
            "drawn; for domain adaptation on the unlabeled target leave labels_per_class out (or 0), or give the "
            "label column (e.g. target.csv:label=COLUMN).")
    train = target.subset(np.arange(len(target)), name=f"{target.name}/train")
    train.labels = np.full(len(train), -1, dtype=np.int64)
    val = load(split.val) if split.val is not None else None
    test = load(split.test) if split.test is not None else None
    if test is not None and (test.labels is None or not (test.labels >= 0).any()):
        raise DataError(f"split.test {test.name!r} has no labels; the test file must hold the label column "
                        "(or leave split.test out for a label-free run).")
    return train, val, test


def _selection_note(runs: list[dict]) -> str:
    """How each strategy chose its model, for the results header (test is always scored once)."""
    default = "labeled target validation split"
    per = {}
    for r in runs:
        per.setdefault(r.get("strategy", r.get("method")), r.get("selection", default))
    kinds = set(per.values())
    scored = ("no labeled test split: label-free run" if runs and all(r.get("accuracy") is None for r in runs)
              else "test split scored once after fit")
    if runs and all(r.get("protocol") == "transductive" for r in runs):
        scored += " (transductive: the test split is the unlabeled rows adapted on, their labels unseen until scoring)"
    if kinds <= {default}:
        return f"{default} (best epoch / C); {scored}"
    parts = "; ".join(f"{k}: {v}" for k, v in per.items())
    return f"{parts}; {scored}"


def _backbone_factory(cfg: ExperimentConfig):
    b = cfg.backbone

    def factory(pretrained: bool = True):
        return b.build(pretrained=pretrained)

    factory.name = b.name
    return factory


def _check_inputs(what: str, ds, factory):
    """Build the backbone once and run it on two samples of ``ds``: an unknown backbone, unsafe
    or mismatched weights, the wrong modality or input width fail here, before anything is
    written (and before ``--overwrite`` replaces an old run). Returns the built backbone (the
    strategies' parameters are checked against its layer groups). The global RNGs are left as
    they were (a random initialisation here must not shift what the runs draw)."""
    import torch

    from .errors import TransferKitError

    with torch.random.fork_rng(devices=[]):
        bb = factory(pretrained=True)
    modality = getattr(getattr(bb, "spec", None), "modality", None)
    if modality is not None and modality != ds.modality:
        raise ConfigError(
            f"backbone {factory.name!r} takes {modality} inputs but the {what} {ds.name!r} is {ds.modality}; "
            f"choose {'an' if ds.modality[0] in 'aeiou' else 'a'} {ds.modality} backbone (see 'transferkit list backbones').")
    check_backbone_input(bb, what, ds, factory.name)
    return bb


def check_backbone_input(bb, what: str, ds, name: str) -> None:
    """``bb`` must process ``ds`` as it is: the table's column count against the backbone's
    input width, then two real samples through the network, whose output width must be the
    backbone's feature width (an identity backbone passes any width through silently)."""
    import torch

    from .errors import TransferKitError

    modality = getattr(getattr(bb, "spec", None), "modality", None)
    extra = getattr(getattr(bb, "spec", None), "extra", None) or {}
    inp = ds.inputs
    if ds.modality == "tabular" and "in_features" in extra and np.ndim(inp) == 2:
        width = int(np.shape(inp)[1])
        if width != int(extra["in_features"]):
            cols = (ds.meta or {}).get("feature_columns")
            shown = f" ({', '.join(map(str, cols[:6]))}{', ...' if len(cols) > 6 else ''})" if cols else ""
            raise DataError(
                f"the {what} {ds.name!r} has {width} feature columns{shown} but backbone {name!r} takes "
                f"in_features={extra['in_features']}; leave backbone.options.in_features out (it is taken from the "
                f"data) or set it to {width}.")
    raw = inp[:2] if isinstance(inp, np.ndarray) else [inp[i] for i in range(min(2, len(inp)))]
    try:
        with torch.no_grad():
            bb.eval()
            out = bb(bb.preprocess(raw))
    except TransferKitError:
        raise
    except Exception as exc:  # shape mismatches surface as RuntimeError/ValueError from torch
        raise DataError(
            f"backbone {name!r} cannot process the {what} {ds.name!r} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); check the input size or feature count "
            "(e.g. backbone.options.in_features) against the data.") from None
    dim = getattr(getattr(bb, "spec", None), "feature_dim", None)
    if isinstance(out, torch.Tensor) and out.ndim == 2 and dim and out.shape[1] != dim and modality == ds.modality:
        raise DataError(f"backbone {name!r} gives {out.shape[1]} features for the {what} {ds.name!r} but declares "
                        f"{dim}; check backbone.options against the data.")


def _check_domains(source, target) -> None:
    """Source and target must live in the same input space (and the source needs labels)."""
    if source is None:
        return
    if source.modality != target.modality:
        raise DataError(f"source {source.name!r} is {source.modality} but target {target.name!r} is "
                        f"{target.modality}; give both domains in the same modality.")
    if source.modality == "tabular":
        ds, dt = np.shape(source.inputs)[1], np.shape(target.inputs)[1]
        if ds != dt:
            raise DataError(
                f"source {source.name!r} has {ds} features but target {target.name!r} has {dt}; both domains "
                "need the same feature columns (select them with features=[...] in the dataset spec).")
        cs, ct = (source.meta or {}).get("feature_columns"), (target.meta or {}).get("feature_columns")
        if cs and ct and list(cs) != list(ct):
            diff = next(i for i, (a, b) in enumerate(zip(cs, ct)) if a != b)
            how = ("in another order" if sorted(cs) == sorted(ct)
                   else f"column {diff + 1} is {cs[diff]!r} in the source but {ct[diff]!r} in the target")
            raise DataError(
                f"source {source.name!r} and target {target.name!r} have different feature columns ({how}); a "
                "model reads columns by position, so list the same columns in the same order with "
                "features=[...] in both dataset specs.")


def _pool_sources(sources: list, target):
    """``sources: [...]`` -> one pooled dataset (what single-source strategies train on) whose
    ``meta["source_datasets"]`` holds the list (what the multi-source strategies receive)."""
    from .adapt.multi_domain import check_sources
    from .data import concat_datasets

    check_sources(sources)
    for s in sources:
        if target is not None:
            _check_domains(s, target)
    pooled = concat_datasets(sources)
    pooled.meta["source_datasets"] = list(sources)
    pooled.spec = " + ".join(str(s.spec or s.name) for s in sources)
    return pooled


def pooled_sources(specs, target=None, load_dataset=None):
    """The datasets of ``sources: [...]`` specs, checked and pooled (see ``validate_run``); with
    ``target``, each is also checked against it."""
    if load_dataset is None:
        from .data.spec import load_dataset
    return _pool_sources([load_dataset(s) for s in specs], target)


def source_datasets(source) -> list:
    """The sources behind ``source``: the ``sources: [...]`` list, or ``[source]``."""
    return list((source.meta or {}).get("source_datasets") or [source])


def check_label_spaces(strategy, key: str, source, target) -> None:
    """A closed-set strategy (the label space of the source covers the target's: ``label_space =
    "closed"``) cannot predict a target class the labeled source never shows; the error names
    the classes and the strategies that handle the case. A partial target (fewer classes than
    the source) is allowed: closed-set methods run, the partial ones (``pada``, ``ba3us``)
    expect it. Reads the target's labels only to compare the two label spaces."""
    if getattr(strategy, "label_space", None) != "closed" or target.labels is None or source.labels is None:
        return
    have = set(np.unique(source.labels[source.labels >= 0]).tolist())
    want = set(np.unique(target.labels[target.labels >= 0]).tolist())
    extra = sorted(want - have)
    if not extra or not have:
        return
    names = target.classes or source.classes
    shown = [names[i] if names is not None and i < len(names) else str(i) for i in extra]
    raise DataError(
        f"strategy {key!r} is closed-set, but target {target.name!r} has {len(extra)} class(es) the labeled source "
        f"{source.name!r} never shows ({', '.join(map(str, shown[:8]))}{' ...' if len(shown) > 8 else ''}); it could "
        "never predict them. If the target holds classes the source lacks, use the open_set strategy (an 'unknown' "
        "output); if the target's classes are a subset of the source's, partial adaptation (adapt with method: pada "
        "or ba3us) applies.")


def _load_or_none(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _kept_result(path: Path, key: str, seed: int) -> dict | None:
    """A finished run's ``result.json`` when it is one this run would have written (its
    strategy and seed, finite accuracies in [0, 1], counts and times of the right types); else
    ``None`` (the run is trained again) and, when the file exists, a warning naming it. A run
    directory received from someone else is checked like any other input."""
    import math
    import warnings

    from .errors import TransferKitWarning

    if not path.is_file():
        return None
    row = _load_or_none(path)

    def number(v, high=math.inf, types=(int, float), none_ok=False):
        if v is None:
            return none_ok
        return isinstance(v, types) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= high

    ok = (isinstance(row, dict) and row.get("strategy") == key and row.get("seed") == seed
          and number(row.get("accuracy"), 1, none_ok=True) and number(row.get("val_accuracy"), 1, none_ok=True)
          and number(row.get("train_accuracy"), 1, none_ok=True) and number(row.get("train_time"))
          and all(number(row.get(k), types=int) for k in ("trainable_params", "n_train", "n_val", "n_test"))
          and number(row.get("best_epoch"), types=int, none_ok=True) and isinstance(row.get("method"), str)
          and isinstance(row.get("selection"), str))
    if not ok:
        warnings.warn(f"{str(path)!r} is not a valid result of {key!r} seed {seed} (tampered or damaged); that run "
                      "is trained again.", TransferKitWarning, stacklevel=2)
        return None
    return row


def resume_experiment(out_dir: str | Path, *, echo=print, on_run=None) -> dict:
    """Continue an interrupted :func:`run_experiment` in ``out_dir`` with its stored config.

    Runs whose ``result.json`` exists are kept; the interrupted run continues from its
    ``checkpoint.pt`` (strategies trained by the :class:`~transferkit.train.Trainer`; those
    without one, e.g. feature extraction with a closed-form head, are simply run again);
    runs not started yet are run; then the summary is written.
    """
    from .config import load_config
    from .train.rundir import completed, locate_resume

    final = Path(out_dir)
    out = locate_resume(final, "config.yaml", "run", "transferkit run CONFIG --out DIR", echo=echo)
    res = completed(out, "results.json", "summary") if out == final else None
    if res is not None:
        echo(f"{out} is complete; nothing to resume.")
        return res
    return run_experiment(load_config(out / "config.yaml"), final, resume=True, echo=echo, on_run=on_run)


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path | None = None, *, overwrite: bool = False,
                   echo=print, on_run=None, resume: bool = False, report_features: bool = True,
                   inputs=()) -> dict:
    """Run ``cfg``; write ``results.json``, ``results.md``, the resolved config and the
    environment under ``out_dir``; return the results dict.

    ``results["summary"][strategy]`` holds ``accuracy_mean``, ``accuracy_std`` (sample std
    over seeds, ``ddof=1``), ``n_seeds``, ``val_accuracy_mean``, ``train_time_mean`` and
    ``trainable_params``.

    ``on_run(strategy, row, (train, val, test))``, when given, is called after each fit while
    the fitted strategy is still in memory (the diagnostics read its history and model there).

    Nothing is written before the data, every seed's splits, the backbone and every
    strategy's parameters have been checked, so bad input leaves the disk as it was. The
    output directory obeys :func:`transferkit.train.rundir.open_run_dir`: never the working
    directory or a folder holding an input (the config's paths and ``inputs``), one writer at
    a time, and ``overwrite`` builds the new run beside the old one and swaps it in only when
    it is complete (a failing run leaves the old one byte-identical). Warnings of the
    :class:`~transferkit.errors.TransferKitWarning` kind are printed and stored in
    ``results["warnings"]``.
    Every file is written atomically; ``out_dir/.incomplete`` (and the same marker in each
    strategy/seed folder) stays until that part is complete. ``resume=True`` continues an
    interrupted run in ``out_dir`` (see :func:`resume_experiment`, which also reads the stored
    config): finished (strategy, seed) runs are read back from their ``result.json`` (and
    ``on_run`` is not called for them), the interrupted one continues from its checkpoint.

    Each run directory also gets ``predictions.npz`` (test labels and predictions) and, for the
    first seed when ``report_features``, ``features.npz`` (a small PCA-50 subsample of source
    and target features before/after adaptation), so that :func:`transferkit.reports.write_report`
    can draw confusion matrices and t-SNE plots without retraining.
    """
    import warnings

    t_start = time.perf_counter()
    recorded: list[str] = []
    with warnings.catch_warnings():
        _record_warnings(recorded)
        return _run_experiment(cfg, out_dir, overwrite=overwrite, echo=echo, on_run=on_run, resume=resume,
                               report_features=report_features, inputs=inputs, t_start=t_start, recorded=recorded)


def _record_warnings(into: list[str]) -> None:
    """Inside a ``warnings.catch_warnings()`` block: every :class:`TransferKitWarning` is
    appended (once) to ``into`` (results.json's ``warnings``) and shown once; every warning is
    shown by the handler in place (the CLI's prints one ``transferkit: warning:`` line)."""
    import warnings

    from .errors import TransferKitWarning

    warnings.simplefilter("always", TransferKitWarning)
    show = warnings.showwarning

    def _show(message, category, filename, lineno, file=None, line=None):
        if isinstance(category, type) and issubclass(category, TransferKitWarning):
            text = " ".join(str(message).split())
            if text in into:
                return
            into.append(text)
        show(message, category, filename, lineno, file, line)  # the CLI prints one sanitized line

    warnings.showwarning = _show


def member_keys(cfg: ExperimentConfig) -> dict[str, list[str]]:
    """``{combiner key: its member keys}`` for the strategies that combine others (an
    ``ensemble``, ``uses_members``), checked by :func:`validate_run`."""
    keys = [s.key for s in cfg.strategies]
    classes = [get("strategy", s.name) for s in cfg.strategies]
    takers = {k for k, cls in zip(keys, classes) if getattr(cls, "uses_members", False)}
    ensembles = {k for k, cls in zip(keys, classes) if getattr(cls, "combines_predictions", False)}
    return {k: cls(**dict(s.params)).resolve_members(keys, i, ensembles)
            for i, (k, s, cls) in enumerate(zip(keys, cfg.strategies, classes)) if k in takers}


def _load_fitted(run_dir: Path, cls, scfg, cfg: ExperimentConfig, seed: int, factory):
    """The fitted strategy of a finished run folder (``model.safetensors``), as ``load_run``
    rebuilds it: an ensemble's member kept by a resumed run, which is not in memory."""
    from ._io import read_model_file

    path = run_dir / "model.safetensors"
    state, meta = read_model_file(path, "the kept run's model is damaged: run it again (--overwrite).")
    strat = _make_strategy(cls, scfg, cfg, seed, factory)
    strat.load_state(state, meta, where=str(path))
    return strat


def _make_strategy(cls, scfg, cfg: ExperimentConfig, seed: int, factory):
    """The strategy of one (strategy, seed) run, with the experiment-wide options."""
    params = dict(scfg.params)
    params.setdefault("seed", seed)
    common = {"cache_dir": cfg.cache_dir, "device": cfg.device, "progress": cfg.progress}
    for k, v in common.items():
        if v is not None:
            params.setdefault(k, v)
    return cls(backbone=factory, **params)


def _class_name(ds, c: int):
    names = getattr(ds, "classes", None)
    return names[c] if names is not None and c < len(names) else c


def _open_set_row(strat, test, y_test) -> dict:
    """OS, OS*, UNK and the H-score of an open-set strategy on the test split (a target class the
    source never shows counts as "unknown"); a score a test split cannot define (UNK and H when it
    holds no unknown class) is ``None``."""
    r = strat.open_set_report(test, y_pred=y_test)
    vals = {"h_score": r.value, **{k: r.details.get(k) for k in ("os", "os_star", "unk")},
            "n_unknown": r.details.get("n_unknown")}
    return {k: (float(v) if isinstance(v, (int, float)) and np.isfinite(v) else None) for k, v in vals.items()}


def _run_extras(strat, train, seed: int) -> dict:
    """What a run reports beyond accuracy: the label-shift estimate when the strategy corrects
    for one, and the label-free view of its predictions on the unlabeled target training rows
    (the only target evidence a run without target labels has): mean prediction entropy,
    predicted class shares, and the unsupervised selection score of the kept checkpoint."""
    out: dict = {}
    if getattr(strat, "ensemble_", None):  # members, their weights and validation NLLs
        out["ensemble"] = strat.ensemble_
    est = getattr(strat, "label_shift_", None)
    if est is not None:
        out["label_shift"] = est.to_dict()
    diag = getattr(strat, "estimator_diagnostics_", None)
    if diag:  # a shallow estimator's convergence, effective sample size, subsampling
        out["estimator"] = {k: (v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v))
                            for k, v in diag.items()}
    unl = np.flatnonzero(train.labels < 0) if train.labels is not None else np.arange(len(train))
    if len(unl) == 0:
        return out
    from .metrics.information import prediction_entropy

    P = strat.predict_proba(train.subset(unl, name=f"{train.name}/unlabeled"))
    h = prediction_entropy(P)
    hist, best = getattr(strat, "history_", None) or [], getattr(strat, "best_epoch_", None)
    score = next((r.get("score") for r in hist if r.get("epoch") == best), None) if best is not None else None
    out["label_free"] = {
        "n_rows": int(len(unl)),
        "entropy_mean": float(np.mean(h)),
        "entropy_max": float(np.log(P.shape[1])),
        "predicted_priors": [float(v) for v in np.bincount(P.argmax(1), minlength=P.shape[1]) / len(P)],
        "selection_score": float(score) if isinstance(score, (int, float)) and np.isfinite(score) else None,
        "predictions": P.argmax(1),
    }
    return out


def _warn_run(key: str, seed: int, strat, y_pred, scored, labeled: bool) -> list[str]:
    """:class:`TransferKitWarning` lines for a fitted run whose result may not mean what its
    accuracy suggests (see :mod:`transferkit.train.health`): one class predicted for (nearly)
    every sample, validation loss rising for many epochs, the first epoch selected, an
    adaptation loss that stayed near zero. Returns the messages (also stored in the row)."""
    import warnings

    from .errors import TransferKitWarning
    from .train import health

    msgs = []
    n_classes = int(getattr(strat, "n_classes_", 0) or 0) or (len(scored.classes) if scored.classes else 0)
    lab = scored.labels >= 0 if (labeled and scored.labels is not None) else None
    true = None
    pred = np.asarray(y_pred)
    if lab is not None and lab.any():
        true = scored.labels[lab]
        n_classes = max(n_classes, int(true.max()) + 1)
    top = health.collapsed_prediction(pred, n_classes)
    if top is not None:
        c, frac = top
        share = float((true == c).mean()) if true is not None else None
        if share is None or share < health.COLLAPSE_SHARE:
            what = "test samples" if true is not None else "target rows"
            tail = (f" (the class is {share:.0%} of them): its accuracy is about that share, not evidence of learning"
                    if share is not None else "")
            msgs.append(f"{key} (seed {seed}) predicts class {_class_name(scored, c)!r} for {frac:.0%} of the {what}"
                        f"{tail}; check the class balance, lr and epochs, or the method's options.")
    hist = getattr(strat, "history_", None) or []
    rising = health.rising_validation_loss(hist)
    if rising:
        msgs.append(f"{key} (seed {seed}): {rising}; the kept checkpoint is the best one, but the run overfits or its "
                    "lr is too high: try fewer epochs, a lower lr or early_stopping.")
    first = health.first_epoch_selected(hist, getattr(strat, "best_epoch_", None))
    if first:
        msgs.append(f"{key} (seed {seed}): {first}: training never improved the selection score "
                    f"({getattr(strat, 'selection_', 'selection')}); the result is the model after one epoch.")
    idle = health.idle_adaptation_loss(hist, getattr(strat, "method", None))
    if idle:
        msgs.append(f"{key} (seed {seed}): {idle}: the loss term barely shaped training (with AdaBN, the target's "
                    "BatchNorm statistics are then the only adaptation); raise the method's weight or try another "
                    "method.")
    for m in msgs:
        warnings.warn(m, TransferKitWarning, stacklevel=2)
    return msgs


def _warn_tasks(key: str, seed: int, tasks: dict) -> list[str]:
    """A regression head whose R^2 on the test split is below 0 predicts worse than the test
    targets' own mean: a warning, with what to try (the number alone reads like a result)."""
    import warnings

    from .errors import TransferKitWarning

    msgs = [f"{key} (seed {seed}): regression head {t!r} has R^2 {m['r2']:.2f} < 0 on the test split, worse than "
            "always predicting the mean; train longer, raise the head's weight, or check the target column."
            for t, m in tasks.items() if isinstance(m, dict) and isinstance(m.get("r2"), float) and m["r2"] < 0]
    for m in msgs:
        warnings.warn(m, TransferKitWarning, stacklevel=3)
    return msgs


def baseline_rows(target, source, split, seeds, load=None) -> dict:
    """The baselines every results table shows, per seed on the run's own splits:
    ``majority_class`` (always predict the most frequent class of the labels a run may train
    on: the target's labeled training rows, or the source's when there are none) and
    ``class_prior`` (predict at random with those labels' class frequencies; its expected
    accuracy, sum_c p_train(c) p_test(c)). Empty when no test split has labels."""
    from .metrics._base import mean_std

    acc = {"majority_class": [], "class_prior": []}
    basis = None
    for seed in seeds:
        train, _, test = make_splits(target, split, seed, load=load)
        if test is None or test.labels is None or not (test.labels >= 0).any():
            return {}
        ytr = train.labels[train.labels >= 0] if train.labels is not None else np.array([], dtype=int)
        basis = "target training labels"
        if len(ytr) == 0:
            if source is None or source.labels is None:
                return {}
            ytr, basis = source.labels[source.labels >= 0], "source labels"
        yte = test.labels[test.labels >= 0]
        k = int(max(ytr.max(), yte.max())) + 1
        p_train = np.bincount(ytr, minlength=k) / len(ytr)
        p_test = np.bincount(yte, minlength=k) / len(yte)
        acc["majority_class"].append(float(p_test[int(p_train.argmax())]))
        acc["class_prior"].append(float(p_train @ p_test))
    out = {}
    for name, values in acc.items():
        m, sd = mean_std(values)
        out[name] = {"accuracy_mean": m, "accuracy_std": sd, "n_seeds": len(values), "from": basis}
    return out


def _warn_below_baseline(summary: dict, baselines: dict) -> None:
    import warnings

    from .errors import TransferKitWarning

    base = (baselines or {}).get("majority_class")
    if not base:
        return
    for key, s in summary.items():
        if s.get("accuracy_mean") is not None and s["accuracy_mean"] <= base["accuracy_mean"]:
            warnings.warn(f"{key}'s test accuracy {s['accuracy_mean']:.3f} is not above always predicting the majority "
                          f"class of the {base['from']} ({base['accuracy_mean']:.3f}): it has learned nothing usable "
                          "about this target; check the class balance (split.label_draw: prior, label_shift: mlls) "
                          "and the method.", TransferKitWarning, stacklevel=2)


def label_free_summary(runs: list[dict], predictions: dict | None = None) -> dict:
    """Per strategy, the label-free view of its predictions on the unlabeled target rows (mean
    over seeds): prediction entropy, predicted class shares, the unsupervised selection score
    and, when ``source_only`` ran too, the share of rows where it predicts what source-only
    predicts (per seed, on the same rows). Empty when no run had unlabeled target rows."""
    rs = [r for r in runs if r.get("label_free")]
    if not rs:
        return {}
    predictions = predictions or {}
    present = {k for k, _ in predictions}
    ref_key = next((k for k in ("source_only", "source_only_lr") if k in present), None)
    ref = {seed: p for (k, seed), p in predictions.items() if k == ref_key}
    out = {}
    for key in dict.fromkeys(r["strategy"] for r in rs):
        mine = [r for r in rs if r["strategy"] == key]
        lf = [r["label_free"] for r in mine]
        scores = [x["selection_score"] for x in lf if x.get("selection_score") is not None]
        agree = [float(np.mean(np.asarray(predictions[(key, r["seed"])]) == np.asarray(ref[r["seed"]])))
                 for r in mine if ref.get(r["seed"]) is not None and predictions.get((key, r["seed"])) is not None
                 and len(ref[r["seed"]]) == len(predictions[(key, r["seed"])])]
        out[key] = {
            "entropy_mean": float(np.mean([x["entropy_mean"] for x in lf])),
            "entropy_max": lf[0]["entropy_max"],
            "predicted_priors": [float(v) for v in np.mean([x["predicted_priors"] for x in lf], axis=0)],
            "selection_score": float(np.mean(scores)) if scores else None,
            "agreement_with_source_only": float(np.mean(agree)) if agree and key != ref_key else None,
            "source_only_reference": ref_key,
            "label_shift_priors": ([float(v) for v in np.mean([r["label_shift"]["priors"] for r in mine], axis=0)]
                                   if all(r.get("label_shift") for r in mine) else None),
        }
    return out


def format_label_free(label_free: dict, markdown: bool = False) -> str:
    """The label-free comparison: what can be said about the adapted models without target labels."""
    ref = next((v["source_only_reference"] for v in label_free.values() if v.get("source_only_reference")), None)
    head = ["strategy", "mean entropy", "predicted class shares", "selection score", f"same as {ref or 'source_only'}"]
    rows = []
    for k, v in label_free.items():
        shares = " / ".join(f"{x:.2f}" for x in v["predicted_priors"][:10]) + (" ..." if len(v["predicted_priors"]) > 10 else "")
        rows.append([k, f"{v['entropy_mean']:.3f} of {v['entropy_max']:.3f}", shares,
                     "-" if v["selection_score"] is None else f"{v['selection_score']:.4g}",
                     "-" if v["agreement_with_source_only"] is None else f"{v['agreement_with_source_only']:.1%}"])
    return f"{LABEL_FREE_TITLE}:\n{_table(head, rows, markdown)}\n{label_free_note(label_free)}"


LABEL_FREE_TITLE = "label-free view of the unlabeled target rows"


def label_free_note(label_free: dict) -> str:
    """What the label-free view can and cannot say, in plain words."""
    note = ("Without target labels on these rows this cannot say which model is more accurate: lower entropy means "
            "more confident (also when wrong), predicted class shares far from any plausible prior hint at a collapse, "
            "and the selection score compares checkpoints of one method, not methods.")
    if not any(v.get("source_only_reference") for v in label_free.values()):
        note += " Add the source_only strategy to compare each model's predictions with it."
    return note


def _check_tree(out: Path) -> None:
    """A run directory given to ``--resume`` may come from someone else: it must hold no
    symbolic link (a write through one would land outside the run directory)."""
    import os

    for root, dirs, files in os.walk(out):
        for name in dirs + files:
            q = Path(root) / name
            if q.is_symlink():
                raise ConfigError(
                    f"{str(out)!r} holds a symbolic link {str(q)!r}; a transferkit run directory never does, and a "
                    "resumed run would write through it. Remove the link or start a new run with --out.")


def _check_split_sources(cfg: ExperimentConfig) -> None:
    """Honest evaluation: a ``split.val`` or ``split.test`` dataset must not be the target
    itself (it would overlap the training samples drawn from it) and ``val`` must not be the
    test set (model selection would see the test labels)."""
    import json

    def same(a, b) -> bool:
        return a is not None and b is not None and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    sp = cfg.split
    for key in ("val", "test"):
        if same(getattr(sp, key), cfg.target):
            raise ConfigError(f"split.{key} is the target itself ({getattr(sp, key)!r}), so it overlaps the training "
                              f"samples drawn from it; leave split.{key} out (it is cut from the rest of the target) "
                              "or give a separate dataset.")
    if same(sp.val, sp.test):
        raise ConfigError(f"split.val and split.test are the same dataset ({sp.val!r}): the model would be selected "
                          "on the test set. Give a separate validation set, or leave split.val out.")


def validate_run(cfg: ExperimentConfig, load_dataset=None):
    """Every check that can fail, in one pass, before anything is written: the data, every
    seed's splits, the domains, the backbone on real samples, every strategy's parameters
    (against the built backbone) and the cache directory. Returns ``(target, source, backbone
    factory, [(strategy config, strategy class)])``."""
    if load_dataset is None:
        from .data.spec import load_dataset
    target = load_dataset(cfg.target)
    source = load_dataset(cfg.source) if cfg.source is not None else None
    sources = [load_dataset(s) for s in cfg.sources] if getattr(cfg, "sources", None) else None
    if sources is not None:
        source = _pool_sources(sources, target)
    check_seeds(cfg.seeds)  # again here: an ExperimentConfig built in Python skipped config_from_dict
    _check_split_sources(cfg)
    unlabeled_train = label_free = no_val_labels = False
    for seed in cfg.seeds:
        train, val, test = make_splits(target, cfg.split, seed, load=load_dataset)
        unlabeled_train |= not (train.labels >= 0).any()
        label_free |= test is None
        no_val_labels |= val is None or val.labels is None or not (val.labels >= 0).any()
    _check_domains(source, target)
    cfg.backbone = cfg.backbone.resolved(target)  # auto / none / identity's width, from the data
    factory = _backbone_factory(cfg)
    bb = _check_inputs("target", target, factory)
    if sources is not None:
        for i, s in enumerate(sources):
            check_backbone_input(bb, f"sources[{i}]", s, factory.name)
    elif source is not None:
        check_backbone_input(bb, "source", source, factory.name)
    strategies = [(s, get("strategy", s.name)) for s in cfg.strategies]
    keys = [s.key for s in cfg.strategies]
    combiners = {s.key for s, cls in strategies if getattr(cls, "uses_members", False)}
    ensembles = {s.key for s, cls in strategies if getattr(cls, "combines_predictions", False)}
    for i, (scfg, cls) in enumerate(strategies):  # asked of an instance, as in the run loop (no logic in __init__)
        strat = _make_strategy(cls, scfg, cfg, cfg.seeds[0], factory)
        try:
            strat.validate(backbone=bb)
            if hasattr(strat, "check_target"):  # rules that need the data (source_free: the source classes)
                strat.check_target(bb, target)
            if scfg.key in combiners:
                strat.resolve_members(keys, i, ensembles)
                if no_val_labels and getattr(strat, "needs_val_labels", False):
                    why = ("the target has no labels and split.val is not given" if label_free and cfg.split.val is None
                           else "the run has no labeled validation split")
                    raise ConfigError(f"{scfg.name}.combine='weighted' fits the member weights on the labeled "
                                      f"validation split, but {why}; use combine: mean, or give split.val_fraction "
                                      "(e.g. 0.5) or a labeled split.val.")
        except ConfigError as exc:
            if scfg.label is None:  # the message already names the strategy (``finetune.lr=...``)
                raise
            raise ConfigError(f"strategy {scfg.key!r}: {exc}") from None
        if source is None and getattr(strat, "needs_source", False):
            raise ConfigError(f"strategy {scfg.key!r} needs a labeled 'source' dataset in the config.")
        if source is not None:
            check_label_spaces(strat, scfg.key, source, target)
        if unlabeled_train and getattr(strat, "needs_target_labels", True):
            why = ("the target has no labels" if target.labels is None or not (target.labels >= 0).any()
                   else "split.labels_per_class=0 gives it no labeled target training samples")
            raise ConfigError(
                f"strategy {scfg.key!r} trains on labeled target samples, but {why}; use the domain-adaptation "
                "strategies (adapt, source_only, source_only_lr, two_stage, self_training, fixmatch) on an unlabeled "
                "target, or give target labels (split.labels_per_class: K).")
    # a source-free strategy trains on the target's inputs alone (the source is its trained model)
    if label_free and source is None and not all(getattr(cls, "source_free", False) for _, cls in strategies):
        raise ConfigError(f"target {target.name!r} has no labels and there is no source: nothing can be trained; give a "
                          "labeled 'source' dataset (domain adaptation) or the target's label column.")
    return target, source, factory, strategies


def _check_cache_dirs(cfg: ExperimentConfig, out: Path) -> None:
    """Every feature-cache directory of the run (``cache_dir`` and any strategy's own) is a
    usable folder outside the output directory, outside every input folder and outside every
    transferkit run: cache files must never land among the data or in another run."""
    import os

    from .features import check_cache_dir
    from .train.rundir import enclosing_run, input_paths, is_inside

    dirs = [("cache_dir", cfg.cache_dir)] + [(f"strategies[{i}].cache_dir", s.params.get("cache_dir"))
                                             for i, s in enumerate(cfg.strategies)]
    read = [v for k, v in cfg.to_dict().items() if k not in ("output_dir", "cache_dir", "strategies")]
    folders = [p for p in input_paths(*read) if p.is_dir()]
    for where, d in dirs:
        if d is None:
            continue
        if not isinstance(d, (str, os.PathLike)):
            raise ConfigError(f"{where}={d!r} must be a folder path, e.g. cache_dir: ~/.cache/transferkit.")
        real = os.path.expanduser(str(d))
        if is_inside(real, out):
            raise ConfigError(f"{where}={str(d)!r} lies inside the output directory {str(out)!r} (--overwrite would "
                              "delete the cache with the old run); put the cache outside it.")
        for f in folders:
            if is_inside(real, f):
                raise ConfigError(f"{where}={str(d)!r} lies inside the input folder {str(f)!r}; cache files would "
                                  "land among the data. Put the cache elsewhere, e.g. ~/.cache/transferkit.")
        up = enclosing_run(real, include_self=True, mine_too=True)
        if up is not None:
            raise ConfigError(f"{where}={str(d)!r} lies inside the transferkit output {str(up)!r}; a run never "
                              "writes into another run. Put the cache elsewhere, e.g. ~/.cache/transferkit.")
    for where, d in dirs:
        if d is not None:
            check_cache_dir(d)  # last: it creates a missing cache folder


def _run_experiment(cfg, out_dir, *, overwrite, echo, on_run, resume, report_features, inputs, t_start, recorded):
    import shutil

    import yaml

    from .data.spec import load_dataset
    from .artifacts import save_run_artifacts
    from .train.rundir import (atomic_path, environment_info, is_inside, mark_complete, mark_incomplete,
                               open_run_dir, resuming, write_json, write_text)
    from .train.tracking import make_tracker
    from .train.trainer import CHECKPOINT

    # bad input fails here, before anything is written to disk
    target, source, factory, strategies = validate_run(cfg, load_dataset)
    final = Path(out_dir or cfg.output_dir or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    _check_cache_dirs(cfg, final)
    read = {k: v for k, v in cfg.to_dict().items() if k != "output_dir"}  # the paths this run reads
    # several processes (torchrun, --num-processes): every process trains, the main one alone
    # owns the run directory (lock, staging, every write) and the others follow its decisions
    main = _dist.is_main_process()
    if not main:
        import warnings

        echo = _quiet
        warnings.simplefilter("ignore")  # the main process warns for the run (a dedicated child process)
    opened = (open_run_dir(final, overwrite=overwrite, resume=resume, inputs=(read, *inputs)) if main
              else contextlib.nullcontext(None))
    with opened as out:
        out = Path(_dist.broadcast_object(str(out) if main else None))
        if main:
            if resume:
                _check_tree(out)
                echo(f"resuming {out}")
            else:
                mark_incomplete(out)
                write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
                write_json(out / "environment.json", environment_info(cfg.seeds))
                fault_point("experiment.start")
        echo(f"target: {target!r}")
        if source is not None:
            echo(f"source: {source!r}")
        runs: list[dict] = []
        target_preds: dict = {}  # (strategy, seed) -> predictions on the unlabeled target rows
        # MLflow / TensorBoard, off by default; the main process logs
        tracker = make_tracker(getattr(cfg, "tracking", None) if main else None, out, cfg.name)
        combined = member_keys(cfg)  # ensemble key -> member keys (checked in validate_run)
        needed = {k for ks in combined.values() for k in ks}
        for seed in cfg.seeds:
            train, val, test = make_splits(target, cfg.split, seed, load=load_dataset)
            fitted: dict = {}  # this seed's fitted members of an ensemble (None: kept on disk by a resume)
            for scfg, cls in strategies:
                run_dir = out / scfg.key / f"seed{seed}"
                shown = str(final / scfg.key / f"seed{seed}")  # recorded: where it ends up (not a staging folder)
                if not is_inside(run_dir, out):  # labels are checked names; this is the last line of defence
                    raise ConfigError(f"strategy label {scfg.key!r} would put a run outside {str(final)!r}; "
                                      "use a plain name (letters, digits, _ . + -).")
                done = _kept_result(run_dir / "result.json", scfg.key, seed) if resume and main else None
                done = _dist.broadcast_object(done)
                if done is not None:
                    done["run_dir"] = shown  # where it is, whatever the file says
                    if main:
                        mark_complete(run_dir)  # killed between its result.json and the marker's removal
                    runs.append(done)
                    if scfg.key in needed:
                        fitted[scfg.key] = None
                    echo(f"  seed {seed}  {scfg.key:<20} test acc {done['accuracy']:.3f}  (complete, kept)")
                    continue
                if main:
                    if resume and run_dir.is_dir() and not (run_dir / CHECKPOINT).exists():
                        shutil.rmtree(run_dir)  # interrupted before its first checkpoint: start this run over
                    elif resume and (run_dir / "result.json").exists():
                        (run_dir / "result.json").unlink()  # an invalid one (warned above); rewritten below
                    mark_incomplete(run_dir)
                    fault_point("experiment.run_start")
                _dist.barrier()  # the run directory is ready before any process reads a checkpoint from it
                strat = _make_strategy(cls, scfg, cfg, seed, factory)
                extra = {}
                # asked of the instance: finetune needs source data only with some penalties (ewc, replay)
                if getattr(strat, "needs_source", False):
                    extra["source"] = source_datasets(source) if getattr(strat, "multi_source", False) else source
                elif source is not None and getattr(strat, "accepts_source", False):
                    extra["source"] = source
                if scfg.key in combined:  # the members of this seed, fitted above (or read back when kept)
                    by_key = {s.key: (s, c) for s, c in strategies}
                    extra["members"] = {
                        k: fitted[k] if fitted[k] is not None else
                        _load_fitted(out / k / f"seed{seed}", by_key[k][1], by_key[k][0], cfg, seed, factory)
                        for k in combined[scfg.key]}
                with resuming(resume):
                    strat.fit(train, val, run_dir=run_dir, **extra)
                fault_point("experiment.fit")
                scored = test if test is not None else train  # label-free: predictions on the target rows
                y_test = strat.predict(scored)  # scored here and kept for the report's confusion matrix
                row = {
                    "strategy": scfg.key,
                    "method": scfg.name,
                    "seed": seed,
                    "accuracy": strat.score(test, y_pred=y_test) if test is not None else None,
                    "val_accuracy": strat.score(val) if val is not None else None,
                    "train_accuracy": strat.score(train) if (train.labels is not None and (train.labels >= 0).any()) else None,
                    "train_time": strat.train_time_,
                    "trainable_params": strat.trainable_params_,
                    "n_train": int((train.labels >= 0).sum()) if train.labels is not None else 0,
                    "n_unlabeled": int((train.labels < 0).sum()) if train.labels is not None else len(train),
                    "n_val": len(val) if val is not None else 0,
                    "n_test": len(test) if test is not None else 0,
                    "best_epoch": getattr(strat, "best_epoch_", None),
                    "selection": getattr(strat, "selection_", "labeled target validation split"),
                    "run_dir": shown,
                }
                if test is not None and (test.meta or {}).get("transductive"):
                    row["protocol"] = "transductive"
                row.update(_run_extras(strat, train, seed))
                if test is not None and hasattr(strat, "open_set_report"):  # open-set: OS, OS*, UNK, H on test
                    row["open_set"] = _open_set_row(strat, test, y_test)
                if test is not None and hasattr(strat, "task_metrics"):  # several heads: each task's metric on test
                    row["tasks"] = strat.task_metrics(test)
                if row.get("label_free"):  # kept in memory for the comparison with source_only, not in the files
                    target_preds[(scfg.key, seed)] = row["label_free"].pop("predictions")
                row["warnings"] = _warn_run(scfg.key, seed, strat, y_test, scored, test is not None)
                if row.get("tasks"):
                    row["warnings"] += _warn_tasks(scfg.key, seed, row["tasks"])
                if main:
                    with _dist.local_only():  # alone: the others do not join what this computes
                        with atomic_path(run_dir / "model.safetensors") as tmp:
                            strat.save(tmp, metadata={"transferkit.backbone": factory.name,
                                                      "transferkit.strategy": scfg.name})
                        fault_point("experiment.model")
                        # what `transferkit report` needs without retraining: test predictions; features of the
                        # first seed
                        save_run_artifacts(strat, run_dir, scored, source=source,
                                           features=report_features and seed == cfg.seeds[0], seed=seed,
                                           y_pred=y_test)
                        fault_point("experiment.artifacts")
                        row.update(tracker.log_experiment_run(cfg, scfg, seed, strat, row))
                        write_json(run_dir / "result.json", row)
                        fault_point("experiment.result")
                        mark_complete(run_dir)
                        fault_point("experiment.run_complete")
                _dist.barrier()
                runs.append(row)
                if scfg.key in needed:
                    fitted[scfg.key] = strat
                if on_run is not None:
                    on_run(strat, row, (train, val, test))
                echo(f"  seed {seed}  {scfg.key:<20} " + (f"test acc {row['accuracy']:.3f}  " if row["accuracy"] is not None
                                                         else "label-free  ")
                     + f"(val {row['val_accuracy'] if row['val_accuracy'] is not None else float('nan'):.3f}, "
                     f"{row['train_time']:.1f}s)")
        if len(cfg.seeds) == 1:
            import warnings

            from .errors import TransferKitWarning

            warnings.warn(f"one seed ({cfg.seeds[0]}): accuracy_std is reported as 0.000, but the spread over seeds "
                          "is unknown; use seeds: 3 or more for a mean ± std.", TransferKitWarning, stacklevel=2)
        summary = summarize(runs)
        baselines = baseline_rows(target, source, cfg.split, cfg.seeds, load_dataset)
        _warn_below_baseline(summary, baselines)
        label_free = label_free_summary(runs, target_preds)
        results = {
            "name": cfg.name,
            "target": target.spec or target.name,
            "source": (source.spec or source.name) if source is not None else None,
            "backbone": cfg.backbone.name,
            "seeds": cfg.seeds,
            "selection": _selection_note(runs),
            "summary": summary,
            "baselines": baselines,
            "label_free": label_free,
            "runs": runs,
            "run_dirs": sorted({str(Path(r["run_dir"])) for r in runs}),
            "output_dir": str(final),
            "warnings": recorded,
            "wall_time": time.perf_counter() - t_start,
        }
        if main:
            from .modelcard import write_model_card  # MODEL_CARD.md + model_card.json (data, splits, metrics, use)
            write_model_card(out, cfg, results, target, source, make_splits, load_dataset)
            write_json(out / "results.json", results)
            fault_point("experiment.results_json")
            write_text(out / "results.md", format_table(summary, markdown=True, baselines=baselines) + "\n"
                       + (format_label_free(label_free, markdown=True) + "\n" if label_free else ""))
            fault_point("experiment.results_md")
            mark_complete(out)
            fault_point("experiment.complete")
    return results


def _quiet(*args, **kwargs) -> None:
    """The echo of a process other than the main one: the main process speaks for the run."""


def summarize(runs: list[dict]) -> dict:
    from .metrics._base import mean_std

    summary: dict[str, dict] = {}
    for key in dict.fromkeys(r["strategy"] for r in runs):
        rs = [r for r in runs if r["strategy"] == key]
        accs = [r["accuracy"] for r in rs if r.get("accuracy") is not None]
        acc_mean, acc_std = mean_std(accs) if accs else (None, None)  # label-free runs have no accuracy
        val = [r["val_accuracy"] for r in rs if r["val_accuracy"] is not None]
        summary[key] = {
            "accuracy_mean": acc_mean,
            "accuracy_std": acc_std,
            "n_seeds": len(rs),
            "val_accuracy_mean": float(np.mean(val)) if val else None,
            "train_time_mean": float(np.mean([r["train_time"] for r in rs])),
            "trainable_params": int(rs[0]["trainable_params"]),
        }
    return summary


def format_table(summary: dict, markdown: bool = False, baselines: dict | None = None) -> str:
    """The results table: accuracy mean ± std over seeds, train time, trainable parameters; the
    ``baselines`` (see :func:`baseline_rows`) as the last rows."""
    head = ["strategy", "test accuracy", "val accuracy", "train time (s)", "trainable params", "seeds"]
    rows = []
    for k, s in summary.items():
        va = "-" if s["val_accuracy_mean"] is None else f"{s['val_accuracy_mean']:.3f}"
        acc = "-" if s["accuracy_mean"] is None else f"{s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f}"
        rows.append([k, acc, va, f"{s['train_time_mean']:.1f}", f"{s['trainable_params']:,}", str(s["n_seeds"])])
    for k, b in (baselines or {}).items():
        rows.append([f"{k} (baseline)", f"{b['accuracy_mean']:.3f} ± {b['accuracy_std']:.3f}", "-", "0.0", "0",
                     str(b["n_seeds"])])
    return _table(head, rows, markdown)


def _table(head: list, rows: list, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def gains_over_baseline(summary: dict, baseline: str | None = None) -> str:
    """One line: each strategy's mean test accuracy minus the baseline's (empty without one).
    ``baseline=None``: ``scratch``, else ``source_only``, else ``source_only_lr``, whichever
    the run has first.

    The formal test with confidence intervals is the negative-transfer diagnostic; this line
    only states the measured difference of means.
    """
    if baseline is None:
        baseline = next((b for b in ("scratch", "source_only", "source_only_lr") if b in summary), "scratch")
    if baseline not in summary or summary[baseline]["accuracy_mean"] is None:
        return ""
    base = summary[baseline]["accuracy_mean"]
    parts = [f"{k} {s['accuracy_mean'] - base:+.3f}" for k, s in summary.items()
             if k != baseline and s["accuracy_mean"] is not None]
    return f"accuracy over {baseline} (difference of means): " + ", ".join(parts) if parts else ""
