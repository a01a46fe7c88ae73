"""``transferkit benchmark representation``: representations trained without the target's labels.

Parts:

- ``ssl``: a small CNN (``tiny_cnn``, width 32, 28 px) is pretrained on *unlabeled* Fashion-MNIST
  training images by each pretext task (``rotation``, ``simclr``, ``byol``, ``simsiam``), and, as
  the two references, left at its random initialisation (``random``) or trained with the labels of
  the same images (``supervised``: cross-entropy, the same budget). Each backbone is then frozen
  and scored on Fashion-MNIST's own test split (a cosine kNN vote, ``k=20``, over 5,000 labeled
  training rows; a linear probe on the same rows; a linear probe on 10 labels per class) and
  transferred to Animal-MNIST and the scikit-learn digits with 10 labels per class (a linear
  probe on the frozen features; five label draws per seed, scored on up to 2,000 other rows).
  The *gap closed* is ``(ssl - random) / (supervised - random)`` on Fashion-MNIST at 10 labels
  per class.
- ``mtl`` and ``cross_modal``: see :mod:`transferkit.pretrain.bench` (multi-task weightings
  against single-task models; the image-text embedding's zero-shot accuracy and retrieval).

Every cell is mean ± std over seeds (a seed fixes the initialisation, the pretraining order and
the label draws); no choice reads test labels. Each finished cell is kept under ``cells/`` so an
interrupted run continues.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .errors import ConfigError

PARTS = ("ssl", "mtl", "cross_modal")
PRETEXTS = ("rotation", "simclr", "byol", "simsiam")
SSL_INITS = ("random", "supervised", *PRETEXTS)
SSL_BACKBONE = {"name": "tiny_cnn", "image_size": 28, "width": 32}
SSL_DATA = "fashion_mnist:split=train,n=10000"
SSL_BANK = "fashion_mnist:split=train,subset=1/6"  # 10,000 labeled rows: kNN bank and probe pool (5,000 used)
SSL_TEST = "fashion_mnist:split=test,n=2000"
SSL_TARGETS = {"animal": "animal_mnist", "digits": "digits"}
LABELS_PER_CLASS = 10
DRAWS = 5
BANK_ROWS = 5000
#: Per-pretext options of the benchmark (the rest are the pretext's defaults).
#: rotation: one random rotation per image (the all-four default costs four forward passes per image, twice
#: what the two-view methods pay; one keeps the budgets comparable)
PRETEXT_OPTIONS: dict = {"simclr": {"temperature": 0.2}, "rotation": {"all_rotations": False}}

PROTOCOL = ("tiny_cnn (width 32, 28 px) pretrained on 10,000 unlabeled Fashion-MNIST training images per pretext "
            "(labels unread), or trained on the same images with their labels (supervised, light affine augmentation), "
            "or random (AdamW lr 0.001, batch 256, the arguments' epochs, last epoch kept); frozen "
            "features scored by a cosine kNN (k=20) and a linear probe over 5,000 labeled Fashion-MNIST training rows "
            "and a linear probe at 10 labels per class (5 draws per seed), tested on 2,000 Fashion-MNIST test images; "
            "transfer: linear probes at 10 labels per class on Animal-MNIST and scikit-learn digits, tested on up "
            "to 2,000 other rows; mean ± std over seeds")


def check_representation_args(parts=None, seeds: int = 3, epochs: int = 10) -> dict:
    """Check the benchmark's arguments before anything runs."""
    from .train.rundir import check_parts_args

    return check_parts_args(parts, PARTS, seeds, epochs)


# ------------------------------------------------------------------ ssl
_DATA: dict = {}


def _dataset(spec):
    if spec not in _DATA:
        from .data.spec import load_dataset

        _DATA[spec] = load_dataset(spec)
    return _DATA[spec]


def _backbone(seed: int):
    from .backbones import create_backbone

    b = dict(SSL_BACKBONE)
    return create_backbone(b.pop("name"), image_size=b.pop("image_size"), seed=seed, **b)


def _train_ssl_backbone(init: str, seed: int, epochs: int, echo=print):
    """The backbone of one ``init`` and seed, trained as the protocol says; ``(backbone, seconds)``."""
    import torch

    from ._registry import get
    from .train import Trainer

    bb = _backbone(seed)
    if init == "random":
        return bb, 0.0
    t0 = time.perf_counter()
    if init == "supervised":
        from .nn import TransferModel

        ds = _dataset(SSL_DATA)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TransferModel(bb, len(ds.classes))
        tr = Trainer(model, [{"params": list(model.parameters()), "lr": 1e-3, "weight_decay": 1e-4}], epochs=epochs,
                     batch_size=256, seed=seed, device="cpu", progress=False, augment="light",
                     tag=f"supervised seed {seed}")
        tr.fit(ds)
        return model.backbone, time.perf_counter() - t0
    ds = _dataset(SSL_DATA).without_labels()
    pretext = get("pretext", init)(bb, seed=seed, **PRETEXT_OPTIONS.get(init, {}))
    pretext.check_data(ds)
    params = list(bb.parameters()) + [p for p in pretext.parameters() if p.requires_grad]
    tr = Trainer(bb, [{"params": params, "lr": 1e-3, "weight_decay": 1e-4}], epochs=epochs, batch_size=256,
                 seed=seed, device="cpu", progress=False, objective=pretext, tag=f"{init} seed {seed}")
    tr.fit(ds)
    return bb, time.perf_counter() - t0


def _few_label_probe(X, y, seed: int, k: int = LABELS_PER_CLASS, draws: int = DRAWS, test=None) -> float:
    """Mean accuracy over ``draws`` of a linear probe on ``k`` labels per class; scored on ``test``
    (``(X, y)``) or, without it, on up to 2,000 rows not drawn."""
    from .pretrain.run import linear_probe_accuracy

    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(draws):
        pick = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in np.unique(y)])
        if test is None:
            rest = np.setdiff1d(np.arange(len(y)), pick)
            rest = rng.choice(rest, min(2000, len(rest)), replace=False)
            Xt, yt = X[rest], y[rest]
        else:
            Xt, yt = test
        accs.append(linear_probe_accuracy(X[pick], y[pick], Xt, yt))
    return float(np.mean(accs))


def _ssl_cell(init: str, seed: int, epochs: int, out: Path | None) -> dict:
    from .backbones import save_backbone
    from .features.extractor import extract_features
    from .pretrain.run import knn_accuracy, linear_probe_accuracy

    bb, seconds = _train_ssl_backbone(init, seed, epochs)
    if out is not None:
        (out / "backbones").mkdir(parents=True, exist_ok=True)
        save_backbone(bb, out / "backbones" / f"{init}-seed{seed}.safetensors",
                      metadata={"transferkit.pretext": init, "transferkit.data": SSL_DATA})
    bb.eval()

    def feats(spec):
        ds = _dataset(spec)
        return extract_features(bb, ds.inputs, batch_size=256), np.asarray(ds.labels)

    bank, test = feats(SSL_BANK), feats(SSL_TEST)
    rows = np.random.default_rng(0).choice(len(bank[1]), min(BANK_ROWS, len(bank[1])), replace=False)
    Xb, yb = bank[0][rows], bank[1][rows]
    val = {"train_seconds": seconds,
           "fashion_knn": knn_accuracy(Xb, yb, *test, k=20),
           "fashion_linear": linear_probe_accuracy(Xb, yb, *test),
           "fashion_10": _few_label_probe(Xb, yb, seed, test=test)}
    for name, spec in SSL_TARGETS.items():
        X, y = feats(spec)
        val[f"{name}_10"] = _few_label_probe(X, y, seed)
    return val


# ------------------------------------------------------------------ the cells
def _cells(a: dict, out: Path | None):
    ep = a["epochs"]
    for part in a["parts"]:
        for seed in range(a["seeds"]):
            if part == "ssl":
                for init in SSL_INITS:
                    yield (part, f"ssl--{init}--seed{seed}",
                           {"init": init, "epochs": ep, "backbone": SSL_BACKBONE, "data": SSL_DATA,
                            "options": PRETEXT_OPTIONS.get(init)},
                           lambda init=init, seed=seed: _ssl_cell(init, seed, ep, out))
            else:
                from .pretrain import bench

                for name, definition, compute in bench.cells(part, seed, ep):
                    yield part, name, definition, compute


def _cell_key(part: str, name: str) -> dict:
    bits = name.split("--")[1:]
    seed = int(bits[-1].removeprefix("seed"))
    if part == "ssl":
        return {"init": bits[0], "seed": seed}
    return {"task": bits[0], "method": bits[1], "seed": seed}


def run_representation(parts=None, seeds: int = 3, *, epochs: int = 10, out_dir=None, echo=print) -> dict:
    """Run the parts of the representation benchmark; ``{part: [cell rows], "summary", "protocol"}``."""
    import warnings

    from .train.rundir import cached_cell

    a = check_representation_args(parts, seeds, epochs)
    out = None if out_dir is None else Path(out_dir)
    res: dict = {"suite": "representation", "arguments": a}
    cells = list(_cells(a, out))
    t0 = time.perf_counter()
    for i, (part, name, definition, compute) in enumerate(cells):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of the probes go nowhere: the table says enough
            value = cached_cell(out, name, definition, compute, echo)
        res.setdefault(part, []).append({**_cell_key(part, name), **value})
        shown = {k: round(v, 3) for k, v in value.items() if isinstance(v, float)}
        echo(f"[{i + 1}/{len(cells)}] {name} {shown} ({(time.perf_counter() - t0) / 60:.1f} min)")
    res["summary"] = summarize(res)
    res["protocol"] = {"ssl": PROTOCOL}
    if any(p in a["parts"] for p in ("mtl", "cross_modal")):
        from .pretrain import bench

        res["protocol"].update(bench.PROTOCOLS)
    return res


def _mean_std(v) -> dict:
    from .metrics._base import mean_std

    m, sd = mean_std(list(v))
    return {"mean": m, "std": sd}


def _ssl_metrics() -> list[str]:
    return ["fashion_knn", "fashion_linear", "fashion_10", *(f"{t}_10" for t in SSL_TARGETS), "train_seconds"]


def summarize(res: dict) -> dict:
    """Mean ± std over seeds of every cell; the SSL gap closed and the goals' verdicts."""
    out: dict = {}
    rows = res.get("ssl")
    if rows:
        by: dict = {}
        for r in rows:
            by.setdefault(r["init"], []).append(r)
        metrics = _ssl_metrics()
        out["ssl"] = [{"init": k, **{m: _mean_std(r[m] for r in rs) for m in metrics}, "n_seeds": len(rs)}
                      for k, rs in by.items()]
        means = {r["init"]: {m: r[m]["mean"] for m in metrics} for r in out["ssl"]}
        if "random" in means and "supervised" in means:
            verdicts = []
            gap = means["supervised"]["fashion_10"] - means["random"]["fashion_10"]
            for p in PRETEXTS:
                if p not in means:
                    continue
                closed = (means[p]["fashion_10"] - means["random"]["fashion_10"]) / gap if gap > 0 else None
                order = {t: (means["supervised"][f"{t}_10"] >= means[p][f"{t}_10"] > means["random"][f"{t}_10"])
                         for t in SSL_TARGETS}
                verdicts.append({"pretext": p, "gap_closed_fashion_10": closed, "order_holds": order})
            out["ssl_goals"] = verdicts
    if any(res.get(p) for p in ("mtl", "cross_modal")):
        from .pretrain import bench

        out.update(bench.summarize(res))
    return out


def _fmt(ms) -> str:
    if not ms:
        return "—"
    return f"{ms['mean']:.3f} ± {ms['std']:.3f}"


def markdown(res: dict) -> str:
    """results.md: one table per part, the protocols, and the goals' verdicts."""
    s = res.get("summary") or summarize(res)
    lines = ["# Representations: self-supervised, multi-task, image-text", ""]
    if "ssl" in s:
        metrics = _ssl_metrics()
        cols = ["Fashion kNN", "Fashion linear", "Fashion 10/class", *(f"{t} 10/class" for t in SSL_TARGETS)]
        lines += ["## Self-supervised pretraining (tiny_cnn on unlabeled Fashion-MNIST)", "",
                  f"Protocol: {res.get('protocol', {}).get('ssl', PROTOCOL)}.", "",
                  "| init | " + " | ".join(cols) + " | train s |", "|---" * (len(cols) + 2) + "|"]
        for r in s["ssl"]:
            lines.append(f"| {r['init']} | " + " | ".join(_fmt(r[m]) for m in metrics[:-1])
                         + f" | {r['train_seconds']['mean']:.0f} |")
        lines.append("")
        for v in s.get("ssl_goals", []):
            g = v["gap_closed_fashion_10"]
            order = ", ".join(f"{t}: {'holds' if ok else 'does not hold'}" for t, ok in v["order_holds"].items())
            lines.append(f"- {v['pretext']}: closes {'—' if g is None else f'{100 * g:.0f}%'} of the random-to-"
                         f"supervised gap on Fashion-MNIST at 10 labels per class; supervised >= {v['pretext']} > "
                         f"random at 10 labels per class: {order}.")
        lines.append("")
    if any(p in s for p in ("mtl", "cross_modal")):
        from .pretrain import bench

        lines += bench.markdown(res, s)
    return "\n".join(lines)


def run_representation_dir(out, *, overwrite: bool = False, echo=print, **kw) -> dict:
    """:func:`run_representation` into ``out`` (finished cells kept: a rerun with the same
    arguments continues; other arguments are refused); writes ``results.json`` and ``results.md``."""
    from .train.rundir import open_benchmark_dir, write_json

    args = check_representation_args(**kw)
    out = open_benchmark_dir(out, "representation", args, overwrite=overwrite)
    t0 = time.perf_counter()
    res = run_representation(out_dir=out, echo=echo, **args)
    res["seconds"] = time.perf_counter() - t0
    res["output_dir"] = str(out)
    write_json(out / "results.json", res)
    (out / "results.md").write_text(markdown(res) + "\n")
    return res
