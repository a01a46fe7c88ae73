"""Calibration and predictive uncertainty: expected calibration error, reliability curves,
MC-dropout.

A classifier is *calibrated* when, among the samples it gives confidence :math:`c`, a
fraction :math:`c` is classified correctly. Fine-tuned networks are often over-confident
(Guo et al., 2017), and transfer changes calibration, so the report shows both accuracy and
ECE. MC-dropout (Gal & Ghahramani, 2016) reads dropout at test time as approximate Bayesian
inference: averaging :math:`T` stochastic passes approximates the posterior predictive, and
the spread between passes gives the model (epistemic) uncertainty.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from ._base import MetricResult

__all__ = ["expected_calibration_error", "mc_dropout_predict", "reliability_curve"]


def _check_probs(probs, y) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(probs, "detach"):
        probs = probs.detach().cpu().numpy()
    P = np.asarray(probs, dtype=np.float64)
    if P.ndim == 1:  # binary: the probability of class 1
        P = np.stack([1 - P, P], axis=1)
    if P.ndim != 2 or P.shape[0] < 1 or P.shape[1] < 2:
        raise DataError(f"probs must have shape (n_samples, n_classes) with n_classes >= 2, got {P.shape}.")
    if not np.isfinite(P).all() or (P < -1e-6).any() or (P > 1 + 1e-6).any():
        raise DataError("probs must be finite probabilities in [0, 1]; apply softmax to logits first.")
    if not np.allclose(P.sum(1), 1.0, atol=1e-3):
        raise DataError("probs rows must sum to 1 (got sums from "
                        f"{P.sum(1).min():.4f} to {P.sum(1).max():.4f}); apply softmax to logits first.")
    y = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
    if y.shape != (P.shape[0],):
        raise DataError(f"y must have shape ({P.shape[0]},), got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"y must be integer class indices, got dtype {y.dtype}.")
    if (y < 0).any() or (y >= P.shape[1]).any():
        raise DataError(f"y must be in 0..{P.shape[1] - 1} (drop unlabeled -1 samples first).")
    return P, y.astype(np.int64)


def reliability_curve(probs, y, n_bins: int = 15) -> dict:
    r"""Confidence vs. accuracy in equal-width confidence bins.

    Each sample falls in the bin :math:`B_m = ((m-1)/M, m/M]` of its confidence
    :math:`\hat p_i = \max_k p_{ik}` (a confidence of exactly 0 goes to the first bin).

    Parameters
    ----------
    probs : (n, K) array
        Predicted class probabilities (a 1-D array is the positive-class probability of a
        binary problem).
    y : (n,) int array
        True classes.
    n_bins
        :math:`M`.

    Returns
    -------
    dict
        ``edges`` (M+1,), ``confidence`` (M,) mean confidence per bin, ``accuracy`` (M,)
        accuracy per bin (NaN for empty bins), ``counts`` (M,).
    """
    from .._validation import check_number

    n_bins = check_number("n_bins", n_bins, low=1, integer=True)
    P, y = _check_probs(probs, y)
    conf = P.max(1)
    correct = (P.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins: (lo, hi]; searchsorted(side="left") puts conf == hi into the bin ending at hi
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(b, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.bincount(b, weights=conf, minlength=n_bins) / counts
        a = np.bincount(b, weights=correct, minlength=n_bins) / counts
    return {"edges": edges, "confidence": c, "accuracy": a, "counts": counts}


def expected_calibration_error(probs, y, n_bins: int = 15) -> MetricResult:
    r"""Expected calibration error with equal-width confidence bins.

    .. math::

        \mathrm{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{n} \,
            \bigl| \mathrm{acc}(B_m) - \mathrm{conf}(B_m) \bigr|

    (Naeini et al., 2015; Guo et al., 2017), with bins as in :func:`reliability_curve`. It
    is 0 for a perfectly calibrated classifier up to sampling noise, and lies in [0, 1].

    Parameters
    ----------
    probs : (n, K) array
        Predicted probabilities (rows sum to 1; a 1-D array is a binary positive-class
        probability).
    y : (n,) int array
        True classes.
    n_bins
        :math:`M` (15 as in Guo et al.).

    Returns
    -------
    MetricResult
        ``value`` = ECE; ``details``: ``mce`` (maximum calibration error over non-empty bins),
        ``accuracy``, ``mean_confidence``, ``n_bins``.

    References
    ----------
    Naeini, Cooper, Hauskrecht. "Obtaining well calibrated probabilities using Bayesian
    binning", AAAI 2015. Guo, Pleiss, Sun, Weinberger. "On calibration of modern neural
    networks", ICML 2017.
    """
    P, yy = _check_probs(probs, y)
    rc = reliability_curve(P, yy, n_bins=n_bins)
    nz = rc["counts"] > 0
    gaps = np.abs(rc["accuracy"][nz] - rc["confidence"][nz])
    ece = float((rc["counts"][nz] / len(yy) * gaps).sum())
    return MetricResult(
        name="ece", value=ece,
        details={"mce": float(gaps.max()) if gaps.size else 0.0, "accuracy": float((P.argmax(1) == yy).mean()),
                 "mean_confidence": float(P.max(1).mean()), "n_bins": int(n_bins)},
    )


def _is_dropout(m) -> bool:
    from torch import nn

    return isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ in ("DropPath", "DropBlock2d")


def mc_dropout_predict(model, inputs, n_samples: int = 20, seed: int = 0, batch_size: int = 64,
                       device=None) -> dict:
    r"""MC-dropout predictive distribution and its uncertainty decomposition.

    The model runs in eval mode (BatchNorm uses its running statistics) with only its dropout
    modules (``nn.Dropout*``, timm ``DropPath``) switched to training mode; :math:`T`
    stochastic passes give :math:`p_t(y \mid x)`, and

    .. math::

        \bar p = \frac{1}{T} \sum_t p_t, \qquad
        \underbrace{H[\bar p]}_{\text{predictive entropy}}
          = \underbrace{\frac{1}{T} \sum_t H[p_t]}_{\text{expected entropy (aleatoric)}}
          + \underbrace{I(y; w \mid x)}_{\text{mutual information (BALD, epistemic)}}

    A model without dropout gives identical passes, so the mutual information is 0.
    Dropout applied through the functional API (``F.dropout(x, training=self.training)``
    inside ``forward``) is *not* switched on; use dropout modules (the heads here do).

    Parameters
    ----------
    model
        A :class:`torch.nn.Module` returning logits.
    inputs
        A tensor/array of model-ready inputs, or a :class:`transferkit.data.DomainDataset`
        (then ``model.preprocess`` prepares it).
    n_samples
        :math:`T`, the number of stochastic passes.
    seed
        Seeds the dropout masks (the global torch RNG state is restored afterwards).
    batch_size
        Inputs per forward pass.
    device
        Where to run (default: the model's device).

    Returns
    -------
    dict of numpy arrays
        ``mean_probs`` (n, K), ``predictive_entropy`` (n,), ``expected_entropy`` (n,),
        ``mutual_information`` (n,) (clipped at 0 against round-off), and ``n_dropout_modules``.

    References
    ----------
    Gal, Y., Ghahramani, Z. "Dropout as a Bayesian approximation", ICML 2016. Houlsby et al.
    "Bayesian active learning for classification and preference learning" (BALD), 2011.
    """
    import torch

    from .._validation import check_number

    n_samples = check_number("n_samples", n_samples, low=1, integer=True)
    batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    if hasattr(inputs, "inputs") and hasattr(inputs, "modality"):  # a DomainDataset
        ds = inputs

        def batch(s, e):
            raw = ds.inputs[s:e] if isinstance(ds.inputs, np.ndarray) else [ds.inputs[i] for i in range(s, e)]
            return model.preprocess(raw)

        n = len(ds)
    else:
        X = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs, dtype=np.float32))

        def batch(s, e):
            return X[s:e]

        n = len(X)
    if n == 0:
        raise DataError("inputs are empty; pass at least one sample.")
    modes = {m: m.training for m in model.modules()}
    drops = [m for m in model.modules() if _is_dropout(m)]
    model.eval()
    for m in drops:
        m.train()
    sum_p, sum_h = None, None
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            for t in range(n_samples):
                ps = []
                for s in range(0, n, batch_size):
                    xb = batch(s, min(n, s + batch_size))
                    xb = xb.to(dev) if isinstance(xb, torch.Tensor) else model.move_inputs(xb, dev)
                    ps.append(torch.log_softmax(model(xb).double(), 1).cpu())
                logp = torch.cat(ps)
                p = logp.exp()
                h = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(1)
                sum_p = p if sum_p is None else sum_p + p
                sum_h = h if sum_h is None else sum_h + h
    finally:
        for m, t in modes.items():
            m.training = t
    mean_p = (sum_p / n_samples).numpy()
    logm = np.log(np.clip(mean_p, 1e-300, None))
    pred_h = -(mean_p * logm).sum(1)
    exp_h = (sum_h / n_samples).numpy()
    mi = np.maximum(pred_h - exp_h, 0.0)
    return {"mean_probs": mean_p, "predictive_entropy": pred_h, "expected_entropy": exp_h,
            "mutual_information": mi, "n_dropout_modules": len(drops)}
