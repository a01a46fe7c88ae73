r"""Open-set and universal domain adaptation scores: OS, OS*, UNK and the H-score.

In open-set adaptation the target holds classes the source never saw. A model predicts one of the
``n_known`` source classes or "unknown" (index ``n_known``); every target class outside the
source's label space counts as the unknown class. With :math:`\mathrm{acc}_k` the recall of class
:math:`k` (the fraction of its target samples predicted as :math:`k`), over the known classes
:math:`\mathcal K` present in the target:

.. math::

    \mathrm{OS}^* = \frac{1}{|\mathcal K|} \sum_{k \in \mathcal K} \mathrm{acc}_k, \qquad
    \mathrm{UNK} = \mathrm{acc}_{\text{unknown}}, \qquad
    \mathrm{OS} = \frac{|\mathcal K|\,\mathrm{OS}^* + \mathrm{UNK}}{|\mathcal K| + 1}, \qquad
    H = \frac{2\,\mathrm{OS}^*\,\mathrm{UNK}}{\mathrm{OS}^* + \mathrm{UNK}}

(Saito et al. 2018 for OS / OS*; Fu et al. 2020 for the H-score, which is high only when both the
known classes and the unknown one are recognised: OS is dominated by the known classes, and a model
that never says "unknown" can score a high OS but has H = 0).

References
----------
Saito, Yamamoto, Ushiku, Harada. "Open set domain adaptation by backpropagation", ECCV 2018.
Fu, Wu, Long, Wang. "Learning to detect open classes for universal domain adaptation", ECCV 2020.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_number
from ..errors import DataError
from ._base import MetricResult, class_indices

__all__ = ["open_set_scores", "threshold_unknown"]


def open_set_scores(y_true, y_pred, n_known: int) -> MetricResult:
    """OS, OS*, UNK and the H-score of open-set predictions.

    Parameters
    ----------
    y_true : (n,) int array
        Target classes; every class ``>= n_known`` (a class the source never saw) is "unknown".
    y_pred : (n,) int array
        Predictions in ``0..n_known``, where ``n_known`` means "unknown".
    n_known
        Number of source (known) classes.

    Returns
    -------
    MetricResult
        ``value`` = H-score; ``details``: ``os``, ``os_star``, ``unk`` (NaN when the target has no
        unknown sample), ``per_class`` (recall of each known class present, by index),
        ``n_unknown``, ``n_known_present``.
    """
    n_known = check_number("n_known", n_known, low=1, integer=True)
    yt, yp = class_indices("y_true", y_true), class_indices("y_pred", y_pred)
    if yt.shape != yp.shape:
        raise DataError(f"y_true and y_pred must have the same length, got {len(yt)} and {len(yp)}.")
    if len(yt) == 0:
        raise DataError("y_true is empty; score at least one target sample.")
    if (yt < 0).any():
        raise DataError("y_true holds negative (unlabeled) entries; drop the unlabeled samples first.")
    if (yp < 0).any() or (yp > n_known).any():
        raise DataError(f"y_pred must be in 0..{n_known} ({n_known} = unknown), got values from {yp.min()} to "
                        f"{yp.max()}; map 'unknown' predictions to {n_known}.")
    yt = np.where(yt >= n_known, n_known, yt)
    per_class = {int(k): float((yp[yt == k] == k).mean()) for k in range(n_known) if (yt == k).any()}
    if not per_class:
        raise DataError(f"y_true holds no sample of the {n_known} known classes, so OS* is undefined; an open-set "
                        "target shares some classes with the source.")
    os_star = float(np.mean(list(per_class.values())))
    n_unk = int((yt == n_known).sum())
    unk = float((yp[yt == n_known] == n_known).mean()) if n_unk else float("nan")
    k = len(per_class)
    os_ = (k * os_star + unk) / (k + 1) if n_unk else os_star
    h = 2 * os_star * unk / (os_star + unk) if n_unk and os_star + unk > 0 else (0.0 if n_unk else float("nan"))
    return MetricResult(name="h_score", value=float(h),
                        details={"os": float(os_), "os_star": os_star, "unk": unk, "per_class": per_class,
                                 "n_unknown": n_unk, "n_known_present": k})


def threshold_unknown(probs, threshold: float) -> np.ndarray:
    """The thresholded-confidence baseline of open-set recognition: the argmax class, or
    "unknown" (index ``K``) where the largest probability is below ``threshold``."""
    threshold = check_number("threshold", threshold, low=0, high=1)
    P = np.asarray(probs.detach().cpu().numpy() if hasattr(probs, "detach") else probs, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 1 or not np.isfinite(P).all():
        raise DataError(f"probs must be a finite (n_samples, n_classes) array, got shape {P.shape}.")
    return np.where(P.max(1) >= threshold, P.argmax(1), P.shape[1])
