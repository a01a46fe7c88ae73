"""The contract every registered few-shot method keeps, over ``available("fewshot")`` at collection
time (methods added later are covered without editing this file).

Named test_fewshot_common.py, not test_common.py: tests/ has no __init__.py files, so two test
modules with one basename cannot be collected in the same run (tests/test_common.py exists).
"""

from __future__ import annotations

import copy
import inspect
import math

import numpy as np
import pytest
import torch
from torch import nn

from transferkit._registry import available, describe, get
from transferkit.errors import ConfigError
from transferkit.fewshot import EpisodeSampler, FewShotMethod, MetaData, conv4, mlp, split_classes

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = available("fewshot")

N_WAY, K_SHOT, Q_QUERY = 3, 2, 3
#: Short meta-training for the contract (not for accuracy).
TRAIN = dict(steps=2, eval_every=1, val_episodes=2)


class _NoTest:
    def __getattr__(self, name):
        raise AssertionError(f"meta-training touched data.test ({name})")

    def __iter__(self):
        raise AssertionError("meta-training iterated data.test")


def _data(kind: str) -> tuple[MetaData, EpisodeSampler]:
    g = np.random.default_rng(0)
    C, n = 10, 8
    labels = np.repeat(np.arange(C), n)
    if kind == "features":
        x = torch.tensor(g.normal(size=(C, 6))[labels] * 2 + g.normal(size=(C * n, 6)), dtype=torch.float32)
    else:  # 16x16 images: a class pattern plus noise
        pat = (g.random((C, 1, 16, 16)) > 0.5).astype(np.float32)
        x = torch.tensor(pat[labels] + 0.3 * g.normal(size=(C * n, 1, 16, 16)), dtype=torch.float32)
    sp = split_classes(labels, {"train": [0, 1, 2, 3], "val": [4, 5, 6], "test": [7, 8, 9]})
    test = EpisodeSampler(labels, N_WAY, K_SHOT, Q_QUERY, classes=sp["test"], seed=3, n_episodes=2)
    data = MetaData(x, labels, train=EpisodeSampler(labels, N_WAY, K_SHOT, Q_QUERY, classes=sp["train"], seed=1),
                    val=EpisodeSampler(labels, N_WAY, K_SHOT, Q_QUERY, classes=sp["val"], seed=2), test=_NoTest())
    return data, test


def _encoder(kind: str) -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    if kind == "identity":
        return nn.Identity(), 6
    if kind == "mlp":
        return mlp(6, 8, depth=2), 8
    return conv4(1, 4), 4


def _trained(name: str, kind: str, encoder: nn.Module, d: int, seed: int = 0):
    """Set up and, where the method needs (or offers) it, meta-train briefly. Returns the method."""
    data, _ = _data("images" if kind == "conv4" else "features")
    m = get("fewshot", name)().setup(encoder, d, seed=seed)
    if m.needs_meta_training or m.pretrains:
        hist = m.meta_train(data, **TRAIN)
        assert isinstance(hist, list) and all(isinstance(h, dict) and "step" in h and "val_accuracy" in h
                                              for h in hist)
    return m


def _predict(m, kind):
    _, test = _data("images" if kind == "conv4" else "features")
    data, _ = _data("images" if kind == "conv4" else "features")
    out = []
    for ep in test:
        xs, ys, xq, _ = data.rows(ep)
        out.append(m.predict_episode(xs, ys, xq, ep.n_way))
    return out


def test_registry_lists_the_methods_with_descriptions():
    assert {"protonet", "matching", "simpleshot", "baseline", "baseline_pp", "finetune"} <= set(METHODS)
    docs = describe("fewshot")
    for name in METHODS:
        cls = get("fewshot", name)
        assert issubclass(cls, FewShotMethod), name
        assert docs[name] and "\n" not in docs[name], name


@pytest.mark.parametrize("name", METHODS)
def test_get_params_round_trip_and_init_only_stores(name):
    cls = get("fewshot", name)
    m = cls()
    params = m.get_params()
    sig = inspect.signature(cls.__init__)
    defaults = {p.name: p.default for p in sig.parameters.values() if p.name != "self"}
    assert all(v is not inspect.Parameter.empty for v in defaults.values()), f"{name}: every parameter has a default"
    assert params == defaults
    assert set(vars(m)) == set(params), f"{name}.__init__ stores only its parameters"
    again = cls(**params)
    assert again.get_params() == params
    assert m.set_params(**params) is m
    assert repr(m).startswith(cls.__name__ + "(")
    with pytest.raises(ConfigError, match="unknown parameter 'no_such_param'"):
        m.set_params(no_such_param=1)


def _bad_values(default):
    if isinstance(default, bool):
        return ["yes"]
    if isinstance(default, (int, float)):
        return [float("nan"), -1e12]
    if isinstance(default, str):
        return ["no-such-choice"]
    return []


@pytest.mark.parametrize("name", METHODS)
def test_bad_parameters_refused_with_one_line_naming_them(name):
    cls = get("fewshot", name)
    checked = 0
    for pname, default in cls().get_params().items():
        for bad in _bad_values(default):
            m = cls(**{pname: bad})
            enc, d = _encoder("identity")
            with pytest.raises(ConfigError) as info:
                m.setup(enc, d, seed=0)
            msg = str(info.value)
            assert pname in msg and "\n" not in msg, (pname, bad, msg)
            checked += 1
    assert checked, f"{name} has no parameter the contract can break"


@pytest.mark.parametrize("name", METHODS)
def test_setup_refuses_bad_seed_and_predict_needs_setup(name):
    cls = get("fewshot", name)
    with pytest.raises(ConfigError, match="seed"):
        cls().setup(nn.Identity(), 6, seed=-1)
    data, test = _data("features")
    xs, ys, xq, _ = data.rows(test.episode(0))
    with pytest.raises(ConfigError, match="setup"):
        cls().predict_episode(xs, ys, xq, N_WAY)


@pytest.mark.parametrize("kind", ["identity", "mlp", "conv4"])
@pytest.mark.parametrize("name", METHODS)
def test_logits_shape_and_same_seed_same_logits(name, kind):
    enc, d = _encoder(kind)
    enc2 = copy.deepcopy(enc)
    try:
        a = _trained(name, kind, enc, d, seed=5)
    except ConfigError as exc:
        # A method may refuse a parameter-free encoder it cannot learn anything with (MAML with a
        # zero head on cached features), with one line saying what to do instead.
        assert kind == "identity" and "\n" not in str(exc), exc
        pytest.skip(f"{name} refuses an nn.Identity encoder: {exc}")
    b = _trained(name, kind, enc2, d, seed=5)
    state = {k: v.clone() for k, v in a.encoder_.state_dict().items()}
    la, lb = _predict(a, kind), _predict(b, kind)
    for k, v in a.encoder_.state_dict().items():  # prediction leaves the encoder (and BN statistics) alone
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=f"{name}: predict_episode changed {k}")
    for x, y in zip(la, lb):
        assert x.shape == (N_WAY * Q_QUERY, N_WAY)
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    # predicting again gives the same logits (nothing drifts between calls)
    for x, y in zip(la, _predict(a, kind)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_meta_training_needs_meta_train_classes(name):
    m = get("fewshot", name)()
    enc, d = _encoder("mlp")
    m.setup(enc, d, seed=0)
    if not (m.needs_meta_training or m.pretrains):
        pytest.skip(f"{name} does not meta-train")
    data, _ = _data("features")
    data.train = None
    with pytest.raises(ConfigError, match="no meta-train classes"):
        m.meta_train(data, **TRAIN)


@pytest.mark.parametrize("name", METHODS)
def test_needs_meta_training_is_enforced(name):
    m = get("fewshot", name)()
    enc, d = _encoder("mlp")
    m.setup(enc, d, seed=0)
    data, test = _data("features")
    xs, ys, xq, _ = data.rows(test.episode(0))
    if m.needs_meta_training:
        with pytest.raises(ConfigError, match="meta-train"):
            m.predict_episode(xs, ys, xq, N_WAY)
    else:
        logits = m.predict_episode(xs, ys, xq, N_WAY)
        assert logits.shape == (N_WAY * Q_QUERY, N_WAY) and not any(math.isnan(v) for v in logits.flatten().tolist())
