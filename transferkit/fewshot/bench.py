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

#: Not in the default run (``--tasks fashion_animal_lite0_frozen``): the Lite0 features used as they
#: are (no trained module; metric methods then have nothing to meta-train, SimpleShot is CL2N
#: nearest centroid on the ImageNet features themselves).
EXTRA_TASKS: dict[str, dict] = {
    "fashion_animal_lite0_frozen": {**TASKS["fashion_animal_lite0"],
                                    "encoder": {"name": "efficientnet_lite0", "image_size": LITE0_SIZE,
                                                "head": "identity"}},
}
ALL_TASKS = {**TASKS, **EXTRA_TASKS}

#: Meta-training (or pre-training) steps per method and trained module (``mlp`` on table rows or
#: frozen features, ``conv4`` on raw images): one step is one meta-train episode (MAML, FOMAML,
#: ANIL and Reptile: one meta-batch of 4) or one batch of 64 rows (the pre-trained baselines).
#: Set from CPU seconds measured per step and per test episode on one thread (the conv4 MAML
#: family costs 0.5 to 1.6 s a step), so that every run stays under 10 minutes on one thread and
#: the suite under 45 minutes on 2 cores (two worker processes).
STEPS: dict[str, dict[str, int]] = {
    "default": {"mlp": 1000, "conv4": 600},
    "maml": {"mlp": 300, "conv4": 100},
    "fomaml": {"mlp": 300, "conv4": 120},
    "anil": {"mlp": 500, "conv4": 300},
    "reptile": {"mlp": 200, "conv4": 60},
}
#: Meta-val evaluations per meta-training run (the checkpoint is chosen among them; step 0 too).
EVALUATIONS = 5
#: Parameters the benchmark gives a method, per trained module (the rest are its defaults):
#: fine-tuning takes 25 SGD steps per episode on an mlp and 10 on conv4 instead of 100 (its 700
#: meta-val and test episodes are the costliest part of the suite: 0.1 s an episode on features
#: at 100 steps; on conv4 0.15 s (1-shot) and 0.28 s (5-shot) at 20 steps).
PARAMS: dict[str, dict[str, dict]] = {"finetune": {"mlp": {"steps": 25}, "conv4": {"steps": 10}}}

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
        if t not in ALL_TASKS:
            raise ConfigError(f"unknown few-shot task {t!r}." + suggest(str(t), list(ALL_TASKS))
                              + f" Tasks: {', '.join(TASKS)}; also {', '.join(EXTRA_TASKS)}.")
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


def _default_of(method: str, param: str):
    """A registered few-shot method's default value of ``param`` (``None`` when it has none)."""
    import inspect

    from .._registry import get

    p = inspect.signature(get("fewshot", method).__init__).parameters.get(param)
    return None if p is None else p.default


def task_config(task: str, args: dict) -> dict:
    """The few-shot experiment of ``task`` under the benchmark's arguments (a plain mapping)."""
    t = copy.deepcopy(ALL_TASKS[task])
    kind = "conv4" if t["encoder"]["name"] == "conv4" else "mlp"  # budgets: conv4, or an mlp (or nothing) on rows
    methods = []
    for m in args["methods"]:
        steps = args["steps"] or STEPS.get(m, STEPS["default"])[kind]
        params = dict(PARAMS.get(m, {}).get(kind, {}))
        if t.get("val_n_way") and _default_of(m, "head_init") == "learned":
            params["head_init"] = "zero"  # a learned 5-way head cannot score the 4-way meta-val episodes
        methods.append({"name": m, "meta_train_steps": steps, "eval_every": max(1, steps // EVALUATIONS), **params})
    if args["rows_per_class"] is not None:
        for part in ([t["data"]] if "spec" in t["data"] else list(t["data"].values())):
            part["rows_per_class"] = min(part.get("rows_per_class") or args["rows_per_class"], args["rows_per_class"])
    return {"name": task, "seeds": args["seeds"], **t, "methods": methods, "settings": SETTINGS,
            "test_episodes": args["test_episodes"], "val_episodes": args["val_episodes"]}


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
                      overwrite: bool = False, resume: bool = False, jobs: int | None = None, echo=_stderr) -> dict:
    """Run the few-shot benchmark into the benchmark directory ``out``; return the results.

    ``jobs``: cells run in this many worker processes of one torch thread each (default: the
    torch threads this command was given, i.e. the free cores or ``--threads N``); 1 runs them
    in this process. Every cell seeds itself, so the results do not depend on ``jobs``.

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

    if jobs is not None:
        from .._validation import check_number

        jobs = check_number("jobs", jobs, low=1, high=256, integer=True)

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
        jobs = _jobs(jobs)
        per_task = {}
        if jobs == 1:
            for task, prep in preps.items():
                cfg = prep.cfg
                log(f"task {task}: {len(cfg.methods)} methods x {len(cfg.settings)} settings x {len(cfg.seeds)} "
                    "seed(s)")
                x, info = prep.materialize(str(d / "feature-cache"), log=log)
                ts = time.perf_counter()
                cells = run_cells(prep, x, info, d / "cells", prefix=task, log=log)
                per_task[task] = results_of(prep, cells, info, seconds=time.perf_counter() - ts)
        else:
            per_task = _run_parallel(preps, args, d, jobs, log)
        reduced = []
        if args["test_episodes"] < TEST_EPISODES:
            reduced.append(f"{args['test_episodes']} test episodes")
        if args["steps"] is not None:
            reduced.append(f"{args['steps']} meta-training steps for every method")
        if args["rows_per_class"] is not None:
            reduced.append(f"at most {args['rows_per_class']} rows per class")
        res = {"kind": "fewshot-benchmark", "suite": SUITE, "arguments": args, "jobs": jobs, "tasks": per_task,
               "methods": args["methods"], "test_episodes": args["test_episodes"],
               "versus_simpleshot": versus_simpleshot(per_task),
               "default_method": overall_default(per_task, args["methods"]),
               "anchors": ANCHORS, "reduced": "; ".join(reduced) or None,
               "seconds": time.perf_counter() - t0, "output_dir": str(final),
               "warnings": sorted({w for t in per_task.values() for w in t.get("warnings", [])})}
        write_json(d / "results.json", res)
        write_text(d / "results.md", "# transferkit benchmark few-shot\n\n" + markdown(res) + "\n")
        mark_complete(d)
        from .defaults import compare_with_run

        note = compare_with_run(res["default_method"]["scores"]) if args["test_episodes"] >= TEST_EPISODES else None
        if note:
            log(note)
        log(f"done: {final / 'results.json'} ({res['seconds'] / 60:.1f} min)")
    return res


def _jobs(jobs: int | None) -> int:
    if jobs is not None:
        return int(jobs)
    import torch

    return max(1, torch.get_num_threads())


def _run_parallel(preps: dict, args: dict, d: Path, jobs: int, log) -> dict:
    """Every missing cell of every task in ``jobs`` spawned worker processes (one torch thread each).

    The parent computes each task's inputs once (backbone features go to the feature cache) and
    saves them under ``inputs/``; a worker prepares a task from its config (labels only, no
    backbone) and memory-maps its inputs the first time it meets it. The costliest cells are
    submitted first. A worker writes its cell file itself (as in one process), so a killed
    benchmark keeps every finished cell."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import numpy as np

    from ..train.rundir import write_json
    from .run import _valid_cell, cell_specs, load_cell, results_of

    pending, kept, infos, t0 = [], {}, {}, time.perf_counter()
    for task, prep in preps.items():
        cfg = prep.cfg
        log(f"task {task}: {len(cfg.methods)} methods x {len(cfg.settings)} settings x {len(cfg.seeds)} seed(s)")
        specs = cell_specs(prep, task)
        todo = []
        for spec in specs:
            row = load_cell(d / "cells" / f"{spec.name}.json", spec.key)
            if row is not None:
                kept[(task, spec.index)] = row
                log(f"{spec.name}: {row['accuracy']:.4f} +- {row['ci95']:.4f} (complete, kept)")
            else:
                todo.append(spec)
        if not todo:
            continue
        x, info = prep.materialize(str(d / "feature-cache"), log=log)
        infos[task] = info
        path = d / "inputs" / f"{task}.npy"
        path.parent.mkdir(exist_ok=True)
        np.save(path, x.numpy())
        write_json(path.with_suffix(".json"), info)
        pending += [(task, spec) for spec in todo]
    pending.sort(key=lambda ts: -_cost(preps[ts[0]], ts[1]))
    total = len(kept) + len(pending)
    if pending:
        log(f"{len(pending)} cell(s) in {jobs} worker processes")
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that has started torch threads
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(str(d / "fewshot.log"),)) as pool:
            futures = {pool.submit(_worker_cell, task, task_config(task, args), min(args["test_episodes"], 600),
                                   str(d), spec.index): (task, spec) for task, spec in pending}
            for f in as_completed(futures):
                task, spec = futures[f]
                row = f.result()
                if not _valid_cell(row, spec.key):
                    raise RuntimeError(f"worker returned an invalid cell for {spec.name}")
                kept[(task, spec.index)] = row
                log(f"{spec.name}: done [{len(kept)} of {total} cells, {(time.perf_counter() - t0) / 60:.1f} min]")
    out = {}
    for task, prep in preps.items():
        cells = [kept[(task, spec.index)] for spec in cell_specs(prep, task)]
        info = infos.get(task)
        if info is None:
            info = json.loads((d / "inputs" / f"{task}.json").read_text()) if (d / "inputs" / f"{task}.json").is_file() \
                else {"kind": prep.encoder}
        out[task] = results_of(prep, cells, info)
    import shutil

    shutil.rmtree(d / "inputs", ignore_errors=True)  # recomputed from the feature cache when needed
    return out


def _cost(prep, spec) -> float:
    """A rough relative cost of a cell (submission order only): steps times a per-method weight."""
    w = {"maml": 10, "reptile": 12, "fomaml": 6, "anil": 3, "finetune": 4}.get(spec.method.name, 1)
    conv = 8 if prep.encoder == "conv4" else 1
    return conv * (w * prep.cfg.steps_of(spec.method) + 600 * (5 if spec.method.name == "finetune" else 1))


_WORKER: dict = {}


def _worker_init(log_path: str) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["log"] = log_path


def _worker_cell(task: str, cfg: dict, min_test: int, d: str, index: int) -> dict:
    """One cell in a worker process (see :func:`_run_parallel`)."""
    import numpy as np
    import torch

    from .run import _Log, cell_specs, config_from_dict, prepare, run_cell

    if task not in _WORKER:
        prep = prepare(config_from_dict(cfg, min_test_episodes=min_test), check_backbone=False)
        x = torch.from_numpy(np.load(Path(d) / "inputs" / f"{task}.npy"))
        info = json.loads((Path(d) / "inputs" / f"{task}.json").read_text())
        _WORKER[task] = (prep, x, info)
    prep, x, info = _WORKER[task]
    spec = cell_specs(prep, task)[index]
    return run_cell(prep, x, info, spec, Path(d) / "cells" / f"{spec.name}.json", log=_Log(Path(_WORKER["log"]), None))


def stored_args(out_dir) -> dict:
    """The arguments a few-shot benchmark directory was started with (for ``--resume``)."""
    from ..train.rundir import stored_arguments

    return stored_arguments(out_dir, ARGS_FILE, ("tasks", "methods", "seeds", "test_episodes", "val_episodes", "steps",
                                                 "rows_per_class"), suite=SUITE)


def is_fewshot_bench_dir(path) -> bool:
    """Whether ``path`` holds a few-shot benchmark's arguments file (``--resume`` dispatch)."""
    from ..train.rundir import stored_suite

    return stored_suite(path, ARGS_FILE) == SUITE
