r"""Uncertainty a user can trust: proper scores, error and OOD detection, temperature scaling,
ensembles, and a last-layer Laplace approximation.

A transferred model is judged by more than its accuracy. Its probabilities should be
*calibrated* (Guo et al., 2017), its uncertainty should be higher on the samples it gets wrong
and on inputs from outside the training distribution (Hendrycks & Gimpel, 2017), and it should
stay honest when the data shift (Ovadia et al., 2019, who found ensembles the most robust and
temperature scaling, fitted in-distribution, less so under shift). This module collects the
pieces:

- proper scoring rules on predicted probabilities: :func:`negative_log_likelihood`,
  :func:`brier_score`; the per-sample :func:`predictive_entropy`;
- detection AUROCs: :func:`auroc` (Mann-Whitney, ties averaged),
  :func:`misclassification_auroc` (positives = the model's errors) and :func:`ood_auroc`
  (positives = out-of-distribution inputs);
- :func:`uncertainty_report`: accuracy, ECE, NLL, Brier and the AUROCs in one dict;
- post-hoc recalibration: :class:`TemperatureScaling` (one scalar :math:`T` on the logits);
- ensembles: :func:`ensemble_probs` (weighted mean of the members' probabilities) and
  :func:`fit_ensemble_weights` (weights that minimise validation NLL). A *deep ensemble*
  (Lakshminarayanan et al., 2017) is ``ensemble_probs([p_seed0, p_seed1, ...])``: train the same
  model from several seeds and average their predicted probabilities; nothing more is needed;
- :class:`LastLayerLaplace`: a Gaussian posterior over the last linear layer around its trained
  weights (MacKay, 1992; Daxberger et al., 2021), whose predictive softens confidence away from
  the data.

Every function takes NumPy arrays or torch tensors, checks them, and raises a one-line
:class:`~transferkit.errors.DataError` / :class:`~transferkit.errors.ConfigError` naming what was
wrong. Only NumPy and SciPy are used (no torch).

References
----------
Guo, Pleiss, Sun, Weinberger. "On calibration of modern neural networks", ICML 2017.
Ovadia et al. "Can you trust your model's uncertainty? Evaluating predictive uncertainty under
dataset shift", NeurIPS 2019.
Lakshminarayanan, Pritzel, Blundell. "Simple and scalable predictive uncertainty estimation
using deep ensembles", NeurIPS 2017.
Hendrycks, Gimpel. "A baseline for detecting misclassified and out-of-distribution examples in
neural networks", ICLR 2017.
MacKay. "A practical Bayesian framework for backpropagation networks", Neural Computation 1992;
"The evidence framework applied to classification networks", Neural Computation 1992.
Daxberger, Kristiadi, Immer, Eschenhagen, Bauer, Hennig. "Laplace Redux -- effortless Bayesian
deep learning", NeurIPS 2021.
Kristiadi, Hein, Hennig. "Being Bayesian, even just a bit, fixes overconfidence in ReLU
networks", ICML 2020.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator

from .._validation import as_2d, check_choice, check_labels, check_number, check_seed
from ..errors import ConfigError, DataError, TransferKitWarning
from ._base import MetricResult
from .calibration import _check_probs, expected_calibration_error

__all__ = [
    "LastLayerLaplace",
    "TemperatureScaling",
    "auroc",
    "brier_score",
    "ensemble_probs",
    "fit_ensemble_weights",
    "misclassification_auroc",
    "negative_log_likelihood",
    "ood_auroc",
    "predictive_entropy",
    "uncertainty_report",
]

#: Probabilities are clipped here before a log: a single p_y = 0 would make the NLL infinite.
_EPS = 1e-12
#: ``hessian="auto"`` uses the full K(d+1) x K(d+1) matrix up to this many parameters, else Kronecker.
_FULL_MAX_PARAMS = 2048
_SCORES = ("entropy", "max_prob", "margin")


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------

def _renamed(exc: DataError, name: str) -> DataError:
    msg = str(exc)
    return DataError(msg.replace("probs", name, 1) if name != "probs" else msg)


def _probs_y(probs, y, name: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    try:
        return _check_probs(probs, y)
    except DataError as exc:
        raise _renamed(exc, name) from None


def _probs(probs, name: str = "probs") -> np.ndarray:
    """Probabilities without labels, checked like :func:`calibration._check_probs`."""
    if hasattr(probs, "detach"):
        probs = probs.detach().cpu().numpy()
    try:
        P = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a numeric array of probabilities, got {type(probs).__name__}.") from None
    n = P.shape[0] if P.ndim >= 1 else 0
    return _probs_y(P, np.zeros(n, dtype=np.int64), name)[0]


def _softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=-1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=-1, keepdims=True)


def _logits(logits, name: str = "logits") -> np.ndarray:
    """Finite 2-D logits; one column (or a 1-D vector) is a binary logit z, read as [0, z]."""
    Z = as_2d(logits, name, min_rows=1)
    if Z.shape[1] == 1:
        Z = np.concatenate([np.zeros_like(Z), Z], axis=1)
    return Z


def _class_labels(y, n: int, K: int, name: str = "y") -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = check_labels(y, n, name)
    if n and y.max() >= K:
        raise DataError(f"{name} must be in 0..{K - 1} for {K} classes, got the label {int(y.max())}.")
    return y


# --------------------------------------------------------------------------------------------
# proper scores and per-sample uncertainty
# --------------------------------------------------------------------------------------------

def negative_log_likelihood(probs, y) -> MetricResult:
    r"""Mean negative log-likelihood (log loss) of the true classes.

    .. math:: \mathrm{NLL} = -\frac{1}{n} \sum_{i=1}^n \log \max(p_{i, y_i}, 10^{-12})

    A strictly proper scoring rule: its expectation is minimised only by the true conditional
    probabilities, so it rewards calibration and sharpness together (Guo et al., 2017). The
    clipping keeps one zero probability from making it infinite (the count is in ``details``).

    Parameters
    ----------
    probs : (n, K) array
        Predicted probabilities (a 1-D array is a binary positive-class probability).
    y : (n,) int array
        True classes.

    Returns
    -------
    MetricResult
        ``value`` = NLL in nats; ``details``: ``n_samples``, ``n_clipped``.
    """
    P, y = _probs_y(probs, y)
    py = P[np.arange(len(y)), y]
    nll = float(-np.log(np.clip(py, _EPS, None)).mean())
    return MetricResult(name="nll", value=nll, details={"n_samples": int(len(y)), "n_clipped": int((py < _EPS).sum())})


def brier_score(probs, y) -> MetricResult:
    r"""Multiclass Brier score (Brier, 1950).

    .. math:: \mathrm{BS} = \frac{1}{n} \sum_{i=1}^n \sum_{k=1}^K (p_{ik} - [y_i = k])^2

    A proper scoring rule in :math:`[0, 2]`, less sensitive than the NLL to a few confident
    mistakes. For a binary problem this sums over both classes, so it is **twice** the binary
    ``sklearn.metrics.brier_score_loss`` (which scores the positive class only).

    Parameters
    ----------
    probs : (n, K) array
        Predicted probabilities (a 1-D array is a binary positive-class probability).
    y : (n,) int array
        True classes.

    Returns
    -------
    MetricResult
        ``value`` = BS; ``details``: ``n_samples``.
    """
    P, y = _probs_y(probs, y)
    onehot = np.zeros_like(P)
    onehot[np.arange(len(y)), y] = 1.0
    bs = float(((P - onehot) ** 2).sum(axis=1).mean())
    return MetricResult(name="brier", value=bs, details={"n_samples": int(len(y))})


def predictive_entropy(probs) -> np.ndarray:
    r"""Entropy of each predicted distribution, in nats.

    .. math:: H_i = -\sum_{k=1}^K p_{ik} \log p_{ik} \in [0, \log K] \quad (0 \log 0 = 0)

    For an average of stochastic predictions (MC-dropout, an ensemble, Laplace samples) this is
    the *total* uncertainty; see :func:`transferkit.metrics.calibration.mc_dropout_predict` for
    its split into expected entropy and mutual information. For the mean over samples, see
    :func:`transferkit.metrics.information.prediction_entropy`.

    Parameters
    ----------
    probs : (n, K) array
        Predicted probabilities.

    Returns
    -------
    (n,) ndarray
    """
    from scipy.special import entr

    return entr(_probs(probs)).sum(axis=1)


def _uncertainty_score(P: np.ndarray, score: str) -> np.ndarray:
    """A per-sample score that is *larger* for more uncertain predictions."""
    score = check_choice("score", score, _SCORES)
    if score == "entropy":
        from scipy.special import entr

        return entr(P).sum(axis=1)
    if score == "max_prob":  # Hendrycks & Gimpel's maximum softmax probability, negated
        return 1.0 - P.max(axis=1)
    top2 = np.sort(P, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])  # a small margin between the two best classes is uncertain


# --------------------------------------------------------------------------------------------
# AUROC
# --------------------------------------------------------------------------------------------

def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return ranks


def _auroc_value(scores: np.ndarray, positive: np.ndarray, what: str) -> float:
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        warnings.warn(f"AUROC is undefined ({what}): all {len(positive)} samples are "
                      f"{'negatives' if n1 == 0 else 'positives'}; the value is NaN.",
                      TransferKitWarning, stacklevel=3)
        return float("nan")
    r = _average_ranks(scores)
    u = r[positive].sum() - n1 * (n1 + 1) / 2.0  # Mann-Whitney U of the positives
    return float(u / (n1 * n0))


def auroc(scores, labels) -> MetricResult:
    r"""Area under the ROC curve of ``scores`` for detecting ``labels == 1``.

    Computed as the Mann-Whitney statistic with tied scores given their average rank:

    .. math:: \mathrm{AUROC} = \frac{\sum_{i: y_i = 1} r_i - n_1 (n_1 + 1) / 2}{n_1 n_0}
       = P(s_+ > s_-) + \tfrac12 P(s_+ = s_-)

    (equal to ``sklearn.metrics.roc_auc_score``). 0.5 is chance, 1 a perfect detector. With only
    one class present it is undefined: the value is NaN and a
    :class:`~transferkit.errors.TransferKitWarning` says why.

    Parameters
    ----------
    scores : (n,) array
        Detector output, larger = more likely positive.
    labels : (n,) array of 0/1 or bool
        1 (True) for positives.

    Returns
    -------
    MetricResult
        ``value`` = AUROC; ``details``: ``n_positive``, ``n_negative``.
    """
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"scores must be a numeric array, got {type(scores).__name__}.") from None
    lab = np.asarray(labels)
    if s.ndim != 1 or len(s) < 1:
        raise DataError(f"scores must have shape (n_samples,) with n_samples >= 1, got {s.shape}.")
    if lab.shape != s.shape:
        raise DataError(f"labels must have the shape of scores {s.shape}, got {lab.shape}.")
    if not np.isfinite(s).all():
        raise DataError(f"scores contain {int((~np.isfinite(s)).sum())} NaN or infinite values; clean them first.")
    if lab.dtype != bool:
        if not np.isin(lab, (0, 1)).all():
            raise DataError("labels must be 0/1 or boolean (1 = positive), got other values "
                            f"{np.unique(lab[~np.isin(lab, (0, 1))])[:5].tolist()}.")
        lab = lab.astype(bool)
    value = _auroc_value(s, lab, "labels")
    return MetricResult(name="auroc", value=value,
                        details={"n_positive": int(lab.sum()), "n_negative": int((~lab).sum())})


def misclassification_auroc(probs, y, score: str = "entropy") -> MetricResult:
    r"""How well the model's uncertainty detects its own mistakes (Hendrycks & Gimpel, 2017).

    Positives are the misclassified samples (:math:`\arg\max_k p_{ik} \ne y_i`), the detector is
    an uncertainty score that is larger for less confident predictions:

    - ``"entropy"``: predictive entropy :math:`-\sum_k p_{ik} \log p_{ik}`;
    - ``"max_prob"``: :math:`1 - \max_k p_{ik}` (the maximum-softmax-probability baseline);
    - ``"margin"``: :math:`1 - (p_{(1)} - p_{(2)})`, one minus the gap between the two largest.

    If the model gets every sample right (or every sample wrong) there is nothing to detect:
    the value is NaN with a :class:`~transferkit.errors.TransferKitWarning`.

    Parameters
    ----------
    probs : (n, K) array
        Predicted probabilities.
    y : (n,) int array
        True classes.
    score
        The uncertainty score (above).

    Returns
    -------
    MetricResult
        ``value`` = AUROC; ``details``: ``score``, ``n_errors``, ``n_correct``.
    """
    P, y = _probs_y(probs, y)
    s = _uncertainty_score(P, score)
    wrong = P.argmax(axis=1) != y
    value = _auroc_value(s, wrong, "the model classifies every sample " + ("wrongly" if wrong.all() else "correctly"))
    return MetricResult(name="misclassification_auroc", value=value,
                        details={"score": score, "n_errors": int(wrong.sum()), "n_correct": int((~wrong).sum())})


def ood_auroc(probs_in, probs_out, score: str = "entropy") -> MetricResult:
    r"""How well the model's uncertainty separates out-of-distribution inputs from in-distribution
    ones (Hendrycks & Gimpel, 2017; Ovadia et al., 2019).

    Positives are the OOD samples (``probs_out``); the score is one of those of
    :func:`misclassification_auroc` (larger = more uncertain). No labels are needed.

    Parameters
    ----------
    probs_in : (n_in, K) array
        Predicted probabilities on in-distribution samples.
    probs_out : (n_out, K) array
        Predicted probabilities of the same model on OOD samples.
    score
        ``"entropy"``, ``"max_prob"`` or ``"margin"``.

    Returns
    -------
    MetricResult
        ``value`` = AUROC; ``details``: ``score``, ``n_in``, ``n_out``.
    """
    Pi = _probs(probs_in, "probs_in")
    Po = _probs(probs_out, "probs_out")
    if Pi.shape[1] != Po.shape[1]:
        raise DataError(f"probs_in and probs_out have different numbers of classes ({Pi.shape[1]} vs "
                        f"{Po.shape[1]}); pass the same model's predictions on both.")
    s = np.concatenate([_uncertainty_score(Pi, score), _uncertainty_score(Po, score)])
    is_out = np.r_[np.zeros(len(Pi), bool), np.ones(len(Po), bool)]
    value = _auroc_value(s, is_out, "ood")
    return MetricResult(name="ood_auroc", value=value, details={"score": score, "n_in": len(Pi), "n_out": len(Po)})


def uncertainty_report(probs, y, probs_ood=None, n_bins: int = 15, score: str = "entropy") -> dict:
    """Every uncertainty number of one model on one labeled set (and optionally an OOD set).

    Parameters
    ----------
    probs : (n, K) array
        Predicted probabilities on labeled (in-distribution or shifted target) samples.
    y : (n,) int array
        Their true classes.
    probs_ood : (m, K) array, optional
        The same model's probabilities on out-of-distribution inputs; adds ``ood_auroc``.
    n_bins
        Bins of the expected calibration error.
    score
        Uncertainty score of the AUROCs (see :func:`misclassification_auroc`).

    Returns
    -------
    dict of float
        ``n_samples``, ``accuracy``, ``ece``, ``mce``, ``nll``, ``brier``, ``mean_confidence``,
        ``mean_entropy``, ``misclassification_auroc`` (NaN, with a warning, when the model makes
        no error or only errors), and with ``probs_ood`` also ``ood_auroc`` and ``n_ood``.
        Plain floats and ints, ready for JSON (NaN aside).
    """
    P, yy = _probs_y(probs, y)
    n_bins = check_number("n_bins", n_bins, low=1, integer=True)
    ece = expected_calibration_error(P, yy, n_bins=n_bins)
    out = {
        "n_samples": int(len(yy)),
        "accuracy": float((P.argmax(1) == yy).mean()),
        "ece": float(ece.value),
        "mce": float(ece.details["mce"]),
        "nll": float(negative_log_likelihood(P, yy).value),
        "brier": float(brier_score(P, yy).value),
        "mean_confidence": float(P.max(1).mean()),
        "mean_entropy": float(predictive_entropy(P).mean()),
        "misclassification_auroc": float(misclassification_auroc(P, yy, score=score).value),
    }
    if probs_ood is not None:
        Po = _probs(probs_ood, "probs_ood")
        out["ood_auroc"] = float(ood_auroc(P, Po, score=score).value)
        out["n_ood"] = int(len(Po))
    return out


# --------------------------------------------------------------------------------------------
# temperature scaling
# --------------------------------------------------------------------------------------------

def _check_fitted(est, attr: str) -> None:
    if not hasattr(est, attr):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(f"this {type(est).__name__} is not fitted yet; call fit() first.")


class TemperatureScaling(BaseEstimator):
    r"""Post-hoc calibration by one temperature on the logits (Guo et al., 2017).

    .. math:: p(y \mid x) = \mathrm{softmax}(z(x) / T), \qquad
       \hat T = \arg\min_T -\frac1n \sum_i \log \mathrm{softmax}(z_i / T)_{y_i}

    fitted on held-out (validation) logits. :math:`T > 1` softens an over-confident model;
    the argmax, hence the accuracy, never changes. The NLL is convex in :math:`1/T` (a
    log-sum-exp of linear functions), so it is unimodal in :math:`\log T` and a bounded Brent
    search (:func:`scipy.optimize.minimize_scalar`) on :math:`\log T` finds the global minimum
    deterministically. Ovadia et al. (2019) found that a temperature fitted in-distribution
    helps less under dataset shift: fit it on data like the data it will be used on.

    Parameters
    ----------
    bounds
        ``(T_min, T_max)`` of the search; a fitted value at a bound gives a warning.

    Attributes
    ----------
    temperature_ : float
    n_classes_ : int
    nll_before_, nll_after_ : float
        Mean NLL of the fitting data at :math:`T = 1` and at :math:`\hat T`
        (``nll_after_ <= nll_before_``).

    Notes
    -----
    Logits with one column (or a 1-D vector) are a binary model's logit :math:`z`, read as the
    two-class logits :math:`[0, z]`; :meth:`transform` then returns two columns.
    """

    def __init__(self, bounds: tuple[float, float] = (0.01, 100.0)):
        self.bounds = bounds

    def fit(self, logits, y) -> TemperatureScaling:
        """Fit :math:`T` on ``logits`` (n, K) and true classes ``y`` (n,); returns ``self``."""
        from scipy.optimize import minimize_scalar
        from scipy.special import logsumexp

        try:
            lo, hi = (float(b) for b in self.bounds)
        except (TypeError, ValueError):
            raise ConfigError(f"bounds must be two numbers (T_min, T_max), got {self.bounds!r}.") from None
        if not (0 < lo < hi < math.inf):
            raise ConfigError(f"bounds must satisfy 0 < T_min < T_max < inf, got {self.bounds!r}.")
        Z = _logits(logits)
        y = _class_labels(y, len(Z), Z.shape[1])
        rows = np.arange(len(y))

        def nll(log_t: float) -> float:
            Zs = Z / math.exp(log_t)
            return float((logsumexp(Zs, axis=1) - Zs[rows, y]).mean())

        res = minimize_scalar(nll, bounds=(math.log(lo), math.log(hi)), method="bounded",
                              options={"xatol": 1e-8})
        before = nll(0.0)
        log_t, after = (float(res.x), float(res.fun)) if res.fun <= before else (0.0, before)
        self.temperature_ = math.exp(log_t)
        self.n_classes_ = int(Z.shape[1])
        self.nll_before_, self.nll_after_ = before, after
        if min(abs(log_t - math.log(lo)), abs(log_t - math.log(hi))) < 1e-4:
            warnings.warn(f"TemperatureScaling: the fitted temperature {self.temperature_:.4g} is at the bound of "
                          f"{self.bounds!r}; widen bounds or check that the logits are logits (not probabilities).",
                          TransferKitWarning, stacklevel=2)
        elif after < 1e-9:  # below float resolution the NLL is flat: any small T fits as well
            warnings.warn(f"TemperatureScaling: the logits separate the labels perfectly (NLL {after:.2g} at "
                          f"T={self.temperature_:.4g}), so the temperature is not identifiable; fit it on held-out "
                          "data the model was not trained on.", TransferKitWarning, stacklevel=2)
        return self

    def transform(self, logits) -> np.ndarray:
        """Calibrated probabilities :math:`\\mathrm{softmax}(z / \\hat T)`, shape (n, K)."""
        _check_fitted(self, "temperature_")
        Z = _logits(logits)
        if Z.shape[1] != self.n_classes_:
            raise DataError(f"logits have {Z.shape[1]} classes but TemperatureScaling was fitted on "
                            f"{self.n_classes_}; pass the same model's logits.")
        return _softmax(Z / self.temperature_)

    def predict_proba(self, logits) -> np.ndarray:
        """Same as :meth:`transform`."""
        return self.transform(logits)

    def predict(self, logits) -> np.ndarray:
        """The argmax class (unchanged by any temperature)."""
        return self.transform(logits).argmax(axis=1)


# --------------------------------------------------------------------------------------------
# ensembles
# --------------------------------------------------------------------------------------------

def _members(list_of_probs, name: str) -> np.ndarray:
    if hasattr(list_of_probs, "detach"):
        list_of_probs = list_of_probs.detach().cpu().numpy()
    if isinstance(list_of_probs, np.ndarray) and list_of_probs.ndim == 3:
        list_of_probs = list(list_of_probs)
    if not isinstance(list_of_probs, (list, tuple)) or len(list_of_probs) == 0:
        raise DataError(f"{name} must be a non-empty list of (n, K) probability arrays, one per member, "
                        f"got {type(list_of_probs).__name__}.")
    Ps = [_probs(p, f"{name}[{m}]") for m, p in enumerate(list_of_probs)]
    for m, p in enumerate(Ps):
        if p.shape != Ps[0].shape:
            raise DataError(f"{name}[{m}] has shape {p.shape} but {name}[0] has {Ps[0].shape}; "
                            "every member must predict the same samples and classes.")
    return np.stack(Ps)


def ensemble_probs(list_of_probs, weights=None) -> np.ndarray:
    r"""Predictive distribution of an ensemble: the weighted mean of its members' probabilities.

    .. math:: \bar p(y \mid x) = \sum_{m=1}^M w_m \, p_m(y \mid x), \qquad w_m \ge 0,\ \sum_m w_m = 1

    A deep ensemble (Lakshminarayanan et al., 2017) is this with equal weights over models trained
    from different seeds; Ovadia et al. (2019) found it the most reliable uncertainty under
    shift. Average probabilities, not logits: the mixture is what the ensemble predicts.

    Parameters
    ----------
    list_of_probs : list of (n, K) arrays, or an (M, n, K) array
        Each member's probabilities on the same samples.
    weights : (M,) array, optional
        Non-negative member weights, normalised to sum to one (default: equal).

    Returns
    -------
    (n, K) ndarray
    """
    Ps = _members(list_of_probs, "list_of_probs")
    M = len(Ps)
    if weights is None:
        w = np.full(M, 1.0 / M)
    else:
        try:
            w = np.asarray(weights.detach().cpu().numpy() if hasattr(weights, "detach") else weights, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"weights must be {M} numbers, got {type(weights).__name__}.") from None
        if w.shape != (M,):
            raise ConfigError(f"weights must have shape ({M},), one per member, got {w.shape}.")
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}.")
        w = w / w.sum()
    return np.tensordot(w, Ps, axes=1)


def fit_ensemble_weights(list_of_val_probs, y_val) -> np.ndarray:
    r"""Ensemble weights that minimise the validation NLL of the mixture.

    .. math:: \hat w = \arg\min_{w \in \Delta^{M-1}}
       -\frac1n \sum_i \log \sum_m w_m \, p_m(y_i \mid x_i), \qquad w = \mathrm{softmax}(a)

    The objective is convex in :math:`w`; it is minimised over the unconstrained :math:`a`
    (starting from :math:`a = 0`, equal weights) with L-BFGS and its exact gradient, so the
    result is deterministic, and equal members keep equal weights. A member that adds nothing
    gets a weight that tends to 0 (the softmax reaches 0 only in the limit, so expect ~1e-4, not
    0). Fit on validation data, never on the test set.

    Parameters
    ----------
    list_of_val_probs : list of (n, K) arrays, or an (M, n, K) array
        Each member's probabilities on the validation samples.
    y_val : (n,) int array
        Validation classes.

    Returns
    -------
    (M,) ndarray
        Non-negative weights summing to 1; pass them to :func:`ensemble_probs`.
    """
    from scipy.optimize import minimize

    Ps = _members(list_of_val_probs, "list_of_val_probs")
    M, n, K = Ps.shape
    if hasattr(y_val, "detach"):
        y_val = y_val.detach().cpu().numpy()
    y = _class_labels(y_val, n, K, "y_val")
    if M == 1:
        return np.ones(1)
    Py = Ps[:, np.arange(n), y].T  # (n, M): each member's probability of the true class

    def objective(a):
        w = _softmax(a)
        mix = np.clip(Py @ w, _EPS, None)
        gw = -(Py / mix[:, None]).mean(axis=0)
        return float(-np.log(mix).mean()), w * (gw - w @ gw)

    res = minimize(objective, np.zeros(M), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 2000})
    w = _softmax(res.x)
    return w / w.sum()


# --------------------------------------------------------------------------------------------
# last-layer Laplace
# --------------------------------------------------------------------------------------------

class LastLayerLaplace(BaseEstimator):
    r"""Laplace approximation of the posterior over a model's last linear layer.

    The network up to its last layer is kept fixed and gives features :math:`x \in \mathbb R^d`;
    the last layer computes :math:`f(x) = W x + b` with :math:`W \in \mathbb R^{K \times d}`.
    Its parameters, flattened row by row as :math:`\theta = \mathrm{vec}([W \mid b])` (entry
    :math:`k(d+1) + j` is :math:`W_{kj}`, entry :math:`k(d+1) + d` is :math:`b_k`), get the
    Gaussian posterior (MacKay, 1992; Daxberger et al., 2021)

    .. math::

        p(\theta \mid D) \approx \mathcal N(\theta_*, \Sigma), \qquad
        \Sigma^{-1} = H + \lambda I, \qquad
        H = \sum_i J_i^\top \Lambda_i J_i = \sum_i \Lambda_i \otimes \phi_i \phi_i^\top

    around the trained (MAP) weights :math:`\theta_*`, with :math:`\phi = [x, 1]`,
    :math:`J_i = I_K \otimes \phi_i^\top` the Jacobian of the logits, and the prior
    :math:`\theta \sim \mathcal N(\theta_0, \lambda^{-1} I)`. :math:`\Lambda_i` is the Hessian of
    the negative log-likelihood in the outputs: :math:`\mathrm{diag}(p_i) - p_i p_i^\top` for
    softmax classification, :math:`I_K / \sigma^2` for Gaussian regression. Because the model
    is linear in :math:`\theta`, this generalised Gauss-Newton matrix *is* the Hessian of the
    negative log-likelihood, and for regression the approximation is exact (Bayesian linear
    regression).

    Predictions use the Gaussian over the logits it implies,
    :math:`f(x) \sim \mathcal N(\mu, S)` with :math:`\mu = \theta_*`'s logits and
    :math:`S = J \Sigma J^\top` (K x K):

    - classification, ``link="probit"``: :math:`p = \mathrm{softmax}\bigl(\mu_k /
      \sqrt{1 + \tfrac{\pi}{8} S_{kk}}\bigr)`, the probit approximation of
      :math:`E[\mathrm{softmax}(f)]` (MacKay, 1992; Daxberger et al., 2021, eq. 8). It uses only
      the variances :math:`S_{kk}`: a variance shared by all logits (which the softmax ignores)
      still shrinks them, so with a weak prior (small :math:`\lambda`) it is less confident than
      the exact expectation (on a 3-class toy, by up to 0.2 in probability at :math:`\lambda=0.3`,
      within 0.025 at :math:`\lambda=3`); ``"mc"`` uses the full covariance;
    - classification, ``link="mc"``: the mean of :math:`\mathrm{softmax}(f)` over ``n_samples``
      draws of :math:`f \sim \mathcal N(\mu, S)` (seeded; sampling logits rather than weights is
      the same distribution at a fraction of the cost);
    - regression: the predictive :math:`\mathcal N(\mu, \mathrm{diag}(S) + \sigma^2)`.

    Far from the data :math:`S` grows quadratically with :math:`\|x\|` while :math:`\mu` grows
    linearly, so the confidence stays below one instead of tending to it (Kristiadi et al., 2020).

    **A source prior.** Passing the pretrained / source head as ``prior_mean`` makes the prior
    :math:`\mathcal N(\theta_{\mathrm{source}}, \lambda^{-1} I)`, whose negative log is the
    L2-SP penalty :math:`\tfrac\lambda2 \|\theta - \theta_{\mathrm{source}}\|^2` (Li et al., 2018):
    a head fine-tuned with L2-SP is the MAP of exactly this model. The prior mean does not change
    :math:`\Sigma`; it enters the marginal likelihood (:meth:`log_marginal_likelihood`, used by
    ``fit_prior_precision(method="marglik")``). The Laplace posterior is centred at the weights
    you pass; they are the MAP only if they were trained with the same prior.

    Parameters
    ----------
    prior_precision
        :math:`\lambda > 0` (tune it with :meth:`fit_prior_precision`).
    prior_mean
        :math:`\theta_0`: ``None`` (zero), a pair ``(weight (K, d), bias (K,))``, or an array of
        shape (K, d+1) or (K(d+1),) in the layout above (without a bias: (K, d) or (K d,)).
    likelihood
        ``"classification"`` (softmax) or ``"regression"`` (Gaussian with ``sigma_noise``).
    sigma_noise
        :math:`\sigma`, the observation noise standard deviation of regression.
    link
        ``"probit"`` or ``"mc"`` (classification).
    n_samples, seed
        Draws and seed of ``link="mc"``.
    hessian
        Structure of :math:`H`:

        - ``"full"``: the exact K(d+1) x K(d+1) matrix (memory :math:`O(K^2 d^2)`);
        - ``"kron"``: the Kronecker factorisation :math:`H \approx (\tfrac1n \sum_i \Lambda_i)
          \otimes \sum_i \phi_i \phi_i^\top` (KFAC; Daxberger et al., 2021), exact for regression;
        - ``"diag"``: the diagonal of :math:`H` (cheapest, ignores all correlations; its marginal
          variances are never larger than the full ones);
        - ``"auto"`` (default): ``"full"`` up to 2048 parameters, else ``"kron"``.

        Each structure is stored through its eigendecomposition, so changing :math:`\lambda`
        (:meth:`fit_prior_precision`) costs no refactorisation.

    Attributes
    ----------
    posterior_mean_ : (P,) ndarray
        :math:`\theta_*` flattened as above (P = K(d+1), or K d without bias).
    posterior_variance_ : (P,) ndarray
        Marginal posterior variances :math:`\mathrm{diag}(\Sigma)`.
    prior_precision_ : float
        The :math:`\lambda` in use (``prior_precision``, or the one chosen by
        :meth:`fit_prior_precision`).
    hessian_ : str
        The structure used (``"auto"`` resolved).
    n_outputs_, n_features_in_ : int

    References
    ----------
    MacKay 1992; Daxberger et al. 2021; Kristiadi et al. 2020 (module docstring). Li, Grandvalet,
    Davoine. "Explicit inductive bias for transfer learning with convolutional networks" (L2-SP),
    ICML 2018.
    """

    def __init__(self, prior_precision: float = 1.0, prior_mean=None, likelihood: str = "classification",
                 sigma_noise: float = 1.0, link: str = "probit", n_samples: int = 100, seed: int = 0,
                 hessian: str = "auto"):
        self.prior_precision = prior_precision
        self.prior_mean = prior_mean
        self.likelihood = likelihood
        self.sigma_noise = sigma_noise
        self.link = link
        self.n_samples = n_samples
        self.seed = seed
        self.hessian = hessian

    # ---- fitting ---------------------------------------------------------------------------

    def _check_params(self) -> None:
        check_number("prior_precision", self.prior_precision, low=0, low_inclusive=False)
        check_choice("likelihood", self.likelihood, ("classification", "regression"))
        check_number("sigma_noise", self.sigma_noise, low=0, low_inclusive=False)
        check_choice("link", self.link, ("probit", "mc"))
        check_number("n_samples", self.n_samples, low=1, integer=True)
        check_seed("seed", self.seed)
        check_choice("hessian", self.hessian, ("auto", "full", "kron", "diag"))

    def _phi(self, features, name: str = "features") -> np.ndarray:
        X = as_2d(features, name, min_rows=1)
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise DataError(f"{name} have {X.shape[1]} columns but the layer has {self.n_features_in_} inputs; "
                            "pass features from the same backbone.")
        return np.concatenate([X, np.ones((len(X), 1))], axis=1) if self._has_bias else X

    def _prior_mean(self, K: int, D: int) -> np.ndarray:
        m = self.prior_mean
        if m is None:
            return np.zeros(K * D)
        if isinstance(m, (tuple, list)) and len(m) == 2 and not np.isscalar(m[0]):
            if not self._has_bias:
                raise ConfigError("prior_mean is a (weight, bias) pair but fit() got bias=None; "
                                  "pass only the weight (K, d).")
            W0 = as_2d(m[0], "prior_mean weight", min_rows=1)
            W0 = W0.T if np.ndim(m[0]) == 1 else W0
            b0 = np.asarray(m[1].detach().cpu().numpy() if hasattr(m[1], "detach") else m[1], dtype=np.float64)
            if W0.shape != (K, D - 1) or b0.shape != (K,) or not np.isfinite(b0).all():
                raise ConfigError(f"prior_mean (weight, bias) must have shapes ({K}, {D - 1}) and ({K},) like the "
                                  f"layer, got {W0.shape} and {b0.shape}.")
            return np.concatenate([W0, b0[:, None]], axis=1).ravel()
        try:
            a = np.asarray(m.detach().cpu().numpy() if hasattr(m, "detach") else m, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"prior_mean must be None, (weight, bias) or an array, got {type(m).__name__}.") from None
        if a.size != K * D or a.ndim not in (1, 2) or (a.ndim == 2 and a.shape != (K, D)):
            raise ConfigError(f"prior_mean must have shape ({K}, {D}) or ({K * D},) (the layer's [weight | bias]), "
                              f"got {a.shape}.")
        if not np.isfinite(a).all():
            raise ConfigError("prior_mean contains NaN or infinite values.")
        return a.ravel()

    def fit(self, features, targets, weight, bias=None) -> LastLayerLaplace:
        """Build the posterior of the layer ``weight`` (K, d), ``bias`` (K,) (or ``None`` for a
        layer without bias) from training ``features`` (n, d) and ``targets``: class indices (n,)
        for classification, values (n,) or (n, K) for regression. Returns ``self``."""
        self._check_params()
        for attr in ("n_features_in_", "_has_bias"):
            self.__dict__.pop(attr, None)
        W = as_2d(weight, "weight", min_rows=1)
        if np.ndim(weight) == 1:  # a single output's weight vector
            W = W.T
        K, d = W.shape
        self._has_bias = bias is not None
        if self._has_bias:
            b = np.asarray(bias.detach().cpu().numpy() if hasattr(bias, "detach") else bias, dtype=np.float64).ravel()
            if b.shape != (K,):
                raise DataError(f"bias must have shape ({K},) to match weight {W.shape}, got {np.shape(bias)}.")
            if not np.isfinite(b).all():
                raise DataError("bias contains NaN or infinite values.")
            theta = np.concatenate([W, b[:, None]], axis=1)
        else:
            theta = W
        X = as_2d(features, "features", min_rows=1)
        if X.shape[1] != d:
            raise DataError(f"features have {X.shape[1]} columns but weight has {d} (shape {W.shape}); "
                            "pass the inputs of that layer.")
        Phi = self._phi(X)
        n, D = Phi.shape
        F = Phi @ theta.T  # (n, K) outputs at the MAP
        if self.likelihood == "classification":
            if K < 2:
                raise DataError(f"classification needs a weight with K >= 2 rows (one per class), got {W.shape}; "
                                "for a single logit z, pass the two rows [0, z].")
            y = _class_labels(targets.detach().cpu().numpy() if hasattr(targets, "detach") else targets, n, K,
                              "targets")
            logp = F - F.max(1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
            self._log_lik = float(logp[np.arange(n), y].sum())
            Pm = np.exp(logp)
        else:
            T = as_2d(targets, "targets", min_rows=1)
            if T.shape != (n, K):
                raise DataError(f"targets must have shape ({n},) or ({n}, {K}) for {K} outputs, "
                                f"got {np.shape(targets)}.")
            s2 = float(self.sigma_noise) ** 2
            self._log_lik = float(-0.5 * n * K * math.log(2 * math.pi * s2) - ((T - F) ** 2).sum() / (2 * s2))
            self._squeeze = np.ndim(targets) == 1
        structure = self.hessian
        if structure == "auto":
            structure = "full" if K * D <= _FULL_MAX_PARAMS else "kron"
        self._K, self._D = K, D
        self._build(Phi, Pm if self.likelihood == "classification" else None, structure)
        self.hessian_ = structure
        self.posterior_mean_ = theta.ravel().copy()
        self._prior_dist2 = float(((self.posterior_mean_ - self._prior_mean(K, D)) ** 2).sum())
        self.n_outputs_, self.n_features_in_ = K, d
        self.prior_precision_ = float(self.prior_precision)
        self._set_variance()
        return self

    def _build(self, Phi: np.ndarray, Pm: np.ndarray | None, structure: str) -> None:
        """Store H through its eigendecomposition (Pm: MAP probabilities, None for regression)."""
        K, D = self._K, self._D
        n = len(Phi)
        inv_s2 = 1.0 / float(self.sigma_noise) ** 2
        if structure == "full":
            if Pm is None:
                H = np.kron(np.eye(K), Phi.T @ Phi) * inv_s2
            else:  # sum_i (diag(p_i) - p_i p_i^T) kron phi_i phi_i^T, in row chunks to bound memory
                H = np.zeros((K * D, K * D))
                step = max(1, 2**22 // (K * D))
                for s in range(0, n, step):
                    Ph, P = Phi[s:s + step], Pm[s:s + step]
                    Zc = (P[:, :, None] * Ph[:, None, :]).reshape(len(Ph), K * D)
                    H -= Zc.T @ Zc
                    for k in range(K):
                        H[k * D:(k + 1) * D, k * D:(k + 1) * D] += (Ph * P[:, k:k + 1]).T @ Ph
            H = (H + H.T) / 2
            h, V = np.linalg.eigh(H)
            self._eig = {"h": np.clip(h, 0.0, None), "V": V}
        elif structure == "kron":
            G = np.eye(K) * inv_s2 if Pm is None else (np.diag(Pm.sum(0)) - Pm.T @ Pm) / n
            g, QG = np.linalg.eigh((G + G.T) / 2)
            a, QA = np.linalg.eigh(Phi.T @ Phi)
            self._eig = {"g": np.clip(g, 0.0, None), "QG": QG, "a": np.clip(a, 0.0, None), "QA": QA}
        else:
            w = np.full((n, K), inv_s2) if Pm is None else Pm * (1.0 - Pm)
            self._eig = {"h": (w.T @ (Phi ** 2))}  # (K, D): diag of H per parameter
        self._structure = structure

    def _eigenvalues(self) -> np.ndarray:
        e = self._eig
        if self._structure == "kron":
            return np.outer(e["g"], e["a"]).ravel()
        return e["h"].ravel()

    def _set_variance(self) -> None:
        lam, e = self.prior_precision_, self._eig
        if self._structure == "full":
            self.posterior_variance_ = (e["V"] ** 2) @ (1.0 / (e["h"] + lam))
        elif self._structure == "kron":
            Dinv = 1.0 / (np.outer(e["g"], e["a"]) + lam)
            self.posterior_variance_ = ((e["QG"] ** 2) @ Dinv @ (e["QA"] ** 2).T).ravel()
        else:
            self.posterior_variance_ = (1.0 / (e["h"] + lam)).ravel()

    # ---- the posterior as matrices (small layers, tests) ----------------------------------

    def posterior_precision(self) -> np.ndarray:
        """The dense (P, P) posterior precision :math:`H + \\lambda I` (P = K(d+1))."""
        _check_fitted(self, "posterior_mean_")
        return self._dense(lambda ev: ev + self.prior_precision_)

    def posterior_covariance(self) -> np.ndarray:
        """The dense (P, P) posterior covariance :math:`\\Sigma = (H + \\lambda I)^{-1}`."""
        _check_fitted(self, "posterior_mean_")
        return self._dense(lambda ev: 1.0 / (ev + self.prior_precision_))

    def _dense(self, fn) -> np.ndarray:
        e = self._eig
        if self._structure == "full":
            return (e["V"] * fn(e["h"])) @ e["V"].T
        if self._structure == "kron":
            Q = np.kron(e["QG"], e["QA"])
            return (Q * fn(np.outer(e["g"], e["a"]).ravel())) @ Q.T
        return np.diag(fn(e["h"].ravel()))

    # ---- predictive -----------------------------------------------------------------------

    def _function_cov(self, Phi: np.ndarray, full: bool) -> np.ndarray:
        """Covariance of the outputs, J Sigma J^T: (n, K, K) when ``full``, else its diagonal (n, K)."""
        K, D, lam, e = self._K, self._D, self.prior_precision_, self._eig
        n = len(Phi)
        if self._structure == "diag":
            var = Phi ** 2 @ (1.0 / (e["h"] + lam)).T  # (n, K)
            return np.einsum("nk,kl->nkl", var, np.eye(K)) if full else var
        if self._structure == "kron":
            Dinv = 1.0 / (np.outer(e["g"], e["a"]) + lam)  # (K, D)
            c = ((Phi @ e["QA"]) ** 2) @ Dinv.T  # (n, K): the output covariance in G's eigenbasis
            if full:
                return np.einsum("ka,na,la->nkl", e["QG"], c, e["QG"])
            return c @ (e["QG"] ** 2).T
        V4 = e["V"].reshape(K, D, K * D)
        w = 1.0 / (e["h"] + lam)
        out = np.empty((n, K, K) if full else (n, K))
        step = max(1, 2**22 // (K * K * D))
        for s in range(0, n, step):
            M = np.einsum("nj,kjp->nkp", Phi[s:s + step], V4)  # J_i V
            out[s:s + step] = (np.einsum("nkp,p,nlp->nkl", M, w, M) if full else np.einsum("nkp,p->nk", M ** 2, w))
        return out

    def _mean(self, Phi: np.ndarray) -> np.ndarray:
        return Phi @ self.posterior_mean_.reshape(self._K, self._D).T

    def _proba(self, Phi: np.ndarray) -> np.ndarray:
        mu = self._mean(Phi)
        if self.link == "probit":
            var = self._function_cov(Phi, full=False)
            return _softmax(mu / np.sqrt(1.0 + math.pi / 8.0 * var))
        S = self._function_cov(Phi, full=True)
        ev, U = np.linalg.eigh(S)
        L = U * np.sqrt(np.clip(ev, 0.0, None))[:, None, :]  # S = L L^T
        rng = np.random.default_rng(self.seed)
        n, K = mu.shape
        out = np.zeros((n, K))
        for _ in range(int(self.n_samples)):
            z = rng.standard_normal((n, K))
            out += _softmax(mu + np.einsum("nkl,nl->nk", L, z))
        return out / int(self.n_samples)

    def predict_proba(self, features) -> np.ndarray:
        """Predictive class probabilities (n, K) (classification; ``link`` decides how)."""
        _check_fitted(self, "posterior_mean_")
        if self.likelihood != "classification":
            raise ConfigError("predict_proba is for likelihood='classification'; use predict() for regression.")
        return self._proba(self._phi(features))

    def predict(self, features):
        """Regression: the predictive ``(mean, variance)``, each (n,) (or (n, K) for K outputs
        or 2-D targets), variance = :math:`x^\\top \\Sigma x + \\sigma^2`. Classification: the
        argmax class of :meth:`predict_proba`."""
        _check_fitted(self, "posterior_mean_")
        Phi = self._phi(features)
        if self.likelihood == "classification":
            return self._proba(Phi).argmax(axis=1)
        mu = self._mean(Phi)
        var = self._function_cov(Phi, full=False) + float(self.sigma_noise) ** 2
        return (mu[:, 0], var[:, 0]) if self._squeeze and self._K == 1 else (mu, var)

    # ---- prior precision ------------------------------------------------------------------

    def log_marginal_likelihood(self, prior_precision: float | None = None) -> float:
        r"""Laplace estimate of the log evidence of the training data (MacKay, 1992):

        .. math:: \log p(D \mid \lambda) \approx \log p(D \mid \theta_*)
           - \tfrac\lambda2 \|\theta_* - \theta_0\|^2 + \tfrac P2 \log\lambda
           - \tfrac12 \log\det(H + \lambda I)

        Exact for regression when :math:`\theta_*` is the posterior mean (ridge with
        :math:`\lambda \sigma^2`). ``prior_precision`` defaults to ``prior_precision_``."""
        _check_fitted(self, "posterior_mean_")
        lam = self.prior_precision_ if prior_precision is None else check_number(
            "prior_precision", prior_precision, low=0, low_inclusive=False)
        ev = self._eigenvalues()
        return float(self._log_lik - 0.5 * lam * self._prior_dist2 + 0.5 * len(ev) * math.log(lam)
                     - 0.5 * np.log(ev + lam).sum())

    def fit_prior_precision(self, features_val=None, y_val=None, grid=None, method: str = "nll") -> LastLayerLaplace:
        r"""Choose :math:`\lambda` from ``grid`` (default ``np.logspace(-4, 4, 33)``) and use it.

        ``method="nll"`` (default) picks the :math:`\lambda` with the lowest predictive NLL on the
        validation set ``features_val``, ``y_val`` (Daxberger et al., 2021: the most reliable choice
        for predictions); ``method="marglik"`` maximises :meth:`log_marginal_likelihood` on the
        training data (MacKay's evidence framework; needs no validation data). The MAP weights are
        not refitted. Ties go to the smallest :math:`\lambda`. Sets ``prior_precision_``,
        ``prior_precision_grid_`` and ``prior_precision_scores_`` (NLL, or minus the log evidence:
        lower is better); returns ``self``."""
        _check_fitted(self, "posterior_mean_")
        method = check_choice("method", method, ("nll", "marglik"))
        if grid is None:
            grid = np.logspace(-4, 4, 33)
        try:
            g = np.asarray(grid, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise ConfigError(f"grid must be a list of positive numbers, got {type(grid).__name__}.") from None
        if g.size == 0 or not np.isfinite(g).all() or (g <= 0).any():
            raise ConfigError(f"grid must be a non-empty list of finite positive precisions, got {g.tolist()[:8]}.")
        scores = np.empty(len(g))
        if method == "marglik":
            for i, lam in enumerate(g):
                scores[i] = -self.log_marginal_likelihood(lam)
        else:
            if features_val is None or y_val is None:
                raise ConfigError("method='nll' needs features_val and y_val (validation data); "
                                  "or use method='marglik' on the training data.")
            Phi = self._phi(features_val, "features_val")
            if self.likelihood == "classification":
                yv = _class_labels(y_val.detach().cpu().numpy() if hasattr(y_val, "detach") else y_val,
                                   len(Phi), self._K, "y_val")
            else:
                yv = as_2d(y_val, "y_val", min_rows=1)
                if yv.shape != (len(Phi), self._K):
                    raise DataError(f"y_val must have shape ({len(Phi)},) or ({len(Phi)}, {self._K}), "
                                    f"got {np.shape(y_val)}.")
            keep = self.prior_precision_
            try:
                for i, lam in enumerate(g):
                    self.prior_precision_ = float(lam)
                    if self.likelihood == "classification":
                        p = self._proba(Phi)[np.arange(len(yv)), yv]
                        scores[i] = -np.log(np.clip(p, _EPS, None)).mean()
                    else:
                        mu = self._mean(Phi)
                        var = self._function_cov(Phi, full=False) + float(self.sigma_noise) ** 2
                        scores[i] = (0.5 * np.log(2 * math.pi * var) + (yv - mu) ** 2 / (2 * var)).sum(1).mean()
            finally:
                self.prior_precision_ = keep
        self.prior_precision_grid_, self.prior_precision_scores_ = g, scores
        self.prior_precision_ = float(g[int(np.argmin(scores))])
        self._set_variance()
        return self
