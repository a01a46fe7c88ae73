"""Speed of the domain divergences against straightforward NumPy implementations, same run.

    python benchmarks/divergence_speed.py [--repeats 3] [--quick]

Rows:

* quadratic MMD^2 (unbiased) + 200-permutation test, 2,000 x 1,280 per domain (float64).
  transferkit: one blockwise pass over the pooled kernel matrix, all permutations at once as
  kernel-block x assignment-matrix products. Straightforward: build the full 4,000 x 4,000 pooled
  kernel matrix, then recompute the statistic for each permutation by indexing it. Both use the
  same median bandwidth and the same 200 permutations, so values and p-values must agree.
* linear-time MMD^2, 100,000 x 1,280 per domain (float32 features, as a backbone produces them).
  Straightforward: cast to float64, shuffle, evaluate h on all pairs at once (full-size
  temporaries). Run in full, no extrapolation.
* sliced Wasserstein-2, 128 directions, 100,000 x 1,280 per domain (float32 features).
  Straightforward: float64, a Python loop over directions (project, sort both, mean squared
  difference). It is run on the first 32 of the same 128 directions and its time is multiplied
  by 4 (cost is linear in the number of directions); the value check compares against
  transferkit with the same 32 directions. POT's ``ot.sliced_wasserstein_distance`` (float64,
  all directions at once) is timed too when POT is installed.

Times are mean ± std (min) over ``--repeats`` runs, after one warm-up call on small data.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from transferkit.metrics import divergence as D

# ----------------------------------------------------------------------------------------------
# straightforward implementations
# ----------------------------------------------------------------------------------------------


def naive_mmd_perm(X, Y, sigma, assignments):
    """Full pooled kernel matrix; the statistic of each split by fancy indexing."""
    Z = np.vstack([X, Y]).astype(np.float64)
    sq = (Z * Z).sum(1)
    K = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0) / (2 * sigma**2))
    stats_ = []
    for col in assignments.T:
        s = col.astype(bool)
        m, n = s.sum(), (~s).sum()
        Kxx, Kyy, Kxy = K[np.ix_(s, s)], K[np.ix_(~s, ~s)], K[np.ix_(s, ~s)]
        stats_.append((Kxx.sum() - np.trace(Kxx)) / (m * (m - 1)) + (Kyy.sum() - np.trace(Kyy)) / (n * (n - 1))
                      - 2 * Kxy.mean())
    stats_ = np.array(stats_)
    p = (1 + np.sum(stats_[1:] >= stats_[0] - 1e-12)) / len(stats_)
    return stats_[0], p


def naive_mmd_linear(X, Y, sigma, seed=0):
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    rng = np.random.default_rng(seed)
    m2 = min(len(X), len(Y)) // 2
    X = X[rng.permutation(len(X))[: 2 * m2]]
    Y = Y[rng.permutation(len(Y))[: 2 * m2]]

    def k(a, b):
        return np.exp(-((a - b) ** 2).sum(1) / (2 * sigma**2))

    x1, x2, y1, y2 = X[0::2], X[1::2], Y[0::2], Y[1::2]
    h = k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)
    return h.mean()


def naive_sliced(X, Y, theta, p=2):
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    w = []
    for th in theta:
        a = np.sort(X @ th)
        b = np.sort(Y @ th)
        w.append(np.mean(np.abs(a - b) ** p))
    return np.mean(w) ** (1 / p)


# ----------------------------------------------------------------------------------------------


def timeit(fn, repeats):
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return np.array(ts), out


def fmt(ts, scale=1.0):
    ts = ts * scale
    sd = ts.std(ddof=1) if len(ts) > 1 else 0.0
    return f"{ts.mean():7.2f} ± {sd:5.2f} ({ts.min():6.2f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (for a smoke test)")
    a = ap.parse_args()
    n_q, n_l, d = (500, 10_000, 256) if a.quick else (2000, 100_000, 1280)
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"{a.repeats} repeats; times in s: mean ± std (min)")

    # warm-up (imports, BLAS thread pools)
    w = rng.standard_normal((50, 8))
    D.mmd(w, w + 1, n_permutations=10), D.mmd_linear(w, w), D.sliced_wasserstein(w, w)

    rows = []

    # --- quadratic MMD + permutations ------------------------------------------------------
    X = rng.standard_normal((n_q, d))
    Y = rng.standard_normal((n_q, d)) + 0.02
    ours_t, ours = timeit(lambda: D.mmd(X, Y, n_permutations=200, seed=0), a.repeats)
    # the same median bandwidth and the same 200 splits as transferkit (same seed, same draws)
    r = np.random.default_rng(0)
    sigma = D._median_bandwidth(X, Y, 1000, r)
    A = D._permutation_assignments(2 * n_q, n_q, 200, r)
    naive_t, (nv, npv) = timeit(lambda: naive_mmd_perm(X, Y, sigma, A), a.repeats)
    rows.append((f"MMD^2_u + 200 perms, {n_q}x{d}/domain", ours_t, naive_t, 1.0,
                 f"value {ours.value:.6g} vs {nv:.6g} (|diff| {abs(ours.value - nv):.1e}); "
                 f"p {ours.p_value:.4f} vs {npv:.4f}"))

    # --- linear MMD ---------------------------------------------------------------------------
    del X, Y, A
    X = rng.standard_normal((n_l, d), dtype=np.float32)
    Y = rng.standard_normal((n_l, d), dtype=np.float32)
    Y += 0.01
    ours_t, ours = timeit(lambda: D.mmd_linear(X, Y, seed=0), a.repeats)
    sigma = ours.details["bandwidth"]
    naive_t, nv = timeit(lambda: naive_mmd_linear(X, Y, sigma, seed=1), a.repeats)
    rows.append((f"linear MMD^2, {n_l:,}x{d}/domain", ours_t, naive_t, 1.0,
                 f"value {ours.value:.3g} vs {nv:.3g} (different random pairings; z={ours.details['z']:.2f})"))

    # --- sliced Wasserstein ---------------------------------------------------------------------
    ours_t, ours = timeit(lambda: D.sliced_wasserstein(X, Y, seed=0), a.repeats)
    theta = np.random.default_rng(0).standard_normal((128, d))  # the directions transferkit draws
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    naive_t, nv = timeit(lambda: naive_sliced(X, Y, theta[:32]), a.repeats)
    ours32 = D.sliced_wasserstein(X, Y, seed=0, n_projections=32).value
    rows.append((f"sliced W2 (128 dirs), {n_l:,}x{d}/domain", ours_t, naive_t, 4.0,
                 f"32 dirs: {ours32:.6g} vs {nv:.6g} (rel diff {abs(ours32 / nv - 1):.1e}); "
                 "naive time = 4 x (32 dirs)"))
    try:
        import ot

        Xd, Yd = X.astype(np.float64), Y.astype(np.float64)
        pot_t, pv = timeit(lambda: ot.sliced_wasserstein_distance(Xd, Yd, n_projections=128, p=2, seed=0),
                           a.repeats)
        rows.append(("  POT sliced_wasserstein_distance (f64)", ours_t, pot_t, 1.0,
                     f"POT {float(pv):.6g} vs ours {ours.value:.6g} (different directions)"))
        del Xd, Yd
    except ImportError:
        pass

    print(f"\n{'task':<42}{'transferkit':>26}{'straightforward':>26}{'ratio':>8}")
    for name, t_ours, t_naive, scale, note in rows:
        ratio = (t_naive.mean() * scale) / t_ours.mean()
        print(f"{name:<42}{fmt(t_ours):>26}{fmt(t_naive, scale):>26}{ratio:>7.1f}x")
        print(f"{'':<4}{note}")


if __name__ == "__main__":
    main()
