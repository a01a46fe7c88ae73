"""How several task losses become one update: the multi-task loss weightings.

Registry kind ``mtl_weighting`` (``@register("mtl_weighting", name)``); each is an
``nn.Module`` (its learned weights and running statistics are parameters and buffers, so they
move with ``.to()`` and are checkpointed with the objective that holds it). Two families:

*Loss weightings* (:meth:`Weighting.combine`) turn the vector of task losses ``L = (L_1..L_T)``
into one scalar:

- ``equal`` (the default): ``sum_k L_k``;
- ``uncertainty`` (Kendall, Gal & Cipolla, CVPR 2018): learned log-variances ``s_k = log sigma_k^2``,
  ``sum_k c_k exp(-s_k) L_k + s_k / 2`` with ``c_k = 1`` for a classification task
  (``1/sigma^2 L + log sigma``, eq. 10) and ``c_k = 1/2`` for a regression task
  (``1/(2 sigma^2) L + log sigma``, eq. 7). For a fixed ``L_k`` the optimum is
  ``s_k* = log(2 c_k L_k)`` (``d/ds = -c exp(-s) L + 1/2 = 0``): ``log L`` for regression,
  ``log 2L`` for classification;
- ``dwa`` (Dynamic Weight Average, Liu, Johns & Davison, CVPR 2019): ``lambda_k(t) = T
  exp(r_k / tau) / sum_i exp(r_i / tau)`` with ``r_k = Lbar_k(t-1) / Lbar_k(t-2)`` the ratio of
  the last two epochs' mean losses and ``tau = 2``; ``lambda = 1`` for the first two epochs;
- ``gradnorm`` (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018): learned weights ``w_k``
  (sum ``T``). The network trains on ``sum_k w_k L_k``; the weights on ``L_grad = sum_k |G_k -
  Gbar r_k^alpha|`` with ``G_k = ||grad_W w_k L_k||`` on the last shared layer's weight ``W``,
  ``Gbar = mean_k G_k``, ``r_k = (L_k / L_k(0)) / mean_i (L_i / L_i(0))`` and ``alpha = 1.5``
  (the target ``Gbar r_k^alpha`` is a constant, as in the paper); after every optimizer step
  the weights are renormalised to sum to ``T``.

*Gradient aggregators* (``gradient_based = True``, :meth:`Weighting.aggregate`) combine the
``(T, d)`` matrix ``G`` of the task gradients of the shared parameters into one update
direction ``g`` (the objective computes ``G`` with ``torch.autograd.grad`` and trains on a
surrogate whose gradient is ``g``, see :func:`surrogate_loss`):

- ``pcgrad`` (Yu et al., NeurIPS 2020, "Gradient surgery"): each task gradient is projected
  onto the normal plane of every other task gradient it conflicts with (negative dot product),
  the others visited in a random order (a generator seeded by ``seed`` and the step), and the
  projected gradients summed (:func:`pcgrad_combine`);
- ``upgrad`` (Quinton & Rey 2024, Jacobian descent): torchjd's ``UPGrad`` aggregator, when the
  optional package ``torchjd`` (and, from torchjd 0.12, its QP solver ``qpsolvers`` +
  ``quadprog``) is installed; asking for it without them is a one-line error at use time, never
  at import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._registry import register
from .._validation import check_number, require
from ..errors import ConfigError, MissingDependencyError

#: Task kinds a head can be.
TASK_TYPES = ("classification", "regression")


@dataclass
class WeightingInput:
    """What a weighting sees at one training step.

    Attributes
    ----------
    losses
        ``(T,)`` task losses (each already times its task's static ``weight``), with their graph.
    shared
        The trainable shared parameters (the encoder's), in registration order.
    last_shared
        The last of them that is a weight matrix or kernel (``ndim >= 2``): GradNorm's ``W``.
    epoch, step
        Position in training (DWA averages per epoch; PCGrad seeds its task order by step).
    """

    losses: torch.Tensor
    shared: list = field(default_factory=list)
    last_shared: torch.Tensor | None = None
    epoch: int = 0
    step: int = 0


# ---------------------------------------------------------------------------------- pure functions
def task_gradients(losses: torch.Tensor, params: list) -> torch.Tensor:
    """The ``(T, d)`` matrix of the gradients of each task loss with respect to ``params``
    (flattened and concatenated in order; a parameter a loss does not reach contributes zeros).
    The graph is kept (``retain_graph=True``) so that the caller can still backpropagate."""
    rows = []
    for k in range(losses.shape[0]):
        gs = torch.autograd.grad(losses[k], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gs, params)]))
    return torch.stack(rows)


def surrogate_loss(params: list, g: torch.Tensor) -> torch.Tensor:
    """``sum_p (p * g_p.detach()).sum()``: a scalar whose gradient with respect to each
    parameter ``p`` is exactly its slice ``g_p`` of the flat vector ``g`` (``d/dp <p, c> = c``).

    This is how a gradient aggregator trains through the one Trainer: the Trainer backpropagates
    the loss it is given, and this loss makes that backward put the combined gradient into the
    shared parameters' ``.grad``."""
    out, i = None, 0
    for p in params:
        gp = g[i:i + p.numel()].detach().reshape(p.shape).to(p.dtype)
        i += p.numel()
        term = (p * gp).sum()
        out = term if out is None else out + term
    if i != g.numel():
        raise ValueError(f"the combined gradient has {g.numel()} entries but the parameters {i}")
    return out if out is not None else g.new_zeros(())


def _orders(order, T: int) -> list[list[int]]:
    """``order`` as one visiting order per task (a single permutation is used for every task)."""
    seq = order.tolist() if hasattr(order, "tolist") else list(order)
    nested = bool(seq) and isinstance(seq[0], (list, tuple))
    rows = [list(map(int, o)) for o in seq] if nested else [list(map(int, seq))] * T
    every = list(range(T))
    if len(rows) != T or any(sorted(r) not in (every, [j for j in every if j != i]) for i, r in enumerate(rows)):
        raise ConfigError(f"order={order!r} must be a permutation of the tasks 0..{T - 1} (or one per task).")
    return rows


def pcgrad_combine(G: torch.Tensor, order, reduction: str = "sum") -> torch.Tensor:
    """PCGrad's combined gradient (Yu et al. 2020, Algorithm 1) of the task gradients ``G`` ``(T, d)``.

    For each task ``i``, ``g_i^PC`` starts at ``g_i`` and, for each other task ``j`` in ``order``
    (``order[i]``, a permutation of the tasks, ``i`` itself skipped; or one permutation for
    every task), if ``g_i^PC . g_j < 0``::

        g_i^PC <- g_i^PC - (g_i^PC . g_j) / ||g_j||^2  g_j

    (``g_j`` is the *original* gradient of task ``j``). Returns ``sum_i g_i^PC`` (``reduction=
    "mean"``: divided by ``T``). Two conflicting gradients: ``g_1 - (g_1.g_2/|g_2|^2) g_2 + g_2
    - (g_2.g_1/|g_1|^2) g_1``; non-conflicting ones are left unchanged (their plain sum).
    """
    if G.ndim != 2:
        raise ConfigError(f"G must be a (T, d) matrix of task gradients, got shape {tuple(G.shape)}.")
    T = G.shape[0]
    rows = _orders(order, T)
    sq = (G * G).sum(1)
    out = []
    for i in range(T):
        gi = G[i].clone()
        for j in rows[i]:
            if j == i or sq[j] <= 0:
                continue
            dot = gi @ G[j]
            if dot < 0:
                gi = gi - dot / sq[j] * G[j]
        out.append(gi)
    total = torch.stack(out).sum(0)
    if reduction == "mean":
        return total / T
    if reduction != "sum":
        raise ConfigError(f"reduction={reduction!r} must be 'sum' or 'mean'.")
    return total


def dwa_weights(prev: torch.Tensor, prev2: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Dynamic Weight Average's task weights from the mean task losses of the last two epochs:
    ``T softmax((prev / prev2) / temperature)`` (they sum to ``T``)."""
    r = prev / prev2.clamp_min(1e-12)
    return prev.shape[0] * torch.softmax(r / temperature, dim=0)


# ---------------------------------------------------------------------------------- the weightings
class Weighting(nn.Module):
    """Base of the multi-task weightings (see the module docstring).

    :meth:`setup` is called once by the objective with the task names and types (learned
    weights are created there, sized ``T``). A loss weighting implements :meth:`combine`; a
    gradient aggregator sets ``gradient_based = True`` and implements :meth:`aggregate`.
    """

    gradient_based: bool = False

    def setup(self, names: list[str], types: list[str]) -> None:
        self.names, self.types = list(names), list(types)
        self.n_tasks = len(self.names)

    def combine(self, inp: WeightingInput) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(loss, logged scalars)`` from the task losses."""
        raise NotImplementedError

    def aggregate(self, G: torch.Tensor, inp: WeightingInput) -> torch.Tensor:
        """The combined ``(d,)`` gradient of the ``(T, d)`` task gradients."""
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """After each optimizer step (under ``no_grad``): GradNorm renormalises its weights."""


@register("mtl_weighting", "equal")
class EqualWeighting(Weighting):
    """Equal weighting: ``sum_k L_k`` (each task's static ``weight`` already applied)."""

    def combine(self, inp):
        return inp.losses.sum(), {}


@register("mtl_weighting", "uncertainty")
class UncertaintyWeighting(Weighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    ``L = sum_k c_k exp(-s_k) L_k + s_k / 2`` with learned ``s_k = log sigma_k^2`` (initialised at
    ``init``, default 0), ``c_k = 1`` for classification (``L_k / sigma^2 + log sigma``) and
    ``c_k = 1/2`` for regression (``L_k / (2 sigma^2) + log sigma``). For fixed ``L_k`` the
    minimiser is ``s_k* = log(2 c_k L_k)``. Logs ``log_var_<task>``.
    """

    def __init__(self, init: float = 0.0):
        super().__init__()
        self.init = check_number("init", init, low=-20, high=20)

    def setup(self, names, types):
        super().setup(names, types)
        self.log_vars = nn.Parameter(torch.full((self.n_tasks,), float(self.init)))
        self.register_buffer("scale", torch.tensor([1.0 if t == "classification" else 0.5 for t in types]))

    def combine(self, inp):
        s = self.log_vars.to(inp.losses.dtype)
        loss = (self.scale * torch.exp(-s) * inp.losses + 0.5 * s).sum()
        return loss, {f"log_var_{n}": self.log_vars[k].detach() for k, n in enumerate(self.names)}


@register("mtl_weighting", "dwa")
class DWAWeighting(Weighting):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019): ``lambda_k = T exp(r_k / tau) /
    sum_i exp(r_i / tau)``, ``r_k`` the ratio of task ``k``'s mean loss over the last two epochs,
    ``tau = temperature`` (2). The first two epochs weigh every task 1. Logs ``w_<task>``.
    """

    def __init__(self, temperature: float = 2.0):
        super().__init__()
        self.temperature = check_number("temperature", temperature, low=1e-3, high=1e3)

    def setup(self, names, types):
        super().setup(names, types)
        T = self.n_tasks
        # running sums of this epoch and the means of the last two: buffers, so a resumed fit
        # weighs its next epoch as an uninterrupted one would
        for name in ("epoch_sum", "prev", "prev2"):
            self.register_buffer(name, torch.zeros(T, dtype=torch.float64))
        self.register_buffer("epoch_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("epoch_seen", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("epochs_done", torch.tensor(0, dtype=torch.long))

    def current_weights(self) -> torch.Tensor:
        if int(self.epochs_done) < 2:
            return torch.ones(self.n_tasks, dtype=torch.float64, device=self.prev.device)
        return dwa_weights(self.prev, self.prev2, self.temperature)

    def _roll(self, epoch: int) -> None:
        if int(self.epoch_seen) == epoch:
            return
        if int(self.epoch_seen) >= 0 and float(self.epoch_count) > 0:
            self.prev2.copy_(self.prev)
            self.prev.copy_(self.epoch_sum / self.epoch_count)
            self.epochs_done += 1
        self.epoch_sum.zero_()
        self.epoch_count.zero_()
        self.epoch_seen.fill_(epoch)

    def combine(self, inp):
        with torch.no_grad():
            self._roll(int(inp.epoch))
            self.epoch_sum += inp.losses.detach().to(torch.float64)
            self.epoch_count += 1
        w = self.current_weights().to(inp.losses.dtype)
        return (w * inp.losses).sum(), {f"w_{n}": w[k].detach() for k, n in enumerate(self.names)}


@register("mtl_weighting", "gradnorm")
class GradNormWeighting(Weighting):
    """GradNorm (Chen et al., ICML 2018): learned task weights that equalise the tasks' gradient
    norms on the last shared layer, scaled by their relative training rates ``r_k^alpha``.

    The returned loss has the value ``sum_k w_k L_k`` (what the network trains on, the weights
    held constant) and, besides, the gradient of ``L_grad`` with respect to the weights (only).
    Logs ``w_<task>`` and ``gradnorm_loss``.
    """

    def __init__(self, alpha: float = 1.5):
        super().__init__()
        self.alpha = check_number("alpha", alpha, low=0, high=10)

    def setup(self, names, types):
        super().setup(names, types)
        self.task_weights = nn.Parameter(torch.ones(self.n_tasks))
        self.register_buffer("initial_losses", torch.zeros(self.n_tasks))
        self.register_buffer("has_initial", torch.tensor(False))

    def combine(self, inp):
        W = inp.last_shared
        if W is None:
            raise ConfigError("mtl_weighting 'gradnorm' needs a trainable shared layer with a weight matrix (the "
                              "encoder's last one); unfreeze the backbone (unfreeze: all) or use weighting: equal.")
        L = inp.losses
        if not bool(self.has_initial):
            with torch.no_grad():
                self.initial_losses.copy_(L.detach().clamp_min(1e-12))
                self.has_initial.fill_(True)
        w = self.task_weights.to(L.dtype)
        norms = torch.stack([torch.linalg.vector_norm(torch.autograd.grad(L[k], W, retain_graph=True)[0])
                             for k in range(self.n_tasks)]).detach()
        G = w * norms  # ||grad_W (w_k L_k)|| = w_k ||grad_W L_k||
        with torch.no_grad():
            ratio = L.detach() / self.initial_losses
            r = ratio / ratio.mean().clamp_min(1e-12)
            target = G.mean() * r ** self.alpha
        l_grad = (G - target).abs().sum()
        net = (w.detach() * L).sum()
        # value: the network's loss; gradient: the network's and, for the weights, L_grad's
        loss = net + (l_grad - l_grad.detach())
        logs = {f"w_{n}": self.task_weights[k].detach() for k, n in enumerate(self.names)}
        logs["gradnorm_loss"] = l_grad.detach()
        return loss, logs

    def after_optimizer_step(self) -> None:
        w = self.task_weights.data.clamp_(min=1e-4)
        w.mul_(self.n_tasks / w.sum())


@register("mtl_weighting", "pcgrad")
class PCGradWeighting(Weighting):
    """PCGrad gradient surgery (Yu et al., NeurIPS 2020) on the shared parameters: see
    :func:`pcgrad_combine`; the task order at step ``t`` comes from a generator seeded with
    ``(seed, t)``, so a run (and a resumed run) is reproducible."""

    gradient_based = True

    def __init__(self, seed: int = 0, reduction: str = "sum"):
        super().__init__()
        self.seed = int(check_number("seed", seed, low=0, high=2**31 - 1, integer=True))
        if reduction not in ("sum", "mean"):
            raise ConfigError(f"reduction={reduction!r} must be 'sum' (the paper's) or 'mean'.")
        self.reduction = reduction

    def order(self, step: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        return [torch.randperm(self.n_tasks, generator=gen).tolist() for _ in range(self.n_tasks)]

    def aggregate(self, G, inp):
        return pcgrad_combine(G, self.order(inp.step), self.reduction)


@register("mtl_weighting", "upgrad")
class UPGradWeighting(Weighting):
    """UPGrad (Quinton & Rey 2024): torchjd's aggregator of the task gradients (the mean of each
    task gradient projected onto the dual cone of all of them, so no task's loss increases to
    first order). Needs the optional package ``torchjd``."""

    gradient_based = True

    def __init__(self):
        super().__init__()
        agg = require("torchjd.aggregation", "mtl", "mtl_weighting 'upgrad'")
        try:
            self._aggregator = agg.UPGrad()
        except ImportError as exc:  # torchjd >= 0.12 keeps its QP solver (qpsolvers, quadprog) optional
            why = " ".join(str(exc).split())
            raise MissingDependencyError(
                f"mtl_weighting 'upgrad' needs torchjd's QP solver ({why}); install it with: pip install qpsolvers "
                "quadprog (or pip install 'transferkit[mtl]').") from None

    def aggregate(self, G, inp):
        return self._aggregator(G)


def make_weighting(name, options: dict | None = None, where: str = "weighting") -> Weighting:
    """The registered weighting ``name`` built with ``options``; an unknown name or option is a
    one-line :class:`~transferkit.errors.ConfigError` with the nearest valid names."""
    import inspect

    from .._registry import available, get
    from .._validation import suggest

    if isinstance(name, Weighting):
        if options:
            raise ConfigError(f"{where}_options is set but {where} is a Weighting instance; build it with the options.")
        return name
    names = available("mtl_weighting")
    if not isinstance(name, str) or name not in names:
        raise ConfigError(f"{where}={name!r} is not a multi-task weighting." + suggest(str(name), names)
                          + f" Use one of {', '.join(names)}.")
    cls = get("mtl_weighting", name)
    opts = dict(options or {})
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for k in opts:
        if k not in params:
            raise ConfigError(f"{where}_options has an unknown option {k!r} for weighting {name!r}."
                              + suggest(str(k), params)
                              + (f" Options: {', '.join(params)}." if params else " It takes no options."))
    for k, v in opts.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where}_options.{k}={v!r} is not a finite number; give a finite value.")
    try:
        return cls(**opts)
    except ConfigError as exc:
        raise ConfigError(f"{where}_options.{exc}" if str(exc).split(" ")[0].split("=")[0] in opts
                          else f"{where} {name!r}: {exc}") from None
