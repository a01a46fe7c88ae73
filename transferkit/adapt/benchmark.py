"""``transferkit benchmark digits-shift``: domain adaptation methods on shifted digits.

Source: ``digits:subset=0/2`` (labeled). Each task's target is ``digits:subset=1/2`` with a
shift; per seed the target is split 50/50 (stratified) into an unlabeled training pool and a
test split. Methods see the source labels and the unlabeled pool; checkpoints are selected by
an unsupervised scorer (``dev`` by default, recorded per row); target labels are used only to
score the test split, and by the ``target_only`` oracle (all pool labels).
"""

from __future__ import annotations

import time

from ..errors import ConfigError

SOURCE = "digits:subset=0/2"
TASKS = {
    "rot30": "digits:subset=1/2,rotate=30,seed=0",
    "rot45_trans": "digits:subset=1/2,rotate=22..45,translate=0.1,seed=0",
    "invert": "digits:subset=1/2,invert=true",
    "noise_blur": "digits:subset=1/2,noise=0.2,blur=1.0,seed=0",
    "scale": "digits:subset=1/2,scale=0.6..0.8,seed=0",
}
DEEP = ["dan", "jan", "dann", "cdan", "cdan_e", "deep_coral", "mcc", "entropy", "deepjdot", "kl_align", "jan+mcc"]
SHALLOW = ["coral", "sa", "tca", "ot_mapping", "kmm", "kliep", "self_training"]
DEFAULT_METHODS = ["source_only", "source_only_lr", "adabn"] + DEEP + SHALLOW + ["target_only"]


def run_benchmark(tasks=None, methods=None, seeds: int = 3, *, backbone: str = "efficientnet_lite0",
                  image_size: int = 64, selection: str = "dev", epochs: int = 30, echo=print) -> dict:
    """Run every (task, method, seed); return ``{"rows": [...], "runs": [...]}``."""
    from ..data import stratified_split
    from ..data.spec import load_dataset
    from ..metrics._base import mean_std
    from ..strategies import Adapt

    tasks = list(tasks or TASKS)
    methods = list(methods or DEFAULT_METHODS)
    for t in tasks:
        if t not in TASKS:
            from .._validation import suggest

            raise ConfigError(f"unknown task {t!r}." + suggest(t, TASKS) + f" Tasks: {', '.join(TASKS)}.")
    src = load_dataset(SOURCE)
    runs = []
    for task in tasks:
        tgt = load_dataset(TASKS[task])
        for seed in range(seeds):
            pool, test_idx = stratified_split(tgt.labels, [0.5, 0.5], seed=seed)
            labeled_pool, test = tgt.subset(pool), tgt.subset(test_idx)
            unlabeled = labeled_pool.without_labels()
            for m in methods:
                t0 = time.perf_counter()
                common = dict(backbone=backbone, image_size=image_size, seed=seed, epochs=epochs)
                if m == "target_only":
                    # oracle: the same adapter trained on the labeled pool as its "source"
                    s = Adapt(**common, method=None, selection="dev").fit(unlabeled, source=labeled_pool)
                    sel = "oracle (target labels)"
                elif m in ("source_only", "adabn"):
                    # source_only sees no target data at all; adabn adds only the target's BatchNorm statistics
                    s = Adapt(**common, method=None, selection=selection, domain_bn=m == "adabn")
                    s.fit(unlabeled, source=src)
                    sel = s.selection_
                else:
                    s = Adapt(**common, method=m, selection=selection)
                    s.fit(unlabeled, source=src)
                    sel = s.selection_
                acc = s.score(test)
                runs.append({"task": task, "method": m, "seed": seed, "accuracy": acc, "selection": sel,
                             "seconds": time.perf_counter() - t0})
                echo(f"  {task:<12} {m:<14} seed {seed}  {acc:.3f}  ({time.perf_counter() - t0:.1f}s, {sel})")
    rows = []
    for task in tasks:
        for m in methods:
            rs = [r for r in runs if r["task"] == task and r["method"] == m]
            mean, std = mean_std([r["accuracy"] for r in rs])
            rows.append({"task": task, "method": m, "accuracy_mean": mean, "accuracy_std": std, "n_seeds": len(rs),
                         "selection": rs[0]["selection"]})
    return {"rows": rows, "runs": runs, "source": SOURCE, "tasks": {t: TASKS[t] for t in tasks},
            "protocol": "target split 50/50 per seed into an unlabeled pool and a test split; checkpoint selection "
                        f"by '{selection}' (no target labels); target labels only score the test split and train "
                        "the target_only oracle"}


def _cell(r: dict) -> str:
    if r["n_seeds"] == 1:
        return f"{r['accuracy_mean']:.3f} (1 seed)"
    return f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}"


def markdown_table(res: dict) -> str:
    tasks = list(res["tasks"])
    methods = list(dict.fromkeys(r["method"] for r in res["rows"]))
    cell = {(r["task"], r["method"]): r for r in res["rows"]}
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_cell(cell[(t, m)]) for t in tasks) + " |")
    return "\n".join(lines)
