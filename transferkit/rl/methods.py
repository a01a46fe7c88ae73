r"""Policy transfer methods (registry kind ``rl_transfer``), each on the same target budget.

Every method runs in a :class:`CellContext` (one target variant, one seed) and returns a JSON
result with its learning curve (evaluation return against target environment steps) and,
where it trains one, the agent (kept in the run's :class:`~transferkit.rl.agents.PolicyStore`):

- ``scratch``: a fresh agent trained on the target for the budget (the baseline);
- ``zero_shot``: the source agent evaluated on the target as it is (a flat curve);
- ``finetune``: a copy of the source agent trained on the target for the same budget with a
  lower learning rate (``lr_scale`` times the source's), optionally with the value head drawn
  anew (``reinit_value``);
- ``randomized``: the source agent trained over a *range* of physics (domain randomisation,
  Tobin et al. 2017; Peng et al. 2018), evaluated zero-shot on the target, then fine-tuned as
  ``finetune`` does (``finetune: false``: zero-shot only);
- ``distill``: policy distillation (Rusu et al. 2016, "Policy distillation"; Ross, Gordon &
  Bagnell 2011, DAgger): a smaller student network is trained on
  :math:`\mathrm{KL}(\pi_{teacher}(\cdot|s) \,\|\, \pi_{student}(\cdot|s))` over states the
  *student* visits (the teacher acts in the first iteration only), the data aggregated over
  iterations; several teachers (each acting in its own variant) are distilled into one student.

The loss is :func:`policy_distillation_loss`; the student trains through the one
:class:`~transferkit.train.Trainer` with :class:`DistillObjective`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .._registry import register
from .._validation import check_number, suggest
from ..errors import ConfigError
from ..train import Objective
from .envs import EnvSpec


# ============================================================================ the distillation loss
def policy_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "categorical",
                             temperature: float = 1.0) -> torch.Tensor:
    r"""Mean over states of :math:`\mathrm{KL}(\pi_T(\cdot|s) \,\|\, \pi_S(\cdot|s))`.

    - ``categorical``: ``student`` and ``teacher`` are ``(n, K)`` logits;
      :math:`\pi_T = \mathrm{softmax}(t / \tau)`, :math:`\pi_S = \mathrm{softmax}(s)` and

      .. math:: L = \frac1n \sum_i \sum_a \pi_T(a|s_i) \big(\log \pi_T(a|s_i) - \log \pi_S(a|s_i)\big).

      With DQN teachers ``teacher`` holds Q-values and a small :math:`\tau` (Rusu et al. use
      0.01) turns them into a sharp distribution; ``kind="q"`` is the same loss.
    - ``gaussian``: ``(n, 2d)`` rows ``[mean | log_std]`` of diagonal Gaussians;

      .. math:: L = \frac1n \sum_i \sum_j \Big(\log\frac{\sigma_{S,ij}}{\sigma_{T,ij}}
         + \frac{\sigma_{T,ij}^2 + (\mu_{T,ij} - \mu_{S,ij})^2}{2 \sigma_{S,ij}^2} - \frac12\Big)

      (``temperature`` is not used).

    The teacher is a constant (no gradient reaches it). References: Rusu et al. 2016, "Policy
    distillation" (ICLR), eq. 3; Hinton, Vinyals & Dean 2015.
    """
    if kind not in ("categorical", "q", "gaussian"):
        raise ConfigError(f"kind={kind!r} must be 'categorical', 'q' or 'gaussian'." + suggest(kind, ("categorical",
                                                                                                    "gaussian")))
    if student.shape != teacher.shape or student.ndim != 2:
        raise ConfigError(f"the student's outputs {tuple(student.shape)} and the teacher's {tuple(teacher.shape)} must "
                          "both be (n, K) (categorical) or (n, 2d) (gaussian) with the same shape.")
    t = teacher.detach()
    if kind == "gaussian":
        d = student.shape[1] // 2
        mu_s, ls_s, mu_t, ls_t = student[:, :d], student[:, d:], t[:, :d], t[:, d:]
        kl = (ls_s - ls_t) + (torch.exp(2 * ls_t) + (mu_t - mu_s) ** 2) / (2 * torch.exp(2 * ls_s)) - 0.5
        return kl.sum(dim=1).mean()
    tau = check_number("temperature", temperature, low=0.0, low_inclusive=False)
    log_pt = F.log_softmax(t / tau, dim=1)
    log_ps = F.log_softmax(student, dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=1).mean()


class DistillObjective(Objective):
    """The Trainer's loss for a student: :func:`policy_distillation_loss` of the student's
    outputs on a batch against the teacher's outputs of the same rows (``ctx.indices`` into the
    aggregated states). Every row trains (no labels); ``agreement`` (greedy actions equal) is
    logged for discrete actions."""

    needs_labels = False

    def __init__(self, targets: np.ndarray, kind: str, temperature: float = 1.0):
        super().__init__()
        self.register_buffer("targets", torch.as_tensor(np.asarray(targets, dtype=np.float32)))
        self.kind, self.temperature = kind, float(temperature)

    def forward(self, ctx) -> dict:
        out = ctx.model(ctx.inputs)
        t = self.targets[ctx.indices.to(self.targets.device)]
        loss = policy_distillation_loss(out, t, self.kind, self.temperature)
        res = {"loss": loss}
        if self.kind != "gaussian":
            res["agreement"] = (out.argmax(1) == t.argmax(1)).float().mean().detach()
        return res


# ============================================================================ the cell
@dataclass
class CellContext:
    """What a method sees: one target variant and one seed of a plan, with the shared store.

    ``source`` is the source variant; ``randomized`` the source's physics ranges (``None`` when
    the plan has none); ``steps`` the target budget (the same for every method that learns);
    ``hyperparams`` the algorithm's arguments for this task (with ``n_envs``)."""

    algo: str
    hyperparams: dict
    source: EnvSpec
    randomized: EnvSpec | None
    target: EnvSpec
    seed: int
    steps: int
    source_steps: int
    eval_every: int
    eval_episodes: int
    store: object
    log: Callable = print
    methods: dict = field(default_factory=dict)  # key -> method, for teachers named by key
    _evaluators: dict = field(default_factory=dict, repr=False)

    @property
    def n_envs(self) -> int:
        return int(self.hyperparams.get("n_envs", 1))

    def evaluator(self, spec=None):
        from .agents import Evaluator

        s = str(spec or self.target)
        if s not in self._evaluators:
            self._evaluators[s] = Evaluator(s, self.eval_episodes, self.seed)
        return self._evaluators[s]

    def _hp_key(self) -> str:
        return ",".join(f"{k}={self.hyperparams[k]}" for k in sorted(self.hyperparams))

    def source_key(self, kind: str) -> str:
        spec = self.source if kind == "plain" else self.randomized
        return f"source|{self.algo}|{spec}|{self.source_steps}|{self._hp_key()}|seed{self.seed}"

    def source_agent(self, kind: str = "plain"):
        """The source agent (``plain``: trained on the source variant; ``randomized``: over its
        ranges) for ``source_steps``, trained once and kept in the store."""
        from .agents import new_agent

        spec = self.source if kind == "plain" else self.randomized
        if spec is None:
            raise ConfigError("the method needs a randomised source: give randomized_source, e.g. "
                              "\"cartpole:length=0.25..1.5\".")

        def train():
            t0 = time.perf_counter()
            self.log(f"  training the {'randomised ' if kind != 'plain' else ''}source {spec} ({self.algo}, "
                     f"{self.source_steps} steps, seed {self.seed})")
            agent = new_agent(self.algo, spec, self.seed, self.hyperparams)
            agent.learn(total_timesteps=self.source_steps)
            dt = time.perf_counter() - t0
            self.log(f"  source trained: {self.source_steps / dt:.0f} steps/s ({dt:.0f} s)")
            return agent

        return self.store.get_or_train(self.source_key(kind), self.algo, train)

    def method_key(self, key: str) -> str:
        m = self.methods.get(key)
        opts = "" if m is None else ",".join(f"{k}={v}" for k, v in sorted(m.options.items()))
        sources = self.source_key("plain") + ("" if self.randomized is None else "|" + self.source_key("randomized"))
        return f"target|{self.algo}|{self.target}|{key}|{opts}|{self.steps}|{sources}"

    def agent_of(self, key: str):
        """The agent that method ``key`` trained in this cell (run here if it is not in the store)."""
        agent = self.store.get(self.method_key(key), self.algo)
        if agent is None:
            m = self.methods.get(key) or make_method(key)
            self.log(f"  {key} (needed as a teacher) for {self.target}, seed {self.seed}")
            _, agent = m.run(self)
            if agent is None:
                raise ConfigError(f"teacher {key!r} trains no agent of its own (zero_shot evaluates the source as it "
                                  "is: name 'source' as the teacher instead).")
            self.store.put(self.method_key(key), agent)
        return agent


# ============================================================================ the methods
class RLTransferMethod:
    """A transfer method: ``__init__(**options)`` checks its options, ``run(ctx)`` returns
    ``(result, agent_or_None)``. ``learns``: whether its curve covers the target budget
    (scratch, fine-tuning) rather than a single evaluation or a distillation schedule."""

    name: ClassVar[str] = ""
    learns: ClassVar[bool] = True
    defaults: ClassVar[dict] = {}

    def __init__(self, **options):
        for k in options:
            if k not in self.defaults:
                valid = ", ".join(self.defaults) or "none"
                raise ConfigError(f"method {self.name}: unknown option {k!r}." + suggest(k, self.defaults)
                                  + f" Options: {valid}.")
        self.options = {**self.defaults, **options}
        self._check()

    def _check(self) -> None:
        """Check :attr:`options` (one line per problem)."""

    def check_plan(self, algo: str, randomized) -> None:
        """Checks that need the plan (algorithm, randomised source), before anything runs."""

    def run(self, ctx: CellContext):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


def _check_bool(method: str, name: str, v) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"method {method}: {name}={v!r} must be true or false.")


def _check_source(method: str, v) -> None:
    if v not in ("plain", "randomized"):
        raise ConfigError(f"method {method}: source={v!r} must be 'plain' or 'randomized'."
                          + suggest(str(v), ("plain", "randomized")))


def _learn(ctx: CellContext, agent, what: str) -> dict:
    from .agents import train_with_curve

    ev = ctx.evaluator()
    curve = train_with_curve(agent, ctx.steps, ev, ctx.eval_every)
    rate = curve["env_steps"] / max(curve["train_seconds"], 1e-9)
    ctx.log(f"  {what}: {ctx.target}, seed {ctx.seed}: return {curve['returns'][0]:.1f} -> {curve['returns'][-1]:.1f} "
            f"in {curve['env_steps']} steps ({rate:.0f} steps/s, eval {curve['eval_seconds']:.1f} s)")
    return {"curve": {"steps": curve["steps"], "returns": curve["returns"]}, "env_steps": curve["env_steps"],
            "train_seconds": curve["train_seconds"], "eval_seconds": curve["eval_seconds"],
            "steps_per_second": rate, "zero_shot": curve["returns"][0], "final": curve["returns"][-1]}


@register("rl_transfer", "scratch")
class Scratch(RLTransferMethod):
    """From scratch: a fresh agent trained on the target for the budget (the baseline)."""

    name = "scratch"

    def run(self, ctx):
        from .agents import new_agent

        agent = new_agent(ctx.algo, ctx.target, ctx.seed, ctx.hyperparams)
        return _learn(ctx, agent, "scratch"), agent


@register("rl_transfer", "zero_shot")
class ZeroShot(RLTransferMethod):
    """Zero-shot: the source agent evaluated on the target as it is (no target step)."""

    name = "zero_shot"
    learns = False
    defaults = {"source": "plain"}

    def _check(self):
        _check_source(self.name, self.options["source"])

    def check_plan(self, algo, randomized):
        if self.options["source"] == "randomized" and randomized is None:
            raise ConfigError("method zero_shot with source: randomized needs randomized_source (a range spec).")

    def run(self, ctx):
        src = ctx.source_agent(self.options["source"])
        from .agents import act_fn

        t0 = time.perf_counter()
        r = ctx.evaluator()(act_fn(src))
        ctx.log(f"  zero_shot: {ctx.target}, seed {ctx.seed}: return {r:.1f}")
        return {"curve": {"steps": [0], "returns": [r]}, "env_steps": 0, "train_seconds": 0.0,
                "eval_seconds": time.perf_counter() - t0, "zero_shot": r, "final": r}, None


@register("rl_transfer", "finetune")
class FineTune(RLTransferMethod):
    """Fine-tuning: the source agent trained on the target for the same budget as scratch, with a
    lower learning rate (``lr_scale``) and optionally a new value head (``reinit_value``)."""

    name = "finetune"
    defaults = {"lr_scale": 0.3, "reinit_value": False, "source": "plain"}

    def _check(self):
        o = self.options
        o["lr_scale"] = check_number(f"method {self.name}: lr_scale", o["lr_scale"], low=0.0, low_inclusive=False,
                                     high=10.0)
        _check_bool(self.name, "reinit_value", o["reinit_value"])
        _check_source(self.name, o["source"])

    def check_plan(self, algo, randomized):
        if self.options["reinit_value"] and algo != "ppo":
            raise ConfigError(f"method {self.name}: reinit_value re-draws PPO's value head; algo {algo!r} has none "
                              "(set reinit_value: false).")
        if self.options["source"] == "randomized" and randomized is None:
            raise ConfigError(f"method {self.name} with source: randomized needs randomized_source (a range spec).")

    def _finetune(self, ctx, kind: str, what: str):
        from .agents import copy_agent

        from .agents import Linear, initial_value, schedule_value

        src = ctx.source_agent(kind)
        base = schedule_value(ctx.hyperparams.get("learning_rate", src.learning_rate))
        lr = initial_value(base) * self.options["lr_scale"]
        # the source's schedule, scaled: a linear decay restarts from lr_scale times its start
        agent = copy_agent(src, ctx.target, ctx.seed, n_envs=ctx.n_envs,
                           learning_rate=Linear(lr) if isinstance(base, Linear) else lr,
                           reinit_value=self.options["reinit_value"])
        res = _learn(ctx, agent, what)
        res["learning_rate"] = f"lin_{lr:g}" if isinstance(base, Linear) else lr
        return res, agent

    def run(self, ctx):
        return self._finetune(ctx, self.options["source"], self.name)


@register("rl_transfer", "randomized")
class Randomized(FineTune):
    """Domain randomisation: a source trained over the physics ranges, evaluated zero-shot on the
    target and (``finetune: true``) fine-tuned there for the budget."""

    name = "randomized"
    defaults = {"finetune": True, "lr_scale": 0.3, "reinit_value": False}

    def _check(self):
        o = self.options
        _check_bool(self.name, "finetune", o["finetune"])
        o["lr_scale"] = check_number(f"method {self.name}: lr_scale", o["lr_scale"], low=0.0, low_inclusive=False,
                                     high=10.0)
        _check_bool(self.name, "reinit_value", o["reinit_value"])

    @property
    def learns(self):  # type: ignore[override]
        return bool(self.options["finetune"])

    def check_plan(self, algo, randomized):
        if randomized is None:
            raise ConfigError("method randomized needs randomized_source: the source's physics ranges, e.g. "
                              "\"cartpole:length=0.25..1.5\".")
        if self.options["reinit_value"] and algo != "ppo":
            raise ConfigError(f"method randomized: reinit_value re-draws PPO's value head; algo {algo!r} has none.")

    def run(self, ctx):
        if not self.options["finetune"]:
            res, _ = ZeroShot(source="randomized").run(ctx)
            return res, None
        return self._finetune(ctx, "randomized", "randomized")


#: Teachers that are not a method of the cell: the source agents (each acting in its own variant).
SOURCE_TEACHERS = ("source", "randomized_source")


@register("rl_transfer", "distill")
class Distill(RLTransferMethod):
    """Policy distillation (DAgger-style) of one or several teachers into a smaller student:
    KL(teacher || student) on states the student visits."""

    name = "distill"
    learns = False
    defaults = {"teachers": ["finetune"], "width": 16, "iterations": 4, "steps_per_iteration": 2000, "epochs": 10,
                "batch_size": 256, "lr": 3e-3, "temperature": None}

    def _check(self):
        o = self.options
        t = o["teachers"]
        if isinstance(t, str):
            t = [t]
        if not isinstance(t, list) or not t or not all(isinstance(x, str) for x in t):
            raise ConfigError(f"method distill: teachers={o['teachers']!r} must be a list of method keys of this run "
                              "(e.g. [finetune]) or source / randomized_source.")
        if len(set(t)) != len(t):
            raise ConfigError(f"method distill: teachers={t!r} names a teacher twice.")
        o["teachers"] = t
        for k, lo, hi in (("width", 1, 4096), ("iterations", 1, 100), ("steps_per_iteration", 10, 10_000_000),
                          ("epochs", 1, 10_000), ("batch_size", 2, 1_000_000)):
            o[k] = check_number(f"method distill: {k}", o[k], low=lo, high=hi, integer=True)
        o["lr"] = check_number("method distill: lr", o["lr"], low=0.0, low_inclusive=False, high=10.0)
        if o["temperature"] is not None:
            o["temperature"] = check_number("method distill: temperature", o["temperature"], low=0.0,
                                            low_inclusive=False, high=1000.0)

    def check_plan(self, algo, randomized):
        if algo == "sac":
            raise ConfigError("method distill needs a PPO or DQN teacher (a distribution over actions or Q-values); "
                              "algo 'sac' is neither: use algo: ppo.")
        if "randomized_source" in self.options["teachers"] and randomized is None:
            raise ConfigError("method distill: teacher randomized_source needs randomized_source (a range spec).")

    def check_teachers(self, keys) -> None:
        for t in self.options["teachers"]:
            if t not in SOURCE_TEACHERS and t not in keys:
                valid = [*keys, *SOURCE_TEACHERS]
                raise ConfigError(f"method distill: teacher {t!r} is not a method of this run." + suggest(t, valid)
                                  + f" Teachers: {', '.join(valid)}.")
            if t in keys and t == "zero_shot":
                raise ConfigError("method distill: zero_shot trains no agent; name 'source' as the teacher.")

    def _teachers(self, ctx):
        out = []
        for t in self.options["teachers"]:
            if t == "source":
                out.append((t, ctx.source_agent("plain"), ctx.source))
            elif t == "randomized_source":
                out.append((t, ctx.source_agent("randomized"), ctx.randomized))
            else:
                out.append((t, ctx.agent_of(t), ctx.target))
        return out

    def run(self, ctx):
        return distill_policies(self._teachers(ctx), ctx, **{k: v for k, v in self.options.items()
                                                             if k != "teachers"}), None


def make_method(item) -> RLTransferMethod:
    """A method from its name or ``{name: NAME, option: value, ...}`` (``key`` is the runner's)."""
    from .._registry import get

    if isinstance(item, str):
        name, opts = item, {}
    elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
        name, opts = item["name"], {k: v for k, v in item.items() if k not in ("name", "key")}
    else:
        raise ConfigError(f"method {item!r} must be a name (scratch, finetune, ...) or a mapping {{name: finetune, "
                          "lr_scale: 0.3}}.")
    return get("rl_transfer", name)(**opts)


# ============================================================================ distillation
def _student(obs_dim: int, out_dim: int, width: int, seed: int):
    from ..backbones import create_backbone
    from ..nn import TransferModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        bb = create_backbone("tiny_mlp", in_features=int(obs_dim), width=int(width), pretrained=False)
        return TransferModel(bb, int(out_dim))


def _student_act(model, kind: str, space, rng: torch.Generator | None):
    """The student's action on a batch: sampled with ``rng``, else greedy (argmax / the mean)."""
    def act(obs):
        with torch.no_grad():
            out = model(torch.as_tensor(np.asarray(obs, dtype=np.float32)))
            if kind == "gaussian":
                d = out.shape[1] // 2
                a = out[:, :d]
                if rng is not None:
                    a = a + out[:, d:].exp() * torch.randn(a.shape, generator=rng)
                return np.clip(a.numpy(), space.low, space.high)
            if rng is None:
                return out.argmax(1).numpy()
            return torch.multinomial(F.softmax(out, 1), 1, generator=rng).squeeze(1).numpy()
    return act


def _collect(spec, act, steps: int, seed: int, n_envs: int = 8) -> np.ndarray:
    """``steps`` observations of ``spec`` visited by ``act`` (``n_envs`` episodes side by side,
    each reset as it ends)."""
    from .envs import make_env

    envs = [make_env(spec, seed=seed * 100 + i) for i in range(n_envs)]
    obs = np.stack([e.reset(seed=seed * 100 + i)[0] for i, e in enumerate(envs)]).astype(np.float32)
    discrete = hasattr(envs[0].action_space, "n")
    out, episode = [], n_envs
    while sum(len(o) for o in out) < steps:
        out.append(obs.copy())
        actions = np.asarray(act(obs))
        for i, e in enumerate(envs):
            o, _, term, trunc, _ = e.step(int(actions[i]) if discrete else actions[i])
            if term or trunc:
                o, _ = e.reset(seed=seed * 100 + episode)
                episode += 1
            obs[i] = o
    for e in envs:
        e.close()
    return np.concatenate(out)[:steps]


def distill_policies(teachers, ctx: CellContext, *, width: int = 16, iterations: int = 4,
                     steps_per_iteration: int = 2000, epochs: int = 10, batch_size: int = 256, lr: float = 3e-3,
                     temperature: float | None = None) -> dict:
    """DAgger-style policy distillation of ``teachers`` (``[(name, agent, spec), ...]``) into one
    student (:func:`_student`: a ``tiny_mlp`` of ``width`` units, two layers, and a linear head).

    Iteration ``k = 0..iterations-1``: in each teacher's variant, ``steps_per_iteration`` states
    are visited by the teacher's greedy policy when ``k = 0`` and by the student's sampled policy
    after (DAgger with :math:`\\beta_k = [k = 0]`, Ross et al. 2011); every state is labeled
    with its teacher's outputs (:func:`~transferkit.rl.agents.teacher_outputs`) and added to the
    aggregate; the student trains ``epochs`` epochs on the whole aggregate through the Trainer
    (AdamW, constant ``lr``) on :func:`policy_distillation_loss`. ``temperature``: of the
    teacher's softmax (default 1 for PPO, 0.01 for DQN's Q-values, as Rusu et al.).

    Returns the student's and each teacher's greedy return on the cell's evaluation episodes of
    the teacher's variant, the retention :func:`~transferkit.rl.metrics.retention`, the
    parameter counts and the curve (the first teacher's variant after each iteration)."""
    from ..data import DomainDataset
    from ..train import Trainer
    from .agents import act_fn, actor_parameters, teacher_outputs
    from .envs import spaces_of
    from .metrics import retention

    t0 = time.perf_counter()
    obs_space, act_space = spaces_of(teachers[0][2])
    probe, kind = teacher_outputs(teachers[0][1], np.zeros((1, obs_space.shape[0]), np.float32))
    tau = temperature if temperature is not None else (0.01 if kind == "q" else 1.0)
    student = _student(obs_space.shape[0], probe.shape[1], width, ctx.seed)
    student.eval()
    rng = torch.Generator().manual_seed(int(ctx.seed))
    X, Y = [], []
    curve_steps, curve_returns, collected = [0], [], 0
    first_eval = ctx.evaluator(teachers[0][2])
    curve_returns.append(first_eval(_student_act(student, kind, act_space, None)))
    history = []
    for k in range(iterations):
        for j, (_, teacher, spec) in enumerate(teachers):
            actor = act_fn(teacher) if k == 0 else _student_act(student, kind, act_space, rng)
            states = _collect(spec, actor, steps_per_iteration, seed=ctx.seed * 1000 + k * 10 + j)
            X.append(states)
            Y.append(teacher_outputs(teacher, states)[0])
            collected += len(states)
        ds = DomainDataset(np.concatenate(X), None, "dagger", "tabular")
        obj = DistillObjective(np.concatenate(Y), "categorical" if kind == "q" else kind, tau)
        tr = Trainer(student, [{"params": list(student.parameters()), "lr": lr, "weight_decay": 0.0,
                                "name": "student"}], epochs=epochs, batch_size=batch_size, schedule="constant",
                     warmup_epochs=0.0, grad_clip=None, seed=ctx.seed * 100 + k, device="cpu", progress=False,
                     checkpoint=False, objective=obj, tag=f"distill {k + 1}/{iterations}")
        tr.fit(ds)
        student.eval()
        r = first_eval(_student_act(student, kind, act_space, None))
        curve_steps.append(collected)
        curve_returns.append(r)
        history.append({"iteration": k + 1, "states": int(len(ds)), "train_loss": tr.history[-1]["train_loss"],
                        "agreement": tr.history[-1].get("agreement"), "return": r})
        ctx.log(f"  distill {k + 1}/{iterations}: {len(ds)} states, KL {tr.history[-1]['train_loss']:.4f}, student "
                f"return {r:.1f}")
    floor = ctx.target.info.floor
    per = []
    for name, teacher, spec in teachers:
        ev = ctx.evaluator(spec)
        rt = ev(act_fn(teacher))
        rs = ev(_student_act(student, kind, act_space, None))
        # a teacher at the task's lowest return has nothing to keep: its retention is undefined (None)
        per.append({"teacher": name, "env": str(spec), "teacher_return": rt, "student_return": rs,
                    "retention": retention(rs, rt, floor=floor) if rt > floor else None})
    kept = [p["retention"] for p in per] if all(p["retention"] is not None for p in per) else None
    return {"curve": {"steps": curve_steps, "returns": curve_returns}, "teachers": per,
            "student_return": per[0]["student_return"], "teacher_return": per[0]["teacher_return"],
            "retention": None if kept is None else min(kept), "mean_retention": None if kept is None else
            float(np.mean(kept)),
            "student_params": int(sum(p.numel() for p in student.parameters())),
            "teacher_params": actor_parameters(teachers[0][1]), "dagger_steps": collected, "history": history,
            "temperature": tau, "kind": kind, "train_seconds": time.perf_counter() - t0, "env_steps": collected,
            "zero_shot": curve_returns[0], "final": per[0]["student_return"]}


__all__ = ["CellContext", "DistillObjective", "Distill", "FineTune", "RLTransferMethod", "Randomized", "Scratch",
           "ZeroShot", "distill_policies", "make_method", "policy_distillation_loss"]
