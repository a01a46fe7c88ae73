r"""Is the scratch + transfer ensemble a hedge? Two cases, three seeds each (issue 16, uncertainty).

    OMP_NUM_THREADS=1 python benchmarks/ensemble_hedge.py --out /tmp/ensemble_hedge [--threads 1]

What it does
------------
The ``ensemble`` strategy (:mod:`transferkit.strategies.ensemble`) mixes the class probabilities
of ``scratch`` and ``finetune``, fitted on the same seed and splits, with weights that minimise
the NLL of the labeled target *validation* split. It is meant as the hedge against negative
transfer: whichever member is better, the mixture should not be much worse. This script checks
that on two cases, each one experiment run by :func:`transferkit.experiment.run_experiment`:

1. ``demo`` -- the demo task of ``transferkit/configs/demo.yaml`` (EfficientNet-Lite0, ImageNet
   weights, 64 px; source ``digits:subset=0/2``, target the other half rotated by 22..45 degrees
   and shifted by 10%; 10 labels per class, the rest of the target split 50/50 into validation and
   test; seeds 0, 1, 2) with ``scratch`` and ``finetune`` as in the demo (``val_every: 1``) and
   ``{name: ensemble, members: [scratch, finetune]}``. ``feature_extraction`` is left out (it is
   not a member; ``--feature-extraction`` puts it back as a reference row): transfer helps here.
2. ``shuffled`` -- negative transfer on purpose: a ``tiny_cnn`` (width 16, 32 px) is trained from
   random initialisation with the one Trainer (the ``scratch`` strategy: AdamW, lr 3e-3, cosine,
   batch 32, no augmentation, last epoch kept, ``--pretrain-epochs`` epochs, default 200) on the
   901 source images ``digits:subset=0/2`` whose labels are randomly permuted across the samples
   (``numpy.random.default_rng(--pretrain-seed).permutation``: the class counts stay, the
   image-label relation is gone). After 200 epochs it has memorised the permuted labels (train
   accuracy 1.0 on them, chance on the true ones), so its features encode noise. Its backbone
   weights go to ``OUT/pretrain/backbone.safetensors`` and the same target, splits and seeds as
   the demo are run with ``scratch`` (random init), ``finetune`` from that file (``backbone:
   {name: tiny_cnn, weights: ...}``, the general finetune defaults, ``val_every: 1``) and the
   ensemble. The script records whether ``finetune`` really is below ``scratch`` there
   (``negative_transfer``). A pretraining of 30 epochs memorises only 36% of the permuted labels
   and leaves finetune at 0.585 ± 0.055 against scratch's 0.617 ± 0.016, below it but inside its
   own spread; 200 epochs (all of them memorised) put it at 0.445 ± 0.028, which is why the
   default is 200.

Protocol and verdict
--------------------
Each strategy's test accuracy is measured once per seed after training; every choice (best
epoch, the LP-FT head, the ensemble weights) is made on the validation split, never on the test
split. Per case and strategy the table gives the mean ± sample std (``ddof=1``) over the seeds,
the min and max, the mean validation NLL, and for the ensemble the mean weight of each member.
The verdict per case is

.. math:: \bar a_{\mathrm{ens}} \ge \max_m \bar a_m - s_{m^*}, \qquad
          m^* = \arg\max_m \bar a_m,

with :math:`\bar a` the mean test accuracy over the seeds and :math:`s_{m^*}` the sample std over
the seeds of the better member's test accuracies ("the ensemble is never worse than the better
of its members by more than that member's seed spread"). ``margin`` is the left side minus the
right side (>= 0: holds). Printed, and written to ``OUT/results.md`` and ``OUT/results.json``
(the experiments' own folders ``OUT/demo`` and ``OUT/shuffled`` keep every run).

How long
--------
6.5 min wall on one thread of the project's 2-core machine beside other work (2026-12-04, the
run below): the demo's nine runs 299 s, the shuffled pretraining and its nine tiny_cnn runs the
rest; peak memory 1.4 GB.

Measured (test accuracy over seeds 0, 1, 2; ``ensemble`` with its defaults: each member
temperature-scaled on the validation split, then the weights fitted on it)
----------------------------------------------------------------------------------------------
========  =============  =============  =============  ===============  ======================
case      scratch        finetune       ensemble       weights (s / f)  verdict (margin)
========  =============  =============  =============  ===============  ======================
demo      0.485 ± 0.026  0.911 ± 0.018  0.911 ± 0.018  0.002 / 0.998    holds (+0.018)
shuffled  0.617 ± 0.016  0.445 ± 0.028  0.620 ± 0.020  0.926 / 0.074    holds (+0.020)
========  =============  =============  =============  ===============  ======================

Before the members were calibrated (``calibrate=False``, the first version of the strategy) the
shuffled case failed: 0.509 ± 0.015 (margin -0.092), weights 0.501 / 0.499. The ensemble did what
it was fitted for (validation NLL 1.441 against the members' 1.596 and 1.864) but not what the
hedge needs: ``scratch`` is *under*-confident there (its validation temperature 0.22-0.29) and
``finetune`` over-confident (1.6-2.1), so the NLL-optimal weights split evenly and the worse
member's sharper probabilities decided the argmax. Temperature-scaling each member first fixed
it without changing the demo case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

DEMO_TARGET = "digits:subset=1/2,rotate=22..45,translate=0.1,seed=0"
PRETRAIN_SOURCE = "digits:subset=0/2"
MEMBERS = ("scratch", "finetune")
ENSEMBLE = {"name": "ensemble", "members": list(MEMBERS)}
#: The shuffled-label pretraining: what the docstring states (tiny_cnn, 32 px, width 16).
PRETRAIN = {"image_size": 32, "width": 16, "lr": 3e-3, "batch_size": 32, "epochs": 200, "seed": 0}


def say(*parts) -> None:
    """A progress line, flushed at once (so a log shows where the run is)."""
    print(*parts, flush=True)


# ------------------------------------------------------------------ the negative-transfer source
def shuffled_labels(labels, seed: int) -> np.ndarray:
    """The labels randomly permuted across the samples (``default_rng(seed).permutation``): the
    same multiset (class counts), no relation to the images left."""
    return np.random.default_rng(seed).permutation(np.asarray(labels))


def shuffled_dataset(dataset, seed: int):
    """``dataset`` with :func:`shuffled_labels` (same inputs, in the same order)."""
    from transferkit.data import DomainDataset

    return DomainDataset(dataset.inputs, shuffled_labels(dataset.labels, seed), f"{dataset.name}/shuffled{seed}",
                         dataset.modality, classes=dataset.classes, meta={"shuffle_seed": int(seed)})


def pretrain_shuffled(source, path, *, epochs: int = PRETRAIN["epochs"], seed: int = PRETRAIN["seed"],
                      image_size: int = PRETRAIN["image_size"], width: int = PRETRAIN["width"],
                      lr: float = PRETRAIN["lr"], batch_size: int = PRETRAIN["batch_size"]) -> dict:
    """Train ``tiny_cnn`` from scratch on ``source`` with shuffled labels (the one Trainer, through
    the ``scratch`` strategy; the last epoch kept) and save its backbone to ``path`` (safetensors,
    the keys ``tiny_cnn(weights=path)`` loads). Returns what was done and how well the permuted
    labels were memorised."""
    from safetensors.torch import save_file

    from transferkit.backbones import create_backbone
    from transferkit.strategies import Scratch

    noisy = shuffled_dataset(source, seed)
    t0 = time.perf_counter()
    # the random initialisation from ``seed``, whatever ran before in this process
    bb = create_backbone("tiny_cnn", image_size=image_size, width=width, seed=seed)
    strat = Scratch(backbone=bb, epochs=epochs,
                    lr=lr, batch_size=batch_size, augment="none", seed=seed, progress=False).fit(noisy)
    seconds = time.perf_counter() - t0
    info = {"source": source.spec or source.name, "n": len(source), "shuffle_seed": int(seed), "epochs": int(epochs),
            "lr": lr, "batch_size": batch_size, "image_size": image_size, "width": width,
            "fraction_relabeled": float(np.mean(noisy.labels != source.labels)),
            "train_accuracy_shuffled": float(strat.score(noisy)),
            "train_accuracy_true": float(np.mean(strat.predict(source) == source.labels)),
            "final_train_loss": float(strat.history_[-1]["train_loss"]), "seconds": seconds, "weights": str(path)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in strat.model_.backbone.state_dict().items()}
    save_file(state, str(path), metadata={"transferkit.pretrain": json.dumps(info)})
    return info


# ------------------------------------------------------------------ the two experiments
def demo_config(seeds: int = 3, feature_extraction: bool = False) -> dict:
    """The packaged demo with the ensemble after its members (and without feature_extraction,
    unless asked)."""
    import yaml

    data = yaml.safe_load(resources.files("transferkit.configs").joinpath("demo.yaml").read_text())
    data["name"], data["seeds"], data["progress"] = "ensemble_hedge_demo", seeds, False
    rows = [s for s in data["strategies"] if feature_extraction or s != "feature_extraction"]
    data["strategies"] = rows + [dict(ENSEMBLE)]
    return data


def shuffled_config(weights, seeds: int = 3, width: int = PRETRAIN["width"],
                    image_size: int = PRETRAIN["image_size"]) -> dict:
    """The demo's target, splits and seeds on ``tiny_cnn`` with the shuffled-label ``weights``."""
    return {"name": "ensemble_hedge_shuffled", "seeds": seeds, "target": DEMO_TARGET,
            "split": {"labels_per_class": 10, "val_fraction": 0.5},
            "backbone": {"name": "tiny_cnn", "image_size": image_size, "weights": str(weights),
                         "options": {"width": width}},
            "progress": False,
            "strategies": [{"name": "scratch", "val_every": 1}, {"name": "finetune", "val_every": 1},
                           dict(ENSEMBLE)]}


def run_case(name: str, cfg: dict, out: Path, overwrite: bool = False) -> dict:
    from transferkit.config import config_from_dict
    from transferkit.experiment import run_experiment

    say(f"[{name}] running {len(cfg['strategies'])} strategies x {cfg['seeds']} seeds -> {out}")
    res = run_experiment(config_from_dict(cfg), out, overwrite=overwrite, echo=lambda *a: say(f"[{name}]", *a),
                         report_features=False)
    say(f"[{name}] done in {res['wall_time']:.0f} s")
    return res


# ------------------------------------------------------------------ table and verdict
def case_rows(runs: list[dict]) -> dict:
    """Per strategy: test accuracy per seed, mean, sample std, min, max; mean validation NLL (of
    the ensemble's members as it measured them, and of the ensemble); ensemble weights' means."""
    by: dict = {}
    for r in runs:
        by.setdefault(r["strategy"], []).append(r)
    nll: dict = {}
    for r in runs:
        for k, v in ((r.get("ensemble") or {}).get("val_nll") or {}).items():
            nll.setdefault(r["strategy"] if k == "ensemble" else k, []).append(v)
    rows = {}
    for key, rs in by.items():
        acc = [float(r["accuracy"]) for r in sorted(rs, key=lambda r: r["seed"])]
        a = np.asarray(acc)
        row = {"accuracies": acc, "seeds": sorted(r["seed"] for r in rs), "mean": float(a.mean()),
               "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()), "max": float(a.max()),
               "val_nll_mean": float(np.mean(nll[key])) if key in nll else None}
        ens = [r["ensemble"] for r in rs if r.get("ensemble")]
        if ens:
            row["weights_mean"] = {m: float(np.mean([e["weights"][m] for e in ens])) for m in ens[0]["members"]}
            row["weights"] = [e["weights"] for e in ens]
        rows[key] = row
    return rows


def verdict(member_accs: dict, ensemble_accs) -> dict:
    """Whether the ensemble's mean test accuracy is at least the better member's mean minus that
    member's sample std over seeds (``ddof=1``; 0 for one seed). ``member_accs``: ``{key: per-seed
    accuracies}``; the better member is the one with the highest mean (the first on a tie)."""
    means = {k: float(np.mean(v)) for k, v in member_accs.items()}
    best = max(means, key=means.get)
    b = np.asarray(member_accs[best], dtype=float)
    spread = float(b.std(ddof=1)) if len(b) > 1 else 0.0
    ens = float(np.mean(ensemble_accs))
    bound = means[best] - spread
    return {"rule": "ensemble mean >= better member's mean - better member's sample std over seeds (ddof=1)",
            "better_member": best, "better_mean": means[best], "spread": spread, "bound": bound,
            "ensemble_mean": ens, "margin": ens - bound, "holds": bool(ens >= bound),
            "member_means": means}


def markdown(name: str, title: str, rows: dict, v: dict) -> str:
    lines = [f"### {name}: {title}", "",
             "| strategy | test accuracy (mean ± std) | min | max | val NLL (mean) | ensemble weights (mean) |",
             "|---|---|---|---|---|---|"]
    for key, r in rows.items():
        w = ", ".join(f"{m} {x:.3f}" for m, x in r["weights_mean"].items()) if "weights_mean" in r else ""
        nll = f"{r['val_nll_mean']:.3f}" if r["val_nll_mean"] is not None else ""
        lines.append(f"| {key} | {r['mean']:.3f} ± {r['std']:.3f} | {r['min']:.3f} | {r['max']:.3f} | {nll} | {w} |")
    lines += ["", f"Verdict: ensemble {v['ensemble_mean']:.3f} vs better member {v['better_member']} "
                  f"{v['better_mean']:.3f} - spread {v['spread']:.3f} = {v['bound']:.3f}: margin {v['margin']:+.3f}, "
                  f"**{'holds' if v['holds'] else 'fails'}**."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (not inside the repository)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--pretrain-epochs", type=int, default=PRETRAIN["epochs"])
    ap.add_argument("--pretrain-seed", type=int, default=PRETRAIN["seed"])
    ap.add_argument("--feature-extraction", action="store_true", help="keep the demo's feature_extraction row")
    ap.add_argument("--only", choices=("demo", "shuffled"), help="one case only")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if out.exists() and any(out.iterdir()) and not a.overwrite:
        ap.error(f"--out {a.out} exists and is not empty; give a new folder or --overwrite")
    import warnings

    from transferkit._threads import configure_threads
    from transferkit.data.spec import load_dataset
    from transferkit.errors import TransferKitWarning

    warnings.simplefilter("ignore", TransferKitWarning)  # run_experiment records them in results.json
    threads = configure_threads(a.threads)
    t0 = time.perf_counter()
    say(f"ensemble_hedge: {a.seeds} seeds, {threads} thread(s), out {out}")
    cases, report = {}, []
    if a.only in (None, "demo"):
        res = run_case("demo", demo_config(a.seeds, a.feature_extraction), out / "demo", a.overwrite)
        cases["demo"] = {"title": "EfficientNet-Lite0 (ImageNet) at 64 px, the demo task", "results": res}
    pre = None
    if a.only in (None, "shuffled"):
        src = load_dataset(PRETRAIN_SOURCE)
        path = out / "pretrain" / "backbone.safetensors"
        say(f"[shuffled] pretraining tiny_cnn on {PRETRAIN_SOURCE} with permuted labels, {a.pretrain_epochs} epochs")
        pre = pretrain_shuffled(src, path, epochs=a.pretrain_epochs, seed=a.pretrain_seed)
        say(f"[shuffled] pretrained in {pre['seconds']:.0f} s: {pre['fraction_relabeled']:.1%} of labels changed, "
            f"train accuracy {pre['train_accuracy_shuffled']:.3f} on the permuted labels, "
            f"{pre['train_accuracy_true']:.3f} on the true ones")
        res = run_case("shuffled", shuffled_config(path, a.seeds), out / "shuffled", a.overwrite)
        cases["shuffled"] = {"title": f"tiny_cnn at 32 px pretrained {a.pretrain_epochs} epochs on shuffled labels",
                             "results": res}
    summary = {"protocol": __doc__.split("Protocol and verdict\n--------------------\n")[1].split("\nHow long")[0],
               "seeds": a.seeds, "threads": threads, "pretrain": pre, "cases": {}}
    for name, c in cases.items():
        rows = case_rows(c["results"]["runs"])
        v = verdict({m: rows[m]["accuracies"] for m in MEMBERS}, rows["ensemble"]["accuracies"])
        entry = {"title": c["title"], "output_dir": c["results"]["output_dir"], "rows": rows, "verdict": v,
                 "wall_time": c["results"]["wall_time"]}
        if name == "shuffled":
            entry["negative_transfer"] = bool(rows["finetune"]["mean"] < rows["scratch"]["mean"])
            if not entry["negative_transfer"]:
                say("[shuffled] WARNING: finetune from the shuffled backbone is not below scratch; not a "
                    "negative-transfer case: give more --pretrain-epochs")
        summary["cases"][name] = entry
        report.append(markdown(name, c["title"], rows, v))
        if name == "shuffled":
            report.append(f"\nnegative transfer (finetune mean < scratch mean): {entry['negative_transfer']}; "
                          f"pretraining: {pre['epochs']} epochs, train accuracy {pre['train_accuracy_shuffled']:.3f} "
                          f"on the permuted labels, {pre['train_accuracy_true']:.3f} on the true ones.")
    summary["wall_time"] = time.perf_counter() - t0
    text = ("# Ensemble as a hedge against negative transfer\n\n" + "\n\n".join(report)
            + f"\n\nRule: {verdict({'a': [0.0]}, [0.0])['rule']}. {a.seeds} seeds, {threads} thread(s), "
            f"wall time {summary['wall_time']:.0f} s.\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    say("\n" + text)
    say(f"results in {out / 'results.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
