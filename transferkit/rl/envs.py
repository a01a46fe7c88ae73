"""Environments as domains: parameterised variants of gymnasium's classic-control tasks.

A variant is named by a spec string, as a dataset is::

    cartpole:length=1.0,gravity=19.6,masspole=0.2,force_mag=5
    acrobot:link_mass_2=1.5
    mountaincar:force=0.0008
    pendulum:g=15,m=1.2
    cartpole:length=0.25..1.5,obs_noise=0.01,action_delay=1

``NAME`` is a family (:data:`FAMILIES`); each ``key=value`` sets one physics parameter that the
family's equations of motion read (an unknown name fails with the nearest valid one). A value
``LO..HI`` is a *range*: :class:`~transferkit.rl.wrappers.PhysicsRandomization` draws the
parameter uniformly from it at every reset (domain randomisation, Tobin et al. 2017; Peng et
al. 2018), seeded. Two options model the *reality gap* between a simulator and the system it
stands for:

- ``obs_noise=STD``: Gaussian noise of standard deviation ``STD`` added to every observation
  component (a noisy sensor);
- ``action_delay=K``: each action takes effect ``K`` steps after it is chosen (actuation
  latency); the first action of an episode also fills the ``K`` steps before it.

The parameters are gymnasium's own attributes, in gymnasium's units (``cartpole``'s ``length``
is *half* the pole's length, 0.5 by default, as in ``CartPoleEnv``). Derived quantities are
recomputed (``CartPoleEnv.total_mass = masspole + masscart``, ``polemass_length = masspole *
length``), so one step of a variant is the equations of motion with the changed parameters
(Barto, Sutton & Anderson 1983; Florian 2007 for the corrected pole dynamics).

Nothing here imports gymnasium until an environment is built, so specs are checked without
it; :func:`make_env` without gymnasium is a one-line :class:`~transferkit.errors.ConfigError`
naming ``pip install "transferkit[rl]"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._validation import suggest
from ..errors import ConfigError
from .physics import FAMILIES, Family, Param, get_physics, set_physics  # noqa: F401  (the families' home)

INSTALL = 'pip install "transferkit[rl]"'


def require_rl(what: str = "transferkit.rl"):
    """``(gymnasium, stable_baselines3)``, or a one-line :class:`ConfigError` naming the extra."""
    try:
        import gymnasium
        import stable_baselines3
    except ImportError as exc:
        raise ConfigError(f"{what} needs gymnasium and stable-baselines3 ({exc}); install them with: "
                          f"{INSTALL}") from None
    return gymnasium, stable_baselines3


#: The reality-gap options every family takes.
OPTIONS = ("obs_noise", "action_delay")
MAX_DELAY = 100

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class EnvSpec:
    """A checked environment variant (see the module docstring); ``str(spec)`` is its spec string."""

    family: str
    physics: dict = field(default_factory=dict)   # parameter -> value
    ranges: dict = field(default_factory=dict)    # parameter -> (lo, hi)
    obs_noise: float = 0.0
    action_delay: int = 0

    def __str__(self) -> str:
        bits = [f"{k}={_fmt(v)}" for k, v in self.physics.items()]
        bits += [f"{k}={_fmt(lo)}..{_fmt(hi)}" for k, (lo, hi) in self.ranges.items()]
        if self.obs_noise:
            bits.append(f"obs_noise={_fmt(self.obs_noise)}")
        if self.action_delay:
            bits.append(f"action_delay={self.action_delay}")
        return self.family + (":" + ",".join(bits) if bits else "")

    @property
    def info(self) -> Family:
        return FAMILIES[self.family]

    def values(self) -> dict:
        """Every physics parameter of the family at this variant (ranges as their midpoints)."""
        out = {k: p.default for k, p in self.info.params.items()}
        out.update(self.physics)
        out.update({k: (lo + hi) / 2 for k, (lo, hi) in self.ranges.items()})
        return out

    def without_ranges(self) -> EnvSpec:
        return EnvSpec(self.family, dict(self.physics), {}, self.obs_noise, self.action_delay)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def _number(where: str, text: str) -> float:
    t = text.strip()
    if not _NUMBER.match(t):
        raise ConfigError(f"{where}: {text!r} is not a number; write a value such as 1.0 (or a range LO..HI).")
    v = float(t)
    if not math.isfinite(v):
        raise ConfigError(f"{where}: {text!r} must be a finite number.")
    return v


def _check_rule(where: str, name: str, p: Param, v: float) -> None:
    if p.rule == "positive" and v <= 0:
        word = "negative" if v < 0 else "zero"
        raise ConfigError(f"{where}: {name}={_fmt(v)} is {word}; the {p.what} must be > 0 (default {_fmt(p.default)}).")
    if p.rule == "nonnegative" and v < 0:
        raise ConfigError(f"{where}: {name}={_fmt(v)} is negative; the {p.what} must be >= 0 "
                          f"(default {_fmt(p.default)}).")


def parse_env_spec(spec) -> EnvSpec:
    """Check a spec string (or an :class:`EnvSpec`, or a mapping ``{name: cartpole, length:
    1.0}``) and return the :class:`EnvSpec`. Every problem is one :class:`ConfigError` line
    naming the spec and the parameter: an unknown family or parameter (with the nearest valid
    name), a value that is not a number, a negative (or zero) mass, length, force or time step,
    a range whose low end is above its high end, a bad option."""
    if isinstance(spec, EnvSpec):
        return spec
    if isinstance(spec, Mapping):
        if not isinstance(spec.get("name"), str):
            raise ConfigError(f"environment {dict(spec)!r} needs a family name, e.g. {{name: cartpole, length: 1.0}} "
                              "or the string \"cartpole:length=1.0\".")
        items = [(str(k), str(v)) for k, v in spec.items() if k != "name"]
        name, where = spec["name"].strip(), f"environment {spec['name']!r}"
    elif isinstance(spec, str):
        name, _, rest = spec.strip().partition(":")
        where = f"environment {spec!r}"
        items = []
        for part in (rest.split(",") if rest.strip() else []):
            if "=" not in part:
                raise ConfigError(f"{where}: {part.strip()!r} must be key=value (e.g. length=1.0 or length=0.25..1.5).")
            k, v = part.split("=", 1)
            items.append((k.strip(), v))
    else:
        raise ConfigError(f"environment {spec!r} must be a spec string such as \"cartpole:length=1.0\".")
    if name not in FAMILIES:
        raise ConfigError(f"{where}: unknown environment {name!r}." + suggest(name, FAMILIES)
                          + f" Environments: {', '.join(FAMILIES)}.")
    fam = FAMILIES[name]
    physics, ranges, noise, delay = {}, {}, 0.0, 0
    seen = set()
    for k, raw in items:
        if k in seen:
            raise ConfigError(f"{where}: {k!r} is given twice; give each parameter once.")
        seen.add(k)
        if k == "obs_noise":
            noise = _number(f"{where}: obs_noise", raw)
            if noise < 0:
                raise ConfigError(f"{where}: obs_noise={_fmt(noise)} is negative; it is a standard deviation (>= 0, "
                                  "e.g. 0.01).")
            continue
        if k == "action_delay":
            d = _number(f"{where}: action_delay", raw)
            if d != int(d) or not 0 <= d <= MAX_DELAY:
                raise ConfigError(f"{where}: action_delay={raw.strip()} must be a whole number of steps "
                                  f"0..{MAX_DELAY}.")
            delay = int(d)
            continue
        if k not in fam.params:
            valid = [*fam.params, *OPTIONS]
            raise ConfigError(f"{where}: unknown {name} parameter {k!r}." + suggest(k, valid)
                              + f" Valid: {', '.join(valid)}.")
        p = fam.params[k]
        if ".." in raw:
            lo_t, _, hi_t = raw.partition("..")
            lo, hi = _number(f"{where}: {k}", lo_t), _number(f"{where}: {k}", hi_t)
            _check_rule(where, k, p, lo)
            _check_rule(where, k, p, hi)
            if lo > hi:
                raise ConfigError(f"{where}: the range {k}={raw.strip()} has its low end {_fmt(lo)} above its high end "
                                  f"{_fmt(hi)}; write LOW..HIGH (e.g. {k}={_fmt(hi)}..{_fmt(lo)}).")
            ranges[k] = (lo, hi)
        else:
            v = _number(f"{where}: {k}", raw)
            _check_rule(where, k, p, v)
            physics[k] = v
    return EnvSpec(name, physics, ranges, noise, delay)


def make_env(spec, seed: int | None = None):
    """A gymnasium environment of the variant ``spec`` (a string, mapping or :class:`EnvSpec`).

    The physics are set on the unwrapped environment; a range adds
    :class:`~transferkit.rl.wrappers.PhysicsRandomization` (redrawn at each reset); the options
    add :class:`~transferkit.rl.wrappers.ActionDelay` and
    :class:`~transferkit.rl.wrappers.ObservationNoise` (outermost). ``seed`` seeds the
    wrappers' draws (the episodes are seeded by ``env.reset(seed=...)`` as usual; a reset with a
    seed also reseeds the wrappers from it)."""
    s = parse_env_spec(spec)
    gym, _ = require_rl("make_env")
    from . import wrappers

    env = gym.make(s.info.gym_id)
    set_physics(env, s.family, s.physics)
    if s.ranges:
        env = wrappers.PhysicsRandomization(env, s.family, s.ranges, seed=seed)
    if s.action_delay:
        env = wrappers.ActionDelay(env, s.action_delay)
    if s.obs_noise:
        env = wrappers.ObservationNoise(env, s.obs_noise, seed=seed)
    return env


def spaces_of(spec) -> tuple:
    """``(observation_space, action_space)`` of a variant (a short-lived environment)."""
    env = make_env(spec, seed=0)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def describe_space(space) -> str:
    """``Discrete(2)`` / ``Box(3,)``: what a one-line error names."""
    n = getattr(space, "n", None)
    if n is not None:
        return f"Discrete({int(n)})"
    return f"{type(space).__name__}{tuple(getattr(space, 'shape', ()) or ())}"


def check_same_spaces(source, target, *, what: str = "the source policy") -> None:
    """One-line :class:`ConfigError` when ``target``'s observation or action space differs from
    ``source``'s (each an environment spec): a policy acts only where its spaces fit."""
    so, sa = spaces_of(source)
    to, ta = spaces_of(target)
    if describe_space(sa) != describe_space(ta) or type(sa) is not type(ta):
        raise ConfigError(f"target environment {str(parse_env_spec(target))!r} has action space {describe_space(ta)} "
                          f"but {what} ({str(parse_env_spec(source))!r}) acts in {describe_space(sa)}; transfer "
                          "between variants of one task (same action space).")
    if tuple(so.shape) != tuple(to.shape):
        raise ConfigError(f"target environment {str(parse_env_spec(target))!r} has observations of shape "
                          f"{tuple(to.shape)} but {what} ({str(parse_env_spec(source))!r}) reads {tuple(so.shape)}; "
                          "transfer between variants of one task.")


__all__ = ["EnvSpec", "FAMILIES", "OPTIONS", "check_same_spaces", "describe_space", "get_physics", "make_env",
           "parse_env_spec", "require_rl", "set_physics", "spaces_of"]
