"""Reptile (Nichol, Achiam, Schulman 2018): move the initialisation towards the adapted weights.

For each of ``meta_batch`` meta-train episodes, ``inner_steps`` optimiser steps from
``theta`` give ``phi_i`` (no graph is kept: Reptile is first order by construction); then::

    theta <- theta + epsilon_t * (1/B) sum_i (phi_i - theta)

with ``epsilon_t = outer_lr * (1 - t / steps)`` (linear annealing to 0, as in the paper's code)
or ``outer_lr`` throughout (``anneal=False``). Prediction is the MAML one: ``inner_steps_test``
steps of the same inner optimiser on the support set from ``theta``, then the query forward.

Shares the model (encoder + linear head, ``head_init``), the :func:`torch.func.functional_call`
inner loop, the BatchNorm rule (batch statistics everywhere, running statistics never used or
updated) and the meta-val checkpoint selection with :mod:`transferkit.fewshot.maml`.

References
----------
Nichol, Achiam, Schulman, "On first-order meta-learning algorithms", arXiv:1803.02999, 2018.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._registry import register
from .._validation import check_choice, check_number
from .base import MetaData
from .maml import GradientMetaLearner, Params, _check_bool, batch_statistics

INNER_OPTIMIZERS = ("sgd", "adam")
TRAIN_ON = ("episode", "support")
#: Adam of the inner loop: beta1 = 0 as in Nichol et al.'s code (momentum would carry across
#: nothing useful in a handful of steps), beta2 = 0.999, eps = 1e-8.
ADAM_BETAS = (0.0, 0.999)
ADAM_EPS = 1e-8


def minibatches(n_rows: int, steps: int, batch: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """Row indices of each inner step: consecutive ``batch``-row slices of ``rng.permutation(n_rows)``;
    when fewer than ``batch`` rows of the current permutation are left, a new one is drawn (so
    within a pass every row is used at most once, and the leftover is dropped)."""
    out: list[torch.Tensor] = []
    perm, pos = rng.permutation(n_rows), 0
    for _ in range(steps):
        if pos + batch > n_rows:
            perm, pos = rng.permutation(n_rows), 0
        out.append(torch.as_tensor(perm[pos:pos + batch], dtype=torch.long))
        pos += batch
    return out


@register("fewshot", "reptile")
class Reptile(GradientMetaLearner):
    """Reptile (Nichol et al. 2018): theta <- theta + eps (phi - theta), phi from inner SGD/Adam steps.

    Parameters
    ----------
    inner_steps
        Inner optimiser steps per meta-train episode.
    inner_lr
        Inner learning rate.
    outer_lr
        ``epsilon``, the outer step size (the initial one when ``anneal``).
    meta_batch
        Episodes whose ``phi_i - theta`` are averaged per outer step.
    inner_optimizer
        ``"adam"`` (betas ``(0, 0.999)``, as in the paper) or ``"sgd"``; used at prediction too.
    train_on
        Rows of a meta-train episode the inner loop trains on: ``"episode"`` (support and query
        together: Nichol et al. train on more shots than they test with) or ``"support"``.
    inner_batch
        Rows per inner step during meta-training (Nichol et al.'s inner batch, e.g. 10):
        consecutive slices of a permutation of the training rows, seeded by
        ``(seed, episode index)``, see :func:`minibatches`. ``None``: every row at every step
        (full batch). Prediction always takes full-batch steps on the support set.
    anneal
        Decay ``epsilon`` linearly from ``outer_lr`` to 0 over the meta-training steps.
    inner_steps_test
        Inner steps at prediction; ``None``: ``inner_steps``.
    head_init
        ``"learned"`` (its initialisation is moved by the Reptile update like every other
        parameter; prediction needs the meta-training ``n_way``) or ``"zero"`` (the head starts at
        zero in every episode).

    Notes
    -----
    Defaults (inner Adam at 1e-2, inner batches of 10, learned head) were chosen on a short
    check, conv4 on 28x28 images, 5-way 1-shot, 300 outer steps (meta-train Fashion-MNIST + 5
    Animal-MNIST classes, meta-val the other 5 Animal-MNIST classes, 60 episodes). Meta-val
    accuracy, initial -> best: these defaults 0.485 -> 0.571 (seed 0), 0.466 -> 0.614 (seed 1);
    the same with a zero head 0.450 -> 0.500 and 0.438 -> 0.475; the paper's inner lr 1e-3 with
    batches of 10 and a learned head 0.411 -> 0.525; full-batch steps on the whole episode, zero
    head, lr 1e-3: 0.405 -> 0.413, at 2.6x the time. (On the tiny MLP task of the tests a zero
    head learns faster.) Reptile needs many outer steps (Nichol et al. run 100,000).
    """

    _label = "reptile"
    first_order = True  # no second-order terms: phi is computed without a graph

    def __init__(self, inner_steps: int = 5, inner_lr: float = 1e-2, outer_lr: float = 1.0, meta_batch: int = 4,
                 inner_optimizer: str = "adam", train_on: str = "episode", inner_batch: int | None = 10,
                 anneal: bool = True, inner_steps_test: int | None = None, head_init: str = "learned") -> None:
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.outer_lr = outer_lr
        self.meta_batch = meta_batch
        self.inner_optimizer = inner_optimizer
        self.train_on = train_on
        self.inner_batch = inner_batch
        self.anneal = anneal
        self.inner_steps_test = inner_steps_test
        self.head_init = head_init

    def _check_params(self) -> None:
        super()._check_params()
        self.outer_lr = check_number("outer_lr", self.outer_lr, low=0, high=1, low_inclusive=False)
        check_choice("inner_optimizer", self.inner_optimizer, INNER_OPTIMIZERS)
        check_choice("train_on", self.train_on, TRAIN_ON)
        if self.inner_batch is not None:
            # BatchNorm on batch statistics needs two rows at least
            self.inner_batch = check_number("inner_batch", self.inner_batch, low=2, integer=True)
        _check_bool("anneal", self.anneal)

    def _update(self, sub: Params, g: Params, state: dict) -> Params:
        if self.inner_optimizer == "sgd":
            return super()._update(sub, g, state)
        # Adam, functionally: m_t = b1 m + (1 - b1) g, v_t = b2 v + (1 - b2) g^2,
        # phi <- phi - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps).
        b1, b2 = ADAM_BETAS
        t = state["t"] = state.get("t", 0) + 1
        m = state.setdefault("m", {k: torch.zeros_like(v) for k, v in g.items()})
        v = state.setdefault("v", {k: torch.zeros_like(x) for k, x in g.items()})
        out = {}
        for k in sub:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
            mhat = m[k] / (1 - b1 ** t)
            vhat = v[k] / (1 - b2 ** t)
            out[k] = sub[k] - self.inner_lr * mhat / (vhat.sqrt() + ADAM_EPS)
        return out

    def _make_optimizer(self):
        return None  # the outer update is the interpolation below, not an optimiser step

    def _outer_step(self, data: MetaData, episodes: list, optimizer, progress: float) -> float:
        """``theta += epsilon_t * mean_i (phi_i - theta)``; returns the mean query loss at ``phi_i``."""
        theta = self._meta_params()
        delta = {k: torch.zeros_like(v) for k, v in theta.items()}
        total = 0.0
        with batch_statistics(self.encoder_, train=True):
            for ep in episodes:
                xs, ys, xq, yq = self._episode_tensors(*data.rows(ep))
                if self.train_on == "episode":
                    xt, yt = torch.cat([xs, xq]), torch.cat([ys, yq])
                else:
                    xt, yt = xs, ys
                batches = None
                if self.inner_batch is not None and self.inner_batch < len(yt):
                    rng = np.random.default_rng([self.seed_, ep.index])
                    batches = minibatches(len(yt), self.inner_steps, self.inner_batch, rng)
                phi = self.adapt(self._start(ep.n_way, detach=True), xt, yt, self.inner_steps, first_order=True,
                                 batches=batches)
                with torch.no_grad():
                    for k in delta:
                        delta[k] += phi[k] - theta[k]
                    total += float(F.cross_entropy(self._logits(phi, xq), yq))
        eps = self.outer_lr * (1.0 - progress) if self.anneal else self.outer_lr
        with torch.no_grad():
            for k, p in theta.items():
                p.add_(delta[k], alpha=eps / len(episodes))
        return total / len(episodes)
