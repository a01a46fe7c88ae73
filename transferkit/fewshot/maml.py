"""Optimisation-based meta-learning: MAML, first-order MAML and ANIL, natively on ``torch.func``.

The model of an episode is the encoder given by :meth:`~transferkit.fewshot.base.FewShotMethod.setup`
followed by a linear head of ``n_way`` outputs, ``logits = W f_theta(x) + b``. All parameters live
in one dict ``{"encoder.<name>": ..., "head.weight": ..., "head.bias": ...}`` and every forward
pass goes through :func:`torch.func.functional_call` on that dict; inner-loop gradients come from
:func:`torch.func.grad`, which composes with ordinary autograd, so the outer ``backward()``
differentiates through the inner loop (no ``higher``, no learn2learn).

Inner loop (``inner_steps`` steps of SGD at ``inner_lr`` on the support set ``S``)::

    phi_0 = theta,    phi_{j+1} = phi_j - alpha * grad_phi L_S(phi_j)

Outer loop (Adam at ``outer_lr`` over ``meta_batch`` meta-train episodes per step)::

    theta <- Adam(theta, grad_theta (1/B) sum_i L_{Q_i}(phi^{(i)}_J(theta)))

- ``maml``: the exact meta-gradient, second-order terms included
  (``d phi_J / d theta = prod_j (I - alpha H_j)``).
- ``fomaml``: first-order MAML: ``d phi_J / d theta`` is replaced by the identity, so the
  meta-gradient is the gradient of the query loss *at the adapted parameters*,
  ``grad_phi L_Q(phi_J)``, applied to ``theta``.
- ``anil``: the inner loop adapts the head only; the encoder's features are computed once per
  batch and the encoder is updated by the outer loop only (second order by default: the
  meta-gradient reaches the encoder through the query features and through the head's
  adaptation on the support features).

**Head.** ``head_init="zero"`` (default): the head starts every episode at ``W = 0, b = 0`` and
is not meta-learned (the "zeroing trick" of Kao et al. 2022; ANIL with a zero head makes the
first inner step move each class row towards its support features, a prototype); episodes of
any ``n_way`` can be predicted. ``head_init="learned"``: the head's initial value is a
meta-parameter as in Finn et al. (standard ``nn.Linear`` initialisation under the method's
seed); prediction then needs the meta-training ``n_way``.

**BatchNorm** (stated here, tested in ``tests/fewshot/test_maml.py``): as in the original MAML
code, every BatchNorm layer normalises with the statistics of the batch it is given, in
meta-training *and* at meta-test (transductive: a query row's logits depend on the other query
rows of its episode). The support set and the query set are forwarded as separate batches.
Running statistics are never used and never updated (the encoder's BN buffers keep their
values). The BN affine parameters are adapted in the inner loop like every other parameter.

References
----------
Finn, Abbeel, Levine, "Model-agnostic meta-learning for fast adaptation of deep networks", ICML 2017.
Raghu, Raghu, Bengio, Vinyals, "Rapid learning or feature reuse? Towards understanding the
effectiveness of MAML", ICLR 2020 (ANIL).
Kao, Chiu, Chen, "MAML is a noisy contrastive learner in classification", ICLR 2022 (zeroing trick).
Antoniou, Edwards, Storkey, "How to train your MAML", ICLR 2019 (MAML++).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from .._registry import register
from .._validation import check_choice, check_number
from ..errors import ConfigError
from .base import FewShotMethod, MetaData, snapshot

HEAD_INITS = ("zero", "learned")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

Params = dict[str, torch.Tensor]


def _check_bool(param: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{param}={value!r} must be true or false.")
    return value


@contextlib.contextmanager
def batch_statistics(module: nn.Module, train: bool) -> Iterator[None]:
    """Run ``module`` with every BatchNorm normalising by the current batch's statistics.

    Sets ``module.train(train)`` (dropout and the like follow ``train``), then each BatchNorm
    layer to ``training=True, track_running_stats=False``: :func:`torch.nn.functional.batch_norm`
    then receives no running buffers, so it uses the batch's mean and variance and updates
    nothing. Every flag is restored on exit.
    """
    saved = [(m, m.training) for m in module.modules()]
    bn = [(m, m.track_running_stats) for m in module.modules() if isinstance(m, _BN)]
    try:
        module.train(train)
        for m, _ in bn:
            m.training = True
            m.track_running_stats = False
        yield
    finally:
        for m, tracked in bn:
            m.track_running_stats = tracked
        for m, was in saved:
            m.training = was


class GradientMetaLearner(FewShotMethod):
    """Shared machinery of the gradient-based meta-learners (MAML family, Reptile).

    Subclasses choose which parameters the inner loop adapts (:attr:`inner_scope`) and how the
    outer step uses the adapted parameters (:meth:`_outer_step`).
    """

    needs_meta_training = True
    #: "all": the inner loop adapts encoder and head; "head": the head only (ANIL).
    inner_scope = "all"
    #: Name in log lines.
    _label = "maml"

    # ---------------------------------------------------------------- parameters
    def _check_params(self) -> None:
        # The checked values are kept: a YAML "1e-3" or 5.0 becomes the number the loops need.
        self.inner_steps = check_number("inner_steps", self.inner_steps, low=1, high=1000, integer=True)
        self.inner_lr = check_number("inner_lr", self.inner_lr, low=0, low_inclusive=False)
        self.outer_lr = check_number("outer_lr", self.outer_lr, low=0, low_inclusive=False)
        self.meta_batch = check_number("meta_batch", self.meta_batch, low=1, high=10000, integer=True)
        if self.inner_steps_test is not None:
            self.inner_steps_test = check_number("inner_steps_test", self.inner_steps_test, low=1, high=10000,
                                                 integer=True)
        check_choice("head_init", self.head_init, HEAD_INITS)
        _check_bool("first_order", self.first_order)

    def setup(self, encoder: nn.Module, feature_dim: int, seed: int = 0) -> GradientMetaLearner:
        """Attach the encoder; the head is made by :meth:`meta_train` (``head_init="learned"``)."""
        super().setup(encoder, feature_dim, seed)
        self.head_: nn.Linear | None = None
        self.n_way_: int | None = None
        return self

    @property
    def _steps_test(self) -> int:
        return int(self.inner_steps if self.inner_steps_test is None else self.inner_steps_test)

    def _init_head(self, n_way: int) -> None:
        if self.head_ is not None and self.n_way_ == int(n_way):
            return  # meta_train called again: continue from the learned head
        self.n_way_ = int(n_way)
        if self.head_init == "learned":
            ref = next(iter(self.encoder_.parameters()), None)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed_)
                head = nn.Linear(self.feature_dim_, self.n_way_)
            if ref is not None:
                head = head.to(device=ref.device, dtype=ref.dtype)
            self.head_ = head
        else:
            self.head_ = None

    def _meta_params(self) -> Params:
        """The meta-learned parameters (``nn.Parameter`` objects), by functional name."""
        out = {f"encoder.{k}": v for k, v in self.encoder_.named_parameters()}
        if self.head_ is not None:
            out.update({f"head.{k}": v for k, v in self.head_.named_parameters()})
        return out

    def _ref(self) -> torch.Tensor:
        ref = next(iter(self.encoder_.parameters()), None)
        if ref is None:  # an identity encoder on cached features: the head decides
            return torch.zeros((), dtype=torch.get_default_dtype())
        return ref

    def _start(self, n_way: int, *, detach: bool) -> Params:
        """``theta`` of an episode: the meta-parameters plus the zero head where it is not learned."""
        params = self._meta_params()
        if self.head_ is None:
            ref = self._ref()
            params["head.weight"] = torch.zeros(n_way, self.feature_dim_, device=ref.device, dtype=ref.dtype)
            params["head.bias"] = torch.zeros(n_way, device=ref.device, dtype=ref.dtype)
        elif n_way != self.n_way_:
            raise ConfigError(
                f"{self._label}: the meta-learned head has {self.n_way_} outputs but the episode is {n_way}-way; "
                f"evaluate with n_way={self.n_way_} or use head_init='zero'."
            )
        if detach:
            params = {k: v.detach() for k, v in params.items()}
        return params

    # ---------------------------------------------------------------- forward passes
    def _features(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        enc = {k[len("encoder."):]: v for k, v in params.items() if k.startswith("encoder.")}
        return functional_call(self.encoder_, enc, (x,))

    @staticmethod
    def _head(params: Params, feats: torch.Tensor) -> torch.Tensor:
        return F.linear(feats, params["head.weight"], params["head.bias"])

    def _logits(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self._head(params, self._features(params, x))

    # ---------------------------------------------------------------- inner loop
    def _inner_keys(self, params: Params) -> list[str]:
        if self.inner_scope == "head":
            return ["head.weight", "head.bias"]
        return list(params)

    def _update(self, sub: Params, g: Params, state: dict) -> Params:
        """One inner step; plain SGD ``phi - alpha g`` (Reptile may use Adam)."""
        return {k: sub[k] - self.inner_lr * g[k] for k in sub}

    def adapt(self, params: Params, xs: torch.Tensor, ys: torch.Tensor, steps: int, *,
              first_order: bool, batches: list[torch.Tensor] | None = None) -> Params:
        """``phi_J``: ``steps`` inner steps on ``(xs, ys)`` from ``params``.

        Differentiable in ``params`` (second order) unless ``first_order``, where each inner
        gradient is computed at detached parameters, so ``d phi_J / d params`` is the identity.
        ``batches``: the row indices of each step (Reptile's minibatches); ``None``: every row at
        every step. BatchNorm follows the caller's :func:`batch_statistics` context.
        """
        keys = self._inner_keys(params)
        fixed = {k: v for k, v in params.items() if k not in keys}
        if self.inner_scope == "head":
            assert batches is None, "minibatches are for inner loops that adapt the encoder"
            # The encoder is not adapted: its support features are the same at every step.
            feats = self._features(fixed, xs)
            if first_order:
                feats = feats.detach()

            def loss_fn(sub: Params, j: int) -> torch.Tensor:
                return F.cross_entropy(self._head(sub, feats), ys)
        else:
            def loss_fn(sub: Params, j: int) -> torch.Tensor:
                if batches is None:
                    return F.cross_entropy(self._logits({**fixed, **sub}, xs), ys)
                rows = batches[j]
                return F.cross_entropy(self._logits({**fixed, **sub}, xs[rows]), ys[rows])

        sub = {k: params[k] for k in keys}
        state: dict = {}
        for j in range(steps):
            at = {k: v.detach() for k, v in sub.items()} if first_order else sub
            g = grad(loss_fn)(at, j)
            sub = self._update(sub, g, state)
        return {**fixed, **sub}

    # ---------------------------------------------------------------- prediction
    def _episode_tensors(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        ref = self._ref()
        out = []
        for t in tensors:
            t = torch.as_tensor(t)
            if t.is_floating_point():
                out.append(t.to(device=ref.device, dtype=ref.dtype))
            else:
                out.append(t.to(device=ref.device, dtype=torch.long))
        return out

    def _predict(self, support_x, support_y, query_x, n_way: int) -> torch.Tensor:
        xs, ys, xq = self._episode_tensors(support_x, support_y, query_x)
        # Adaptation needs gradients even when the caller evaluates under torch.no_grad(); it
        # starts from a detached copy of theta and updates out of place, so theta is never touched.
        with torch.enable_grad(), batch_statistics(self.encoder_, train=False):
            phi = self.adapt(self._start(n_way, detach=True), xs, ys, self._steps_test, first_order=True)
            logits = self._logits(phi, xq)
        return logits.detach()

    def predict_episode(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                        n_way: int) -> torch.Tensor:
        """Logits ``(n_query, n_way)``: ``inner_steps_test`` inner steps on the support set from the
        meta-learned initialisation (which is left unchanged), then the query forward pass."""
        self._require_setup()
        return self._predict(support_x, support_y, query_x, n_way)

    # ---------------------------------------------------------------- meta-training
    def _outer_step(self, data: MetaData, episodes: list, optimizer, progress: float) -> float:
        """Meta-gradient of the mean query loss over ``episodes``, one Adam step; returns the loss.

        ``progress`` is ``step / steps`` (for schedules; unused here).
        """
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        with batch_statistics(self.encoder_, train=True):
            for ep in episodes:
                xs, ys, xq, yq = self._episode_tensors(*data.rows(ep))
                theta = self._start(ep.n_way, detach=False)
                phi = self.adapt(theta, xs, ys, self.inner_steps, first_order=self.first_order)
                loss = F.cross_entropy(self._logits(phi, xq), yq)
                # Backward per episode (the mean's gradient is the sum of these): one graph alive at a time.
                (loss / len(episodes)).backward()
                total += float(loss.detach())
        optimizer.step()
        return total / len(episodes)

    def _make_optimizer(self):
        return torch.optim.Adam(list(self._meta_params().values()), lr=self.outer_lr)

    def _val_accuracy(self, data: MetaData, val_episodes: int) -> float:
        accs = []
        for i in range(val_episodes):
            ep = data.val.episode(i)
            xs, ys, xq, yq = data.rows(ep)
            logits = self._predict(xs, ys, xq, ep.n_way)
            accs.append(float((logits.argmax(1).cpu() == yq).float().mean()))
        return sum(accs) / len(accs)

    def _state(self) -> dict:
        return {"encoder": snapshot(self.encoder_), "head": None if self.head_ is None else snapshot(self.head_)}

    def _load(self, state: dict) -> None:
        self.encoder_.load_state_dict(state["encoder"])
        if self.head_ is not None:
            self.head_.load_state_dict(state["head"])

    def meta_train(self, data: MetaData, *, steps: int, log: Callable[[str], None] | None = None,
                   eval_every: int = 100, val_episodes: int = 100) -> list[dict]:
        """Outer loop over meta-train episodes; keeps the best meta-val checkpoint.

        Step ``s`` uses meta-train episodes ``s * meta_batch ... (s + 1) * meta_batch - 1`` of
        ``data.train`` (seeded per episode). Meta-val accuracy is measured on the first
        ``val_episodes`` episodes of ``data.val`` (the same episodes every time) before training,
        every ``eval_every`` steps and after the last; the parameters with the best accuracy
        (the earliest on ties, the initial ones included) are restored at the end. Without
        ``data.val`` the last parameters are kept. ``data.test`` is never read. A second call
        continues from the current parameters (a fresh Adam state, episodes from index 0 again).

        Returns
        -------
        list of dict
            One per evaluation: ``step``, ``loss`` (mean outer loss since the previous entry;
            NaN at step 0), ``val_accuracy`` (None without meta-val classes), ``seconds``.
            ``self.best_step_`` and ``self.best_val_accuracy_`` record the restored checkpoint.
        """
        steps = check_number("steps", steps, low=1, integer=True)
        eval_every = check_number("eval_every", eval_every, low=1, integer=True)
        val_episodes = check_number("val_episodes", val_episodes, low=1, integer=True)
        if not hasattr(self, "encoder_"):
            raise ConfigError(f"{type(self).__name__}: call setup(encoder, feature_dim) first.")
        self._check_meta_train_data(data)
        if data.val is not None and data.val.n_way != data.train.n_way and self.head_init == "learned":
            raise ConfigError(
                f"{self._label}: head_init='learned' needs meta-val episodes of the meta-train n_way "
                f"({data.train.n_way}), got {data.val.n_way}; use the same n_way or head_init='zero'."
            )
        self._init_head(data.train.n_way)
        if not self._meta_params():
            raise ConfigError(
                f"{self._label}: nothing to meta-learn: the encoder has no parameters and head_init='zero'; "
                "use a trainable encoder (mlp, conv4) or head_init='learned'."
            )
        optimizer = self._make_optimizer()
        history: list[dict] = []
        t0 = time.perf_counter()
        best_acc, best_state, best_step = None, None, 0
        running, count = 0.0, 0

        def record(step: int) -> None:
            nonlocal best_acc, best_state, best_step, running, count
            acc = self._val_accuracy(data, val_episodes) if data.val is not None else None
            loss = running / count if count else float("nan")
            running, count = 0.0, 0
            entry = {"step": step, "loss": loss, "val_accuracy": acc, "seconds": time.perf_counter() - t0}
            history.append(entry)
            if acc is not None and (best_acc is None or acc > best_acc):
                best_acc, best_state, best_step = acc, self._state(), step
            if log is not None:
                shown = "n/a (no meta-val classes)" if acc is None else f"{acc:.4f}"
                best = "" if best_acc is None else f" (best {best_acc:.4f} at step {best_step})"
                log(f"{self._label}: step {step}/{steps}: loss {loss:.4f}, val accuracy {shown}{best}, "
                    f"{entry['seconds']:.1f} s")

        record(0)
        for step in range(steps):
            episodes = [data.train.episode(step * self.meta_batch + b) for b in range(self.meta_batch)]
            running += self._outer_step(data, episodes, optimizer, step / steps)
            count += 1
            if (step + 1) % eval_every == 0 or step + 1 == steps:
                record(step + 1)
        for p in self._meta_params().values():
            p.grad = None
        if best_state is not None:
            self._load(best_state)
        self.best_step_ = best_step if best_state is not None else steps
        self.best_val_accuracy_ = best_acc
        self.meta_trained_ = True
        return history


@register("fewshot", "maml")
class MAML(GradientMetaLearner):
    """MAML (Finn et al. 2017): second-order meta-gradient through the inner SGD loop (torch.func).

    Parameters
    ----------
    inner_steps
        Inner SGD steps on the support set during meta-training, ``J``.
    inner_lr
        Inner step size ``alpha``.
    outer_lr
        Adam learning rate of the outer loop.
    meta_batch
        Meta-train episodes per outer step, ``B``.
    first_order
        Drop the second-order terms (first-order MAML; see ``fomaml``).
    inner_steps_test
        Inner steps at prediction (meta-val and meta-test); ``None``: ``inner_steps``.
    head_init
        ``"zero"``: the head starts at zero in every episode (not meta-learned, any ``n_way``);
        ``"learned"``: the head's initialisation is meta-learned (Finn et al.).

    Notes
    -----
    ``phi_J = theta - alpha sum_j grad L_S(phi_j)``; the outer loop minimises
    ``(1/B) sum_i L_{Q_i}(phi^{(i)}_J(theta))`` by Adam, differentiating through every inner step.
    BatchNorm uses batch statistics throughout (transductive), see the module docstring.
    """

    _label = "maml"

    def __init__(self, inner_steps: int = 5, inner_lr: float = 0.1, outer_lr: float = 1e-3, meta_batch: int = 4,
                 first_order: bool = False, inner_steps_test: int | None = None, head_init: str = "zero") -> None:
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.outer_lr = outer_lr
        self.meta_batch = meta_batch
        self.first_order = first_order
        self.inner_steps_test = inner_steps_test
        self.head_init = head_init


@register("fewshot", "fomaml")
class FOMAML(GradientMetaLearner):
    """First-order MAML: the meta-gradient is the query-loss gradient at the adapted parameters.

    ``maml`` with ``first_order=True``: ``d phi_J / d theta`` is taken as the identity, so
    ``theta`` moves along ``(1/B) sum_i grad_phi L_{Q_i}(phi^{(i)}_J)`` (Finn et al. 2017, sec. 5.2).
    Parameters as for :class:`MAML` (without ``first_order``).
    """

    _label = "fomaml"
    first_order = True

    def __init__(self, inner_steps: int = 5, inner_lr: float = 0.1, outer_lr: float = 1e-3, meta_batch: int = 4,
                 inner_steps_test: int | None = None, head_init: str = "zero") -> None:
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.outer_lr = outer_lr
        self.meta_batch = meta_batch
        self.inner_steps_test = inner_steps_test
        self.head_init = head_init


@register("fewshot", "anil")
class ANIL(MAML):
    """ANIL (Raghu et al. 2020): inner loop on the head only; the encoder learns in the outer loop.

    Parameters as for :class:`MAML`. The support features ``f_theta(x_S)`` are computed once per
    episode; ``W, b`` take ``inner_steps`` SGD steps on them; the query loss at the adapted head
    is differentiated into the encoder (through the query features and, unless ``first_order``,
    through the head's adaptation on the support features).
    """

    _label = "anil"
    inner_scope = "head"
