"""transferkit.rl.envs: environment variants change the physics gymnasium integrates, exactly."""

import math
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from transferkit.errors import ConfigError  # noqa: E402
from transferkit.rl.envs import check_same_spaces, get_physics, make_env, parse_env_spec  # noqa: E402


def _rollout(spec, actions, seed=0):
    env = make_env(spec, seed=seed)
    obs, _ = env.reset(seed=seed)
    states = [obs]
    for a in actions:
        obs, _, term, trunc, _ = env.step(a)
        states.append(obs)
        if term or trunc:
            break
    return np.array(states)


def _cartpole_euler(state, action, g, mc, mp, half_length, force_mag, tau=0.02):
    """One step of Barto, Sutton & Anderson's cart-pole (Florian 2007's equations), explicit Euler,
    as gymnasium's docs state it: written out here by hand."""
    x, x_dot, th, th_dot = state
    f = force_mag if action == 1 else -force_mag
    total = mc + mp
    temp = (f + mp * half_length * th_dot ** 2 * math.sin(th)) / total
    th_acc = (g * math.sin(th) - math.cos(th) * temp) / (half_length * (4 / 3 - mp * math.cos(th) ** 2 / total))
    x_acc = temp - mp * half_length * th_acc * math.cos(th) / total
    return np.array([x + tau * x_dot, x_dot + tau * x_acc, th + tau * th_dot, th_dot + tau * th_acc])


def test_a_cartpole_variant_steps_by_the_equations_of_motion_of_its_parameters():
    spec = "cartpole:length=1.0,gravity=19.6,masspole=0.2,force_mag=5"
    env = make_env(spec, seed=3)
    env.reset(seed=3)
    raw = env.unwrapped
    s0 = np.array(raw.state, dtype=float)
    # the derived attributes CartPoleEnv caches in __init__ follow the new masses and length
    assert raw.total_mass == pytest.approx(1.2) and raw.polemass_length == pytest.approx(0.2 * 1.0)
    for action in (1, 0, 1):
        expected = _cartpole_euler(s0, action, g=19.6, mc=1.0, mp=0.2, half_length=1.0, force_mag=5.0)
        obs, *_ = env.step(action)
        np.testing.assert_allclose(obs, expected.astype(np.float32), rtol=1e-6, atol=1e-7)
        s0 = np.array(raw.state, dtype=float)
    # ...and the default cart-pole's step is a different one
    default = _cartpole_euler(np.array([0.01, 0.02, 0.03, 0.04]), 1, 9.8, 1.0, 0.1, 0.5, 10.0)
    changed = _cartpole_euler(np.array([0.01, 0.02, 0.03, 0.04]), 1, 19.6, 1.0, 0.2, 1.0, 5.0)
    assert not np.allclose(default, changed)


def test_a_fixed_action_sequence_gives_another_trajectory_in_each_variant():
    actions = [1, 1, 0, 1, 0, 0, 1, 1, 1, 0] * 3
    base = _rollout("cartpole", actions)
    for spec in ("cartpole:length=1.0", "cartpole:gravity=19.6", "cartpole:masspole=0.5", "cartpole:force_mag=5"):
        other = _rollout(spec, actions)
        n = min(len(base), len(other))
        np.testing.assert_array_equal(base[0], other[0])  # the same seeded start
        assert np.abs(base[1:n] - other[1:n]).max() > 1e-4, spec
    acro = [0, 2, 1, 2, 0] * 4
    assert np.abs(_rollout("acrobot", acro)[1:] - _rollout("acrobot:link_mass_2=1.5", acro)[1:]).max() > 1e-4
    mc = [2] * 10
    assert np.abs(_rollout("mountaincar", mc)[1:] - _rollout("mountaincar:force=0.0008", mc)[1:]).max() > 1e-6


def test_pendulum_and_mountaincar_variants_step_by_hand():
    env = make_env("pendulum:g=15,m=1.2", seed=0)
    env.reset(seed=0)
    th, thdot = env.unwrapped.state
    u = 0.7
    obs, *_ = env.step(np.array([u], dtype=np.float32))
    new_thdot = np.clip(thdot + (3 * 15 / (2 * 1.0) * np.sin(th) + 3.0 / (1.2 * 1.0 ** 2) * u) * 0.05, -8, 8)
    new_th = th + new_thdot * 0.05
    np.testing.assert_allclose(obs, [np.cos(new_th), np.sin(new_th), new_thdot], rtol=1e-5)
    env = make_env("mountaincar:force=0.0008", seed=0)
    env.reset(seed=0)
    pos, vel = env.unwrapped.state
    obs, *_ = env.step(2)
    v = np.clip(vel + 0.0008 - np.cos(3 * pos) * 0.0025, -0.07, 0.07)
    np.testing.assert_allclose(obs, [pos + v, v], rtol=1e-6)


def test_a_range_is_redrawn_at_every_reset_seeded_and_within_bounds():
    def draws(seed):
        env = make_env("cartpole:length=0.25..1.5,gravity=9.8..19.6", seed=seed)
        out = []
        for i in range(5):
            _, info = env.reset(seed=seed if i == 0 else None)
            assert info["physics"] == get_physics(env, "cartpole")
            out.append((info["physics"]["length"], info["physics"]["gravity"]))
            raw = env.unwrapped
            assert raw.polemass_length == pytest.approx(raw.masspole * raw.length)
        return np.array(out)

    a, b, c = draws(0), draws(0), draws(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a[:, 0] >= 0.25).all() and (a[:, 0] <= 1.5).all() and (a[:, 1] >= 9.8).all() and (a[:, 1] <= 19.6).all()
    assert len(set(a[:, 0])) == 5  # a new draw each episode
    # a reset with a seed reseeds the draws (SB3 seeds its environments that way)
    env = make_env("cartpole:length=0.25..1.5")
    assert len({env.reset(seed=7)[1]["physics"]["length"] for _ in range(3)}) == 1


def test_reality_gap_options_delay_actions_and_add_seeded_noise():
    acts = [1, 0, 0, 1, 1, 0, 1, 0]
    delayed = _rollout("cartpole:action_delay=2", acts)
    # with a delay of 2 the env applies a0, a0, a0, a1, a2, ...: the first action fills the first two steps
    np.testing.assert_allclose(delayed, _rollout("cartpole", [acts[0]] * 2 + acts[:-2]), rtol=0, atol=0)
    clean = _rollout("cartpole", acts, seed=5)
    noisy = _rollout("cartpole:obs_noise=0.05", acts, seed=5)
    again = _rollout("cartpole:obs_noise=0.05", acts, seed=5)
    np.testing.assert_array_equal(noisy, again)
    diff = noisy - clean
    assert 0.01 < diff.std() < 0.1 and abs(diff.mean()) < 0.05


def test_spec_strings_round_trip():
    s = parse_env_spec("cartpole:length=1.0,gravity=9.8..19.6,obs_noise=0.01,action_delay=1")
    assert s.physics == {"length": 1.0} and s.ranges == {"gravity": (9.8, 19.6)}
    assert s.obs_noise == 0.01 and s.action_delay == 1
    assert parse_env_spec(str(s)) == s
    assert parse_env_spec({"name": "acrobot", "link_mass_2": 1.5}).physics == {"link_mass_2": 1.5}


@pytest.mark.parametrize("spec, match", [
    ("cartpole:lenght=1.0", r"unknown cartpole parameter 'lenght'\. Did you mean 'length'"),
    ("acrobot:link_mass2=1.5", r"unknown acrobot parameter 'link_mass2'\. Did you mean 'link_mass_2'"),
    ("cartpole:masspole=-0.1", r"masspole=-0\.1 is negative; the pole mass \(kg\) must be > 0"),
    ("cartpole:length=-1", r"length=-1 is negative; the half the pole's length \(m\) must be > 0"),
    ("pendulum:m=0", r"m=0 is zero"),
    ("cartpole:length=1.5..0.25", r"the range length=1\.5\.\.0\.25 has its low end 1\.5 above its high end 0\.25"),
    ("cartpole:length=0.25..-1", r"length=-1 is negative"),
    ("cartpole:length=long", r"'long' is not a number"),
    ("cartpol:length=1", r"unknown environment 'cartpol'\. Did you mean 'cartpole'"),
    ("cartpole:obs_noise=-1", r"obs_noise=-1 is negative"),
    ("cartpole:action_delay=1.5", r"action_delay=1\.5 must be a whole number"),
    ("cartpole:length", r"'length' must be key=value"),
])
def test_bad_specs_are_one_line_errors(spec, match):
    with pytest.raises(ConfigError, match=match) as e:
        parse_env_spec(spec)
    assert "\n" not in str(e.value)


def test_an_environment_whose_action_space_differs_from_the_source_is_refused():
    with pytest.raises(ConfigError, match=r"action space Discrete\(3\) but the source policy \('cartpole'\) acts in "
                                          r"Discrete\(2\)") as e:
        check_same_spaces("cartpole", "acrobot:link_mass_2=1.5")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"action space Box\(1,\)"):
        check_same_spaces("cartpole", "pendulum")
    check_same_spaces("cartpole", "cartpole:length=1.0")  # variants of one task


def test_import_transferkit_does_not_import_gymnasium():
    code = ("import sys, transferkit, transferkit.rl; from transferkit._registry import available; "
            "assert available('rl_transfer') == ['distill', 'finetune', 'randomized', 'scratch', 'zero_shot']; "
            "transferkit.rl.parse_env_spec('cartpole:length=1'); "
            "print('gymnasium' in sys.modules, 'stable_baselines3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_without_the_rl_extra_every_entry_point_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium now raises ImportError
    from transferkit.rl.benchmark import run_rl_transfer_dir
    from transferkit.rl.run import run_rl

    fix = r'pip install "transferkit\[rl\]"'
    with pytest.raises(ConfigError, match=fix):
        make_env("cartpole")
    with pytest.raises(ConfigError, match=fix):
        run_rl({"source": "cartpole", "targets": ["cartpole:length=1"]}, tmp_path / "r", echo=None)
    with pytest.raises(ConfigError, match=fix):
        run_rl_transfer_dir(tmp_path / "b", seeds=2)
    assert not (tmp_path / "r").exists() and not (tmp_path / "b").exists()
