"""stable-baselines3 glue: agents on environment variants, learning curves, evaluation, copies.

Imported only once gymnasium and stable-baselines3 are known to be installed
(:func:`transferkit.rl.envs.require_rl`); the rest of :mod:`transferkit.rl` imports it lazily.

- :func:`new_agent`: an SB3 agent (PPO by default; DQN and SAC too) on a vectorised variant,
  seeded, on the CPU;
- :class:`Evaluator`: the deterministic policy's mean return on fixed evaluation episodes
  (the same episodes at every evaluation and for every method of a seed: comparisons are
  paired);
- :func:`train_with_curve`: ``learn`` for a budget of environment steps, evaluating every
  ``eval_every`` steps (at the first rollout boundary past each multiple, and at the end);
- :func:`copy_agent`: an independent copy of a trained agent on another variant, with a new
  learning rate and a fresh optimizer (fine-tuning);
- :class:`PolicyStore`: trained agents kept in memory and as ``.zip`` files of a run
  directory, so a resumed run and later cells reuse them.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from ..errors import ConfigError
from .envs import make_env, parse_env_spec

ALGOS = {"ppo": PPO, "dqn": DQN, "sac": SAC}

#: Offset of the evaluation episodes' seeds: never a training environment's seed.
EVAL_SEED = 1_000_003


def _monitored(spec, seed: int):
    def make():
        return Monitor(make_env(spec, seed=seed))
    return make


def vec_env(spec, n_envs: int, seed: int) -> DummyVecEnv:
    """``n_envs`` copies of the variant in one :class:`DummyVecEnv` (each in a ``Monitor``)."""
    return DummyVecEnv([_monitored(spec, seed * 1000 + i) for i in range(int(n_envs))])


class Linear:
    """A schedule falling linearly from ``start`` to 0 over training (RL Zoo's ``lin_X``); SB3
    calls it with the progress remaining, 1 at the start and 0 at the end."""

    def __init__(self, start: float):
        self.start = float(start)

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.start

    def __repr__(self) -> str:
        return f"lin_{self.start:g}"


def schedule_value(v):
    """A hyperparameter as SB3 takes it: ``"lin_0.001"`` becomes :class:`Linear`, the rest stays."""
    if isinstance(v, str) and v.startswith("lin_"):
        return Linear(float(v[4:]))
    return v


def initial_value(v) -> float:
    """The value at the start of training of a number or a schedule (``lin_X``, :class:`Linear`)."""
    v = schedule_value(v)
    return v.start if isinstance(v, Linear) else float(v(1.0) if callable(v) else v)


def new_agent(algo: str, spec, seed: int, hyperparams: dict):
    """A fresh SB3 agent of ``algo`` on ``spec`` (``hyperparams``: the algorithm's keyword
    arguments plus ``n_envs`` and ``net_arch``; ``lin_X`` is a linear schedule from ``X``),
    seeded, on the CPU."""
    hp = {k: schedule_value(v) for k, v in hyperparams.items()}
    n_envs = int(hp.pop("n_envs", 1))
    policy_kwargs = dict(hp.pop("policy_kwargs", {}) or {})
    if "net_arch" in hp:
        policy_kwargs["net_arch"] = list(hp.pop("net_arch"))
    return ALGOS[algo]("MlpPolicy", vec_env(spec, n_envs, seed), seed=int(seed), device="cpu", verbose=0,
                       policy_kwargs=policy_kwargs or None, **hp)


def copy_agent(agent, spec, seed: int, *, n_envs: int, learning_rate=None, reinit_value: bool = False):
    """An independent copy of ``agent`` (saved and loaded: no state is shared) acting on
    ``spec``, reseeded with ``seed``; ``learning_rate`` (a number, ``lin_X`` or a schedule)
    replaces its learning rate.

    PPO: the optimizer starts afresh (Adam's moments of the source's last updates say nothing
    about the target's gradients); ``reinit_value`` draws the value head anew as SB3 initialises
    it (orthogonal, gain 1, zero bias), so the critic's source values do not bias the first
    advantages."""
    buf = io.BytesIO()
    agent.save(buf)
    buf.seek(0)
    new = type(agent).load(buf, env=vec_env(spec, n_envs, seed), device="cpu")
    new.set_random_seed(int(seed))
    if learning_rate is not None:
        new.learning_rate = schedule_value(learning_rate)
        new._setup_lr_schedule()  # FloatSchedule of a number or of a schedule
    if isinstance(new, PPO):
        pol = new.policy
        if reinit_value:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                torch.nn.init.orthogonal_(pol.value_net.weight, gain=1.0)
                torch.nn.init.zeros_(pol.value_net.bias)
        pol.optimizer = pol.optimizer_class(pol.parameters(), lr=new.lr_schedule(1.0), **pol.optimizer_kwargs)
    elif reinit_value:
        raise ConfigError(f"reinit_value=true re-draws PPO's value head; {type(agent).__name__} has none (set it "
                          "false).")
    return new


def act_fn(agent):
    """The agent's deterministic policy on a batch of observations ``(n, d) -> (n, ...)``."""
    def act(obs):
        return agent.predict(obs, deterministic=True)[0]
    return act


class Evaluator:
    """Mean return of a policy over ``episodes`` fixed episodes of ``spec``.

    Episode ``i`` is reset with seed ``EVAL_SEED + 1000 * seed + i`` (its wrappers too), so every
    evaluation of every method of one seed sees the same episodes. The episodes run side by side:
    one batched policy call per step."""

    def __init__(self, spec, episodes: int, seed: int):
        self.spec = parse_env_spec(spec)
        self.seeds = [EVAL_SEED + 1000 * int(seed) + i for i in range(int(episodes))]
        self.envs = [make_env(self.spec, seed=s) for s in self.seeds]
        self.discrete = hasattr(self.envs[0].action_space, "n")
        self.calls, self.env_steps = 0, 0

    def returns(self, act) -> np.ndarray:
        n = len(self.envs)
        obs = [e.reset(seed=s)[0] for e, s in zip(self.envs, self.seeds)]
        obs = np.stack(obs).astype(np.float32)
        total = np.zeros(n)
        alive = np.ones(n, dtype=bool)
        while alive.any():
            idx = np.flatnonzero(alive)
            actions = np.asarray(act(obs[idx]))
            for j, i in enumerate(idx):
                a = int(actions[j]) if self.discrete else actions[j]
                o, r, term, trunc, _ = self.envs[i].step(a)
                total[i] += float(r)
                obs[i] = o
                self.env_steps += 1
                if term or trunc:
                    alive[i] = False
        self.calls += 1
        return total

    def __call__(self, act) -> float:
        return float(self.returns(act).mean())

    def close(self) -> None:
        for e in self.envs:
            e.close()


class _Curve(BaseCallback):
    def __init__(self, evaluate, every: int, on_point=None):
        super().__init__()
        self.evaluate, self.every, self.on_point = evaluate, int(every), on_point
        self.next, self.steps, self.returns, self.eval_seconds = 0, [], [], 0.0

    def record(self) -> None:
        t0 = time.perf_counter()
        r = self.evaluate(act_fn(self.model))
        self.eval_seconds += time.perf_counter() - t0
        self.steps.append(int(self.model.num_timesteps))
        self.returns.append(r)
        self.next = (int(self.model.num_timesteps) // self.every + 1) * self.every
        if self.on_point is not None:
            self.on_point(self.steps[-1], r)

    def _on_rollout_start(self) -> None:
        # the policy changes only between rollouts: evaluate at the first boundary past each multiple
        if self.model.num_timesteps >= self.next:
            self.record()

    def _on_step(self) -> bool:
        return True


def train_with_curve(agent, steps: int, evaluate, eval_every: int, on_point=None) -> dict:
    """``agent.learn(steps)`` with the evaluation curve; ``{"steps", "returns", "train_seconds",
    "eval_seconds", "env_steps"}`` (``train_seconds`` excludes the evaluations)."""
    cb = _Curve(evaluate, eval_every, on_point)
    t0 = time.perf_counter()
    if steps > 0:
        agent.learn(total_timesteps=int(steps), callback=cb, reset_num_timesteps=True)
    else:
        cb.init_callback(agent)
    if not cb.steps or cb.steps[-1] != int(agent.num_timesteps):
        cb.record()
    total = time.perf_counter() - t0
    return {"steps": cb.steps, "returns": cb.returns, "train_seconds": total - cb.eval_seconds,
            "eval_seconds": cb.eval_seconds, "env_steps": int(agent.num_timesteps)}


def _slug(key: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_=.+-]+", "_", key).strip("_")[:90]
    return f"{s}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


class PolicyStore:
    """Trained agents by key: in memory, and (with a ``folder``) as ``folder/KEY.zip``, written
    atomically, read back by a later cell or a resumed run."""

    def __init__(self, folder=None):
        self.folder = None if folder is None else Path(folder)
        self._mem: dict = {}
        self.trained_seconds = 0.0  # spent in get_or_train's training (the sources a run needed)

    def path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{_slug(key)}.zip"

    def get(self, key: str, algo: str):
        if key in self._mem:
            return self._mem[key]
        p = self.path(key)
        if p is not None and p.is_file():
            agent = ALGOS[algo].load(p, device="cpu")
            self._mem[key] = agent
            return agent
        return None

    def put(self, key: str, agent) -> None:
        self._mem[key] = agent
        p = self.path(key)
        if p is not None:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.parent / f".{p.stem}.tmp-{os.getpid()}.zip"
            agent.save(tmp)
            os.replace(tmp, p)

    def get_or_train(self, key: str, algo: str, train):
        agent = self.get(key, algo)
        if agent is None:
            t0 = time.perf_counter()
            agent = train()
            self.trained_seconds += time.perf_counter() - t0
            self.put(key, agent)
        return agent


def actor_parameters(agent) -> int:
    """Parameters that choose the actions: PPO's policy MLP and action head, DQN's Q-network,
    SAC's actor."""
    pol = agent.policy
    if isinstance(agent, PPO):
        mods = [pol.mlp_extractor.policy_net, pol.action_net]
        n = sum(p.numel() for m in mods for p in m.parameters())
        if hasattr(pol, "log_std") and isinstance(pol.log_std, torch.nn.Parameter):
            n += pol.log_std.numel()
        return int(n)
    if isinstance(agent, DQN):
        return int(sum(p.numel() for p in pol.q_net.parameters()))
    return int(sum(p.numel() for p in pol.actor.parameters()))


def teacher_outputs(agent, obs: np.ndarray) -> tuple[np.ndarray, str]:
    """What the distillation loss compares, for a batch of observations: ``(outputs, kind)``.

    - PPO, discrete actions: the action log-probabilities ``(n, K)``, kind ``categorical``;
    - PPO, continuous actions: ``[mean | log_std]`` ``(n, 2d)`` of its Gaussian, kind ``gaussian``;
    - DQN: the Q-values ``(n, K)``, kind ``q`` (the loss softens them by a temperature, Rusu et
      al. 2016)."""
    pol = agent.policy
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        if isinstance(agent, PPO):
            dist = pol.get_distribution(x).distribution
            if isinstance(dist, torch.distributions.Categorical):
                return dist.logits.numpy().astype(np.float32), "categorical"
            mean, std = dist.mean, dist.stddev
            return torch.cat([mean, std.log()], dim=1).numpy().astype(np.float32), "gaussian"
        if isinstance(agent, DQN):
            return pol.q_net(x).numpy().astype(np.float32), "q"
    raise ConfigError(f"distillation needs a PPO or DQN teacher (a distribution over actions or Q-values); "
                      f"{type(agent).__name__} is neither.")


__all__ = ["ALGOS", "EVAL_SEED", "Evaluator", "PolicyStore", "act_fn", "actor_parameters", "copy_agent",
           "new_agent", "teacher_outputs", "train_with_curve", "vec_env"]
