"""Sample efficiency on the demo task: fine-tuning vs scratch against labels per class.

    python benchmarks/sample_efficiency.py [--seeds 3] [--ks 1 2 5 10 20 50 all] [--epochs 30]
                                          [--sharpness] [--threads 1] [--out runs/bench-se]

The demo config (``transferkit/configs/demo.yaml``: digits source/target, EfficientNet-Lite0
at 64x64, 10 labels per class, validation split for model selection) is run through
:func:`transferkit.diagnostics.diagnose.run_diagnose`: the negative-transfer test of
``finetune`` vs ``scratch`` at 10 labels per class over the seeds (plus source-only: the label
spaces match), then the sample-efficiency curve over ``--ks`` (the k = 10 point reuses the
negative-transfer runs), and the "fine-tuning with 10 labels per class equals scratch with N
labels per class" figure. ``--epochs`` overrides both strategies' budget (the demo uses 30);
a reduced run says so in its output.

Cost grows with k (more training images) and with the validation split evaluated each epoch;
with every k the full curve is roughly 10x the k = 10 run.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources

import yaml


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ks", nargs="+", default=["1", "2", "5", "10", "20", "50", "all"])
    ap.add_argument("--epochs", type=int, default=None, help="training epochs of both strategies (demo: 30)")
    ap.add_argument("--sharpness", action="store_true", help="also the top Hessian eigenvalue (slow on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a busy machine)")
    ap.add_argument("--out", default=f"runs/bench-sample-efficiency-{time.strftime('%Y%m%d-%H%M%S')}")
    ap.add_argument("--reuse", metavar="DIR", nargs="+",
                    help="earlier output directories of this script (same seeds and epochs, possibly "
                         "interrupted): their finished negative_transfer/ and sample_efficiency/k*/ runs are "
                         "reused instead of trained again")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from transferkit.config import config_from_dict
    from transferkit.diagnostics.diagnose import run_diagnose
    from transferkit.diagnostics.sample_efficiency import format_curve

    data = yaml.safe_load(resources.files("transferkit.configs").joinpath("demo.yaml").read_text())
    extra = {"epochs": a.epochs} if a.epochs else {}
    data.update(seeds=a.seeds, progress=False,
                strategies=[{"name": "finetune", **extra}, {"name": "scratch", **extra}])
    ks = [k if k == "all" else int(k) for k in a.ks]
    data["diagnose"] = {"transfer": "finetune", "baseline": "scratch", "labels_per_class": ks,
                        "sharpness": a.sharpness, "sharpness_samples": 64}
    cfg = config_from_dict(data)
    epochs = a.epochs or 30
    print(f"demo task (digits -> rotated/translated digits), EfficientNet-Lite0 64x64, finetune vs scratch, "
          f"{a.seeds} seeds, {epochs} epochs{' (reduced from 30)' if epochs != 30 else ''}, k = {a.ks}", flush=True)
    t0 = time.perf_counter()
    if a.reuse:
        res = _from_reuse(cfg, a)
    else:
        res = run_diagnose(cfg, a.out, echo=lambda *x: print(*x, flush=True))
    nt = res["negative_transfer"]
    print(f"\nnegative transfer at 10 labels/class: **{nt['verdict']}**  finetune - scratch = {nt['delta_mean']:+.3f} "
          f"(95% CI [{nt['ci_low']:+.3f}, {nt['ci_high']:+.3f}], {nt['method']}, p = {nt['p_value']:.3g}, "
          f"{nt['n_seeds']} seeds; finetune {nt['transfer_mean']:.3f}, scratch {nt['baseline_mean']:.3f})")
    if nt.get("source_only"):
        print(f"source-only: {nt['source_only']['accuracy_mean']:.3f}")
    if res["convergence"]:
        c = res["convergence"]
        print(f"steps to {c['threshold']:.3f} val accuracy: finetune {c['transfer']['steps']}, "
              f"scratch {c['baseline']['steps']}, speed-up {c['speedup']}")
    if res["sharpness"]:
        print("sharpness:", {k: v for k, v in res["sharpness"].items() if k != "quantity"})
    se = res["sample_efficiency"]
    print("\n" + format_curve(se) + "\n")
    print(se["headline"])
    for s in se["skipped"]:
        print(f"skipped k={s['label']}: {s['reason']}")
    print(f"\nwall time {time.perf_counter() - t0:.0f}s; results in {res['output_dir']}")


def _from_reuse(cfg, a) -> dict:
    """The negative-transfer test on a finished run, and the curve with that run as k = 10."""
    import json
    from pathlib import Path

    from transferkit.diagnostics.negative_transfer import compare_scores
    from transferkit.diagnostics.sample_efficiency import run_sample_efficiency

    found, prev = {}, None
    for d in map(Path, a.reuse):
        if (d / "negative_transfer" / "results.json").is_file():
            prev = json.loads((d / "negative_transfer" / "results.json").read_text())
            found[cfg.split.labels_per_class] = prev
        for f in sorted(d.glob("sample_efficiency/k*/results.json")):
            k = f.parent.name[1:]
            found[k if k == "all" else int(k)] = json.loads(f.read_text())
    if prev is None:
        raise SystemExit(f"none of {a.reuse} holds negative_transfer/results.json")
    for k, r in found.items():
        if sorted({x["seed"] for x in r["runs"]}) != sorted(cfg.seeds):
            raise SystemExit(f"the reused k={k} run has seeds {sorted({x['seed'] for x in r['runs']})}, not {cfg.seeds}")
    print(f"reusing k = {sorted(found, key=str)}", flush=True)
    by = {k: {r["seed"]: r["accuracy"] for r in prev["runs"] if r["strategy"] == k} for k in prev["summary"]}
    nt = compare_scores([by["finetune"][s] for s in cfg.seeds], [by["scratch"][s] for s in cfg.seeds])
    if "source_only" in prev["summary"]:
        nt["source_only"] = {"accuracy_mean": prev["summary"]["source_only"]["accuracy_mean"]}
    se = run_sample_efficiency(cfg, Path(a.out) / "sample_efficiency", labels_per_class=cfg.diagnose.labels_per_class,
                               precomputed=found, echo=lambda *x: print(*x, flush=True))
    res = {"negative_transfer": nt, "sample_efficiency": se, "convergence": None, "sharpness": None,
           "output_dir": a.out}
    from transferkit.train.rundir import write_json

    write_json(Path(a.out) / "sample_efficiency.json", res)
    return res


if __name__ == "__main__":
    main()
