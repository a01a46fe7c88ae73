"""``transferkit rl exp.yaml``: a source policy moved to target environment variants.

An experiment file::

    name: cartpole-long-pole
    algo: ppo                                     # ppo (default), dqn (discrete actions) or sac (continuous)
    source: cartpole                              # the source variant (a spec string)
    randomized_source: "cartpole:length=0.25..1.5,gravity=9.8..19.6"   # for the randomized method
    targets: ["cartpole:length=1.0", "cartpole:gravity=19.6"]
    methods: [scratch, zero_shot, finetune, randomized, distill]     # or {name: finetune, lr_scale: 0.3, key: ft}
    source_steps: 100000                          # each source agent's budget (plain and randomised alike)
    steps: 40000                                  # the target budget: the same for every method that learns
    eval_every: 2048                              # a learning-curve point every this many target steps
    eval_episodes: 10                             # deterministic episodes per point (fixed seeds per seed)
    threshold: null                               # time to threshold (default: the task's, 475 for CartPole)
    seeds: 3
    hyperparams: {}                               # the algorithm's arguments over the task's defaults

Each (target, method, seed) is a *cell*: its result, with its learning curve, is kept under
``cells/`` as it finishes, so ``transferkit rl --resume RUN_DIR`` continues a killed run without
redoing finished cells; trained agents are kept under ``policies/`` (the source agents once per
seed, shared by every target). The run directory holds ``rl.yaml`` (the resolved config, read by
``--resume``), ``environment.json``, ``rl.log`` (progress lines, also on stderr),
``metrics.jsonl`` (one row per learning-curve point) and ``result.json`` (every cell, and per
target and method the mean ± std over seeds with Taylor & Stone's transfer metrics against
scratch and the negative-transfer verdict, :func:`transferkit.rl.metrics.transfer_metrics`).
Nothing is written before the config, every environment spec, the methods, the action spaces and
the hyperparameters have been checked.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._validation import check_name, check_number, suggest
from ..errors import ConfigError
from .envs import EnvSpec, parse_env_spec, require_rl

CONFIG_FILE = "rl.yaml"
LOG_FILE = "rl.log"
RESULT_FILE = "result.json"

ALGO_NAMES = ("ppo", "dqn", "sac")

#: PPO's arguments per task (RL Zoo's tuned values, with its linear schedules ``lin_X``; the
#: Zoo's CartPole settings reach 500 in 100k steps, its Acrobot settings with 8 environments
#: instead of 16). Any of them is replaced by ``hyperparams``.
PPO_DEFAULTS = {
    "cartpole": {"n_envs": 8, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
                 "ent_coef": 0.0, "learning_rate": "lin_0.001", "clip_range": "lin_0.2"},
    "acrobot": {"n_envs": 8, "n_steps": 64, "batch_size": 256, "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4,
                "ent_coef": 0.0, "learning_rate": "lin_0.001"},
    "mountaincar": {"n_envs": 8, "n_steps": 64, "batch_size": 256, "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4,
                    "ent_coef": 0.0, "learning_rate": "lin_0.001"},
    "pendulum": {"n_envs": 4, "n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9, "n_epochs": 10, "ent_coef": 0.0,
                 "learning_rate": 0.001, "clip_range": 0.2, "use_sde": True, "sde_sample_freq": 4},
}
DQN_DEFAULTS = {
    "cartpole": {"learning_rate": 0.0023, "batch_size": 64, "buffer_size": 100000, "learning_starts": 1000,
                 "gamma": 0.99, "target_update_interval": 10, "train_freq": 256, "gradient_steps": 128,
                 "exploration_fraction": 0.16, "exploration_final_eps": 0.04, "net_arch": [256, 256]},
}
SAC_DEFAULTS = {"pendulum": {"learning_rate": 0.001}}
DEFAULTS = {"ppo": PPO_DEFAULTS, "dqn": DQN_DEFAULTS, "sac": SAC_DEFAULTS}

DEFAULT_METHODS = ("scratch", "zero_shot", "finetune", "randomized", "distill")


@dataclass
class RLConfig:
    """A ``transferkit rl`` experiment (see the module docstring)."""

    name: str = "rl"
    algo: str = "ppo"
    source: object = None
    randomized_source: object = None
    targets: object = None
    methods: object = None
    source_steps: int = 100_000
    steps: int = 40_000
    eval_every: int = 2048
    eval_episodes: int = 10
    threshold: float | None = None
    seeds: object = 3
    hyperparams: dict = field(default_factory=dict)
    confidence: float = 0.95
    tail: int = 3
    output_dir: str | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["source"] = str(self.source)
        d["randomized_source"] = None if self.randomized_source is None else str(self.randomized_source)
        d["targets"] = [str(t) for t in self.targets]
        d["methods"] = [{"name": m.name, "key": k, **m.options} for k, m in self.methods.items()]
        return d

    def resolved_hyperparams(self) -> dict:
        """The task's defaults for the algorithm, replaced by ``hyperparams`` where it gives them."""
        base = DEFAULTS[self.algo].get(self.source.family, {})
        return {**base, **self.hyperparams}

    def task_threshold(self) -> float:
        return float(self.threshold) if self.threshold is not None else float(self.source.info.threshold)


def _hyperparam_names(algo: str) -> list[str]:
    """The keyword arguments ``hyperparams`` may give (the SB3 class's, plus ``n_envs``, ``net_arch``)."""
    import inspect

    from .agents import ALGOS

    params = inspect.signature(ALGOS[algo].__init__).parameters
    fixed = ("self", "policy", "env", "seed", "device", "verbose", "_init_setup_model", "tensorboard_log")
    return sorted([p for p in params if p not in fixed] + ["n_envs", "net_arch"])


def _spec(where: str, value) -> EnvSpec:
    if value is None:
        raise ConfigError(f"{where} is missing: give an environment spec such as \"cartpole\" or "
                          "\"cartpole:length=1.0\".")
    try:
        return parse_env_spec(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def config_from_dict(data: Mapping) -> RLConfig:
    """A checked :class:`RLConfig` from a mapping; unknown keys fail with the nearest valid key.
    The checks that build environments (action spaces, hyperparameters) are :func:`prepare`'s."""
    from ..config import _check_finite, check_seeds

    if not isinstance(data, Mapping):
        raise ConfigError(f"an rl config must be a mapping of keys (name, source, targets, methods, ...), got "
                          f"{type(data).__name__}.")
    public = [f.name for f in dataclasses.fields(RLConfig)]
    for k in data:
        if k not in public:
            raise ConfigError(f"unknown key {k!r} in the rl config." + suggest(str(k), public)
                              + f" Valid keys: {', '.join(public)}.")
    _check_finite(dict(data))
    cfg = RLConfig(**dict(data))
    cfg.name = check_name("name", cfg.name)
    if cfg.algo not in ALGO_NAMES:
        raise ConfigError(f"algo={cfg.algo!r} is not supported." + suggest(str(cfg.algo), ALGO_NAMES)
                          + f" Choose one of {', '.join(ALGO_NAMES)}.")
    cfg.source = _spec("source", cfg.source)
    if cfg.source.ranges:
        raise ConfigError(f"source {str(cfg.source)!r} holds a range; the source is one variant (put the ranges in "
                          "randomized_source).")
    if cfg.randomized_source is not None:
        cfg.randomized_source = _spec("randomized_source", cfg.randomized_source)
        if not cfg.randomized_source.ranges:
            raise ConfigError(f"randomized_source {str(cfg.randomized_source)!r} has no range; give at least one "
                              "LO..HI, e.g. \"cartpole:length=0.25..1.5\".")
        if cfg.randomized_source.family != cfg.source.family:
            raise ConfigError(f"randomized_source is a {cfg.randomized_source.family} variant but the source is "
                              f"{cfg.source.family}; randomise the source's own task.")
    targets = cfg.targets if isinstance(cfg.targets, list) else ([] if cfg.targets is None else [cfg.targets])
    if not targets:
        raise ConfigError("targets is missing: give the target variants, e.g. targets: [\"cartpole:length=1.0\"].")
    cfg.targets = [_spec(f"targets[{i}]", t) for i, t in enumerate(targets)]
    if len({str(t) for t in cfg.targets}) != len(cfg.targets):
        raise ConfigError("targets lists a variant twice; give each target once.")
    cfg.methods = _methods(cfg.methods, cfg)
    cfg.source_steps = check_number("source_steps", cfg.source_steps, low=1, high=100_000_000, integer=True)
    cfg.steps = check_number("steps", cfg.steps, low=1, high=100_000_000, integer=True)
    cfg.eval_every = check_number("eval_every", cfg.eval_every, low=1, high=cfg.steps, integer=True)
    cfg.eval_episodes = check_number("eval_episodes", cfg.eval_episodes, low=1, high=1000, integer=True)
    if cfg.threshold is not None:
        cfg.threshold = check_number("threshold", cfg.threshold)
    cfg.seeds = check_seeds(cfg.seeds)
    cfg.confidence = check_number("confidence", cfg.confidence, low=0.0, high=1.0, low_inclusive=False,
                                  high_inclusive=False)
    cfg.tail = check_number("tail", cfg.tail, low=1, high=1000, integer=True)
    if not isinstance(cfg.hyperparams, Mapping):
        raise ConfigError(f"hyperparams={cfg.hyperparams!r} must be a mapping of the algorithm's arguments, e.g. "
                          "{n_steps: 64, learning_rate: 0.0003}.")
    cfg.hyperparams = dict(cfg.hyperparams)
    return cfg


def _methods(value, cfg: RLConfig) -> dict:
    from .methods import Distill, make_method

    if value is None:
        value = [m for m in DEFAULT_METHODS if m != "randomized" or cfg.randomized_source is not None]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"methods={value!r} must be a non-empty list of methods (scratch, zero_shot, finetune, "
                          "randomized, distill), each a name or {name: NAME, key: KEY, option: value}.")
    out: dict = {}
    for i, item in enumerate(value):
        try:
            m = make_method(item)
        except ConfigError as exc:
            raise ConfigError(f"methods[{i}]: {exc}") from None
        key = item.get("key", m.name) if isinstance(item, Mapping) else m.name
        key = check_name(f"methods[{i}].key", key)
        if key in out:
            raise ConfigError(f"methods[{i}]: the key {key!r} is used twice; give the second one its own key "
                              f"({{name: {m.name}, key: {m.name}_2, ...}}).")
        try:
            m.check_plan(cfg.algo, cfg.randomized_source)
        except ConfigError as exc:
            raise ConfigError(f"methods[{i}]: {exc}") from None
        out[key] = m
    for key, m in out.items():
        if isinstance(m, Distill):
            m.check_teachers([k for k in out if k != key])
    return out


def load_rl_config(path, overrides: list[str] | None = None) -> RLConfig:
    """An :class:`RLConfig` from a YAML file, with ``key=value`` overrides (``--set``)."""
    from ..config import load_mapping_file

    return load_mapping_file(path, overrides, config_from_dict, examples="examples/rl/ for an rl file")


def prepare(cfg: RLConfig) -> dict:
    """Every check that needs gymnasium and stable-baselines3, before anything is written: the
    action and observation spaces of every variant against the source's, the algorithm against
    the action space, and the hyperparameters (an agent is built on the source and dropped).
    Returns the resolved hyperparameters."""
    require_rl("transferkit rl")
    from .agents import new_agent
    from .envs import check_same_spaces, describe_space, spaces_of

    _, act = spaces_of(cfg.source)
    discrete = hasattr(act, "n")
    if cfg.algo == "dqn" and not discrete:
        raise ConfigError(f"algo 'dqn' needs discrete actions but {str(cfg.source)!r} acts in {describe_space(act)}; "
                          "use ppo or sac.")
    if cfg.algo == "sac" and discrete:
        raise ConfigError(f"algo 'sac' needs continuous actions but {str(cfg.source)!r} acts in "
                          f"{describe_space(act)}; use ppo or dqn.")
    for t in cfg.targets:
        check_same_spaces(cfg.source, t)
    if cfg.randomized_source is not None:
        check_same_spaces(cfg.source, cfg.randomized_source)
    names = _hyperparam_names(cfg.algo)
    for k in cfg.hyperparams:
        if k not in names:
            raise ConfigError(f"hyperparams: {cfg.algo} has no argument {k!r}." + suggest(str(k), names)
                              + " See stable-baselines3's documentation of the algorithm.")
    hp = cfg.resolved_hyperparams()
    try:
        agent = new_agent(cfg.algo, cfg.source, 0, hp)
    except ConfigError:
        raise
    except Exception as exc:  # SB3 checks its arguments with asserts and ValueErrors
        msg = " ".join(str(exc).split())[:300]
        raise ConfigError(f"hyperparams {hp!r} are refused by stable-baselines3's {cfg.algo.upper()}: "
                          f"{type(exc).__name__}: {msg}") from None
    agent.env.close()
    return hp


# ============================================================================ running the cells
def _slug(spec) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", str(spec)).strip("_")


def plan_cells(cfg: RLConfig, hp: dict, prefix: str):
    """``(name, definition, target, key, seed)`` of every cell, seed by seed (so the sources of a
    seed are trained once and every target of that seed reuses them)."""
    for seed in cfg.seeds:
        for t in cfg.targets:
            for key, m in cfg.methods.items():
                rnd = None if cfg.randomized_source is None else str(cfg.randomized_source)
                definition = {"algo": cfg.algo, "hyperparams": hp, "source": str(cfg.source), "randomized_source": rnd,
                              "target": str(t), "method": m.name, "options": m.options, "steps": cfg.steps,
                              "source_steps": cfg.source_steps, "eval_every": cfg.eval_every,
                              "eval_episodes": cfg.eval_episodes, "seed": seed}
                teachers = m.options.get("teachers") or []
                if teachers:  # a distilled cell depends on its teachers' definitions too
                    definition["teachers"] = {k: {"name": cfg.methods[k].name, **cfg.methods[k].options}
                                              for k in teachers if k in cfg.methods}
                yield f"{prefix}--{_slug(t)}--{key}--seed{seed}", definition, t, key, seed


def run_cells(cfg: RLConfig, hp: dict, out: Path | None, log, *, prefix: str, store=None) -> list[dict]:
    """Run (or read back) every cell of ``cfg``; one row per cell: ``target``, ``method`` (its key),
    ``name`` (the registered method), ``seed`` and the method's result."""
    from ..train.rundir import cached_cell
    from .agents import PolicyStore
    from .methods import CellContext

    store = store or PolicyStore(None if out is None else out / "policies")
    cells = list(plan_cells(cfg, hp, prefix))
    rows, contexts = [], {}
    t0 = time.perf_counter()
    for i, (name, definition, target, key, seed) in enumerate(cells):
        ck = (str(target), seed)
        if ck not in contexts:
            contexts[ck] = CellContext(cfg.algo, hp, cfg.source, cfg.randomized_source, target, seed, cfg.steps,
                                       cfg.source_steps, cfg.eval_every, cfg.eval_episodes, store, log,
                                       methods=cfg.methods)
        ctx = contexts[ck]
        method = cfg.methods[key]

        def compute(method=method, key=key, ctx=ctx):
            before = ctx.store.trained_seconds
            res, agent = method.run(ctx)
            if agent is not None:
                ctx.store.put(ctx.method_key(key), agent)
            res["source_seconds"] = ctx.store.trained_seconds - before  # sources this cell trained first
            return res

        t_cell = time.perf_counter()
        value = cached_cell(out, name, definition, compute, log)
        seconds = _cell_seconds(out, name, time.perf_counter() - t_cell)
        rows.append({"target": str(target), "method": key, "name": method.name, "seed": seed, "seconds": seconds,
                     **value})
        log(f"[{i + 1}/{len(cells)}] {name}: final return {value['final']:.1f} "
            f"({(time.perf_counter() - t0) / 60:.1f} min)")
    return rows


def _cell_seconds(out, name: str, measured: float) -> float:
    """The seconds the cell took when it was computed (kept in its file), else ``measured``."""
    if out is None:
        return measured
    try:
        return float(json.loads((Path(out) / "cells" / f"{name}.json").read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return measured


def _ms(values) -> dict:
    from ..metrics._base import mean_std_dict

    return mean_std_dict(values)


def summarize(cfg: RLConfig, rows: list[dict]) -> list[dict]:
    """Per target and method: mean ± std over seeds of the zero-shot (first) and final returns,
    the steps per second, and, against scratch, :func:`~transferkit.rl.metrics.transfer_metrics`
    (``vs_scratch``; not for distillation, whose curve counts distillation steps); distillation
    rows carry the retention of the teacher's return."""
    from .metrics import _ms_defined, asymptotic_performance, transfer_metrics

    threshold, floor = cfg.task_threshold(), cfg.source.info.floor
    out = []
    for t in cfg.targets:
        by = {k: sorted([r for r in rows if r["target"] == str(t) and r["method"] == k], key=lambda r: r["seed"])
              for k in cfg.methods}
        scratch_key = next((k for k, m in cfg.methods.items() if m.name == "scratch"), None)
        scratch = by.get(scratch_key) if scratch_key else None
        for key, m in cfg.methods.items():
            rs = by[key]
            if not rs:
                continue
            row = {"target": str(t), "method": key, "name": m.name, "learns": bool(m.learns), "n_seeds": len(rs),
                   "zero_shot": _ms(r["curve"]["returns"][0] for r in rs),
                   "final": _ms(asymptotic_performance(r["curve"], cfg.tail) if m.learns else r["final"] for r in rs),
                   "threshold": threshold}
            sps = [r["steps_per_second"] for r in rs if r.get("steps_per_second")]
            if sps:
                row["steps_per_second"] = _ms(sps)
            if m.name == "distill":
                # a seed whose teacher stays at the task's lowest return has no retention (None)
                row["retention"] = _ms_defined([r["retention"] for r in rs])
                row["mean_retention"] = _ms_defined([r["mean_retention"] for r in rs])
                row["teacher_return"] = _ms(r["teacher_return"] for r in rs)
                row["student_params"], row["teacher_params"] = rs[0]["student_params"], rs[0]["teacher_params"]
                row["teachers"] = [{"teacher": t["teacher"], "env": t["env"],
                                    "teacher_return": _ms(r["teachers"][j]["teacher_return"] for r in rs),
                                    "student_return": _ms(r["teachers"][j]["student_return"] for r in rs),
                                    "retention": _ms_defined([r["teachers"][j]["retention"] for r in rs])}
                                   for j, t in enumerate(rs[0]["teachers"])]
            elif scratch and key != scratch_key and len(scratch) == len(rs):
                row["vs_scratch"] = transfer_metrics([r["curve"] for r in rs], [r["curve"] for r in scratch],
                                                     budget=cfg.steps, threshold=threshold, floor=floor,
                                                     tail=cfg.tail, confidence=cfg.confidence)
            if m.name != "distill":
                from .metrics import time_to_threshold

                ttt = [time_to_threshold(r["curve"], threshold) for r in rs]
                row["time_to_threshold"] = {"values": ttt, "reached": sum(v is not None for v in ttt),
                                            "mean_censored": float(sum(cfg.steps if v is None else v for v in ttt)
                                                                   / len(ttt))}
            out.append(row)
    return out


def curve_rows(rows: list[dict]) -> list[dict]:
    """metrics.jsonl: one row per learning-curve point."""
    return [{"target": r["target"], "method": r["method"], "seed": r["seed"], "step": s, "return": v}
            for r in rows for s, v in zip(r["curve"]["steps"], r["curve"]["returns"])]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_rl(config, out: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
           overrides: list[str] | None = None, echo: Callable[[str], None] | None = _stderr) -> dict:
    """Run ``transferkit rl``; return the result dict (also in ``RUN_DIR/result.json``).

    ``config``: an :class:`RLConfig`, a mapping or a YAML path; with ``resume=True``, ``None``
    (the config stored in ``out`` is used, finished cells are kept)."""
    from ..train.rundir import (RunLog, begin_config_run, check_output_dir, config_or_resume, input_paths,
                                mark_complete, open_run_dir, write_json, write_text)

    require_rl("transferkit rl")
    t0 = time.perf_counter()
    cfg, done, inputs = config_or_resume(config, out, resume, command="rl", what="rl run", stored=CONFIG_FILE,
                                         result=RESULT_FILE, key="summary", cls=RLConfig,
                                         from_mapping=config_from_dict, from_file=load_rl_config,
                                         overrides=overrides, echo=echo)
    if done is not None:
        return done
    final = Path(out or cfg.output_dir or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    read = [*inputs, *input_paths(*[str(t) for t in cfg.targets])]
    check_output_dir(final, overwrite=overwrite, inputs=read, resume=resume)
    hp = prepare(cfg)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # SB3's small MLPs: a second thread only adds synchronisation
    try:
        with open_run_dir(final, overwrite=overwrite, resume=resume, inputs=read, kind="rl") as d:
            begin_config_run(d, CONFIG_FILE, cfg.to_dict(), cfg.seeds, resume=resume)
            log = RunLog(d / LOG_FILE, echo)
            log(("resuming " if resume else "rl ") + f"{final}: {cfg.algo} from {cfg.source} to "
                f"{', '.join(map(str, cfg.targets))}; methods {', '.join(cfg.methods)}; {len(cfg.seeds)} seeds; "
                f"source {cfg.source_steps} steps, target {cfg.steps} steps")
            rows = run_cells(cfg, hp, d, log, prefix=cfg.name)
            write_text(d / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in curve_rows(rows)))
            res = {"name": cfg.name, "algo": cfg.algo, "source": str(cfg.source),
                   "randomized_source": None if cfg.randomized_source is None else str(cfg.randomized_source),
                   "targets": [str(t) for t in cfg.targets], "methods": list(cfg.methods), "seeds": cfg.seeds,
                   "steps": cfg.steps, "source_steps": cfg.source_steps, "threshold": cfg.task_threshold(),
                   "hyperparams": hp, "cells": rows, "summary": summarize(cfg, rows),
                   "seconds": time.perf_counter() - t0, "output_dir": str(final)}
            write_json(d / RESULT_FILE, res)
            mark_complete(d)
            log(f"done: {final / RESULT_FILE}")
    finally:
        torch.set_num_threads(threads)
    return res


def _fmt(ms) -> str:
    return "—" if not ms else f"{ms['mean']:.1f} ± {ms['std']:.1f}"


def format_result(res: dict) -> str:
    """A plain-text table per target: zero-shot and final returns, time to threshold, the verdict."""
    lines = [f"{res['algo']} from {res['source']}: {len(res['seeds'])} seeds, target budget {res['steps']} steps, "
             f"threshold {res['threshold']:g}"]
    for t in res["targets"]:
        rows = [x for x in res["summary"] if x["target"] == t]
        w = max([len("method"), *(len(r["method"]) for r in rows)])
        lines.append(f"\n{t}")
        lines.append(f"  {'method':<{w}} {'zero-shot':>16} {'final':>16} {'time to threshold':>20}  verdict vs scratch")
        for r in rows:
            tt = r.get("time_to_threshold")
            shown = "—" if tt is None else f"{tt['mean_censored']:.0f} ({tt['reached']}/{r['n_seeds']})"
            v = r.get("vs_scratch", {}).get("verdict", {}).get("verdict", "")
            if r["name"] == "distill":
                v = f"keeps {100 * r['retention']['mean']:.0f}% of the teacher's return"
            lines.append(f"  {r['method']:<{w}} {_fmt(r['zero_shot']):>16} {_fmt(r['final']):>16} {shown:>20}  {v}")
    return "\n".join(lines)


__all__ = ["RLConfig", "config_from_dict", "format_result", "load_rl_config", "prepare", "run_cells", "run_rl",
           "summarize"]
