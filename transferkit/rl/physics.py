"""The physics parameters of gymnasium's classic-control tasks that a variant may change, and
how they are written into (and read from) an environment. Separate from :mod:`.envs` so that its
wrappers (:mod:`.wrappers`) and the spec parser both use it without importing each other."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """One physics parameter: gymnasium's attribute, its default, and its rule."""

    attr: str
    default: float
    rule: str  # "positive" (> 0) or "nonnegative" (>= 0)
    what: str


@dataclass(frozen=True)
class Family:
    """A classic-control task whose physics a spec may change.

    ``floor`` is the lowest return an episode can have (every step at the worst reward), the
    zero of the area and retention ratios; ``threshold`` gymnasium's (or the common) "solved"
    return; ``derived`` recomputes the attributes that depend on others."""

    gym_id: str
    params: dict
    floor: float
    threshold: float
    max_steps: int
    derived: Callable | None = None


def _cartpole_derived(env) -> None:
    # CartPoleEnv caches these in __init__; its step reads them, not masspole/length directly
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


FAMILIES: dict[str, Family] = {
    "cartpole": Family("CartPole-v1", {
        "gravity": Param("gravity", 9.8, "positive", "gravitational acceleration (m/s^2)"),
        "masscart": Param("masscart", 1.0, "positive", "cart mass (kg)"),
        "masspole": Param("masspole", 0.1, "positive", "pole mass (kg)"),
        "length": Param("length", 0.5, "positive", "half the pole's length (m)"),
        "force_mag": Param("force_mag", 10.0, "positive", "push force (N)"),
        "tau": Param("tau", 0.02, "positive", "seconds per step"),
    }, floor=0.0, threshold=475.0, max_steps=500, derived=_cartpole_derived),
    "acrobot": Family("Acrobot-v1", {
        # LINK_LENGTH_2 is drawn but no equation reads it, so it is not a physics parameter here
        "link_length_1": Param("LINK_LENGTH_1", 1.0, "positive", "length of link 1 (m)"),
        "link_mass_1": Param("LINK_MASS_1", 1.0, "positive", "mass of link 1 (kg)"),
        "link_mass_2": Param("LINK_MASS_2", 1.0, "positive", "mass of link 2 (kg)"),
        "link_com_pos_1": Param("LINK_COM_POS_1", 0.5, "positive", "centre of mass of link 1 (m)"),
        "link_com_pos_2": Param("LINK_COM_POS_2", 0.5, "positive", "centre of mass of link 2 (m)"),
        "link_moi": Param("LINK_MOI", 1.0, "positive", "moment of inertia of both links"),
    }, floor=-500.0, threshold=-100.0, max_steps=500),
    "mountaincar": Family("MountainCar-v0", {
        "force": Param("force", 0.001, "positive", "engine force"),
        "gravity": Param("gravity", 0.0025, "nonnegative", "gravity"),
    }, floor=-200.0, threshold=-110.0, max_steps=200),
    "pendulum": Family("Pendulum-v1", {
        "g": Param("g", 10.0, "nonnegative", "gravitational acceleration (m/s^2)"),
        "m": Param("m", 1.0, "positive", "mass (kg)"),
        "l": Param("l", 1.0, "positive", "length (m)"),
        "dt": Param("dt", 0.05, "positive", "seconds per step"),
    }, floor=-16.2736044 * 200, threshold=-200.0, max_steps=200),
}

def set_physics(env, family: str, values: Mapping) -> None:
    """Write physics ``values`` (parameter -> number) into the unwrapped gymnasium ``env`` and
    recompute what depends on them."""
    fam = FAMILIES[family]
    raw = env.unwrapped
    for k, v in values.items():
        setattr(raw, fam.params[k].attr, float(v))
    if fam.derived is not None:
        fam.derived(raw)


def get_physics(env, family: str) -> dict:
    """The physics parameters the unwrapped ``env`` holds now."""
    raw = env.unwrapped
    return {k: float(getattr(raw, p.attr)) for k, p in FAMILIES[family].params.items()}


__all__ = ["FAMILIES", "Family", "Param", "get_physics", "set_physics"]
