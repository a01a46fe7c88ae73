"""Sharpness: the top eigenvalue of the loss Hessian at the solution a training run found.

A large top eigenvalue ``lambda_max`` of the Hessian ``H = d^2 L / d theta^2`` means the loss
rises quickly along some direction around the solution (a *sharp* minimum); flat minima are
associated with better generalization (Hochreiter & Schmidhuber 1997; Keskar, Mudigere,
Nocedal, Smelyanskiy & Tang 2017, "On large-batch training for deep learning: generalization
gap and sharp minima"). Transfer from a good initialization often lands in flatter regions
(Neyshabur, Sedghi & Zhang 2020, "What is being transferred in transfer learning?").

``H`` is never formed: power iteration only needs Hessian-vector products, computed exactly by
differentiating ``g(theta) . v`` a second time (Pearlmutter 1994, "Fast exact multiplication by
the Hessian"), as in PyHessian (Yao, Gholami, Keutzer & Mahoney 2020).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError


def hessian_vector_product(loss_fn, params: Sequence[torch.Tensor], vector: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``H v`` for the Hessian of ``loss_fn`` with respect to ``params`` (double backward).

    Parameters
    ----------
    loss_fn
        A callable returning the scalar loss, or a sequence of such callables whose *sum* is
        the loss (one per data batch: the product is accumulated term by term, so memory stays
        that of one batch).
    params
        Tensors with ``requires_grad=True``.
    vector
        Tensors shaped like ``params``.

    Returns
    -------
    list of torch.Tensor
        ``H v``, shaped like ``params``.
    """
    terms = list(loss_fn) if isinstance(loss_fn, (list, tuple)) else [loss_fn]
    out = [torch.zeros_like(p) for p in params]
    for term in terms:
        loss = term()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vector) if g is not None)
        if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
            continue  # the loss is linear in params (or does not depend on them): H v = 0
        hv = torch.autograd.grad(dot, params, allow_unused=True)
        for o, h in zip(out, hv):
            if h is not None:
                o.add_(h.detach())
    return out


def top_hessian_eigenvalue(loss_fn, params: Sequence[torch.Tensor], *, n_iter: int = 100, tol: float = 1e-4,
                           seed: int = 0) -> dict:
    """The Hessian eigenvalue of largest magnitude, by power iteration on ``H v`` products.

    Starting from a seeded Gaussian ``v_0``, iterate ``v_{t+1} = H v_t / ||H v_t||`` and
    return the Rayleigh quotient ``lambda_t = v_t^T H v_t`` once
    ``|lambda_t - lambda_{t-1}| <= tol * |lambda_t|`` (or after ``n_iter`` products). The
    iteration converges to the eigenvalue of largest *absolute* value at rate
    ``|lambda_2 / lambda_1|``; at a (local) minimum the Hessian is positive semi-definite and
    this is ``lambda_max``, the sharpness. A negative result means the point is not a minimum.

    Parameters
    ----------
    loss_fn
        Scalar-loss callable, or a sequence of callables whose sum is the loss.
    params
        The tensors the Hessian is taken over (e.g. a model's trainable parameters).
    n_iter
        Maximum number of Hessian-vector products.
    tol
        Relative change of the eigenvalue estimate that stops the iteration.
    seed
        Seed of the start vector (the result is deterministic given the seed).

    Returns
    -------
    dict
        ``eigenvalue`` (float), ``n_iter`` (products used), ``converged`` (bool),
        ``n_params`` (entries of the Hessian's side).
    """
    params = [p for p in params]
    if not params:
        raise ConfigError("top_hessian_eigenvalue needs at least one parameter with requires_grad=True.")
    if any(not p.requires_grad for p in params):
        raise ConfigError("every tensor in params must have requires_grad=True (the Hessian is taken over them).")
    if int(n_iter) < 1:
        raise ConfigError(f"n_iter={n_iter!r} must be a positive integer.")
    gen = torch.Generator().manual_seed(int(seed))
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype=p.dtype, device=p.device) for p in params]
    v = _normalize(v)
    lam, prev, converged, it = 0.0, None, False, 0
    for it in range(1, int(n_iter) + 1):
        hv = hessian_vector_product(loss_fn, params, v)
        lam = float(sum((a * b).sum() for a, b in zip(v, hv)))
        norm = _norm(hv)
        if norm == 0.0:  # v is in the null space (e.g. a linear loss): every eigenvalue seen is 0
            lam, converged = 0.0, True
            break
        v = [h / norm for h in hv]
        if prev is not None and abs(lam - prev) <= tol * max(abs(lam), 1e-12):
            converged = True
            break
        prev = lam
    return {"eigenvalue": lam, "n_iter": it, "converged": converged, "n_params": int(sum(p.numel() for p in params))}


def _norm(vs) -> float:
    return float(torch.sqrt(sum((x.double() ** 2).sum() for x in vs)))


def _normalize(vs):
    n = _norm(vs)
    return [x / n for x in vs]


def model_sharpness(model, dataset, *, max_samples: int = 256, batch_size: int = 64, n_iter: int = 20,
                    tol: float = 1e-3, seed: int = 0, loss: Callable | None = None) -> dict:
    """Top Hessian eigenvalue of a model's mean training loss over its trainable parameters.

    The loss is the mean cross-entropy over up to ``max_samples`` labeled samples of
    ``dataset`` (a seeded subset), with the model in eval mode: no dropout, BatchNorm with its
    running statistics, no augmentation, so the loss is a fixed function of the parameters
    and the estimate is deterministic. Only parameters with ``requires_grad`` (the groups
    training left unfrozen) enter the Hessian.

    Parameters
    ----------
    model
        A :class:`transferkit.nn.TransferModel` (anything with ``preprocess``/``move_inputs``
        and a ``forward`` returning logits).
    dataset
        A labeled :class:`transferkit.data.DomainDataset` (usually the training split).
    max_samples, batch_size
        Subset size and the batch size of the accumulated Hessian-vector products.
    n_iter, tol, seed
        See :func:`top_hessian_eigenvalue`.
    loss
        ``loss(logits, labels) -> scalar`` (mean over the batch); cross-entropy by default.

    Returns
    -------
    dict
        :func:`top_hessian_eigenvalue`'s dict plus ``n_samples``.
    """
    import torch.nn.functional as F

    from ..train.data import make_source

    if dataset.labels is None or not (dataset.labels >= 0).any():
        raise DataError(f"sharpness needs labeled samples; dataset {dataset.name!r} has none.")
    lab = np.flatnonzero(dataset.labels >= 0)
    if len(lab) > max_samples:
        lab = np.sort(np.random.default_rng(seed).choice(lab, size=int(max_samples), replace=False))
    data = dataset.subset(lab)
    prepared = make_source(model, data)  # preprocessed once when small, per batch otherwise
    y = torch.as_tensor(data.labels)
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    loss = loss or F.cross_entropy
    n = len(lab)

    def term(idx):
        def f():
            xb = model.move_inputs(prepared.batch(idx), device)
            if isinstance(xb, torch.Tensor) and xb.is_floating_point() and params:
                xb = xb.to(params[0].dtype)  # a model cast to float64 gets float64 inputs
            return loss(model(xb), y[idx].to(device)) * (len(idx) / n)

        return f

    terms = [term(np.arange(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]
    was = model.training
    model.eval()
    try:
        res = top_hessian_eigenvalue(terms, params, n_iter=n_iter, tol=tol, seed=seed)
    finally:
        model.train(was)
    res["n_samples"] = int(n)
    return res
