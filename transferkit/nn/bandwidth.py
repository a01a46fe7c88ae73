r"""Kernel bandwidth heuristics and squared distances on NumPy arrays.

The NumPy counterpart of :mod:`transferkit.nn.kernels` (torch): it is shared by the
divergences of :mod:`transferkit.metrics.divergence` (MMD) and the shallow adapters of
:mod:`transferkit.adapt.shallow` (TCA, KMM, KLIEP), so it lives in ``nn/``, below both. It
imports NumPy only (no torch).

References
----------
.. [1] A. Gretton, K. Borgwardt, M. Rasch, B. Schoelkopf and A. Smola. "A Kernel Two-Sample
   Test." JMLR 13, 2012.
"""

from __future__ import annotations

import numpy as np

from .._validation import as_2d, check_number
from ..errors import DataError

__all__ = ["median_bandwidth", "median_heuristic", "pairwise_sq_dists", "pooled_subsample", "row_sq_norms"]


def row_sq_norms(X: np.ndarray) -> np.ndarray:
    """Squared Euclidean norm of each row."""
    return np.einsum("ij,ij->i", X, X)


def pairwise_sq_dists(A, B, a2=None, b2=None) -> np.ndarray:
    """Squared Euclidean distances ``||a_i - b_j||^2`` via the BLAS expansion, clipped at 0
    (``a2``/``b2``: the rows' squared norms, when already known)."""
    a2 = row_sq_norms(A) if a2 is None else a2
    b2 = row_sq_norms(B) if b2 is None else b2
    D = A @ B.T
    D *= -2.0
    D += a2[:, None]
    D += b2[None, :]
    np.maximum(D, 0.0, out=D)
    return D


def pooled_subsample(S: np.ndarray, T: np.ndarray, max_points: int, rng) -> np.ndarray:
    """At most ``max_points`` rows drawn without replacement from the pooled sample (float64)."""
    n_s, n_t = len(S), len(T)
    N = n_s + n_t
    if N <= max_points:
        return np.vstack([S, T]).astype(np.float64, copy=False)
    idx = np.sort(rng.choice(N, size=max_points, replace=False))
    return np.vstack([S[idx[idx < n_s]], T[idx[idx >= n_s] - n_s]]).astype(np.float64, copy=False)


def median_heuristic(Xs, Xt=None, *, max_points: int = 1000, seed: int = 0) -> float:
    r"""Median heuristic bandwidth: the median pairwise Euclidean distance of the pooled sample.

    .. math:: \sigma = \operatorname{median}\{\lVert z_i - z_j \rVert : i < j\}

    computed on a seeded subsample of at most ``max_points`` rows of ``[Xs; Xt]``
    (Gretton et al., 2012, Sec. 8). When more than half of the distances are 0 (duplicated
    rows), the median of the positive distances is used; when all are 0, 1.0.

    Parameters
    ----------
    Xs : array-like of shape (n_s, d)
    Xt : array-like of shape (n_t, d), optional
    max_points : int, default 1000
    seed : int, default 0

    Returns
    -------
    float
    """
    max_points = check_number("max_points", max_points, low=2, integer=True)
    S = as_2d(Xs, "source samples", min_rows=1)
    T = as_2d(Xt, "target samples", min_rows=1) if Xt is not None else S[:0]
    if T.shape[1] != S.shape[1]:
        raise DataError(f"source and target have different feature dimensions ({S.shape[1]} vs {T.shape[1]}).")
    rng = np.random.default_rng(check_number("seed", seed, low=0, integer=True))
    return median_bandwidth(S, T, max_points, rng)


def median_bandwidth(S: np.ndarray, T: np.ndarray, max_points: int, rng) -> float:
    """:func:`median_heuristic` on already checked 2-D arrays, with the generator ``rng``."""
    Z = pooled_subsample(S, T, max_points, rng)
    Z = Z - Z.mean(axis=0)
    D2 = pairwise_sq_dists(Z, Z)
    dist = np.sqrt(D2[np.triu_indices(len(Z), 1)])
    if dist.size == 0:
        return 1.0
    med = float(np.median(dist))
    if med <= 0:
        pos = dist[dist > 0]
        med = float(np.median(pos)) if pos.size else 1.0
    return med
