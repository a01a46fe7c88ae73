"""What the metric-based methods and the transfer baselines share (one copy each).

- episode plumbing: :func:`embed` (eval-mode features of a batch), :func:`check_episode`,
  :func:`prototypes`, :func:`sq_euclidean`, :func:`cosine_similarity`, :class:`eval_mode`;
- :func:`train_episodic`: episodic meta-training of an encoder (ProtoNet, Matching Networks):
  cross-entropy of the method's episode logits on meta-train episodes, Adam, selection of the
  best checkpoint on meta-val episodes;
- :func:`supervised_pretrain`: ordinary supervised training of an encoder plus a classifier over
  all meta-train classes (the transfer baselines' optional pre-training, Chen et al. 2019),
  selected on meta-val episodes with the method's own per-episode predictor;
- :func:`fit_head`: a linear or cosine head fitted on one episode's support features;
- :func:`layer_groups`: an encoder's layer groups, input to output, for per-episode fine-tuning;
- :class:`EpisodeMethod`: a :class:`~transferkit.fewshot.base.FewShotMethod` whose public
  ``predict_episode`` checks the episode once and calls ``_predict``.

Selection never reads ``data.test``: only ``data.train`` (training) and ``data.val`` (selection).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError
from .base import FewShotMethod, MetaData, snapshot
from .episodes import mean_ci95

#: Normalisation layers: in :func:`layer_groups` they join the group of the layer before them.
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)

#: Rows per encoder call when embedding many rows (a meta-train mean).
EMBED_BATCH = 512


# ------------------------------------------------------------------------------------------ checks
def check_bool(param: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{param}={value!r} must be true or false.")
    return bool(value)


def check_meta_train_args(steps, eval_every, val_episodes) -> tuple[int, int, int]:
    return (check_number("steps", steps, low=0, integer=True),
            check_number("eval_every", eval_every, low=1, integer=True),
            check_number("val_episodes", val_episodes, low=1, integer=True))


def check_episode(support_x: torch.Tensor, support_y, query_x: torch.Tensor, n_way) -> torch.Tensor:
    """Validate one episode; return the support labels as a long tensor.

    Episode labels are ``0..n_way-1`` and every class has at least one support row."""
    n_way = check_number("n_way", n_way, low=1, integer=True)
    ys = torch.as_tensor(support_y).long().reshape(-1)
    if len(support_x) != len(ys):
        raise DataError(f"support_x has {len(support_x)} rows but support_y has {len(ys)} labels; give one label "
                        "per support row.")
    if len(query_x) == 0:
        raise DataError("query_x is empty; an episode needs at least one query row.")
    if len(ys) == 0 or int(ys.min()) < 0 or int(ys.max()) >= n_way:
        raise DataError(f"support_y must hold episode labels 0..{n_way - 1} (n_way={n_way}); got values "
                        f"{sorted(set(ys.tolist()))[:8]}.")
    counts = torch.bincount(ys, minlength=n_way)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise DataError(f"episode classes {missing[:8]} have no support row (n_way={n_way}); every class needs "
                        "at least one.")
    return ys


# ------------------------------------------------------------------------------------------ torch helpers
def has_trainable(module: nn.Module | None) -> bool:
    """Whether a module has a parameter that requires a gradient (``nn.Identity``: no)."""
    return module is not None and any(p.requires_grad for p in module.parameters())


def device_of(module: nn.Module, fallback: torch.device | None = None) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return fallback if fallback is not None else torch.device("cpu")


def dtype_of(module: nn.Module, fallback: torch.dtype = torch.float32) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return fallback


def to_encoder(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the encoder's device, in its floating dtype (inputs stay as they are for a
    parameter-free encoder, so float64 features stay float64)."""
    for p in module.parameters():
        return x.to(device=p.device, dtype=p.dtype)
    return x


class eval_mode:
    """Context manager: ``module.eval()`` inside, every submodule's own train/eval flag restored
    on exit (``module.train(flag)`` would not restore a mix, such as BatchNorm frozen in eval)."""

    def __init__(self, module: nn.Module, train: bool = False):
        self.module, self.train = module, train

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.module.train(self.train)
        return self.module

    def __exit__(self, *exc):
        for m, flag in self.modes:
            m.training = flag
        return False


def embed(encoder: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Features of ``x`` with the encoder in eval mode (BatchNorm uses its running statistics, so a
    row's features do not depend on the other rows of the batch), without gradients."""
    with torch.no_grad(), eval_mode(encoder):
        if batch_size is None or len(x) <= batch_size:
            return encoder(to_encoder(encoder, x))
        return torch.cat([encoder(to_encoder(encoder, x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def prototypes(z: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class means ``c_k = mean_{i: y_i = k} z_i``, ``(n_way, d)`` (every class present)."""
    onehot = F.one_hot(y.to(z.device), n_way).to(z.dtype)  # (n, N)
    return (onehot.T @ z) / onehot.sum(0)[:, None]


def sq_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2``, ``(len(a), len(b))``, from the differences themselves (exact; the
    ``|a|^2 - 2ab + |b|^2`` expansion of ``cdist`` loses digits when the points are close)."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``cos(a_i, b_j)``, ``(len(a), len(b))``."""
    return F.normalize(a, dim=1, eps=eps) @ F.normalize(b, dim=1, eps=eps).T


class Scale(nn.Module):
    """A positive scalar ``s = exp(log_s)``, learnable or fixed (a buffer), for cosine logits."""

    def __init__(self, value: float, learnable: bool):
        super().__init__()
        t = torch.tensor(float(np.log(value)), dtype=torch.float64)  # exact for float64 features too
        if learnable:
            self.log_s = nn.Parameter(t)
        else:
            self.register_buffer("log_s", t)

    def forward(self) -> torch.Tensor:
        return self.log_s.exp()


class CosineClassifier(nn.Module):
    """``logits = s cos(f, w_k)`` (Baseline++'s classifier, Chen et al. 2019), no bias."""

    def __init__(self, in_features: int, num_classes: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.scale = float(scale)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * cosine_similarity(f, self.weight)


# ------------------------------------------------------------------------------------------ base for methods
class EpisodeMethod(FewShotMethod):
    """A few-shot method whose subclasses implement ``_predict`` (no checks, used inside
    meta-training for selection too) and inherit the checking ``predict_episode``."""

    def predict_episode(self, support_x, support_y, query_x, n_way):
        self._require_setup()
        ys = check_episode(support_x, support_y, query_x, n_way)
        with torch.no_grad():
            return self._predict(support_x, ys, query_x, int(n_way)).detach().cpu()

    def _predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                 n_way: int) -> torch.Tensor:
        raise NotImplementedError

    def _select_predict(self, support_x, support_y, query_x, n_way) -> torch.Tensor:
        """The predictor checkpoints are selected with on meta-val episodes (default: the method's own)."""
        return self._predict(support_x, support_y, query_x, n_way)

    def _before_selection(self, data: MetaData) -> None:
        """Called before each meta-val evaluation during training (SimpleShot refreshes its mean)."""

    def _generator(self, device=None) -> torch.Generator:
        """A generator seeded with the setup seed, made anew per call: every call with the same episode
        draws the same numbers, whatever was predicted before."""
        g = torch.Generator(device=device if device is not None else "cpu")
        g.manual_seed(int(self.seed_))
        return g


def val_accuracy(method: EpisodeMethod, data: MetaData, n_episodes: int) -> tuple[float, float]:
    """Mean accuracy and 95% half-width of ``method._select_predict`` on meta-val episodes ``0..n-1``."""
    accs = []
    with torch.no_grad():
        for i in range(n_episodes):
            ep = data.val.episode(i)
            xs, ys, xq, yq = data.rows(ep)
            logits = method._select_predict(xs, ys.long(), xq, ep.n_way)
            accs.append(float((logits.argmax(1).cpu() == yq).float().mean()))
    return mean_ci95(accs)


def _evaluate_point(method, data, step, losses, val_episodes, t0, where, steps, log) -> dict:
    if data.val is not None:
        method._before_selection(data)
        acc, ci = val_accuracy(method, data, val_episodes)
    else:
        acc, ci = None, None
    loss = float(np.mean(losses)) if losses else float("nan")
    rec = {"step": int(step), "loss": loss, "val_accuracy": acc, "val_ci95": ci,
           "seconds": time.perf_counter() - t0}
    if log is not None:
        va = "no meta-val classes" if acc is None else f"meta-val accuracy {acc:.4f} +- {ci:.4f}"
        log(f"{where}: step {step}/{steps}: loss {loss:.4f}, {va} ({rec['seconds']:.1f} s)")
    return rec


def _selection_loop(method: EpisodeMethod, data: MetaData, *, steps: int, eval_every: int, val_episodes: int,
                    log, where: str, modules: list[nn.Module], step_fn: Callable[[int], float]) -> list[dict]:
    """The loop both trainers share: step 0 (the given weights) is evaluated first, then every
    ``eval_every`` steps and after the last; the best meta-val accuracy (earliest on ties) is
    restored. Without meta-val classes nothing is selected and the last step is kept."""
    t0 = time.perf_counter()
    history: list[dict] = []
    best_acc, best_state, best_step = -np.inf, None, 0
    losses: list[float] = []

    def checkpoint(step):
        nonlocal best_acc, best_state, best_step
        rec = _evaluate_point(method, data, step, losses, val_episodes, t0, where, steps, log)
        losses.clear()
        history.append(rec)
        if rec["val_accuracy"] is not None and rec["val_accuracy"] > best_acc:
            best_acc, best_step = rec["val_accuracy"], step
            best_state = [snapshot(m) for m in modules]

    with eval_mode(modules[0], train=True):
        for m in modules[1:]:
            m.train()
        checkpoint(0)
        for step in range(1, steps + 1):
            losses.append(step_fn(step))
            if step % eval_every == 0 or step == steps:
                checkpoint(step)
    if best_state is not None:
        for m, st in zip(modules, best_state):
            m.load_state_dict(st)
    else:
        best_step = steps
    method.best_step_ = int(best_step)
    method.best_val_accuracy_ = None if best_state is None else float(best_acc)
    method.history_ = history
    for rec in history:
        rec["best"] = rec["step"] == best_step
    if log is not None and best_state is not None:
        log(f"{where}: restored step {best_step} (meta-val accuracy {best_acc:.4f})")
    return history


# ------------------------------------------------------------------------------------------ trainers
def train_episodic(method: EpisodeMethod, data: MetaData, *, steps: int, lr: float, eval_every: int,
                   val_episodes: int, log=None, extra: nn.Module | None = None) -> list[dict]:
    """Episodic meta-training (Snell et al. 2017; Vinyals et al. 2016).

    Step ``t`` draws meta-train episode ``t - 1`` of ``data.train``, embeds its support and query
    rows in one batch with the encoder in train mode (BatchNorm normalises with that episode's
    statistics and updates its running ones), and takes one Adam step on
    ``cross_entropy(method._embedded_logits(z_s, y_s, z_q, N), y_q)``. ``extra`` holds the
    method's own trainable state (a learnable cosine scale), trained and checkpointed with the
    encoder. Checkpoints are selected on the first ``val_episodes`` episodes of ``data.val``.

    Returns the history (see :func:`_selection_loop`): one dict per evaluation with ``step``,
    ``loss`` (mean training loss since the previous evaluation; NaN at step 0), ``val_accuracy``
    (``None`` without meta-val classes), ``val_ci95``, ``seconds`` and ``best`` (the restored one);
    ``method.best_step_`` and ``method.best_val_accuracy_`` record the restored checkpoint.
    """
    method._check_meta_train_data(data)
    steps, eval_every, val_episodes = check_meta_train_args(steps, eval_every, val_episodes)
    encoder = method.encoder_
    modules = [encoder] + ([extra] if extra is not None else [])
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(method.seed_)
        opt = torch.optim.Adam(params, lr=lr)

        def step_fn(step: int) -> float:
            ep = data.train.episode(step - 1)
            xs, ys, xq, yq = data.rows(ep)
            x = to_encoder(encoder, torch.cat([xs, xq]))
            z = encoder(x)
            logits = method._embedded_logits(z[: len(xs)], ys.long().to(z.device), z[len(xs):], ep.n_way)
            loss = F.cross_entropy(logits, yq.long().to(z.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        history = _selection_loop(method, data, steps=steps, eval_every=eval_every, val_episodes=val_episodes,
                                  log=log, where=f"{type(method).__name__} meta-training", modules=modules,
                                  step_fn=step_fn)
    method.meta_trained_ = True
    return history


def meta_train_rows(data: MetaData) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the meta-train classes and their labels as ``0..C-1``."""
    classes = np.asarray(data.train.classes)
    labels = np.asarray(data.labels)
    rows = np.flatnonzero(np.isin(labels, classes))
    return rows, np.searchsorted(classes, labels[rows])


def supervised_pretrain(method: EpisodeMethod, data: MetaData, *, steps: int, lr: float, batch_size: int,
                        make_classifier: Callable[[int], nn.Module], eval_every: int, val_episodes: int,
                        log=None) -> list[dict]:
    """Supervised pre-training on all meta-train classes (Chen et al. 2019, "Baseline" training).

    Step ``t`` draws ``batch_size`` meta-train rows without replacement from
    ``numpy.random.default_rng([seed, t])`` and takes one Adam step (encoder and the classifier
    ``make_classifier(C)``, created under ``torch.manual_seed(seed)``; encoder in train mode) on
    ``cross_entropy(classifier(encoder(x)), y)`` over the ``C`` meta-train classes. Checkpoints are
    selected on meta-val episodes with ``method._select_predict`` (the
    per-episode head the method uses at test time); the classifier is discarded afterwards.
    """
    method._check_meta_train_data(data)
    steps, eval_every, val_episodes = check_meta_train_args(steps, eval_every, val_episodes)
    encoder = method.encoder_
    rows, targets = meta_train_rows(data)
    if len(rows) < 2:
        raise DataError(f"meta-train classes have {len(rows)} row(s); supervised pre-training needs at least 2.")
    bs = min(int(batch_size), len(rows))
    dev = device_of(encoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(method.seed_)
        classifier = make_classifier(len(data.train.classes)).to(device=dev, dtype=dtype_of(encoder))
        params = [p for p in encoder.parameters() if p.requires_grad] + list(classifier.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        targets_t = torch.as_tensor(targets, dtype=torch.long)

        def step_fn(step: int) -> float:
            pick = np.random.default_rng([method.seed_, step]).choice(len(rows), size=bs, replace=False)
            x = to_encoder(encoder, data.inputs[torch.as_tensor(rows[pick])])
            loss = F.cross_entropy(classifier(encoder(x)), targets_t[pick].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        history = _selection_loop(method, data, steps=steps, eval_every=eval_every, val_episodes=val_episodes,
                                  log=log, where=f"{type(method).__name__} pre-training",
                                  modules=[encoder, classifier], step_fn=step_fn)
    return history


class Pretrained(EpisodeMethod):
    """A transfer baseline: prediction needs no meta-training; the optional :meth:`meta_train` is
    supervised pre-training of the encoder (:func:`supervised_pretrain`) with the classifier of
    :meth:`_pretrain_classifier`. Subclasses have ``pretrain_lr`` and ``batch_size`` parameters.
    On an encoder without trainable parameters (cached features) it does nothing and returns ``[]``.
    """

    needs_meta_training = False
    pretrains = True

    def _pretrain_classifier(self, n_classes: int) -> nn.Module:
        return nn.Linear(self.feature_dim_, n_classes)

    def meta_train(self, data: MetaData, *, steps: int, log=None, eval_every: int = 100,
                   val_episodes: int = 100) -> list[dict]:
        if not hasattr(self, "encoder_"):
            raise ConfigError(f"{type(self).__name__}: call setup(encoder, feature_dim) first.")
        check_meta_train_args(steps, eval_every, val_episodes)
        history: list[dict] = []
        if has_trainable(self.encoder_) and steps > 0:
            history = supervised_pretrain(self, data, steps=steps, lr=self.pretrain_lr, batch_size=self.batch_size,
                                          make_classifier=self._pretrain_classifier, eval_every=eval_every,
                                          val_episodes=val_episodes, log=log)
        self.meta_trained_ = True
        return history


# ------------------------------------------------------------------------------------------ per-episode heads
def init_head(d: int, n_way: int, generator: torch.Generator, like: torch.Tensor, bias: bool = True):
    """A new head's ``W ~ U(-1/sqrt(d), 1/sqrt(d))`` (drawn in float64 from ``generator``, so the
    draw does not depend on the features' dtype or device) and ``b = 0``, both requiring gradients
    (``b`` only when ``bias``)."""
    bound = 1.0 / max(d, 1) ** 0.5
    w0 = (torch.rand(n_way, d, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    W = w0.to(device=like.device, dtype=like.dtype).requires_grad_()
    b = torch.zeros(n_way, device=like.device, dtype=like.dtype, requires_grad=bias)
    return W, b


def head_loss_grad(zs: torch.Tensor, ys: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, weight_decay: float,
                   cosine: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss and its analytic gradients ``(loss, dL/dW, dL/db)`` for :func:`fit_head`'s objective.

    With ``P = softmax(logits)``, ``Y`` one-hot and ``G = (P - Y) / n``: linear logits
    ``Z W^T + b`` give ``dW = G^T Z + lambda W``, ``db = 1^T G``; cosine logits ``s Zn Wn^T``
    (rows normalised, ``Wn = W / r``) give ``dWn = s G^T Zn`` and
    ``dW = (dWn - (dWn . wn) wn) / r + lambda W`` row by row (the Jacobian of ``w / ||w||``).
    Written out because autograd plus ``torch.optim`` costs several times more per step on a
    support set of a few rows, and 600 test episodes must fit in seconds.
    """
    n = zs.shape[0]
    if cosine:
        zn = F.normalize(zs, dim=1, eps=1e-8)
        r = W.norm(dim=1, keepdim=True).clamp_min(1e-8)
        wn = W / r
        logits = scale * (zn @ wn.T)
    else:
        logits = zs @ W.T + b
    logp = torch.log_softmax(logits, dim=1)
    loss = -logp.gather(1, ys[:, None]).mean()
    G = logp.exp()
    G[torch.arange(n, device=G.device), ys] -= 1
    G /= n
    if cosine:
        dwn = scale * (G.T @ zn)
        dW = (dwn - (dwn * wn).sum(1, keepdim=True) * wn) / r
        db = torch.zeros_like(b)
    else:
        dW = G.T @ zs
        db = G.sum(0)
    if weight_decay:
        loss = loss + 0.5 * weight_decay * (W * W).sum()
        dW = dW + weight_decay * W
    return loss, dW, db


HEAD_OPTIMIZERS = ("lbfgs", "adam")


def fit_head(zs: torch.Tensor, ys: torch.Tensor, n_way: int, *, steps: int, lr: float, weight_decay: float,
             generator: torch.Generator, cosine: bool = False, scale: float = 10.0,
             optimizer: str = "lbfgs") -> Head:
    """Fit a new head on one episode's support features; return it (:class:`Head`, ``head(z) -> logits``).

    Linear (Chen et al. 2019, Baseline): ``logits = z W^T + b``; cosine (Baseline++):
    ``logits = s cos(z, w_k)``, no bias. ``W`` starts from :func:`init_head`. The objective is

    .. math:: \\frac1n \\sum_i \\mathrm{CE}(\\mathrm{head}(z_i), y_i) + \\frac{\\lambda}{2}\\lVert W\\rVert_F^2,

    which for the linear head is scikit-learn's ``LogisticRegression(C)`` objective divided by
    ``C n`` when ``lambda = 1 / (C n)`` (so both have the same minimiser), minimised full-batch with
    the analytic gradient of :func:`head_loss_grad` by

    - ``optimizer="lbfgs"``: ``torch.optim.LBFGS`` (strong-Wolfe line search, history 10) for at most
      ``steps`` iterations, the linear head on mean-centred support features (an exact
      reparametrisation); ``lr`` is not used. Invariant to the scale of the features, so it
      reaches the minimiser on raw 1280-d backbone features, where Adam's per-coordinate steps of
      size ``lr`` make the support loss vanish along a poor direction long before;
    - ``optimizer="adam"``: ``steps`` steps of ``torch.optim.Adam``'s update (betas 0.9 / 0.999,
      eps 1e-8) written out.
    """
    zs = zs.detach()
    ys = ys.to(zs.device).long()
    with torch.no_grad():
        W, b = init_head(zs.shape[1], n_way, generator, zs, bias=not cosine)
        W, b = W.detach(), b.detach()
    if optimizer == "lbfgs":
        # Linear head: fit on support features centred at their mean mu, an exact
        # reparametrisation (W z + b = W (z - mu) + b', b = b' - W mu; the penalty is on W only) that
        # takes the mean direction, nearly collinear with the bias on non-negative backbone features,
        # out of the problem's conditioning.
        mu = zs.mean(0) if not cosine else None
        z_fit = zs - mu if not cosine else zs
        params = [W] + ([] if cosine else [b])
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, max_eval=2 * steps + 5, history_size=10,
                                tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure():
            with torch.no_grad():
                loss, dW, db = head_loss_grad(z_fit, ys, W, b, weight_decay=weight_decay, cosine=cosine,
                                              scale=scale)
                W.grad = dW
                if not cosine:
                    b.grad = db
            return loss

        opt.step(closure)
        W.grad = b.grad = None
        if not cosine:
            b = b - W @ mu
    elif optimizer == "adam":
        with torch.no_grad():
            b1, b2, eps = 0.9, 0.999, 1e-8
            mW, vW = torch.zeros_like(W), torch.zeros_like(W)
            mb, vb = torch.zeros_like(b), torch.zeros_like(b)
            for t in range(1, steps + 1):
                _, dW, db = head_loss_grad(zs, ys, W, b, weight_decay=weight_decay, cosine=cosine, scale=scale)
                c1, c2 = 1 - b1 ** t, (1 - b2 ** t) ** 0.5
                for p, g, m, v in ((W, dW, mW, vW), (b, db, mb, vb)):
                    if cosine and p is b:
                        continue
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m, v.sqrt().div_(c2).add_(eps), value=-lr / c1)
    else:
        check_choice("optimizer", optimizer, HEAD_OPTIMIZERS)

    return Head(W, b, cosine, scale)


class Head:
    """A fitted per-episode head: ``head(z)`` gives the logits; ``weight`` ``(N, d)`` and ``bias``
    ``(N,)`` (zero and unused for a cosine head) are plain tensors."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, cosine: bool, scale: float):
        self.weight, self.bias, self.cosine, self.scale = weight, bias, cosine, scale

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            return self.scale * cosine_similarity(z, self.weight)
        return z @ self.weight.T + self.bias


# ------------------------------------------------------------------------------------------ layer groups
def layer_groups(module: nn.Module) -> list[list[str]]:
    """An encoder's parameter names in groups, input to output.

    A module with ``layer_groups()`` (a transferkit backbone) gives its own. Otherwise wrappers
    with a single parameter-bearing child are descended, then each parameter-bearing child is a
    group, a normalisation layer (BatchNorm, LayerNorm, GroupNorm) joining the group before it:
    :func:`~transferkit.fewshot.encoders.conv4` has 4 groups (conv + BN each), ``mlp(depth=2)``
    has 2. Parameters held directly by the container form a first group. No parameters: ``[]``.
    """
    if hasattr(module, "layer_groups"):
        return [list(names) for _, names in module.layer_groups()]
    prefix = ""
    while True:
        direct = [n for n, _ in module.named_parameters(recurse=False)]
        kids = [(n, c) for n, c in module.named_children() if any(True for _ in c.parameters())]
        if not direct and len(kids) == 1 and any(True for _ in kids[0][1].children()):
            prefix += kids[0][0] + "."
            module = kids[0][1]
            continue
        break
    groups: list[list[str]] = [[prefix + n for n in direct]] if direct else []
    for n, c in kids:
        names = [f"{prefix}{n}.{pn}" for pn, _ in c.named_parameters()]
        if groups and isinstance(c, NORM_LAYERS):
            groups[-1].extend(names)
        else:
            groups.append(names)
    return groups


# ------------------------------------------------------------------------------------------ metric methods
class MetricMethod(EpisodeMethod):
    """A metric-based method (ProtoNet, Matching Networks): episode logits are a function of the
    support and query embeddings (:meth:`_embedded_logits`), meta-trained by :func:`train_episodic`.

    ``needs_meta_training`` is a property: True once the encoder has trainable parameters (and
    before :meth:`setup`), False on a parameter-free encoder (``nn.Identity`` on cached features),
    where :meth:`meta_train` is a no-op returning ``[]``. Subclasses have an ``lr`` parameter and may
    keep trainable state of their own in ``self.extra_`` (an ``nn.Module`` or ``None``).
    """

    @property
    def needs_meta_training(self) -> bool:  # type: ignore[override]
        enc = getattr(self, "encoder_", None)
        return enc is None or has_trainable(enc)

    def _make_extra(self) -> nn.Module | None:
        return None

    def setup(self, encoder: nn.Module, feature_dim: int, seed: int = 0):
        super().setup(encoder, feature_dim, seed)
        extra = self._make_extra()
        self.extra_ = None if extra is None else extra.to(device_of(encoder))
        return self

    def meta_train(self, data: MetaData, *, steps: int, log=None, eval_every: int = 100,
                   val_episodes: int = 100) -> list[dict]:
        if not hasattr(self, "encoder_"):
            raise ConfigError(f"{type(self).__name__}: call setup(encoder, feature_dim) first.")
        check_meta_train_args(steps, eval_every, val_episodes)
        if not has_trainable(self.encoder_):
            # Nothing to learn that changes a prediction (a learnable cosine scale alone rescales the
            # logits and keeps their argmax), so a parameter-free encoder is used as it is.
            self.meta_trained_ = True
            return []
        return train_episodic(self, data, steps=steps, lr=self.lr, eval_every=eval_every,
                              val_episodes=val_episodes, log=log, extra=self.extra_)

    def _predict(self, support_x, support_y, query_x, n_way):
        z = embed(self.encoder_, torch.cat([support_x, query_x]))
        ns = len(support_x)
        return self._embedded_logits(z[:ns], support_y.to(z.device), z[ns:], n_way)

    def _embedded_logits(self, zs: torch.Tensor, ys: torch.Tensor, zq: torch.Tensor, n_way: int) -> torch.Tensor:
        raise NotImplementedError
