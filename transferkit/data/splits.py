"""Seeded stratified splits and few-label sampling."""

from __future__ import annotations

import numpy as np

from .._validation import check_number
from ..errors import DataError


def _labels_of(y, what: str) -> np.ndarray:
    if y is None:
        raise DataError(f"{what} needs labels, but the dataset has none; give a label column or folder per class.")
    y = np.asarray(y)
    return y


def sample_per_class(y, k: int, seed: int = 0, *, dataset: str = "dataset") -> tuple[np.ndarray, np.ndarray]:
    """Pick ``k`` labeled indices per class; return ``(picked, rest)`` index arrays.

    Raises :class:`DataError` naming the class when a class has fewer than ``k`` samples.
    """
    k = check_number("labels_per_class", k, low=1, integer=True)
    y = _labels_of(y, "labels_per_class")
    rng = np.random.default_rng(seed)
    picked = []
    classes = np.unique(y[y >= 0])
    if len(classes) == 0:
        raise DataError(f"{dataset}: labels_per_class={k} needs labeled samples, found none.")
    for c in classes:
        idx = np.flatnonzero(y == c)
        if len(idx) < k:
            raise DataError(
                f"{dataset}: class {int(c)} has only {len(idx)} labeled samples, fewer than "
                f"labels_per_class={k}; lower labels_per_class or add samples of that class."
            )
        picked.append(rng.choice(idx, size=k, replace=False))
    picked = np.sort(np.concatenate(picked))
    rest = np.setdiff1d(np.arange(len(y)), picked)
    return picked, rest


def sample_prior_matched(y, total: int, seed: int = 0, *, dataset: str = "dataset") -> tuple[np.ndarray, np.ndarray]:
    """Pick ``total`` labeled indices with the class proportions of ``y`` (largest-remainder
    rounding, at least one per class); return ``(picked, rest)``.

    The few-label draw for an imbalanced target: ``k`` per class would hand the model a
    balanced training set, i.e. the wrong class priors (a 70/30 target drawn 10/10 trains a
    classifier for 50/50)."""
    total = check_number("labels", total, low=1, integer=True)
    y = _labels_of(y, "a prior-matched draw")
    classes = np.unique(y[y >= 0])
    if len(classes) == 0:
        raise DataError(f"{dataset}: a prior-matched label draw needs labeled samples, found none.")
    avail = np.array([(y == c).sum() for c in classes])
    if total < len(classes) or total > avail.sum():
        raise DataError(f"{dataset}: a prior-matched draw of {total} labels needs between {len(classes)} (one per "
                        f"class) and {int(avail.sum())} (all labeled samples); change split.labels_per_class.")
    raw = avail / avail.sum() * total
    cnt = np.maximum(np.floor(raw).astype(int), 1)
    while cnt.sum() > total:  # the floor of 1 per class overshot: take from the largest
        cnt[np.argmax(cnt - raw)] -= 1
    for j in np.argsort(-(raw - cnt)):
        if cnt.sum() >= total:
            break
        if cnt[j] < avail[j]:
            cnt[j] += 1
    rng = np.random.default_rng(seed)
    picked = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), size=n, replace=False)
                                     for c, n in zip(classes, cnt)]))
    return picked, np.setdiff1d(np.arange(len(y)), picked)


def stratified_split(y, fractions, seed: int = 0, *, dataset: str = "dataset") -> list[np.ndarray]:
    """Split indices into parts with the given fractions (summing to 1), stratified by class.

    Every class is spread over the parts in proportion (largest-remainder rounding), so a
    class with at least ``len(fractions)`` samples appears in every part.
    """
    y = _labels_of(y, "a stratified split")
    fr = np.asarray(fractions, dtype=float)
    if fr.ndim != 1 or len(fr) < 2 or (fr < 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise DataError(f"split fractions {list(fractions)} must be >= 0 and sum to 1.")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        raw = fr * len(idx)
        cnt = np.floor(raw).astype(int)
        for j in np.argsort(-(raw - cnt))[: len(idx) - cnt.sum()]:
            cnt[j] += 1
        start = 0
        for j, n in enumerate(cnt):
            parts[j].append(idx[start : start + n])
            start += n
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]
