r"""Gaussian (multi-)kernel matrices in torch, used by the MMD losses (DAN, JAN).

A multi-kernel is the equal-weight mixture of Gaussian kernels whose bandwidths are
multiples of one base bandwidth :math:`\sigma^2`:

.. math::
    k(x, y) = \frac{1}{M} \sum_{m=1}^{M} \exp\!\Big(-\frac{\lVert x - y\rVert^2}{2\, c_m \sigma^2}\Big),

with multipliers :math:`c_m` (default :math:`2^{-2}, \dots, 2^{2}`) and :math:`\sigma^2` from a
heuristic on the pairwise squared distances of the pooled sample (median: Gretton et al.
2012, Sec. 8; mean: the Transfer-Learning-Library DAN/JAN implementation). The heuristic is
computed without gradient, as in the reference implementations: the bandwidth is a
hyper-parameter chosen per batch, not something the feature extractor may inflate to shrink
the MMD.

References
----------
.. [1] A. Gretton, K. Borgwardt, M. Rasch, B. Schoelkopf and A. Smola. "A Kernel Two-Sample
   Test." JMLR 13, 2012.
.. [2] A. Gretton, D. Sejdinovic, H. Strathmann, S. Balakrishnan, M. Pontil, K. Fukumizu and
   B. Sriperumbudur. "Optimal kernel choice for large-scale two-sample tests." NeurIPS 2012.
.. [3] M. Long, Y. Cao, J. Wang and M. Jordan. "Learning Transferable Features with Deep
   Adaptation Networks." ICML 2015.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError

__all__ = [
    "DEFAULT_MULTIPLIERS",
    "bandwidth_heuristic",
    "check_multipliers",
    "gaussian_kernel_matrix",
    "pooled_kernel_blocks",
    "sq_dists",
]

#: Bandwidth multipliers of DAN's five kernels: :math:`2^{-2}, \dots, 2^{2}`.
DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


def sq_dists(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    r"""Pairwise squared Euclidean distances :math:`D_{ij} = \lVert x_i - y_j \rVert^2`.

    Parameters
    ----------
    x : (n, d) tensor
    y : (m, d) tensor, optional
        Defaults to ``x``.

    Returns
    -------
    (n, m) tensor
        Clamped at 0 (the expansion :math:`\lVert x\rVert^2 + \lVert y\rVert^2 - 2x^\top y`
        can round slightly below zero). Unlike ``torch.cdist``, no square root, so the
        gradient is finite at zero distance.
    """
    y = x if y is None else y
    x2 = (x * x).sum(1, keepdim=True)
    y2 = (y * y).sum(1).unsqueeze(0)
    return (x2 + y2 - 2.0 * (x @ y.T)).clamp_min(0.0)


def _median(v: torch.Tensor) -> torch.Tensor:
    # Average of the two middle values, like numpy.median; torch.median returns the lower one
    # and torch.quantile refuses inputs above 16M elements.
    s = v.sort().values
    m = s.numel()
    return 0.5 * (s[(m - 1) // 2] + s[m // 2])


@torch.no_grad()
def bandwidth_heuristic(d2: torch.Tensor, heuristic: str = "median", *, square: bool | None = None) -> torch.Tensor:
    r"""Base bandwidth :math:`\sigma^2` from a matrix of squared distances.

    Parameters
    ----------
    d2 : (n, m) tensor
        Squared distances.
    heuristic
        ``"median"`` or ``"mean"`` of the distances.
    square
        Whether ``d2`` is a square distance matrix of one sample with itself; then only the
        strictly upper triangle is used (the zero diagonal would bias the statistic down).
        Default: ``d2`` is square.

    Returns
    -------
    0-dim tensor
        :math:`\sigma^2`, detached. Falls back to 1 when every distance is 0 (all points equal),
        so the kernel stays finite.
    """
    check_choice("heuristic", heuristic, ("median", "mean"))
    square = d2.shape[0] == d2.shape[1] if square is None else square
    if square and d2.shape[0] > 1:
        i, j = torch.triu_indices(d2.shape[0], d2.shape[1], offset=1, device=d2.device)
        v = d2[i, j]
    else:
        v = d2.reshape(-1)
    h = _median(v) if heuristic == "median" else v.mean()
    return torch.where(h > 0, h, torch.ones_like(h))


def check_multipliers(multipliers: Sequence[float]) -> tuple[float, ...]:
    """Validate bandwidth multipliers (a non-empty sequence of positive numbers)."""
    if isinstance(multipliers, (int, float)):
        multipliers = (multipliers,)
    mult = tuple(float(check_number("multipliers", m, low=0, low_inclusive=False)) for m in multipliers)
    if not mult:
        raise ConfigError("multipliers is empty; give at least one bandwidth multiplier, e.g. (0.5, 1, 2).")
    return mult


def _mix(d2: torch.Tensor, sigma2: torch.Tensor | float, multipliers: Sequence[float]) -> torch.Tensor:
    out = None
    for m in multipliers:
        k = torch.exp(-d2 / (2.0 * m * sigma2))
        out = k if out is None else out + k
    return out / len(multipliers)


def gaussian_kernel_matrix(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    heuristic: str = "median",
    sigma2: float | None = None,
) -> torch.Tensor:
    r"""Multi-Gaussian kernel matrix :math:`K_{ij} = \frac1M\sum_m \exp(-\lVert x_i-y_j\rVert^2/(2 c_m\sigma^2))`.

    Parameters
    ----------
    x : (n, d) tensor
    y : (m, d) tensor, optional
        Defaults to ``x``.
    multipliers
        Bandwidth multipliers :math:`c_m`; ``(1.0,)`` gives a single Gaussian kernel.
    heuristic
        ``"median"`` or ``"mean"`` of the squared distances in ``D(x, y)``; ignored when
        ``sigma2`` is given.
    sigma2
        Fixed base bandwidth :math:`\sigma^2`.

    Returns
    -------
    (n, m) tensor
        Entries in ``(0, 1]``; differentiable in ``x`` and ``y`` (not through the heuristic).
    """
    mult = check_multipliers(multipliers)
    d2 = sq_dists(x, y)
    s2 = bandwidth_heuristic(d2, heuristic, square=y is None) if sigma2 is None else float(
        check_number("sigma2", sigma2, low=0, low_inclusive=False))
    return _mix(d2, s2, mult)


def pooled_kernel_blocks(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    heuristic: str = "median",
    sigma2: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Kernel blocks :math:`K_{xx}, K_{yy}, K_{xy}` with one bandwidth for both samples.

    The bandwidth heuristic runs on the pooled sample :math:`z = [x; y]`, so the three blocks
    use the same kernel, as an MMD estimate requires.

    Parameters
    ----------
    x : (n, d) tensor
    y : (m, d) tensor
    multipliers, heuristic, sigma2
        As in :func:`gaussian_kernel_matrix`.

    Returns
    -------
    tuple of tensors
        ``(n, n)``, ``(m, m)`` and ``(n, m)`` kernel matrices.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise DataError(
            f"kernel inputs must be 2-D with the same number of columns, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    mult = check_multipliers(multipliers)
    n = x.shape[0]
    d2 = sq_dists(torch.cat([x, y], 0))
    s2 = bandwidth_heuristic(d2, heuristic, square=True) if sigma2 is None else float(
        check_number("sigma2", sigma2, low=0, low_inclusive=False))
    k = _mix(d2, s2, mult)
    return k[:n, :n], k[n:, n:], k[:n, n:]
