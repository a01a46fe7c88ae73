r"""Zero-shot scores: per-class mean accuracy and generalised zero-shot learning's harmonic mean.

**Per-class mean accuracy** (Xian, Lampert, Schiele & Akata, "Zero-Shot Learning -- The Good, the
Bad and the Ugly", CVPR 2017 / TPAMI 2018), the standard zero-shot metric: the mean over the
classes :math:`\mathcal C` present in the test set of each class's recall,

.. math:: \mathrm{acc}_{\mathcal C} = \frac{1}{|\mathcal C|} \sum_{c \in \mathcal C}
          \frac{\#\{i : y_i = c,\ \hat y_i = c\}}{\#\{i : y_i = c\}},

so that a frequent class does not dominate (plain accuracy rewards predicting it).

**Generalised zero-shot learning** (GZSL): test samples of seen classes :math:`\mathcal S` and of
unseen classes :math:`\mathcal U`, every prediction made over all classes. With
:math:`s = \mathrm{acc}_{\mathcal S}` and :math:`u = \mathrm{acc}_{\mathcal U}` (each a per-class mean
accuracy over that group's test samples, predictions over :math:`\mathcal S \cup \mathcal U`),

.. math:: H = \frac{2\, s\, u}{s + u},

high only when both groups are recognised (a model biased to the seen classes, the usual
failure, has a high :math:`s` and :math:`H \approx 0`).

**Calibrated stacking** (Chao, Changpinyo, Gong & Sha, "An empirical study and analysis of
generalized zero-shot learning for object recognition in the wild", ECCV 2016): subtract a
constant :math:`\gamma` from every seen class's score before the argmax,
:math:`\hat y = \arg\max_c\, f_c(x) - \gamma\, \mathbb 1[c \in \mathcal S]`, trading seen for
unseen accuracy. Choose :math:`\gamma` on validation data, never on the test labels.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_number
from ..errors import DataError
from ._base import MetricResult, class_indices

__all__ = ["calibrated_stacking", "gzsl_scores", "per_class_accuracy"]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    yt, yp = class_indices("y_true", y_true), class_indices("y_pred", y_pred)
    if yt.shape != yp.shape:
        raise DataError(f"y_true and y_pred must have the same length, got {len(yt)} and {len(yp)}.")
    if len(yt) == 0:
        raise DataError("y_true is empty; score at least one test sample.")
    if (yt < 0).any():
        raise DataError("y_true holds negative (unlabeled) entries; drop the unlabeled samples first.")
    return yt, yp


def _per_class(yt: np.ndarray, yp: np.ndarray, classes) -> dict[int, float]:
    return {int(c): float((yp[yt == c] == c).mean()) for c in classes if (yt == c).any()}


def per_class_accuracy(y_true, y_pred) -> MetricResult:
    """Mean over the classes present in ``y_true`` of each class's recall (Xian et al. 2018).

    Parameters
    ----------
    y_true, y_pred : (n,) int arrays
        True and predicted class indices in one label space.

    Returns
    -------
    MetricResult
        ``value`` = the per-class mean accuracy; ``details``: ``per_class`` (class -> recall),
        ``accuracy`` (plain, per sample), ``n_classes`` (classes present in ``y_true``).
    """
    yt, yp = _pair(y_true, y_pred)
    per = _per_class(yt, yp, np.unique(yt))
    return MetricResult(name="per_class_accuracy", value=float(np.mean(list(per.values()))),
                        details={"per_class": per, "accuracy": float((yt == yp).mean()), "n_classes": len(per)})


def _seen_mask(seen, n_classes: int | None = None) -> np.ndarray:
    s = np.asarray(seen)
    if s.ndim != 1 or s.size == 0:
        raise DataError(f"seen must be a non-empty 1-D list of seen class indices (or a boolean mask over the "
                        f"classes), got shape {s.shape}.")
    if s.dtype == bool:
        if n_classes is not None and len(s) != n_classes:
            raise DataError(f"seen is a boolean mask over {len(s)} classes but the scores have {n_classes} columns.")
        return s
    s = class_indices("seen", s)
    if (s < 0).any() or (n_classes is not None and (s >= n_classes).any()):
        raise DataError(f"seen holds class indices from {s.min()} to {s.max()}"
                        + (f", outside 0..{n_classes - 1}" if n_classes is not None else "") + ".")
    mask = np.zeros(int(s.max()) + 1 if n_classes is None else n_classes, dtype=bool)
    mask[s] = True
    return mask


def calibrated_stacking(scores, seen, gamma: float = 0.0) -> np.ndarray:
    """Predictions over all classes with ``gamma`` taken off every seen class's score (Chao et al. 2016).

    Parameters
    ----------
    scores : (n, C) array
        Scores over all ``C`` classes (seen and unseen), e.g. a zero-shot model's
        ``decision_function`` against every class embedding.
    seen
        The seen classes: indices into the columns, or a boolean mask of length ``C``.
    gamma
        The calibration constant (0: plain argmax; larger favours the unseen classes; may be
        negative).

    Returns
    -------
    (n,) int array
        :math:`\\arg\\max_c f_c(x) - \\gamma\\, \\mathbb 1[c \\in \\mathcal S]`.
    """
    F = np.asarray(scores.detach().cpu().numpy() if hasattr(scores, "detach") else scores, dtype=np.float64)
    if F.ndim != 2 or 0 in F.shape or np.isnan(F).any():
        raise DataError(f"scores must be a (n_samples, n_classes) array without NaN, got shape {F.shape}.")
    gamma = check_number("gamma", gamma)
    mask = _seen_mask(seen, F.shape[1])
    return (F - gamma * mask[None, :]).argmax(1)


def gzsl_scores(y_true, y_pred, seen) -> MetricResult:
    """Generalised zero-shot scores: seen and unseen per-class accuracy and their harmonic mean.

    Parameters
    ----------
    y_true, y_pred : (n,) int arrays
        True classes and predictions, both over all classes (seen and unseen), e.g. from
        :func:`calibrated_stacking`.
    seen
        The seen (training) classes: indices, or a boolean mask over the class indices; every
        other class in ``y_true`` is unseen.

    Returns
    -------
    MetricResult
        ``value`` = :math:`H = 2su/(s+u)` (0 when :math:`s + u = 0`); ``details``: ``seen``
        (:math:`s`), ``unseen`` (:math:`u`), ``per_class`` (class -> recall), ``n_seen_classes``,
        ``n_unseen_classes`` (present in ``y_true``).
    """
    yt, yp = _pair(y_true, y_pred)
    mask = _seen_mask(seen)
    is_seen = lambda c: c < len(mask) and bool(mask[c])  # noqa: E731
    classes = np.unique(yt)
    s_cls = [c for c in classes if is_seen(c)]
    u_cls = [c for c in classes if not is_seen(c)]
    if not s_cls or not u_cls:
        which = "seen" if not s_cls else "unseen"
        raise DataError(f"y_true holds no sample of a {which} class, so H is undefined; a generalised zero-shot "
                        "test set holds samples of both seen and unseen classes (per_class_accuracy scores one group).")
    per = _per_class(yt, yp, classes)
    s = float(np.mean([per[int(c)] for c in s_cls]))
    u = float(np.mean([per[int(c)] for c in u_cls]))
    h = 2 * s * u / (s + u) if s + u > 0 else 0.0
    return MetricResult(name="gzsl_h", value=float(h),
                        details={"seen": s, "unseen": u, "per_class": per, "n_seen_classes": len(s_cls),
                                 "n_unseen_classes": len(u_cls)})
