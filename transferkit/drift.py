"""``transferkit benchmark drift``: source-free and test-time adaptation, and uncertainty, under drift.

Four parts (``--parts``), every hyper-parameter fixed before any target label is read:

- ``source_free``: the digit CNNs of the ``ccexam`` package trained on USPS, SVHN and MNIST
  (their training data does not ship; only the model is transferred) applied to scikit-learn's
  digits framed as each source's images are (:data:`transferkit.realshift.REAL_TASKS`). Per
  seed the digits are split 50/50 (stratified) into an unlabeled pool and a test split. Rows:
  ``source_only``; the test-time methods (``bn_adapt``, ``tent``, ``t3a``, ``eata``) online over the
  test stream in batches of 64, never reset; the source-free strategies (``shot``, ``shot_im``,
  ``aad``: :class:`transferkit.strategies.SourceFree`, trained on the unlabeled pool for a fixed
  number of epochs, the last epoch kept) scored on the test split. The MNIST CNN has no
  BatchNorm: ``bn_adapt``, ``tent`` and ``eata`` do not apply to it (recorded as such, with the
  error the package gives), only T3A and the SHOT family do.
- ``corruptions``: a CNN (``tiny_cnn``, BatchNorm in every block) trained from scratch on
  Fashion-MNIST train (one model per seed) and evaluated on Fashion-MNIST test corrupted in the
  CIFAR-10-C way (:mod:`transferkit.data.corruptions`: all 13 corruptions at severities 1-5).
  Error of ``source`` and of each test-time method, which starts from the source model for every
  (corruption, severity) cell and adapts online over that cell's stream (TENT's protocol).
- ``continual``: one stream that cycles through the 13 corruptions at severity 5, ``--passes``
  times (10), without any reset; error per pass for ``tent`` and ``eata`` (the continual
  method: reliable, non-redundant samples and a Fisher anchor computed on 500 clean training
  images), with ``source`` and ``bn_adapt`` (stateless) as references.
- ``uncertainty``: on the clean test set and on every severity (the 13 corruptions pooled),
  accuracy, ECE, NLL, Brier and the AUROC of predictive entropy for misclassification of the
  source model's predictive: ``map`` (its softmax), ``temperature`` (temperature scaling fitted on
  the clean validation split), ``mc_dropout`` (20 passes of its head's dropout), ``laplace``
  (last-layer Laplace around the trained head, prior precision chosen by clean validation NLL)
  and ``ensemble`` (the deep ensemble of the ``--seeds`` models); plus the AUROC of entropy for
  out-of-distribution inputs (scikit-learn's digits at 28x28 against clean Fashion-MNIST test).

- ``batch_size``: the sensitivity the peers' users ask about: severity-5 error (13 corruptions,
  each cell started from the source model) of ``bn_adapt``, ``tent``, ``t3a`` and ``eata`` at test
  batches of 8, 16, 64 and 256.

- ``full_stream``: TENT's own protocol at severity 5: each corruption's stream is the whole
  Fashion-MNIST test set (10,000 images, 157 batches of 64), every method started from the source
  model per corruption; the sweep's ``n_test`` images per cell give TENT only 16 steps.

Finished cells are kept under ``cells/`` and the trained models under ``models/``, so an
interrupted run continues where it stopped (``--resume DIR``).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from .errors import ConfigError

PARTS = ("source_free", "corruptions", "continual", "uncertainty", "batch_size", "full_stream")
TTA_ROWS = ("source", "bn_adapt", "tent", "t3a", "eata")
SF_TASKS = ("usps_digits", "svhn_digits", "mnist_digits")
SF_METHODS = ("source_only", "bn_adapt", "tent", "t3a", "eata", "shot", "shot_im", "aad")
UNC_ROWS = ("map", "temperature", "mc_dropout", "laplace", "ensemble")
SEVERITIES = (1, 2, 3, 4, 5)
CONTINUAL_METHODS = ("source", "bn_adapt", "tent", "eata")
BATCH_SIZES = (8, 16, 64, 256)
BATCH_METHODS = ("bn_adapt", "tent", "t3a", "eata")
FULL_N = 10000
#: the Fashion-MNIST source model: tiny_cnn at 28x28, trained from scratch with the one Trainer
SOURCE_MODEL = {"backbone": "tiny_cnn", "image_size": 28, "width": 16, "dropout": 0.2, "epochs": 20,
                "batch_size": 128, "lr": 3e-3, "augment": "none", "n_train": 10000, "val_fraction": 0.1}
TTA_BATCH = 64
N_FISHER = 500


def corruption_names() -> list[str]:
    from .data.corruptions import list_corruptions

    return list(list_corruptions())


def check_drift_args(parts=None, seeds: int = 3, n_test: int = 1000, passes: int = 10, sf_epochs: int = 30) -> dict:
    """Validate before any work: known parts, counts in range."""
    from ._validation import suggest

    parts = list(PARTS) if parts is None else list(parts)
    for p in parts:
        if p not in PARTS:
            raise ConfigError(f"unknown drift part {p!r}." + suggest(str(p), PARTS) + f" Parts: {', '.join(PARTS)}.")
    for name, v, lo, hi in (("seeds", seeds, 1, 20), ("n_test", n_test, 100, 10000), ("passes", passes, 1, 100),
                            ("sf_epochs", sf_epochs, 1, 200)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"{name}={v!r} is not valid; use a whole number in [{lo}, {hi}].")
    if "uncertainty" in parts and seeds < 2:
        raise ConfigError("the uncertainty part's deep ensemble needs --seeds >= 2 (one model per seed).")
    return {"parts": parts, "seeds": seeds, "n_test": n_test, "passes": passes, "sf_epochs": sf_epochs}


# ------------------------------------------------------------------ cells on disk
def _cached(out, name: str, definition: dict, compute, echo):
    from .train.rundir import cached_cell

    return cached_cell(out, name, definition, compute, echo)


def _err(pred, y) -> float:
    return float(np.mean(np.asarray(pred) != np.asarray(y)))


# ------------------------------------------------------------------ source models
def _digit_model(backbone: str):
    """The source CNN with its own classifier as one network: ``Linear(source_head)(bb(x))``."""
    import torch
    from torch import nn

    from .backbones import create_backbone

    bb = create_backbone(backbone).eval()
    w, b = bb.source_head
    head = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    model = nn.Sequential(bb, head).eval()
    model.preprocess = bb.preprocess  # the stream of a dataset is prepared as the source net's inputs
    return model


def _fashion_splits(seed: int):
    """The seed's clean training and validation splits of Fashion-MNIST train (read once per
    process and split: the models, EATA's Fisher inputs and the calibrators all use them)."""
    return _splits(seed, SOURCE_MODEL["n_train"], SOURCE_MODEL["val_fraction"])


@functools.lru_cache(maxsize=None)
def _splits(seed: int, n_train: int, val_fraction: float):
    from .data import stratified_split
    from .data.spec import load_dataset

    train = load_dataset(f"fashion_mnist:split=train,n={n_train}")
    a, b = stratified_split(train.labels, [1 - val_fraction, val_fraction], seed=seed)
    return train.subset(a), train.subset(b)


def _fashion_model(seed: int, out: Path | None, echo):
    """The seed's Fashion-MNIST source model (trained once, kept under ``models/``)."""
    import torch
    from safetensors.torch import load_file, save_file

    from .backbones import create_backbone
    from .nn import TransferModel
    from .strategies import Scratch

    m = SOURCE_MODEL
    path = None if out is None else out / "models" / f"fashion-seed{seed}.safetensors"
    torch.manual_seed(seed)
    bb = create_backbone(m["backbone"], pretrained=False, image_size=m["image_size"], width=m["width"])
    model = TransferModel(bb, 10, dropout=m["dropout"])
    if path is not None and path.is_file():
        try:
            model.load_state_dict(load_file(str(path)))
            echo(f"  fashion source model seed {seed}: kept ({path})")
            return model.eval()
        except (OSError, RuntimeError, ValueError):
            echo(f"  fashion source model seed {seed}: the kept file cannot be read; training again")
    train, val = _fashion_splits(seed)
    t0 = time.perf_counter()
    s = Scratch(backbone=bb, image_size=m["image_size"], epochs=m["epochs"], batch_size=m["batch_size"], lr=m["lr"],
                augment=m["augment"], dropout=m["dropout"], seed=seed).fit(train, val)
    model = s.model_.eval()
    echo(f"  fashion source model seed {seed}: trained in {time.perf_counter() - t0:.0f}s, clean val accuracy "
         f"{s.score(val):.3f}")
    if path is not None:
        from .train.rundir import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return model


def _inputs(model, ds):
    import torch

    raw = np.asarray(ds.inputs[:], dtype=np.float32)
    with torch.no_grad():
        return model.preprocess(raw).float()


def _logits(model, x, batch: int = 512) -> np.ndarray:
    import torch

    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]).float().numpy()


def _tta_error(model, method: str, x, y, batch_size: int = TTA_BATCH, **options) -> float:
    """Error of ``method`` started from ``model`` and adapted online over the stream ``x``."""
    from . import tta

    if method == "source":
        return _err(_logits(model, x).argmax(1), y)
    options = {k: v for k, v in options.items() if method == "eata" or k != "fisher_inputs"}
    return _err(tta.wrap(model, method, batch_size=batch_size, **options).predict(x), y)


# ------------------------------------------------------------------ parts
def _corrupted(name: str, severity: int, n_test: int):
    from .data.spec import load_dataset

    return load_dataset(f"fashion_mnist:split=test,n={n_test},corrupt={name},severity={severity}")


def run_source_free(seeds: int, sf_epochs: int, out, echo) -> list[dict]:
    from ._registry import get
    from .data import stratified_split
    from .errors import TransferKitError
    from .realshift import REAL_TASKS, _load

    rows = []
    for task in SF_TASKS:
        t = REAL_TASKS[task]
        tgt = _load(t["target"])
        for seed in range(seeds):
            pool_idx, test_idx = stratified_split(tgt.labels, [0.5, 0.5], seed=seed)
            test, pool = tgt.subset(test_idx), tgt.subset(pool_idx).without_labels()
            for method in SF_METHODS:
                definition = {"task": t, "method": method, "seed": seed, "sf_epochs": sf_epochs, "batch": TTA_BATCH}

                def compute(method=method, seed=seed):
                    import torch

                    torch.manual_seed(seed)
                    t0 = time.perf_counter()
                    model = _digit_model(t["backbone"])
                    if method in ("shot", "shot_im", "aad"):
                        s = get("strategy", "source_free")(backbone=t["backbone"], method=method, epochs=sf_epochs,
                                                            seed=seed).fit(pool)
                        acc, note = s.score(test), s.selection_
                    else:
                        x = _inputs(model, test)
                        try:
                            acc = 1 - _tta_error(model, "source" if method == "source_only" else method, x,
                                                 test.labels)
                            note = "none (no training)" if method == "source_only" else "online over the test stream"
                        except TransferKitError as exc:
                            return {"accuracy": None, "note": str(exc), "seconds": time.perf_counter() - t0}
                    return {"accuracy": float(acc), "note": note, "seconds": time.perf_counter() - t0}

                v = _cached(out, f"source_free--{task}--{method}--seed{seed}", definition, compute, echo)
                rows.append({"task": task, "method": method, "seed": seed, **v})
                acc = v["accuracy"]
                echo(f"  source_free {task:<13} {method:<12} seed {seed}  "
                     + (f"{acc:.3f}  ({v['seconds']:.1f}s)" if acc is not None else "n/a: " + v["note"][:90]))
    return rows


def run_corruptions(models: dict, n_test: int, out, echo) -> list[dict]:
    rows = []
    for seed, model in models.items():
        fisher = _fisher_inputs(model, seed)
        for sev in SEVERITIES:
            for c in corruption_names():
                definition = {"model": SOURCE_MODEL, "seed": seed, "corruption": c, "severity": sev, "n_test": n_test,
                              "batch": TTA_BATCH, "methods": list(TTA_ROWS)}

                def compute(c=c, sev=sev, model=model, fisher=fisher):
                    ds = _corrupted(c, sev, n_test)
                    x = _inputs(model, ds)
                    return {m: _tta_error(model, m, x, ds.labels, fisher_inputs=fisher) for m in TTA_ROWS}

                v = _cached(out, f"corruptions--{c}--s{sev}--seed{seed}", definition, compute, echo)
                rows += [{"seed": seed, "corruption": c, "severity": sev, "method": m, "error": v[m]} for m in TTA_ROWS]
            mean = {m: np.mean([r["error"] for r in rows if r["seed"] == seed and r["severity"] == sev
                                and r["method"] == m]) for m in TTA_ROWS}
            echo(f"  corruptions seed {seed} severity {sev}: mean error " +
                 ", ".join(f"{m} {mean[m]:.3f}" for m in TTA_ROWS))
    return rows


def run_batch_size(models: dict, n_test: int, out, echo) -> list[dict]:
    rows = []
    for seed, model in models.items():
        fisher = _fisher_inputs(model, seed)
        for c in corruption_names():
            definition = {"model": SOURCE_MODEL, "seed": seed, "corruption": c, "severity": 5, "n_test": n_test,
                          "batch_sizes": list(BATCH_SIZES), "methods": list(BATCH_METHODS)}

            def compute(c=c, model=model, fisher=fisher):
                ds = _corrupted(c, 5, n_test)
                x = _inputs(model, ds)
                return {f"{m}@{b}": _tta_error(model, m, x, ds.labels, batch_size=b, fisher_inputs=fisher)
                        for m in BATCH_METHODS for b in BATCH_SIZES}

            v = _cached(out, f"batch_size--{c}--seed{seed}", definition, compute, echo)
            for key, e in v.items():
                m, b = key.split("@")
                rows.append({"seed": seed, "corruption": c, "method": m, "batch_size": int(b), "error": e})
        mine = [r for r in rows if r["seed"] == seed]
        echo(f"  batch_size seed {seed}: severity-5 mean error " + ", ".join(
            f"{m}@{b} {np.mean([r['error'] for r in mine if r['method'] == m and r['batch_size'] == b]):.3f}"
            for m in BATCH_METHODS for b in BATCH_SIZES))
    return rows


def run_full_stream(models: dict, out, echo) -> list[dict]:
    rows = []
    for seed, model in models.items():
        fisher = _fisher_inputs(model, seed)
        for c in corruption_names():
            definition = {"model": SOURCE_MODEL, "seed": seed, "corruption": c, "severity": 5, "n": FULL_N,
                          "batch": TTA_BATCH, "methods": list(TTA_ROWS)}

            def compute(c=c, model=model, fisher=fisher):
                ds = _corrupted(c, 5, FULL_N)
                x = _inputs(model, ds)
                return {m: _tta_error(model, m, x, ds.labels, fisher_inputs=fisher) for m in TTA_ROWS}

            v = _cached(out, f"full_stream--{c}--seed{seed}", definition, compute, echo)
            rows += [{"seed": seed, "corruption": c, "method": m, "error": e} for m, e in v.items()]
            echo(f"  full_stream seed {seed} {c:<18} " + ", ".join(f"{m} {e:.3f}" for m, e in v.items()))
    return rows


def _fisher_inputs(model, seed: int):
    """EATA's clean inputs: the first :data:`N_FISHER` images of the seed's clean *training*
    split (no test image, no label)."""
    train, _ = _fashion_splits(seed)
    return _inputs(model, train.subset(np.arange(N_FISHER)))


def run_continual(models: dict, n_test: int, passes: int, out, echo) -> list[dict]:
    from . import tta

    rows = []
    names = corruption_names()
    n_stream = max(100, n_test // 2)
    for seed, model in models.items():
        definition = {"model": SOURCE_MODEL, "seed": seed, "corruptions": names, "severity": 5, "n": n_stream,
                      "passes": passes, "batch": TTA_BATCH, "methods": list(CONTINUAL_METHODS)}

        def compute(model=model, seed=seed):
            sets = []
            for c in names:
                ds = _corrupted(c, 5, n_stream)
                sets.append((_inputs(model, ds), ds.labels))
            fisher = _fisher_inputs(model, seed)
            res = {}
            for m in CONTINUAL_METHODS:
                adapter = None if m == "source" else tta.wrap(model, m, batch_size=TTA_BATCH,
                                                              **({"fisher_inputs": fisher} if m == "eata" else {}))
                per_pass = []
                for p in range(passes):
                    errs = []
                    for x, y in sets:
                        pred = _logits(model, x).argmax(1) if adapter is None else adapter.predict(x)
                        errs.append(_err(pred, y))
                    per_pass.append(float(np.mean(errs)))
                    if adapter is None:  # the source model does not change: every pass is the same
                        per_pass *= passes
                        break
                res[m] = per_pass
                echo(f"  continual seed {seed} {m:<8} error per pass: " + " ".join(f"{e:.3f}" for e in per_pass))
            return res

        v = _cached(out, f"continual--seed{seed}", definition, compute, echo)
        rows += [{"seed": seed, "method": m, "pass": i + 1, "error": e} for m, errs in v.items()
                 for i, e in enumerate(errs)]
    return rows


def _uncertainty_probs(model, x, *, temperature, laplace) -> dict:
    from .metrics.calibration import mc_dropout_predict

    feats = _features(model, x)
    logits = _head_logits(model, feats)
    z = np.exp(logits - logits.max(1, keepdims=True))
    out = {"map": z / z.sum(1, keepdims=True), "temperature": temperature.predict_proba(logits)}
    # the source model's only dropout is its head's: MC dropout on the head over the features is the
    # same predictive as mc_dropout_predict on the whole network, 20x cheaper
    out["mc_dropout"] = mc_dropout_predict(model.head, feats.astype(np.float32), n_samples=20, seed=0,
                                           batch_size=4096)["mean_probs"]
    out["laplace"] = laplace.predict_proba(feats)
    return out


def _head_logits(model, feats) -> np.ndarray:
    import torch

    model.head.eval()
    with torch.inference_mode():
        return model.head(torch.as_tensor(feats, dtype=torch.float32)).numpy().astype(np.float64)


def _features(model, x) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return torch.cat([model.backbone(x[i:i + 512]) for i in range(0, len(x), 512)]).double().numpy()


def _calibrators(model, seed: int):
    """Temperature scaling and the last-layer Laplace of one source model, fitted on its clean
    training data (Laplace: the Hessian on the training features; prior precision by the clean
    validation NLL) and the clean validation split (temperature)."""
    from .metrics.uncertainty import LastLayerLaplace, TemperatureScaling

    train, val = _fashion_splits(seed)
    xv = _inputs(model, val)
    ts = TemperatureScaling().fit(_logits(model, xv), val.labels)
    head = model.head.fc
    xt = _inputs(model, train)
    la = LastLayerLaplace(link="probit").fit(_features(model, xt), train.labels, head.weight.detach().double().numpy(),
                                               head.bias.detach().double().numpy())
    la.fit_prior_precision(_features(model, xv), val.labels)
    return ts, la


def run_uncertainty(models: dict, n_test: int, out, echo) -> list[dict]:
    from .data.spec import load_dataset
    from .metrics.uncertainty import ensemble_probs, ood_auroc, uncertainty_report

    names = corruption_names()
    definition = {"model": SOURCE_MODEL, "seeds": sorted(models), "corruptions": names, "n_test": n_test,
                  "rows": list(UNC_ROWS), "ood": "digits:size=28"}

    def compute():
        import torch

        cal = {s: _calibrators(m, s) for s, m in models.items()}
        clean = load_dataset(f"fashion_mnist:split=test,n={n_test}")
        ood = load_dataset("digits:size=28")
        res = []
        ood_probs = {s: _uncertainty_probs(m, _inputs(m, ood), temperature=cal[s][0], laplace=cal[s][1])
                     for s, m in models.items()}
        ood_probs["ensemble"] = ensemble_probs([ood_probs[s]["map"] for s in models])
        for sev in (0, *SEVERITIES):
            sets = [clean] if sev == 0 else [_corrupted(c, sev, n_test) for c in names]
            y = np.concatenate([d.labels for d in sets])
            per_seed = {}
            for s, m in models.items():
                x = torch.cat([_inputs(m, d) for d in sets])
                per_seed[s] = _uncertainty_probs(m, x, temperature=cal[s][0], laplace=cal[s][1])
            for s in models:
                for row in UNC_ROWS:
                    if row == "ensemble":
                        if s != min(models):
                            continue  # one ensemble of all the seeds' models
                        p = ensemble_probs([per_seed[t]["map"] for t in models])
                    else:
                        p = per_seed[s][row]
                    rep = uncertainty_report(p, y)
                    if sev == 0:
                        p_ood = ood_probs["ensemble"] if row == "ensemble" else ood_probs[s][row]
                        rep["ood_auroc"] = float(ood_auroc(p, p_ood).value)
                    res.append({"severity": sev, "method": row, "seed": s if row != "ensemble" else None,
                                **{k: rep[k] for k in ("accuracy", "ece", "nll", "brier", "misclassification_auroc")},
                                **({"ood_auroc": rep["ood_auroc"]} if sev == 0 else {})})
            line = {r: np.mean([x["ece"] for x in res if x["severity"] == sev and x["method"] == r]) for r in UNC_ROWS}
            echo(f"  uncertainty severity {sev}: ECE " + ", ".join(f"{r} {v:.3f}" for r, v in line.items()))
        return res

    return _cached(out, "uncertainty", definition, compute, echo)


# ------------------------------------------------------------------ the suite
def run_drift(parts=None, seeds: int = 3, *, n_test: int = 1000, passes: int = 10, sf_epochs: int = 30, out_dir=None,
              echo=print) -> dict:
    """Run the parts of the drift benchmark; ``{"source_free", "corruptions", "continual",
    "uncertainty", "summary", "protocol"}`` (the parts not run are absent)."""
    a = check_drift_args(parts, seeds, n_test, passes, sf_epochs)
    out = None if out_dir is None else Path(out_dir)
    res: dict = {"suite": "drift", "arguments": a, "source_model": SOURCE_MODEL, "corruption_names": corruption_names()}
    if "source_free" in a["parts"]:
        res["source_free"] = run_source_free(a["seeds"], a["sf_epochs"], out, echo)
    if set(a["parts"]) - {"source_free"}:
        models = {s: _fashion_model(s, out, echo) for s in range(a["seeds"])}
        if "corruptions" in a["parts"]:
            res["corruptions"] = run_corruptions(models, a["n_test"], out, echo)
        if "continual" in a["parts"]:
            res["continual"] = run_continual(models, a["n_test"], a["passes"], out, echo)
        if "uncertainty" in a["parts"]:
            res["uncertainty"] = run_uncertainty(models, a["n_test"], out, echo)
        if "batch_size" in a["parts"]:
            res["batch_size"] = run_batch_size(models, a["n_test"], out, echo)
        if "full_stream" in a["parts"]:
            res["full_stream"] = run_full_stream(models, out, echo)
    res["summary"] = summarize(res)
    res["protocol"] = PROTOCOL
    return res


PROTOCOL = ("hyper-parameters fixed before any target label is read (TENT: Adam lr 1e-3, one step per batch of 64; "
            "EATA: E0 = 0.4 ln K, d_margin 0.4, Fisher on 500 clean training images, alpha 2000; T3A: 100 supports "
            "per class; SHOT: its digit settings (beta 0.1, SGD lr 0.01), 30 epochs, last epoch kept; AaD: k=3); "
            "target labels only score; digits split 50/50 per seed into an unlabeled pool (SHOT's training data) and "
            "a test split (the test-time methods' stream); corruption cells each start from the source model and adapt "
            "online over their stream; the continual stream is never reset; temperature, Laplace prior precision: "
            "clean validation data")


def _mean_std(v):
    from .metrics._base import mean_std

    return mean_std(list(v))


def summarize(res: dict) -> dict:
    """Tables (means ± std over seeds) and the issue's checks."""
    s: dict = {}
    if "source_free" in res:
        tab = {}
        for r in res["source_free"]:
            tab.setdefault((r["task"], r["method"]), []).append(r["accuracy"])
        s["source_free"] = []
        for (t, m), v in tab.items():
            row = {"task": t, "method": m, "accuracy_mean": None}
            if all(x is not None for x in v):
                mean, std = _mean_std(v)
                row.update(accuracy_mean=mean, accuracy_std=std, accuracy_min=min(v), accuracy_max=max(v))
            s["source_free"].append(row)
        cell = {(r["task"], r["method"]): r for r in s["source_free"]}
        s["shot_gain"] = {t: (cell[(t, "shot")]["accuracy_mean"] - cell[(t, "source_only")]["accuracy_mean"])
                          for t in SF_TASKS if (t, "shot") in cell and (t, "source_only") in cell
                          and cell[(t, "shot")]["accuracy_mean"] is not None}
    if "corruptions" in res:
        tab = {}
        for r in res["corruptions"]:
            tab.setdefault((r["severity"], r["method"], r["seed"]), []).append(r["error"])
        rows = []
        for sev in SEVERITIES:
            for m in TTA_ROWS:
                per_seed = [np.mean(v) for (sv, mm, _), v in tab.items() if sv == sev and mm == m]
                if per_seed:
                    mean, std = _mean_std(per_seed)
                    rows.append({"severity": sev, "method": m, "error_mean": mean, "error_std": std})
        s["corruptions"] = rows
        sev5 = {r["method"]: r["error_mean"] for r in rows if r["severity"] == 5}
        if {"source", "bn_adapt", "tent"} <= set(sev5):
            s["tent_order_at_severity_5"] = bool(sev5["source"] > sev5["bn_adapt"] > sev5["tent"])
        per_c = {}
        for r in res["corruptions"]:
            if r["severity"] == 5:
                per_c.setdefault((r["corruption"], r["method"]), []).append(r["error"])
        s["severity_5_by_corruption"] = [{"corruption": c, "method": m, "error_mean": float(np.mean(v))}
                                         for (c, m), v in per_c.items()]
    if "continual" in res:
        curves = {}
        for r in res["continual"]:
            curves.setdefault((r["method"], r["pass"]), []).append(r["error"])
        s["continual"] = [{"method": m, "pass": p, "error_mean": _mean_std(v)[0], "error_std": _mean_std(v)[1]}
                          for (m, p), v in sorted(curves.items())]
        first_last = {}
        for m in CONTINUAL_METHODS:
            pts = [r for r in s["continual"] if r["method"] == m]
            if pts:
                first_last[m] = {"first": pts[0]["error_mean"], "last": pts[-1]["error_mean"],
                                 "change": pts[-1]["error_mean"] - pts[0]["error_mean"]}
        s["continual_first_last"] = first_last
    if "full_stream" in res:
        per = {}
        for r in res["full_stream"]:
            per.setdefault((r["method"], r["seed"]), []).append(r["error"])
        agg = {}
        for (m, _), v in per.items():
            agg.setdefault(m, []).append(float(np.mean(v)))
        s["full_stream"] = [{"method": m, "error_mean": _mean_std(agg[m])[0], "error_std": _mean_std(agg[m])[1]}
                            for m in TTA_ROWS if m in agg]
        e = {r["method"]: r["error_mean"] for r in s["full_stream"]}
        if {"source", "bn_adapt", "tent"} <= set(e):
            s["tent_order_full_stream"] = bool(e["source"] > e["bn_adapt"] > e["tent"])
    if "batch_size" in res:
        tab = {}
        for r in res["batch_size"]:
            tab.setdefault((r["method"], r["batch_size"], r["seed"]), []).append(r["error"])
        per = {}
        for (m, b, _), v in tab.items():
            per.setdefault((m, b), []).append(float(np.mean(v)))
        s["batch_size"] = [{"method": m, "batch_size": b, "error_mean": _mean_std(v)[0], "error_std": _mean_std(v)[1]}
                           for (m, b), v in sorted(per.items())]
    if "uncertainty" in res:
        tab = {}
        for r in res["uncertainty"]:
            tab.setdefault((r["severity"], r["method"]), []).append(r)
        rows = []
        for (sev, m), rs in sorted(tab.items()):
            row = {"severity": sev, "method": m}
            for k in ("accuracy", "ece", "nll", "brier", "misclassification_auroc", "ood_auroc"):
                vals = [x[k] for x in rs if k in x]
                if vals:
                    row[k], row[k + "_std"] = _mean_std(vals)
            rows.append(row)
        s["uncertainty"] = rows
        ece = {(r["severity"], r["method"]): r["ece"] for r in rows}
        # the check is per severity of corruption (1-5); the clean test set is reported beside it
        s["lower_ece_than_map"] = {m: all(ece[(sev, m)] < ece[(sev, "map")] for sev in SEVERITIES)
                                   for m in UNC_ROWS if m != "map"}
        s["lower_ece_than_map_clean"] = {m: bool(ece[(0, m)] < ece[(0, "map")]) for m in UNC_ROWS if m != "map"}
    return s


def source_free_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The source-free summary as ``(tasks, rows)``: one row per method, ``[method, cell per
    task]`` (``mean ± std``, ``n/a (no BatchNorm)`` where the method does not apply, ``—`` where it
    did not run); shared by ``results.md`` and the report."""
    tasks = [t for t in SF_TASKS if any(r["task"] == t for r in summary["source_free"])]
    cell = {(r["task"], r["method"]): r for r in summary["source_free"]}
    rows = []
    for m in SF_METHODS:
        vals = []
        for t in tasks:
            r = cell.get((t, m))
            vals.append("—" if r is None else "n/a (no BatchNorm)" if r["accuracy_mean"] is None
                        else f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}")
        rows.append([m, *vals])
    return tasks, rows


def markdown(res: dict) -> str:
    s = res["summary"]
    lines = []
    if "source_free" in s:
        tasks, rows = source_free_table(s)
        lines += ["### Source-free digits (accuracy on the test split, mean ± std over seeds)", "",
                  "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        if s.get("shot_gain"):
            lines += ["", "SHOT over source-only: " + ", ".join(f"{t} {g:+.3f}" for t, g in s["shot_gain"].items())]
        lines.append("")
    if "corruptions" in s:
        lines += ["### Fashion-MNIST-C: mean error over the 13 corruptions (mean ± std over seeds)", "",
                  "| method | " + " | ".join(f"sev {v}" for v in SEVERITIES) + " |", "|---|" + "---|" * len(SEVERITIES)]
        cell = {(r["severity"], r["method"]): r for r in s["corruptions"]}
        for m in TTA_ROWS:
            lines.append(f"| {m} | " + " | ".join(f"{cell[(v, m)]['error_mean']:.3f} ± {cell[(v, m)]['error_std']:.3f}"
                                                  if (v, m) in cell else "—" for v in SEVERITIES) + " |")
        if "tent_order_at_severity_5" in s:
            lines += ["", f"Severity 5 ordered source > bn_adapt > tent: {s['tent_order_at_severity_5']}"]
        by = {(r["corruption"], r["method"]): r["error_mean"] for r in s["severity_5_by_corruption"]}
        names = list(dict.fromkeys(r["corruption"] for r in s["severity_5_by_corruption"]))
        lines += ["", "Severity 5 per corruption (mean error over seeds):", "",
                  "| corruption | " + " | ".join(TTA_ROWS) + " |", "|---|" + "---|" * len(TTA_ROWS)]
        for c in names:
            vals = [f"{by[(c, m)]:.3f}" if (c, m) in by else "—" for m in TTA_ROWS]
            lines.append(f"| {c} | " + " | ".join(vals) + " |")
        lines.append("")
    if "continual" in s:
        passes = sorted({r["pass"] for r in s["continual"]})
        cell = {(r["method"], r["pass"]): r for r in s["continual"]}
        lines += ["### Continual stream (13 corruptions at severity 5, cycled, never reset): error per pass", "",
                  "| method | " + " | ".join(str(p) for p in passes) + " |", "|---|" + "---|" * len(passes)]
        for m in CONTINUAL_METHODS:
            if (m, 1) in cell:
                lines.append(f"| {m} | " + " | ".join(f"{cell[(m, p)]['error_mean']:.3f}" for p in passes) + " |")
        lines.append("")
    if "full_stream" in s:
        lines += ["### TENT's protocol: severity 5, each corruption's stream the whole test set (10,000 images)", "",
                  "| method | mean error over the 13 corruptions |", "|---|---|"]
        lines += [f"| {r['method']} | {r['error_mean']:.3f} ± {r['error_std']:.3f} |" for r in s["full_stream"]]
        if "tent_order_full_stream" in s:
            lines += ["", f"Ordered source > bn_adapt > tent: {s['tent_order_full_stream']}"]
        lines.append("")
    if "batch_size" in s:
        sizes = sorted({r["batch_size"] for r in s["batch_size"]})
        cell = {(r["method"], r["batch_size"]): r for r in s["batch_size"]}
        lines += ["### Batch size: severity-5 mean error over the 13 corruptions (mean ± std over seeds)", "",
                  "| method | " + " | ".join(f"batch {b}" for b in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for m in BATCH_METHODS:
            lines.append(f"| {m} | " + " | ".join(f"{cell[(m, b)]['error_mean']:.3f} ± {cell[(m, b)]['error_std']:.3f}"
                                                  if (m, b) in cell else "—" for b in sizes) + " |")
        lines.append("")
    if "uncertainty" in s:
        lines += ["### Uncertainty of the source model (severity 0 = clean; corruptions pooled per severity)", "",
                  "| severity | method | accuracy | ECE | NLL | Brier | AUROC (errors) | AUROC (OOD) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in s["uncertainty"]:
            lines.append(f"| {r['severity']} | {r['method']} | {r['accuracy']:.3f} | {r['ece']:.3f} | {r['nll']:.3f} | "
                         f"{r['brier']:.3f} | {r['misclassification_auroc']:.3f} | "
                         + (f"{r['ood_auroc']:.3f}" if "ood_auroc" in r else "") + " |")
        lines += ["", "Lower ECE than the MAP model at every severity 1-5: "
                  + ", ".join(f"{m} {v}" for m, v in s["lower_ece_than_map"].items())
                  + "; on clean data: " + ", ".join(f"{m} {v}" for m, v in s["lower_ece_than_map_clean"].items()), ""]
    lines += ["Protocol: " + res["protocol"]]
    return "\n".join(lines)


def run_drift_dir(out, *, overwrite: bool = False, echo=print, **kw) -> dict:
    """:func:`run_drift` into the benchmark directory ``out`` (finished cells and trained models
    kept: a rerun with the same arguments continues; other arguments are refused); writes
    ``results.json`` and ``results.md``."""
    from .train.rundir import open_benchmark_dir, write_json

    args = check_drift_args(**kw)
    out = open_benchmark_dir(out, "drift", args, overwrite=overwrite)
    t0 = time.perf_counter()
    res = run_drift(out_dir=out, echo=echo, **args)
    res["seconds"] = time.perf_counter() - t0
    res["output_dir"] = str(out)
    write_json(out / "results.json", res)
    (out / "results.md").write_text(markdown(res) + "\n")
    return res
