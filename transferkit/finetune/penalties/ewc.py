"""Elastic weight consolidation (Kirkpatrick et al., 2017) with a diagonal Fisher on source data."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..._registry import register
from ..._validation import check_choice, check_number
from ...errors import ConfigError
from ._base import FrozenHead, Penalty, backbone_and_head_names, check_strength, source_batches, unwrap


class _SourceNet(nn.Module):
    """``source_head(model.features(x))``: the source model whose Fisher EWC needs."""

    def __init__(self, model, head):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x):
        return self.head(self.model.features(x))


def diagonal_fisher(model: nn.Module, source_head, source, *, names=None, fisher: str = "empirical",
                    n_samples: int | None = 500, seed: int = 0, batch_size: int = 64) -> dict[str, torch.Tensor]:
    r"""Diagonal Fisher information of the source model on labeled source samples.

    .. math::

        F_i = \frac{1}{n} \sum_{j=1}^{n} \mathbb E_{y \sim q(\cdot \mid x_j)}
              \left[ \left( \frac{\partial \log p_w(y \mid x_j)}{\partial w_i} \right)^2 \right]

    with per-*sample* gradients (squaring a mini-batch gradient would give a different, biased
    quantity). ``fisher="empirical"``: :math:`q` puts all mass on the observed label (the
    "empirical Fisher"); ``fisher="true"``: :math:`q = p_w`, the model's own predictive
    distribution, summed exactly over the :math:`K` classes (K times the cost).

    The source model is ``source_head(model.features(x))`` in eval mode (BatchNorm uses its
    running statistics). Per-sample gradients use ``torch.func.vmap``; models it cannot
    handle fall back to a loop over samples.

    Parameters
    ----------
    model
        The model whose ``features`` are the shared trunk.
    source_head
        Source classifier (``(W, b)``, ``nn.Linear`` or a module) over the features.
    source
        Labeled source :class:`transferkit.data.DomainDataset`.
    names
        Parameter names to compute the Fisher for (default: every parameter of the trunk).
    n_samples
        Use a seeded random subset of this many labeled source samples (``None``: all).
    seed, batch_size
        Subset seed and chunk size.

    Returns
    -------
    dict
        Parameter name -> tensor of the parameter's shape, non-negative.

    References
    ----------
    Kirkpatrick et al. "Overcoming catastrophic forgetting in neural networks", PNAS 2017;
    Kunstner, Balles & Hennig, "Limitations of the empirical Fisher approximation", NeurIPS 2019.
    """
    check_choice("fisher", fisher, ("empirical", "true"))
    model = unwrap(model)
    head = source_head if isinstance(source_head, FrozenHead) else FrozenHead(source_head)
    dev = next(model.parameters()).device
    head = head.to(dev)
    net = _SourceNet(model, head)
    params = dict(model.named_parameters())
    names = list(names) if names is not None else backbone_and_head_names(model)[0]
    keep = np.flatnonzero(source.labels >= 0)
    if n_samples is not None:
        check_number("n_samples", n_samples, low=1, integer=True)
        if len(keep) > n_samples:
            keep = np.sort(np.random.default_rng(seed).choice(keep, size=int(n_samples), replace=False))
    sub = source.subset(keep)
    was = [m.training for m in model.modules()]
    model.eval()
    acc = {n: torch.zeros_like(params[n]) for n in names}
    count = 0
    try:
        n_par = sum(params[n].numel() for n in names)
        # per-sample gradients of a chunk must fit in ~200 MB
        chunk = int(max(1, min(batch_size, 2e8 // (4 * max(n_par, 1)))))
        for x, y in source_batches(model, sub, chunk, dev):
            if not isinstance(x, torch.Tensor):
                raise ConfigError("the EWC Fisher needs a model whose preprocess returns a tensor (image or "
                                  "tabular inputs); use 'lwf' or 'l2sp' for text models.")
            if fisher == "empirical":
                ys, ws, xs = y, torch.ones(len(y), device=dev), x
            else:
                with torch.no_grad():
                    p = net(x).softmax(1)
                K = p.shape[1]
                xs = x.repeat_interleave(K, 0)
                ys = torch.arange(K, device=dev).repeat(len(y))
                ws = p.reshape(-1)
            sq = _per_sample_sq_grads(net, params, names, xs, ys, ws)
            for n in names:
                acc[n] += sq[n]
            count += len(y)
    finally:
        for m, t in zip(model.modules(), was):
            m.training = t
    return {n: (a / max(count, 1)).detach() for n, a in acc.items()}


def _per_sample_sq_grads(net, params, names, x, y, w) -> dict[str, torch.Tensor]:
    """``sum_j w_j (d(-log p(y_j|x_j))/dw)^2`` over the batch, per parameter name."""
    prefixed = {"model." + n: params[n].detach() for n in names}
    try:
        from torch.func import functional_call, grad, vmap

        def nll(p, xi, yi):
            out = functional_call(net, p, (xi.unsqueeze(0),), strict=False)
            return F.cross_entropy(out, yi.unsqueeze(0))

        g = vmap(grad(nll), in_dims=(None, 0, 0))(prefixed, x, y)
        return {n: torch.einsum("j,j...->...", w, g["model." + n].pow(2)) for n in names}
    except (RuntimeError, NotImplementedError, TypeError):
        out = {n: torch.zeros_like(params[n]) for n in names}
        ps = [params[n] for n in names]
        for j in range(len(y)):
            loss = F.cross_entropy(net(x[j : j + 1]), y[j : j + 1])
            gs = torch.autograd.grad(loss, ps, allow_unused=True)
            for n, gj in zip(names, gs):
                if gj is not None:
                    out[n] += w[j] * gj.detach().pow(2)
        return out


@register("penalty", "ewc")
class EWCPenalty(Penalty):
    r"""Elastic weight consolidation: a per-weight quadratic anchor weighted by the Fisher.

    .. math::

        \Omega(w) = \frac{\lambda}{2} \sum_i F_i \, (w_i - w_i^\star)^2

    :math:`w^\star` are the shared (backbone) weights at the start of fine-tuning, i.e. the
    source solution, and :math:`F` the diagonal Fisher information of the source model
    ``source_head(features(x))`` on labeled source data (:func:`diagonal_fisher`). Both live
    in buffers.

    Bayesian reading: after the source task, the posterior over weights is approximated by a
    Gaussian (Laplace approximation) centred on :math:`w^\star` whose *precision* is
    :math:`N F` (:math:`N` source samples; the Fisher approximates the Hessian of the negative
    log-likelihood). Using it as the prior for the target task gives this penalty with
    :math:`\lambda` standing in for :math:`N` (and for how much to trust the approximation).
    L2-SP (:class:`L2SPPenalty`) is the same prior with an isotropic precision.

    The scale of :math:`F` depends on the source model: the Fisher is an average over samples
    of squared score functions, which are small where the model is confident, so a source
    model that fits its data well needs a large :math:`\lambda` (on the forgetting benchmark's
    tiny CNN, :math:`10^3`-:math:`10^4`). Tune it on validation data.

    Parameters
    ----------
    lam
        :math:`\lambda`, the strength.
    fisher
        ``"empirical"`` (observed labels) or ``"true"`` (expectation under the model).
    n_samples
        Source samples used to estimate the Fisher (seeded subset; ``None``: all).

    References
    ----------
    Kirkpatrick, J. et al. "Overcoming catastrophic forgetting in neural networks", PNAS 2017.
    """

    name = "ewc"
    needs_source_data = True
    needs_source_head = True

    def __init__(self, lam: float = 100.0, fisher: str = "empirical", n_samples: int | None = 500):
        super().__init__()
        self.lam = check_strength("lam", lam)
        self.fisher = check_choice("fisher", fisher, ("empirical", "true"))
        self.n_samples = n_samples if n_samples is None else check_number("n_samples", n_samples, low=1, integer=True)

    @property
    def strength(self) -> float:
        return self.lam

    def _attach(self, model, *, source, source_head, seed, batch_size) -> None:
        body, _ = backbone_and_head_names(model)
        params = dict(model.named_parameters())
        fis = diagonal_fisher(model, source_head, source, names=body, fisher=self.fisher, n_samples=self.n_samples,
                              seed=seed, batch_size=batch_size)
        self._store("star", {n: params[n] for n in body})
        self._store("fisher", fis)

    def fisher_(self) -> dict[str, torch.Tensor]:
        """Parameter name -> the stored Fisher diagonal."""
        return dict(self._stored("fisher"))

    def compute(self, ctx):
        params = dict(unwrap(ctx.model).named_parameters())
        dev = next(iter(params.values())).device
        raw = torch.zeros((), device=dev)
        for (n, star), (_, fis) in zip(self._stored("star"), self._stored("fisher")):
            raw = raw + (fis * (params[n] - star).pow(2)).sum()
        return 0.5 * raw, {}

    def extra_repr(self) -> str:
        return f"lam={self.lam}, fisher={self.fisher!r}, attached={self.attached_}"
