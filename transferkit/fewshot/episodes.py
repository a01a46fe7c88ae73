"""Episodes: N-way K-shot Q-query tasks drawn from disjoint class splits.

A few-shot *episode* picks ``n_way`` classes, then ``k_shot`` labeled *support* rows and
``q_query`` *query* rows of each; a method sees the support rows with their labels and predicts
the query rows. Episode labels are ``0..n_way-1`` in the order of :attr:`Episode.classes`.

Reproducibility is per episode, not per stream: episode ``i`` of a sampler with seed ``s`` is
drawn from its own generator ``numpy.random.default_rng([s, i])``, so the 431st test episode is
the same whether or not the first 430 were drawn, in any process (torchmeta and learn2learn
draw from one stream, so a resumed evaluation sees different tasks).

Class splits (meta-train / meta-val / meta-test) are disjoint by construction and checked:
:func:`split_classes` takes explicit lists (class names or integer ids) or fractions.

References
----------
Vinyals et al., "Matching networks for one shot learning", NeurIPS 2016 (the episodic protocol).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._validation import check_number, check_seed
from ..errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot task: row indices into the dataset and episode labels.

    Attributes
    ----------
    index
        The episode's number in its sampler (its seed is ``[sampler.seed, index]``).
    classes
        ``(n_way,)`` dataset label values; episode label ``j`` means ``classes[j]``.
    support, query
        Row indices into the dataset, ``(n_way * k_shot,)`` and ``(n_way * q_query,)``, grouped
        by episode class (all of class 0, then class 1, ...).
    support_labels, query_labels
        Episode labels ``0..n_way-1`` aligned with ``support`` and ``query``.
    """

    index: int
    classes: np.ndarray
    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray

    @property
    def n_way(self) -> int:
        return len(self.classes)


def split_classes(
    labels: np.ndarray,
    classes: Mapping[str, Sequence] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Disjoint meta-train / meta-val / meta-test class sets.

    Parameters
    ----------
    labels
        ``(n,)`` integer labels of the whole dataset (``-1`` rows are ignored).
    classes
        ``{"train": [...], "val": [...], "test": [...]}`` with class names (when ``class_names``
        is given) or integer label values; or fractions ``{"train": 0.6, "val": 0.2, "test": 0.2}``
        summing to at most 1, assigned over a seeded permutation of the classes. A split may be
        left out (no meta-val classes: selection then has nothing to select on). ``None``:
        fractions 0.6 / 0.2 / 0.2.
    class_names
        Names aligned with the label values, for splits given by name.
    seed
        Seed of the permutation used with fractions.

    Returns
    -------
    dict
        Split name -> sorted int array of label values, for every split given.
    """
    labels = np.asarray(labels)
    present = np.array(sorted(int(c) for c in np.unique(labels[labels >= 0])), dtype=np.int64)
    if len(present) == 0:
        raise DataError("split_classes: the dataset has no labeled rows; few-shot episodes need labels.")
    if classes is None:
        classes = {"train": 0.6, "val": 0.2, "test": 0.2}
    if not isinstance(classes, Mapping) or not classes:
        raise ConfigError(
            f"classes={classes!r} must be a mapping of train/val/test to class lists or fractions, "
            "e.g. classes: {train: 0.6, val: 0.2, test: 0.2}."
        )
    unknown = [k for k in classes if k not in SPLITS]
    if unknown:
        from .._validation import suggest

        raise ConfigError(
            f"classes has an unknown split {unknown[0]!r}; use train, val and test." + suggest(str(unknown[0]), SPLITS)
        )
    values = list(classes.values())
    fractional = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    out: dict[str, np.ndarray] = {}
    if fractional:
        for k, v in classes.items():
            check_number(f"classes.{k}", v, low=0, high=1, low_inclusive=False)
        total = float(sum(values))
        if total > 1 + 1e-9:
            raise ConfigError(f"classes fractions sum to {total:g} > 1; make them sum to at most 1.")
        perm = np.random.default_rng(check_seed("seed", seed)).permutation(present)
        start = 0
        for k in SPLITS:
            if k not in classes:
                continue
            m = int(round(float(classes[k]) * len(present)))
            if m < 1:
                raise ConfigError(
                    f"classes.{k}={classes[k]!r} gives no class of {len(present)}; give a larger fraction "
                    "or list the classes."
                )
            out[k] = np.sort(perm[start:start + m])
            start += m
        if start > len(present):
            raise ConfigError(f"classes fractions need {start} classes but the dataset has {len(present)}.")
        return out
    names = list(class_names) if class_names is not None else None
    for k, v in classes.items():
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or isinstance(v, bool):
            raise ConfigError(f"classes.{k}={v!r} must be a list of classes or a fraction in (0, 1].")
        ids = []
        for c in v:
            if isinstance(c, str):
                if names is None or c not in names:
                    from .._validation import suggest

                    raise ConfigError(
                        f"classes.{k}: unknown class {c!r}." + (suggest(c, names) if names else "")
                        + (f" Classes: {', '.join(names)}." if names else " This dataset's classes have no names; "
                           "use integer label values.")
                    )
                ids.append(names.index(c))
            elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                if int(c) not in set(present.tolist()):
                    raise ConfigError(
                        f"classes.{k}: class {c!r} has no labeled rows; label values present: "
                        f"{present.min()}..{present.max()}."
                    )
                ids.append(int(c))
            else:
                raise ConfigError(f"classes.{k}: {c!r} is neither a class name nor an integer label value.")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"classes.{k} lists a class twice.")
        if not ids:
            raise ConfigError(f"classes.{k} is empty; list at least one class or leave the split out.")
        out[k] = np.array(sorted(ids), dtype=np.int64)
    keys = list(out)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            both = np.intersect1d(out[a], out[b])
            if len(both):
                shown = ", ".join(repr(names[c]) if names else str(c) for c in both[:5])
                raise ConfigError(
                    f"classes.{a} and classes.{b} overlap ({shown}); meta-train, meta-val and meta-test "
                    "classes must be disjoint."
                )
    return out


class EpisodeSampler:
    """Seeded N-way K-shot Q-query episodes over the rows of some classes.

    Parameters
    ----------
    labels
        ``(n,)`` integer labels of the dataset the indices refer to.
    n_way, k_shot, q_query
        Classes per episode, support rows per class, query rows per class.
    classes
        Label values episodes may draw from (a split of :func:`split_classes`); ``None``: all.
    n_episodes
        Length of one pass (``len(sampler)``, ``iter(sampler)``).
    seed
        Episode ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
    where
        A name for error messages (``"meta-test"``).

    Raises
    ------
    ConfigError
        ``n_way`` above the number of classes, or ``k_shot + q_query`` above a class's rows.
    """

    def __init__(
        self,
        labels,
        n_way: int,
        k_shot: int,
        q_query: int,
        *,
        classes=None,
        n_episodes: int = 100,
        seed: int = 0,
        where: str = "episodes",
    ) -> None:
        self.labels = np.asarray(labels)
        self.n_way = check_number(f"{where}.n_way", n_way, low=2, integer=True)
        self.k_shot = check_number(f"{where}.k_shot", k_shot, low=1, integer=True)
        self.q_query = check_number(f"{where}.q_query", q_query, low=1, integer=True)
        self.n_episodes = check_number(f"{where}.n_episodes", n_episodes, low=1, integer=True)
        self.seed = check_seed(f"{where}.seed", seed)
        self.where = where
        if classes is None:
            classes = np.unique(self.labels[self.labels >= 0])
        self.classes = np.array(sorted(int(c) for c in classes), dtype=np.int64)
        if self.n_way > len(self.classes):
            raise ConfigError(
                f"{where}: n_way={self.n_way} is larger than the {len(self.classes)} classes of this split; "
                f"use n_way <= {len(self.classes)} or give the split more classes."
            )
        self._rows = {int(c): np.flatnonzero(self.labels == c) for c in self.classes}
        need = self.k_shot + self.q_query
        short = [(c, len(r)) for c, r in self._rows.items() if len(r) < need]
        if short:
            c, have = min(short, key=lambda t: t[1])
            raise ConfigError(
                f"{where}: k_shot + q_query = {self.k_shot} + {self.q_query} = {need} is larger than class {c}'s "
                f"{have} rows ({len(short)} class(es) too small); lower k_shot or q_query, or leave such classes "
                "out of the split."
            )

    def __len__(self) -> int:
        return self.n_episodes

    def episode(self, index: int) -> Episode:
        """Episode ``index``; the same for the same seed, whatever was drawn before."""
        rng = np.random.default_rng([self.seed, int(index)])
        chosen = rng.choice(self.classes, size=self.n_way, replace=False)
        support, query = [], []
        for c in chosen:
            rows = rng.choice(self._rows[int(c)], size=self.k_shot + self.q_query, replace=False)
            support.append(rows[: self.k_shot])
            query.append(rows[self.k_shot:])
        return Episode(
            index=int(index),
            classes=chosen.astype(np.int64),
            support=np.concatenate(support),
            support_labels=np.repeat(np.arange(self.n_way), self.k_shot),
            query=np.concatenate(query),
            query_labels=np.repeat(np.arange(self.n_way), self.q_query),
        )

    def __iter__(self) -> Iterator[Episode]:
        for i in range(self.n_episodes):
            yield self.episode(i)

    def __repr__(self) -> str:
        return (f"EpisodeSampler({self.where}: {self.n_way}-way {self.k_shot}-shot {self.q_query}-query, "
                f"{len(self.classes)} classes, {self.n_episodes} episodes, seed={self.seed})")


def mean_ci95(accuracies) -> tuple[float, float]:
    """Mean and half-width of the normal 95% interval, ``1.96 * std / sqrt(n)`` (ddof=1), the
    few-shot literature's convention over test episodes."""
    a = np.asarray(accuracies, dtype=np.float64)
    if a.size == 0:
        raise ValueError("mean_ci95 of no episodes")
    if a.size == 1:
        return float(a[0]), float("nan")
    return float(a.mean()), float(1.96 * a.std(ddof=1) / np.sqrt(a.size))
