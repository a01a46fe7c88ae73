"""``transferkit benchmark rl-transfer``: policy transfer between classic-control variants.

Each part (:data:`PARTS`) is one target variant: PPO source agents trained on the source
variant (and, for ``randomized``, over physics ranges around it), moved to the target by every
method of :mod:`transferkit.rl.methods` under the same target budget as learning from scratch:

- ``cartpole_length_1.0``, ``cartpole_length_1.25``: CartPole's (half) pole length 0.5 -> 1.0
  and 1.25; ``cartpole_gravity_19.6``: gravity 9.8 -> 19.6 (one source per seed for all three;
  the randomised source draws length in 0.25..1.5 and gravity in 9.8..19.6 at every reset);
- ``acrobot_link_mass_2``: Acrobot's second link twice as heavy (1.0 -> 2.0);
- ``mountaincar_force``: MountainCar with a weaker engine. The default engine (0.001) is out of
  reach of PPO in a budget of minutes (RL Zoo's PPO needs 10^6 steps), so the source is a
  stronger-engine simulator (0.003, which can drive up the hill) and the target a weaker one.

Rows: ``scratch``, ``zero_shot``, ``finetune``, ``randomized`` (randomised source, zero-shot as the
curve's first point, then fine-tuned), ``distill`` (the fine-tuned target agent distilled into a
2x16 ReLU network, DAgger-style) and ``distill_multi`` (the source agent on the source variant and
the fine-tuned agent on the target, distilled into one student). Each metric is Taylor & Stone's
(:mod:`transferkit.rl.metrics`) over seeds, with the negative-transfer verdict (paired t interval
of the mean evaluation return over the budget, transfer minus scratch). Every cell is kept under
``cells/`` and every trained agent under ``policies/``, so an interrupted run continues.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError

_CARTPOLE = {"algo": "ppo", "source": "cartpole", "randomized_source": "cartpole:length=0.25..1.5,gravity=9.8..19.6",
             "source_steps": 100_000, "steps": 40_000, "eval_every": 2048, "eval_episodes": 10}
_METHODS = ["scratch", "zero_shot", "finetune", "randomized", "distill",
            {"name": "distill", "key": "distill_multi", "teachers": ["finetune", "source"]}]

#: The variants: one target each (a part is an :class:`~transferkit.rl.run.RLConfig` mapping).
VARIANTS: dict = {
    "cartpole_length_1.0": {**_CARTPOLE, "targets": ["cartpole:length=1.0"]},
    "cartpole_length_1.25": {**_CARTPOLE, "targets": ["cartpole:length=1.25"]},
    "cartpole_gravity_19.6": {**_CARTPOLE, "targets": ["cartpole:gravity=19.6"]},
    "acrobot_link_mass_2": {"algo": "ppo", "source": "acrobot", "randomized_source": "acrobot:link_mass_2=0.5..2.5",
                            "targets": ["acrobot:link_mass_2=2.0"], "source_steps": 60_000, "steps": 40_000,
                            "eval_every": 4096, "eval_episodes": 10},
    "mountaincar_force": {"algo": "ppo", "source": "mountaincar:force=0.003",
                          "randomized_source": "mountaincar:force=0.0025..0.0035",
                          "targets": ["mountaincar:force=0.0025"], "source_steps": 60_000, "steps": 80_000,
                          "eval_every": 8192, "eval_episodes": 10},
}
PARTS = tuple(VARIANTS)
CARTPOLE_PARTS = tuple(p for p in PARTS if p.startswith("cartpole"))

PROTOCOL = ("PPO (stable-baselines3, MlpPolicy 2x64 tanh, RL Zoo's per-task hyperparameters with linear schedules, "
            "one CPU thread); source agents: plain and randomised (physics drawn uniformly from the ranges at every "
            "reset), the same source budget; target: the same budget for scratch, fine-tuning (the source agent "
            "copied, learning rate 0.3x the source's and the same linear decay, a fresh Adam; lr_scale chosen on the "
            "development variant cartpole:length=0.75, seed 1, not a benchmark target) and the randomised source's "
            "fine-tuning; learning curve: mean return of the deterministic policy over 10 fixed evaluation episodes "
            "(the same episodes for every method of a seed) every eval_every steps; distillation: 4 DAgger iterations "
            "of 2,000 states per teacher (the teacher acts in the first, the student's sampled policy after), "
            "10 epochs of AdamW (lr 0.003, batch 256) on KL(teacher || student) over the aggregate, student a 2x16 "
            "ReLU MLP; mean ± std over seeds; the verdict is the paired t interval (95%) of the mean evaluation "
            "return over the target budget, transfer minus scratch")


def check_rl_args(parts=None, seeds: int = 3, epochs=None) -> dict:
    """Check the benchmark's arguments before anything runs. ``epochs`` comes from the shared
    command line: the budgets here are environment steps, fixed per variant."""
    from ..train.rundir import check_parts_args

    if epochs is not None:
        raise ConfigError(f"benchmark rl-transfer: --epochs {epochs} does not apply; its budgets are environment "
                          "steps, fixed per variant in transferkit/rl/benchmark.py (use --parts and --seeds).")
    a = check_parts_args(parts, PARTS, seeds, 1)
    if a["seeds"] < 2:
        raise ConfigError(f"benchmark rl-transfer: --seeds {a['seeds']} leaves the negative-transfer verdict without "
                          "an interval; give --seeds 2 or more (3 recommended).")
    return {"parts": a["parts"], "seeds": a["seeds"], "epochs": None}


def part_config(part: str, seeds: int):
    """The :class:`~transferkit.rl.run.RLConfig` of one variant."""
    from .run import config_from_dict

    return config_from_dict({"name": part.replace(".", "_"), **VARIANTS[part], "methods": list(_METHODS),
                             "seeds": seeds})


def run_rl_transfer(parts=None, seeds: int = 3, *, epochs=None, out_dir=None, echo=print) -> dict:
    """Run the variants; ``{"suite", "arguments", "parts": {part: {"cells", "summary"}}, "timing",
    "goals", "protocol"}``."""
    from .agents import PolicyStore
    from .envs import require_rl
    from .run import prepare, run_cells, summarize

    require_rl("transferkit benchmark rl-transfer")
    a = check_rl_args(parts, seeds, epochs)
    out = None if out_dir is None else Path(out_dir)
    configs = {p: part_config(p, a["seeds"]) for p in a["parts"]}
    hps = {p: prepare(c) for p, c in configs.items()}  # every check before the first step
    store = PolicyStore(None if out is None else out / "policies")
    res: dict = {"suite": "rl-transfer", "arguments": a, "parts": {}, "timing": {}}
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for p, cfg in configs.items():
            t0 = time.perf_counter()
            echo(f"== {p}: {cfg.source} -> {cfg.targets[0]} ({a['seeds']} seeds)")
            rows = run_cells(cfg, hps[p], out, echo, prefix=p, store=store)
            res["parts"][p] = {"source": str(cfg.source), "randomized_source": str(cfg.randomized_source),
                               "target": str(cfg.targets[0]), "steps": cfg.steps, "source_steps": cfg.source_steps,
                               "threshold": cfg.task_threshold(), "floor": cfg.source.info.floor,
                               "cells": rows, "summary": summarize(cfg, rows)}
            # the cells' own seconds, kept in their files: a continued run still reports what they cost
            total = sum(r["seconds"] for r in rows)
            src = sum(r.get("source_seconds", 0.0) for r in rows)
            res["timing"][p] = {"seconds": total, "source_seconds": src, "target_seconds": total - src,
                                "wall_seconds": time.perf_counter() - t0}
            echo(f"== {p}: {total / 60:.1f} min ({src / 60:.1f} min training sources)")
    finally:
        torch.set_num_threads(threads)
    res["goals"] = goals(res)
    res["protocol"] = PROTOCOL
    return res


def _row(part: dict, method: str) -> dict | None:
    return next((r for r in part["summary"] if r["method"] == method), None)


def goals(res: dict) -> dict:
    """The issue's three goals, per variant and overall.

    1. Fine-tuning reaches the threshold (475) in at most half the steps of scratch (mean over
       seeds, a seed that never reaches it counted as the whole budget: a lower bound for
       scratch, a penalty for fine-tuning) on at least two CartPole variants; where it does not,
       the verdict on that variant is reported (negative transfer or not).
    2. The randomised source's zero-shot return beats the plain source's on the targets (mean
       over seeds, and the paired interval).
    3. Distillation of the fine-tuned target agent into the smaller student keeps >= 95% of its
       return (above the task's lowest return), mean over seeds.
    """
    from ..diagnostics.negative_transfer import compare_scores

    parts = res.get("parts", {})
    ft = []
    for p in CARTPOLE_PARTS:
        if p not in parts:
            continue
        f, s = _row(parts[p], "finetune"), _row(parts[p], "scratch")
        if f is None or s is None:
            continue
        t_f, t_s = f["time_to_threshold"]["mean_censored"], s["time_to_threshold"]["mean_censored"]
        ft.append({"part": p, "finetune_steps": t_f, "scratch_steps": t_s,
                   "finetune_reached": f["time_to_threshold"]["reached"],
                   "scratch_reached": s["time_to_threshold"]["reached"], "n_seeds": f["n_seeds"],
                   "met": bool(f["time_to_threshold"]["reached"] == f["n_seeds"] and t_f <= 0.5 * t_s),
                   "verdict": f["vs_scratch"]["verdict"]["verdict"]})
    rnd = []
    for p, part in parts.items():
        z, r = _row(part, "zero_shot"), _row(part, "randomized")
        if z is None or r is None:
            continue
        cells = sorted(part["cells"], key=lambda c: c["seed"])
        zs = [c["curve"]["returns"][0] for c in cells if c["method"] == "zero_shot"]
        rs = [c["curve"]["returns"][0] for c in cells if c["method"] == "randomized"]
        test = compare_scores(rs, zs) if len(zs) >= 2 else None
        rnd.append({"part": p, "randomized": r["zero_shot"]["mean"], "plain": z["zero_shot"]["mean"],
                    "randomized_values": rs, "plain_values": zs,
                    "met": bool(r["zero_shot"]["mean"] > z["zero_shot"]["mean"]),
                    "verdict": None if test is None else test["verdict"],
                    "ci": None if test is None else [test["ci_low"], test["ci_high"]]})
    dist = []
    for p, part in parts.items():
        for key in ("distill", "distill_multi"):
            d = _row(part, key)
            if d is None:
                continue
            ok = d["retention"]["mean"] is not None
            dist.append({"part": p, "method": key, "retention": d["retention"]["mean"] if ok else None,
                         "seeds_defined": sum(v is not None for v in d["retention"]["values"]), "n_seeds": d["n_seeds"],
                         "mean_retention": d["mean_retention"]["mean"] if ok else None,
                         "student_params": d["student_params"], "teacher_params": d["teacher_params"],
                         "met": bool(ok and d["retention"]["mean"] >= 0.95)})
    # a teacher at the task's lowest return leaves retention undefined: judged on the defined ones
    single = [d for d in dist if d["method"] == "distill" and d["retention"] is not None]
    return {
        "finetune_half_steps": {"variants": ft, "met_on": sum(v["met"] for v in ft),
                                "met": sum(v["met"] for v in ft) >= 2},
        "randomized_zero_shot": {"variants": rnd, "met_on": sum(v["met"] for v in rnd),
                                 "met": bool(rnd) and all(v["met"] for v in rnd)},
        "distill_95": {"variants": dist, "met_on": sum(v["met"] for v in single),
                       "met": bool(single) and all(v["met"] for v in single)},
    }


def _fmt(ms, digits: int = 1) -> str:
    if not ms or ms.get("mean") is None:
        return "—"
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def _ttt(r: dict) -> str:
    t = r.get("time_to_threshold")
    if t is None:
        return "—"
    return f"{t['mean_censored']:.0f} ({t['reached']}/{r['n_seeds']})"


def _kept(t: dict) -> str:
    """``finetune on cartpole:length=1: 414.8 of 414.6 (100%)``: one teacher of a distillation row."""
    ret = t["retention"]
    kept = "—" if ret["mean"] is None else f"{100 * ret['mean']:.0f}%"
    if ret["mean"] is not None and None in ret["values"]:
        kept += f" over {sum(v is not None for v in ret['values'])} seeds"
    return (f"{t['teacher']} on {t['env']}: student {t['student_return']['mean']:.1f} of the teacher's "
            f"{t['teacher_return']['mean']:.1f} ({kept})")


def markdown(res: dict) -> str:
    """results.md: per variant the table of methods, then the goals (met / not met) and timings."""
    lines = ["# Policy transfer in reinforcement learning (classic control)", "", f"Protocol: {res['protocol']}.", ""]
    for p, part in res["parts"].items():
        t = res.get("timing", {}).get(p, {})
        lines += [f"## {p}: {part['source']} -> {part['target']}", "",
                  f"Target budget {part['steps']} steps (source {part['source_steps']}); threshold "
                  f"{part['threshold']:g}; randomised source {part['randomized_source']}; "
                  f"{t.get('target_seconds', 0) / 60:.1f} min for the target cells"
                  + (f" (+ {t['source_seconds'] / 60:.1f} min training sources)" if t.get("source_seconds") else "")
                  + ".", "",
                  "| method | initial return | final return | steps to threshold (reached) | jumpstart | "
                  "area ratio | verdict vs scratch (95% CI of mean-return gain) | steps/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in part["summary"]:
            vs = r.get("vs_scratch")
            if r["name"] == "distill":
                verdict = "; ".join(_kept(t) for t in r["teachers"]) + (
                    f" ({r['student_params']} vs {r['teacher_params']} actor parameters)")
                lines.append(f"| {r['method']} | {_fmt(r['zero_shot'])} | {_fmt(r['final'])} | — | — | — | "
                             f"{verdict} | — |")
                continue
            if vs:
                v = vs["verdict"]
                verdict = (f"{v['verdict']} ({v['delta_mean']:+.1f}, [{v['ci_low']:+.1f}, {v['ci_high']:+.1f}])"
                           if "ci_low" in v else v["verdict"])
                jump, ratio = _fmt(vs["jumpstart"]), _fmt(vs["transfer_ratio"], 2)
            else:
                verdict, jump, ratio = "(baseline)" if r["name"] == "scratch" else "—", "—", "—"
            sps = r.get("steps_per_second")
            rate = "—" if not sps else f"{sps['mean']:.0f}"
            lines.append(f"| {r['method']} | {_fmt(r['zero_shot'])} | {_fmt(r['final'])} | {_ttt(r)} | {jump} | "
                         f"{ratio} | {verdict} | {rate} |")
        lines.append("")
    g = res.get("goals", {})
    lines += ["## Goals", ""]
    if "finetune_half_steps" in g:
        f = g["finetune_half_steps"]
        lines.append(f"- Fine-tuning reaches the threshold in at most half the steps of scratch on >= 2 CartPole "
                     f"variants: **{'met' if f['met'] else 'not met'}** ({f['met_on']} of {len(f['variants'])}).")
        for v in f["variants"]:
            lines.append(f"  - {v['part']}: fine-tune {v['finetune_steps']:.0f} steps ({v['finetune_reached']}/"
                         f"{v['n_seeds']} seeds reach it), scratch {v['scratch_steps']:.0f} ({v['scratch_reached']}/"
                         f"{v['n_seeds']}; unreached seeds count as the budget): {'met' if v['met'] else 'not met'}; "
                         f"verdict: {v['verdict']}.")
    if "randomized_zero_shot" in g:
        r = g["randomized_zero_shot"]
        lines.append(f"- The randomised source's zero-shot return beats the plain source's on the targets: "
                     f"**{'met' if r['met'] else 'not met'}** ({r['met_on']} of {len(r['variants'])}).")
        for v in r["variants"]:
            ci = "" if v["ci"] is None else f", paired 95% CI [{v['ci'][0]:+.1f}, {v['ci'][1]:+.1f}]: {v['verdict']}"
            per = lambda xs: ", ".join(f"{x:.0f}" for x in xs)  # noqa: E731
            lines.append(f"  - {v['part']}: randomised {v['randomized']:.1f} ({per(v['randomized_values'])}) vs plain "
                         f"{v['plain']:.1f} ({per(v['plain_values'])}){ci}.")
    if "distill_95" in g:
        d = g["distill_95"]
        n_def = sum(v["method"] == "distill" and v["retention"] is not None for v in d["variants"])
        lines.append(f"- Distillation of the fine-tuned agent into a smaller network keeps >= 95% of its return: "
                     f"**{'met' if d['met'] else 'not met'}** ({d['met_on']} of the {n_def} variants where the "
                     "teacher is above the task's lowest return).")
        for v in d["variants"]:
            kept = "undefined (the teacher is at the lowest return)" if v["retention"] is None else \
                f"{100 * v['retention']:.0f}%"
            if v["retention"] is not None and v["seeds_defined"] < v["n_seeds"]:
                kept += f" over the {v['seeds_defined']} seeds whose teacher is above the lowest return"
            lines.append(f"  - {v['part']} ({v['method']}): keeps {kept}"
                         + (" (the lower of its teachers)" if v["method"] != "distill" else "")
                         + f"; {v['student_params']} vs {v['teacher_params']} actor parameters.")
    timing = res.get("timing", {})
    if timing:
        total = sum(t["seconds"] for t in timing.values())
        lines += ["", "## Time", "",
                  f"{total / 60:.1f} min of cell time in all (one CPU thread; the source agents are trained once "
                  "per seed and task, in the first variant that needs them). Per variant: "
                  + "; ".join(f"{p} {t['seconds'] / 60:.1f} min ({t['source_seconds'] / 60:.1f} training sources)"
                              for p, t in timing.items())
                  + f". This invocation: {res.get('seconds', total) / 60:.1f} min wall (kept cells are read back)."]
    lines.append("")
    return "\n".join(lines)


def run_rl_transfer_dir(out, *, overwrite: bool = False, echo=print, **kw) -> dict:
    """:func:`run_rl_transfer` into ``out`` (finished cells kept: a rerun with the same arguments
    continues; other arguments are refused); writes ``results.json`` and ``results.md``."""
    from ..train.rundir import run_suite_dir
    from .envs import require_rl
    from .run import prepare

    require_rl("transferkit benchmark rl-transfer")
    args = check_rl_args(**kw)
    for p in args["parts"]:  # every check before the directory is made
        prepare(part_config(p, args["seeds"]))
    return run_suite_dir(out, "rl-transfer", args, run_rl_transfer, markdown, overwrite=overwrite, echo=echo)


__all__ = ["PARTS", "VARIANTS", "check_rl_args", "goals", "markdown", "run_rl_transfer", "run_rl_transfer_dir"]
