"""``transferkit benchmark few-shot``: every registered few-shot method on data that ships offline.

Tasks (:data:`TASKS`), each with its class split fixed here (never drawn at run time):

- ``flavia``: Flavia leaves (``flavia``: 32 species, 50 shape/colour/texture features per leaf),
  16 / 6 / 10 meta-train / meta-val / meta-test species, rows standardized on the meta-train
  species, an ``mlp`` encoder (2 x 256).
- ``fashion_animal_lite0`` and ``fashion_animal_conv4`` (cross-domain images): meta-train on six
  Fashion-MNIST classes, meta-val on the other four (4-way validation episodes), meta-test on the
  ten Animal-MNIST silhouette classes; :data:`IMAGE_ROWS` rows per class of each. Side by side:
  frozen ImageNet EfficientNet-Lite0 features (:data:`LITE0_SIZE` px, cached) with an ``mlp`` on
  top, and a ``conv4`` meta-trained on the raw 28 x 28 images.
- ``drug_conditions`` (text): the drug-review conditions with at least 10 reviews (20; the
  ``(unknown)`` condition left out), 8 / 5 / 7 conditions, reviews embedded by ``minilm``
  (frozen, cached), an ``mlp`` on top; 5 queries per class (a class has as few as 10 reviews).

Settings: 5-way 1-shot and 5-way 5-shot; :data:`TEST_EPISODES` meta-test episodes per cell, mean
± 95% interval; meta-training budgets per method in :data:`STEPS` (each meta-training run below
10 minutes on one thread). Each finished cell is stored under ``cells/`` (``--resume`` keeps
them). The table marks the rows whose interval lies above SimpleShot's on the same task and
setting (non-overlapping intervals), and names the method with the best meta-validation
accuracy over every task and setting (test episodes unused): the ``fewshot`` command's default.

We cannot run Omniglot or mini-ImageNet offline, so learn2learn's anchors (MAML 99.1% on Omniglot
5-way 1-shot; 48.3 / 65.4% on mini-ImageNet 1 / 5-shot; ProtoNets 49.1 / 66.5%) are for scale only.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

from ..errors import ConfigError

#: File of a benchmark directory holding the arguments it was started with.
ARGS_FILE = "benchmark.json"
SUITE = "few-shot"

FLAVIA_CLASSES = {
    "train": ["anhui_barberry", "camphortree", "chinese_cinnamon", "chinese_horse_chestnut", "chinese_redbud",
              "chinese_toon", "crape_myrtle", "ginkgo_maidenhair_tree", "glossy_privet", "goldenrain_tree",
              "japanese_flowering_cherry", "oleander", "peach", "pubescent_bamboo", "wintersweet", "yew_plum_pine"],
    "val": ["chinese_tulip_tree", "ford_woodlotus", "japanese_maple", "nanmu", "sweet_osmanthus", "trident_maple"],
    "test": ["beale_s_barberry", "big_fruited_holly", "canadian_poplar", "castor_aralia", "deodar",
             "japanese_cheesewood", "japanese_viburnum", "southern_magnolia", "tangerine", "true_indigo"],
}
FASHION_CLASSES = {
    "train": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Sandal", "Sneaker"],
    "val": ["Coat", "Shirt", "Bag", "Ankle boot"],
}
DRUG_CLASSES = {
    "train": ["ADHD", "Bipolar Disorde", "Chronic Pain", "Diabetes, Type 2", "Emergency Contraception", "Migraine",
              "Panic Disorde", "Smoking Cessation"],
    "val": ["Depression", "Insomnia", "Opiate Dependence", "Pain", "ibromyalgia"],
    "test": ["Acne", "Anxiety", "Birth Control", "Bowel Preparation", "Obesity", "Vaginal Yeast Infection",
             "Weight Loss"],
}
#: Rows per class of Fashion-MNIST (train split) and Animal-MNIST in the image tasks.
IMAGE_ROWS = 300
#: Input side of EfficientNet-Lite0 on the 28 x 28 images.
LITE0_SIZE = 64
TEST_EPISODES = 600
VAL_EPISODES = 100
SETTINGS = [{"n_way": 5, "k_shot": 1}, {"n_way": 5, "k_shot": 5}]


def _image_data(rows: int) -> dict:
    return {"source": {"spec": "fashion_mnist:split=train", "rows_per_class": rows},
            "target": {"spec": "animal_mnist", "rows_per_class": rows}}


#: Each task as a few-shot experiment (the keys of a ``transferkit fewshot`` file).
TASKS: dict[str, dict] = {
    "flavia": {"data": {"spec": "flavia"}, "classes": FLAVIA_CLASSES, "encoder": {"name": "mlp"}, "q_query": 15},
    "fashion_animal_lite0": {"data": _image_data(IMAGE_ROWS), "classes": FASHION_CLASSES,
                             "encoder": {"name": "efficientnet_lite0", "image_size": LITE0_SIZE, "head": "mlp"},
                             "q_query": 15, "val_n_way": 4},
    "fashion_animal_conv4": {"data": _image_data(IMAGE_ROWS), "classes": FASHION_CLASSES,
                             "encoder": {"name": "conv4"}, "q_query": 15, "val_n_way": 4},
    "drug_conditions": {"data": {"spec": "drug_reviews", "class_attribute": "condition", "min_rows": 10,
                                 "drop_classes": ["(unknown)"]},
                        "classes": DRUG_CLASSES, "encoder": {"name": "minilm", "head": "mlp"}, "q_query": 5},
}

#: Meta-training (or pre-training) steps per method and encoder kind; each run is timed in the
#: results (the budgets keep every one under 10 minutes on one thread, the whole suite under 45).
STEPS: dict[str, dict[str, int]] = {
    "default": {"mlp": 1000, "conv4": 1000},
    "protonet": {"mlp": 1000, "conv4": 1000},
    "matching": {"mlp": 1000, "conv4": 1000},
    "simpleshot": {"mlp": 1000, "conv4": 1000},
    "baseline": {"mlp": 1000, "conv4": 1000},
    "baseline_pp": {"mlp": 1000, "conv4": 1000},
    "finetune": {"mlp": 1000, "conv4": 1000},
    "maml": {"mlp": 300, "conv4": 200},
    "fomaml": {"mlp": 300, "conv4": 300},
    "anil": {"mlp": 500, "conv4": 300},
    "reptile": {"mlp": 500, "conv4": 300},
}
#: Parameters the benchmark gives a method (the rest are its defaults).
PARAMS: dict[str, dict] = {}

ANCHORS = ("Omniglot and mini-ImageNet do not ship offline, so learn2learn's anchors are for scale only: MAML 99.1% "
           "(Omniglot 5-way 1-shot), 48.3% / 65.4% (mini-ImageNet 5-way 1 / 5-shot); ProtoNets 49.1% / 66.5%.")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_bench_args(tasks=None, methods=None, seeds: int = 1, *, test_episodes: int = TEST_EPISODES,
                     steps: int | None = None, rows_per_class: int | None = None,
                     val_episodes: int = VAL_EPISODES) -> dict:
    """The benchmark's arguments checked in one pass (before any data is read or folder made);
    ``steps``, ``rows_per_class`` and ``test_episodes`` below the defaults shrink the suite for
    tests (the results record them)."""
    from .._registry import available
    from .._validation import check_number, suggest

    all_methods = available("fewshot")
    tasks = list(TASKS) if tasks is None else list(tasks)
    methods = list(all_methods) if methods is None else list(methods)
    if not tasks or not methods:
        raise ConfigError(f"the few-shot benchmark needs at least one task and one method (tasks: {', '.join(TASKS)}; "
                          f"methods: {', '.join(all_methods)}).")
    for t in tasks:
        if t not in TASKS:
            raise ConfigError(f"unknown few-shot task {t!r}." + suggest(str(t), list(TASKS))
                              + f" Tasks: {', '.join(TASKS)}.")
    for m in methods:
        if m not in all_methods:
            raise ConfigError(f"unknown few-shot method {m!r}." + suggest(str(m), all_methods)
                              + f" Methods: {', '.join(all_methods)}.")
    for what, items in (("task", tasks), ("method", methods)):
        dup = sorted({x for x in items if items.count(x) > 1})
        if dup:
            raise ConfigError(f"{what} {dup[0]!r} is given twice; list each {what} once.")
    seeds = check_number("seeds", seeds, low=1, high=1000, integer=True)
    test_episodes = check_number("test_episodes", test_episodes, low=2, high=1_000_000, integer=True)
    val_episodes = check_number("val_episodes", val_episodes, low=1, high=1_000_000, integer=True)
    if steps is not None:
        steps = check_number("steps", steps, low=1, high=10_000_000, integer=True)
    if rows_per_class is not None:
        rows_per_class = check_number("rows_per_class", rows_per_class, low=2, high=1_000_000, integer=True)
    return {"tasks": tasks, "methods": methods, "seeds": int(seeds), "test_episodes": int(test_episodes),
            "val_episodes": int(val_episodes), "steps": steps, "rows_per_class": rows_per_class}


def task_config(task: str, args: dict) -> dict:
    """The few-shot experiment of ``task`` under the benchmark's arguments (a plain mapping)."""
    t = copy.deepcopy(TASKS[task])
    kind = "conv4" if t["encoder"]["name"] == "conv4" else "mlp"  # what the methods train: conv4 or an mlp
    methods = []
    for m in args["methods"]:
        steps = args["steps"] or STEPS.get(m, STEPS["default"])[kind]
        methods.append({"name": m, "meta_train_steps": steps, **PARAMS.get(m, {})})
    if args["rows_per_class"] is not None:
        for part in ([t["data"]] if "spec" in t["data"] else list(t["data"].values())):
            part["rows_per_class"] = min(part.get("rows_per_class") or args["rows_per_class"], args["rows_per_class"])
    return {"name": task, "seeds": args["seeds"], **t, "methods": methods, "settings": SETTINGS,
            "test_episodes": args["test_episodes"], "val_episodes": args["val_episodes"],
            "eval_every": max(1, min(100, (args["steps"] or 1000) // 5))}


def _prepare_all(args: dict) -> dict:
    """Every task's config and data checked before anything is written."""
    from .run import config_from_dict, prepare

    out = {}
    for task in args["tasks"]:
        cfg = config_from_dict(task_config(task, args), min_test_episodes=min(args["test_episodes"], 600))
        try:
            out[task] = prepare(cfg)
        except ConfigError as exc:
            raise ConfigError(f"task {task}: {exc}") from None
    return out


def versus_simpleshot(tasks: dict[str, dict]) -> list[dict]:
    """Per task, setting and method: ``above`` when its 95% interval lies entirely above
    SimpleShot's, ``below`` when entirely below, else ``overlap``."""
    rows = []
    for task, res in tasks.items():
        by = {(r["method"], r["setting"]): r for r in res["table"]}
        for (m, s), r in by.items():
            ss = by.get(("simpleshot", s))
            if m == "simpleshot" or ss is None:
                continue
            h, hs = r["ci95"] or 0.0, ss["ci95"] or 0.0
            lo, hi, slo, shi = r["accuracy_mean"] - h, r["accuracy_mean"] + h, ss["accuracy_mean"] - hs, \
                ss["accuracy_mean"] + hs
            verdict = "above" if lo > shi else "below" if hi < slo else "overlap"
            rows.append({"task": task, "setting": r["title"], "method": m, "accuracy": r["accuracy_mean"],
                         "ci95": r["ci95"], "simpleshot": ss["accuracy_mean"], "simpleshot_ci95": ss["ci95"],
                         "verdict": verdict})
    return rows


def overall_default(tasks: dict[str, dict], methods: list[str]) -> dict:
    """The method with the best meta-validation accuracy, mean over every task and setting (test
    episodes unused): what the ``fewshot`` command uses when a config names no method."""
    import numpy as np

    scores = {}
    for m in methods:
        vs = [r["val_accuracy_mean"] for res in tasks.values() for r in res["table"] if r["method"] == m]
        if vs and all(v is not None for v in vs):
            scores[m] = float(np.mean(vs))
    best = max(scores, key=lambda k: (scores[k], -methods.index(k))) if scores else None
    return {"label": best, "scores": scores,
            "how": "the highest meta-validation accuracy, mean over every task and setting of the benchmark "
                   "(validation classes only, no test episode)"}


def markdown(res: dict) -> str:
    """One table per task, the rows against SimpleShot, and the overall default method."""
    from .run import Setting, markdown_table

    lines = []
    settings = [Setting(**s) for s in SETTINGS]
    for task, tres in res["tasks"].items():
        lines += [f"### {task}", "", f"{tres['data']}; encoder {tres['encoder']}; {tres['test_episodes']} test "
                  f"episodes, {tres['q_query']} queries per class", "",
                  markdown_table(tres["table"], settings, tres["default_method"]["label"]), ""]
    vs = res.get("versus_simpleshot") or []
    above = [f"{r['task']} {r['setting']} {r['method']}" for r in vs if r["verdict"] == "above"]
    below = [f"{r['task']} {r['setting']} {r['method']}" for r in vs if r["verdict"] == "below"]
    lines += ["Beat SimpleShot with non-overlapping 95% intervals: " + (", ".join(above) or "none") + ".",
              "", "Below SimpleShot with non-overlapping intervals: " + (", ".join(below) or "none") + "; every "
              "other row overlaps SimpleShot.", ""]
    d = res.get("default_method") or {}
    if d.get("label"):
        lines += [f"Best meta-validation accuracy over all tasks and settings: {d['label']} "
                  f"({100 * d['scores'][d['label']]:.2f}%; {d['how']}).", ""]
    if res.get("reduced"):
        lines += [f"Reduced run: {res['reduced']}.", ""]
    lines += [ANCHORS]
    return "\n".join(lines)


def run_fewshot_bench(out, tasks=None, methods=None, seeds: int = 1, *, test_episodes: int = TEST_EPISODES,
                      steps: int | None = None, rows_per_class: int | None = None, val_episodes: int = VAL_EPISODES,
                      overwrite: bool = False, resume: bool = False, echo=_stderr) -> dict:
    """Run the few-shot benchmark into the benchmark directory ``out``; return the results.

    Arguments and every task's data are checked first (nothing is written when one is wrong).
    The directory obeys :func:`transferkit.train.rundir.open_run_dir` (kind ``benchmark``). It
    holds :data:`ARGS_FILE`, ``cells/TASK--METHOD--SETTING--seedS.json`` (each written when the
    cell is done), ``feature-cache/``, ``fewshot.log``, ``results.json`` and ``results.md``.
    ``resume=True`` continues an interrupted benchmark in ``out`` with its stored arguments
    (those given here are ignored): stored cells are kept.
    """
    from ..train.rundir import (check_output_dir, completed, locate_resume, mark_complete, mark_incomplete,
                                open_run_dir, write_json, write_text)
    from .run import LOG_FILE, _Log, results_of, run_cells

    final = Path(out)
    if resume:
        src = locate_resume(final, ARGS_FILE, "benchmark", "transferkit benchmark few-shot --out DIR", echo=echo)
        args = check_bench_args(**stored_args(src))
    else:
        args = check_bench_args(tasks, methods, seeds, test_episodes=test_episodes, steps=steps,
                                rows_per_class=rows_per_class, val_episodes=val_episodes)
    check_output_dir(final, overwrite=overwrite, resume=resume)
    preps = _prepare_all(args)
    t0 = time.perf_counter()
    with open_run_dir(final, overwrite=overwrite, resume=resume, kind="benchmark") as d:
        if resume:
            res = completed(d, "results.json", "tasks")
            if res is not None:
                echo(f"{final} is complete; nothing to resume.")
                return res
        else:
            mark_incomplete(d)
            write_json(d / ARGS_FILE, {"suite": SUITE, **args})
        log = _Log(d / LOG_FILE, echo)
        per_task = {}
        for task, prep in preps.items():
            cfg = prep.cfg
            log(f"task {task}: {len(cfg.methods)} methods x {len(cfg.settings)} settings x {len(cfg.seeds)} seed(s)")
            x, info = prep.materialize(str(d / "feature-cache"), log=log)
            ts = time.perf_counter()
            cells = run_cells(prep, x, info, d / "cells", prefix=task, log=log)
            per_task[task] = results_of(prep, cells, info, seconds=time.perf_counter() - ts)
        reduced = []
        if args["test_episodes"] < TEST_EPISODES:
            reduced.append(f"{args['test_episodes']} test episodes")
        if args["steps"] is not None:
            reduced.append(f"{args['steps']} meta-training steps for every method")
        if args["rows_per_class"] is not None:
            reduced.append(f"at most {args['rows_per_class']} rows per class")
        res = {"kind": "fewshot-benchmark", "suite": SUITE, "arguments": args, "tasks": per_task,
               "methods": args["methods"], "test_episodes": args["test_episodes"],
               "versus_simpleshot": versus_simpleshot(per_task),
               "default_method": overall_default(per_task, args["methods"]),
               "anchors": ANCHORS, "reduced": "; ".join(reduced) or None,
               "seconds": time.perf_counter() - t0, "output_dir": str(final),
               "warnings": sorted({w for t in per_task.values() for w in t.get("warnings", [])})}
        write_json(d / "results.json", res)
        write_text(d / "results.md", "# transferkit benchmark few-shot\n\n" + markdown(res) + "\n")
        mark_complete(d)
        log(f"done: {final / 'results.json'} ({res['seconds'] / 60:.1f} min)")
    return res


def stored_args(out_dir) -> dict:
    """The arguments a few-shot benchmark directory was started with (for ``--resume``)."""
    p = Path(out_dir) / ARGS_FILE
    try:
        stored = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{str(out_dir)!r} has no {ARGS_FILE}, so it is not a benchmark directory; start the "
                          "benchmark again with --out.") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{str(p)!r} cannot be read ({type(exc).__name__}); start the benchmark again with "
                          "--out.") from None
    keys = ("tasks", "methods", "seeds", "test_episodes", "val_episodes", "steps", "rows_per_class")
    if not isinstance(stored, dict) or stored.get("suite") != SUITE or not all(k in stored for k in keys):
        raise ConfigError(f"{str(p)!r} is not a few-shot benchmark's arguments file (it needs suite: {SUITE} and "
                          f"{', '.join(keys)}); start the benchmark again with --out.")
    return {k: stored[k] for k in keys}


def is_fewshot_bench_dir(path) -> bool:
    """Whether ``path`` holds a few-shot benchmark's arguments file (``--resume`` dispatch)."""
    from ..train.rundir import resume_source

    try:
        stored = json.loads((resume_source(Path(path)) / ARGS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stored, dict) and stored.get("suite") == SUITE
