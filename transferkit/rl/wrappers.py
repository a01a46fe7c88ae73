"""gymnasium wrappers of :func:`transferkit.rl.envs.make_env`: domain randomisation and the
reality gap (observation noise, action delay). Imported only once gymnasium is known to be
installed (:func:`~transferkit.rl.envs.require_rl`)."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

from .physics import get_physics, set_physics

# each wrapper draws from its own stream, so adding noise never changes the physics drawn
_SALT = {"physics": 11, "noise": 23}


def _rng(seed, salt: str):
    return np.random.default_rng(None if seed is None else [int(seed) % 2**32, _SALT[salt]])


class PhysicsRandomization(gym.Wrapper):
    """Domain randomisation: at every reset, each ranged parameter is drawn uniformly from its
    ``(lo, hi)`` (Tobin et al. 2017, "Domain randomization for transferring deep neural networks
    from simulation to the real world"; Peng et al. 2018, dynamics randomisation), the others
    keep their values. The draw is in ``info["physics"]``; a reset with a seed reseeds the draws."""

    def __init__(self, env, family: str, ranges: dict, seed: int | None = None):
        super().__init__(env)
        self.family, self.ranges = family, dict(ranges)
        self._rng = _rng(seed, "physics")

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = _rng(seed, "physics")
        draw = {k: float(self._rng.uniform(lo, hi)) for k, (lo, hi) in self.ranges.items()}
        set_physics(self.env, self.family, draw)
        obs, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        info["physics"] = get_physics(self.env, self.family)
        return obs, info


class ActionDelay(gym.Wrapper):
    """Actuation latency: the action chosen at step ``t`` is applied at step ``t + delay``. The
    first action of an episode is also applied during the ``delay`` steps before it (there is no
    neutral action in every task: CartPole always pushes)."""

    def __init__(self, env, delay: int):
        super().__init__(env)
        self.delay = int(delay)
        self._queue: deque = deque()

    def reset(self, *, seed=None, options=None):
        self._queue.clear()
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        if not self._queue:
            self._queue.extend([action] * self.delay)
        self._queue.append(action)
        return self.env.step(self._queue.popleft())


class ObservationNoise(gym.ObservationWrapper):
    """A noisy sensor: ``o + e``, ``e ~ N(0, std^2 I)``, cast back to the space's dtype (the
    bounds are nominal: gymnasium's classic-control observations are not clipped either)."""

    def __init__(self, env, std: float, seed: int | None = None):
        super().__init__(env)
        self.std = float(std)
        self._rng = _rng(seed, "noise")

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = _rng(seed, "noise")
        return super().reset(seed=seed, options=options)

    def observation(self, observation):
        noisy = observation + self._rng.normal(0.0, self.std, size=np.shape(observation))
        return noisy.astype(self.observation_space.dtype)
