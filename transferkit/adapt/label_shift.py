r"""Label shift: estimate the target's class priors without target labels, and correct for them.

Under label shift the class-conditionals stay put, :math:`p_t(x \mid y) = p_s(x \mid y)`, and only
the priors move, :math:`q_k = p_t(y=k) \ne p_k = p_s(y=k)`. Then the Bayes posterior for the
target is the source posterior reweighted by :math:`w_k = q_k / p_k` and renormalised
(:func:`correct_probs`), so all that is missing is :math:`q`:

* ``"bbse"`` (Lipton et al. 2018): with the joint confusion matrix
  :math:`C_{ij} = P_s(\hat y=i, y=j)` of a fixed classifier on held-out labeled source rows and
  the target's prediction rates :math:`\mu_i = P_t(\hat y=i)`, :math:`\mu = C w`; solve by least
  squares, clip :math:`w \ge 0`, :math:`q \propto w \odot C^\top 1`. ``"bbse_soft"`` uses
  probabilities instead of hard predictions in :math:`C` and :math:`\mu`.
* ``"mlls"`` (Saerens et al. 2002): EM for the maximum-likelihood :math:`q` given target
  posteriors :math:`f(x)` calibrated under source priors :math:`p`:
  :math:`r_{nk} \propto (q_k/p_k) f_k(x_n)`, :math:`q_k \leftarrow \frac1n \sum_n r_{nk}`.
  Needs calibrated probabilities (Alexandari et al. 2020 add bias-corrected calibration; not here).

Confidence intervals are percentile bootstraps over both the source and the target rows.

References
----------
Saerens, Latinne, Decaestecker (2002). Adjusting the outputs of a classifier to new a priori
probabilities: a simple procedure. Neural Computation 14(1).
Lipton, Wang, Smola (2018). Detecting and correcting for label shift with black box predictors. ICML.
Alexandari, Kundaje, Shrikumar (2020). Maximum likelihood with bias-corrected calibration is
hard-to-beat at label shift adaptation. ICML.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._validation import check_choice, check_labels, check_number, check_seed
from ..errors import ConfigError, DataError, TransferKitWarning

__all__ = ["LabelShiftEstimate", "estimate_target_priors", "correct_probs", "class_weights_for_priors",
           "prior_matched_counts"]

METHODS = ("bbse", "bbse_soft", "mlls")


@dataclass(frozen=True, eq=False)
class LabelShiftEstimate:
    """Estimated target class priors (arrays of shape ``(K,)``) and how they were obtained.

    ``weights = priors / source_priors`` (0 where a source prior is 0); ``ci_low``/``ci_high`` are
    the ``1 - alpha`` percentile bootstrap bounds (NaN when ``n_bootstrap=0``)."""

    priors: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    source_priors: np.ndarray
    weights: np.ndarray
    method: str
    n_source: int
    n_target: int
    converged: bool
    alpha: float = 0.05
    n_bootstrap: int = 0

    def to_dict(self) -> dict:
        """JSON-safe dict: lists of floats (``None`` for NaN) and plain scalars."""
        def arr(a):
            return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]

        return {"priors": arr(self.priors), "ci_low": arr(self.ci_low), "ci_high": arr(self.ci_high),
                "source_priors": arr(self.source_priors), "weights": arr(self.weights),
                "method": self.method, "n_source": int(self.n_source), "n_target": int(self.n_target),
                "converged": bool(self.converged), "alpha": float(self.alpha),
                "n_bootstrap": int(self.n_bootstrap)}

    def summary(self, class_names=None) -> str:
        """One line per class: ``class 'yes': 0.19 -> 0.42 [0.39, 0.45]`` (source -> target [CI])."""
        k = len(self.priors)
        if class_names is not None and len(class_names) != k:
            raise ConfigError(f"class_names has {len(class_names)} names for {k} classes; pass one name per class.")
        names = [repr(str(c)) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
        ci = f", {100 * (1 - self.alpha):g}% bootstrap CI" if self.n_bootstrap else ""
        head = (f"label shift ({self.method}, {self.n_source} source / {self.n_target} target rows{ci})"
                + ("" if self.converged else " [EM did not converge]") + ":")
        lines = [head]
        for i in range(k):
            band = f" [{self.ci_low[i]:.2f}, {self.ci_high[i]:.2f}]" if np.isfinite(self.ci_low[i]) else ""
            lines.append(f"  class {names[i]}: {self.source_priors[i]:.2f} -> {self.priors[i]:.2f}{band}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- input checks

def _probs(P, name: str, k: int | None = None) -> np.ndarray:
    if hasattr(P, "detach"):
        P = P.detach().cpu().numpy()
    try:
        P = np.asarray(P, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a numeric array of probabilities, got {type(P).__name__}.") from None
    if P.ndim != 2 or P.shape[0] == 0 or P.shape[1] < 2:
        raise DataError(f"{name} must have shape (n_samples, n_classes) with n_classes >= 2, got {P.shape}.")
    if k is not None and P.shape[1] != k:
        raise DataError(f"{name} has {P.shape[1]} columns but n_classes is {k}; pass one column per class.")
    if not np.isfinite(P).all():
        raise DataError(f"{name} contains NaN or infinite values; pass finite probabilities.")
    if P.min() < -1e-6 or P.max() > 1 + 1e-6:
        raise DataError(f"{name} has values outside [0, 1] (min {P.min():.3g}, max {P.max():.3g}); "
                        "pass probabilities (softmax outputs), not logits.")
    s = P.sum(axis=1)
    bad = np.flatnonzero(np.abs(s - 1) > 1e-3)
    if bad.size:
        raise DataError(f"{name} row {bad[0]} sums to {s[bad[0]]:.4g}, not 1 ({bad.size} such rows); "
                        "pass probabilities (softmax outputs), not logits or scores.")
    P = np.clip(P, 0.0, None)
    return P / P.sum(axis=1, keepdims=True)


def _prior_vector(p, name: str, k: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).ravel()
    if p.shape != (k,) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise DataError(f"{name} must be {k} non-negative finite numbers with a positive sum, got {p.tolist()}.")
    return p / p.sum()


def _ratio(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """:math:`q/p`, 0 where ``p == 0`` (a class the source never shows cannot be reweighted)."""
    return np.divide(q, p, out=np.zeros_like(q, dtype=np.float64), where=p > 0)


# --------------------------------------------------------------------------- estimators

def _bbse(Ps, ys, Pt, k: int, soft: bool, warn: bool) -> np.ndarray:
    if soft:
        C = Ps.T @ np.eye(k)[ys] / len(ys)          # C[i, j] = E_s[f_i(x) 1{y=j}]
        mu = Pt.mean(axis=0)
    else:
        C = np.zeros((k, k))
        np.add.at(C, (Ps.argmax(axis=1), ys), 1.0 / len(ys))   # C[pred, true]
        mu = np.bincount(Pt.argmax(axis=1), minlength=k) / len(Pt)
    if warn and (np.linalg.matrix_rank(C) < k or np.linalg.cond(C) > 1e8):
        never = [i for i in range(k) if C[i].sum() == 0]
        why = f" (classes {never} are never predicted on the source rows)" if never else ""
        warnings.warn(f"estimate_target_priors(method='bbse'): the source confusion matrix is singular or "
                      f"ill-conditioned{why}; using the least-squares solution, which may be inaccurate. "
                      "Use a more accurate classifier, more held-out source rows, or method='mlls'.",
                      TransferKitWarning, stacklevel=3)
    w = np.clip(np.linalg.lstsq(C, mu, rcond=None)[0], 0.0, None)
    q = w * C.sum(axis=0)                                     # w_j * P_s(y=j) of the held-out rows
    return q / q.sum() if q.sum() > 0 else C.sum(axis=0)


def _mlls(Pt, ps: np.ndarray, tol: float, max_iter: int):
    """Saerens et al. (2002) EM; returns ``(q, converged, n_iter, last_change)``."""
    q = ps.copy()
    change = np.inf
    for it in range(1, max_iter + 1):
        ratio = _ratio(q, ps)
        s = Pt @ ratio                      # sum_k (q_k/p_k) f_k(x_n): the E-step's normaliser
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
        q_new = ratio * (Pt.T @ inv) / len(Pt)   # mean_n of the adjusted posteriors r_nk
        q_new = q_new / q_new.sum() if q_new.sum() > 0 else ps
        change = float(np.abs(q_new - q).max())
        q = q_new
        if change < tol:
            return q, True, it, change
    return q, False, max_iter, change


def estimate_target_priors(source_probs, source_labels, target_probs, *, method: str = "mlls",
                           n_classes: int | None = None, source_priors=None, n_bootstrap: int = 200,
                           alpha: float = 0.05, seed: int = 0, tol: float = 1e-8,
                           max_iter: int = 1000) -> LabelShiftEstimate:
    """Estimate the target class priors from a classifier's outputs, without target labels.

    Parameters
    ----------
    source_probs : array-like of shape (n_s, K)
        Probabilities of the (fixed, already trained) classifier on **held-out** labeled source
        rows (not its training rows: those are over-confident). May be ``None`` for ``"mlls"``
        when ``source_priors`` is given.
    source_labels : array-like of shape (n_s,)
        Their labels ``0..K-1``.
    target_probs : array-like of shape (n_t, K)
        The classifier's probabilities on unlabeled target rows.
    method : {"mlls", "bbse", "bbse_soft"}
        EM of Saerens et al. (2002), or Black Box Shift Estimation (Lipton et al. 2018) with hard
        (``"bbse"``) or soft (``"bbse_soft"``) predictions.
    n_classes : int, optional
        ``K``; default the number of columns of ``target_probs``.
    source_priors : array-like of shape (K,), optional
        Priors the classifier was trained under (what its probabilities are calibrated to); default
        the class frequencies of ``source_labels``. Normalised to sum 1.
    n_bootstrap : int, default 200
        Bootstrap replicates for the confidence intervals (0: no intervals). Each replicate resamples
        the target rows and the source rows (within each class for BBSE, so every class stays present).
    alpha : float, default 0.05
        ``1 - alpha`` percentile intervals.
    seed : int, default 0
        Seed of the bootstrap.
    tol, max_iter : float, int
        EM stops when no prior changes by more than ``tol``; a :class:`TransferKitWarning` says so
        when ``max_iter`` iterations were not enough.

    Returns
    -------
    LabelShiftEstimate
    """
    check_choice("method", method, METHODS)
    n_bootstrap = check_number("n_bootstrap", n_bootstrap, low=0, integer=True)
    alpha = check_number("alpha", alpha, low=0, high=1, low_inclusive=False, high_inclusive=False)
    tol = check_number("tol", tol, low=0, low_inclusive=False)
    max_iter = check_number("max_iter", max_iter, low=1, integer=True)
    seed = check_seed("seed", seed)
    if n_classes is not None:
        n_classes = check_number("n_classes", n_classes, low=2, integer=True)
    Pt = _probs(target_probs, "target_probs", n_classes)
    k = Pt.shape[1]
    if source_probs is None and (method != "mlls" or source_priors is None):
        raise DataError(f"source_probs is None; method={method!r} needs held-out labeled source probabilities "
                        "(only method='mlls' with source_priors=... can do without them).")
    Ps = ys = None
    if source_probs is not None:
        Ps = _probs(source_probs, "source_probs", k)
        if source_labels is None:
            raise DataError("source_labels is None; pass the labels of the source_probs rows.")
        ys = check_labels(source_labels, len(Ps), "source_labels")
        if ys.max() >= k:
            raise DataError(f"source_labels has class {int(ys.max())} but the probabilities have {k} columns; "
                            "labels must be 0..n_classes-1.")
    counts = np.bincount(ys, minlength=k) if ys is not None else None
    if method != "mlls" and (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise DataError(f"source_labels has no sample of classes {missing}; BBSE needs at least one held-out "
                        "source row per class: add labeled source rows of those classes, or use method='mlls'.")
    ps = _prior_vector(source_priors, "source_priors", k) if source_priors is not None else counts / counts.sum()
    fixed_ps = source_priors is not None or Ps is None

    def fit(Ps_, ys_, Pt_, ps_, warn):
        if method == "mlls":
            q, ok, it, change = _mlls(Pt_, ps_, tol, max_iter)
            if warn and not ok:
                warnings.warn(f"estimate_target_priors(method='mlls'): EM did not converge in {max_iter} "
                              f"iterations (last change {change:.2g} > tol={tol:g}); the priors may be inaccurate. "
                              "Raise max_iter, or check that the probabilities are calibrated.",
                              TransferKitWarning, stacklevel=3)
            return q, ok
        return _bbse(Ps_, ys_, Pt_, k, method == "bbse_soft", warn), True

    q, converged = fit(Ps, ys, Pt, ps, True)
    lo = hi = np.full(k, np.nan)
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        by_class = [np.flatnonzero(ys == c) for c in range(k)] if ys is not None else []
        boot = np.empty((n_bootstrap, k))
        for b in range(n_bootstrap):
            Pt_b = Pt[rng.integers(0, len(Pt), len(Pt))]
            if method == "mlls":
                ps_b = ps
                if not fixed_ps:  # the source priors' own sampling error
                    ps_b = np.bincount(ys[rng.integers(0, len(ys), len(ys))], minlength=k) / len(ys)
                boot[b] = fit(None, None, Pt_b, ps_b, False)[0]
            else:
                idx = np.concatenate([rng.choice(ix, len(ix)) for ix in by_class])
                boot[b] = fit(Ps[idx], ys[idx], Pt_b, ps, False)[0]
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    return LabelShiftEstimate(priors=q, ci_low=lo, ci_high=hi, source_priors=ps, weights=_ratio(q, ps),
                              method=method, n_source=0 if ys is None else len(ys), n_target=len(Pt),
                              converged=bool(converged), alpha=alpha, n_bootstrap=n_bootstrap)


# --------------------------------------------------------------------------- corrections

def correct_probs(probs, source_priors, target_priors) -> np.ndarray:
    r"""Bayes prior correction: :math:`\tilde f_k(x) \propto (q_k / p_k) f_k(x)`, renormalised per row.

    ``probs`` (n, K) are calibrated under ``source_priors`` :math:`p`; the result is the posterior
    under ``target_priors`` :math:`q` when only the priors changed (Saerens et al. 2002, eq. 2.4).
    Classes with :math:`p_k = 0` get 0; a row left with no mass (all of it on classes the target
    lacks) becomes :math:`q` itself, the posterior of an uninformative input."""
    P = _probs(probs, "probs")
    k = P.shape[1]
    p = _prior_vector(source_priors, "source_priors", k)
    q = _prior_vector(target_priors, "target_priors", k)
    R = P * _ratio(q, p)
    s = R.sum(axis=1, keepdims=True)
    return np.where(s > 0, R / np.where(s > 0, s, 1.0), q)


def class_weights_for_priors(labels, target_priors, n_classes: int | None = None) -> np.ndarray:
    """Per-sample weights under which the labeled sample's class distribution equals ``target_priors``.

    :math:`w_i = q_{y_i} / \\hat p_{y_i}` with :math:`\\hat p` the sample's class frequencies, scaled
    to mean 1 (so a weighted mean loss keeps its scale). A class with target mass but no sample
    cannot be matched: a :class:`TransferKitWarning` says so and the others share its mass."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"labels must be a 1-D array of class indices, got shape {y.shape}.")
    y = check_labels(y, len(y), "labels")
    if len(y) == 0:
        raise DataError("labels is empty; pass at least one labeled sample.")
    q = np.asarray(target_priors, dtype=np.float64).ravel()
    k = len(q) if n_classes is None else check_number("n_classes", n_classes, low=1, integer=True)
    q = _prior_vector(q, "target_priors", k)
    if y.max() >= k:
        raise DataError(f"labels has class {int(y.max())} but target_priors has {k} entries; pass one prior per class.")
    p = np.bincount(y, minlength=k) / len(y)
    lost = np.flatnonzero((p == 0) & (q > 0))
    if lost.size:
        warnings.warn(f"class_weights_for_priors: classes {lost.tolist()} have target priors "
                      f"{np.round(q[lost], 3).tolist()} but no labeled sample; their mass goes to the others.",
                      TransferKitWarning, stacklevel=2)
    if q[p > 0].sum() <= 0:
        raise DataError("target_priors put no mass on any class present in labels; nothing to weight.")
    w = _ratio(q, p)[y]
    return w / w.mean()


def prior_matched_counts(total: int, priors, available) -> np.ndarray:
    """Integer per-class counts summing to ``total``, proportional to ``priors``, capped by ``available``.

    Solves :math:`x_c = \\mathrm{clip}(\\lambda\\, p_c, m_c, a_c)` with :math:`\\sum_c x_c =` ``total``
    (water-filling: a capped class's surplus goes to the others in proportion), where
    :math:`m_c = 1` for each class with :math:`p_c > 0` and a sample (when ``total`` allows one each;
    otherwise the largest priors get one), then rounds by largest remainder within the bounds.
    Classes with prior 0 get none."""
    total = check_number("total", total, low=0, integer=True)
    a = np.asarray(available)
    if a.ndim != 1 or not np.all(np.isfinite(a)) or (a < 0).any() or not np.all(a == np.round(a)):
        raise DataError(f"available must be a 1-D list of non-negative whole numbers, got {np.asarray(a).tolist()}.")
    a = a.astype(np.int64)
    p = _prior_vector(priors, "priors", len(a))
    elig = (p > 0) & (a > 0)
    cap = int(a[elig].sum())
    if total > cap:
        raise DataError(f"total={total} but only {cap} samples are available in classes with a positive prior; "
                        f"lower total to at most {cap}.")
    m = np.zeros(len(a), dtype=np.int64)
    order = sorted(np.flatnonzero(elig), key=lambda c: (-p[c], c))
    m[order[:total]] = 1
    hi_b = np.where(elig, a, 0).astype(np.float64)
    x = m.astype(np.float64)
    if total > m.sum():
        lo_lam, hi_lam = 0.0, float(np.max(hi_b[elig] / p[elig]))
        for _ in range(200):  # g(lambda) = sum clip(lambda p, m, a) is continuous and non-decreasing
            lam = 0.5 * (lo_lam + hi_lam)
            if np.clip(lam * p, m, hi_b).sum() < total:
                lo_lam = lam
            else:
                hi_lam = lam
        x = np.clip(hi_lam * p, m, hi_b)
    n = np.clip(np.floor(x + 1e-9).astype(np.int64), m, hi_b.astype(np.int64))
    rem = x - n
    while n.sum() != total:  # largest remainder, ties to the larger prior then the lower index
        if n.sum() < total:
            c = min(np.flatnonzero(n < hi_b), key=lambda c: (-rem[c], -p[c], c))
            n[c] += 1
        else:
            c = min(np.flatnonzero(n > m), key=lambda c: (rem[c], p[c], -c))
            n[c] -= 1
        rem[c] = x[c] - n[c]
    return n
