"""The domain dataset: inputs, optional labels, and the name of the domain they come from."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError

MODALITIES = ("image", "text", "tabular")
UNLABELED = -1


@dataclass
class DomainDataset:
    """Inputs of one domain, with optional integer labels.

    Parameters
    ----------
    inputs
        ``"image"``: float32 array ``(n, H, W)`` or ``(n, H, W, C)`` with values in [0, 1], or a
        lazy sequence whose items are such ``(H, W, C)`` arrays (an image folder).
        ``"text"``: a sequence of ``n`` strings. ``"tabular"``: float array ``(n, d)``.
    labels
        int64 array ``(n,)`` with values in ``0..n_classes-1``; ``-1`` marks an unlabeled
        sample (the skada convention). ``None`` when the domain has no labels at all.
    name
        The domain's name, used in tables and file names.
    modality
        One of ``"image"``, ``"text"``, ``"tabular"``.
    classes
        Class names, index-aligned with the label values.
    spec
        The spec string the dataset was built from, when it came from one.
    meta
        Free-form facts about the domain. ``meta["attributes"]``, when present, maps an
        attribute name (``"condition"``) to an array of one value per row; :meth:`subset`
        keeps it aligned with the rows.
    """

    inputs: Any
    labels: np.ndarray | None
    name: str
    modality: str
    classes: list[str] | None = None
    spec: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise DataError(f"modality={self.modality!r} must be one of {MODALITIES}.")
        n = len(self.inputs)
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.ndim != 1 or len(self.labels) != n:
                raise DataError(
                    f"dataset {self.name!r}: {n} inputs but labels of shape "
                    f"{self.labels.shape}; give one integer label per input."
                )
            if not np.issubdtype(self.labels.dtype, np.integer):
                raise DataError(
                    f"dataset {self.name!r}: labels must be integers, got dtype "
                    f"{self.labels.dtype}; map class names to 0..K-1 first."
                )
            self.labels = self.labels.astype(np.int64)
            if self.classes is not None and len(self.labels) and self.labels.max() >= len(self.classes):
                raise DataError(
                    f"dataset {self.name!r}: label {int(self.labels.max())} is outside the "
                    f"label space 0..{len(self.classes) - 1}."
                )
        if self.modality == "image" and isinstance(self.inputs, np.ndarray):
            if self.inputs.ndim not in (3, 4):
                raise DataError(
                    f"dataset {self.name!r}: image inputs must have shape (n, H, W) or "
                    f"(n, H, W, C), got {self.inputs.shape}."
                )

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def n_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        if self.labels is None or not (self.labels >= 0).any():
            return 0
        return int(self.labels.max()) + 1

    @property
    def labeled_mask(self) -> np.ndarray:
        if self.labels is None:
            return np.zeros(len(self), dtype=bool)
        return self.labels >= 0

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> DomainDataset:
        """A new dataset holding ``indices`` (views where possible, no copy of lazy inputs)."""
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.inputs, np.ndarray):
            inputs = self.inputs[idx]
        elif hasattr(self.inputs, "subset"):
            inputs = self.inputs.subset(idx)
        else:
            inputs = [self.inputs[i] for i in idx]
        meta = dict(self.meta)
        if isinstance(meta.get("attributes"), dict):  # per-row attributes follow their rows
            meta["attributes"] = {k: np.asarray(v)[idx] for k, v in meta["attributes"].items()}
        return DomainDataset(
            inputs=inputs,
            labels=None if self.labels is None else self.labels[idx],
            name=name or self.name,
            modality=self.modality,
            classes=self.classes,
            spec=self.spec,
            meta=meta,
        )

    def without_labels(self) -> DomainDataset:
        """The same inputs with every label hidden (-1): unlabeled target data for adaptation,
        so that whatever receives it cannot read its labels."""
        return DomainDataset(inputs=self.inputs, labels=np.full(len(self), -1, dtype=np.int64), name=self.name,
                             modality=self.modality, classes=self.classes, spec=self.spec, meta=dict(self.meta))

    def get_input(self, i: int):
        return self.inputs[i]

    def fingerprint(self) -> str:
        """A content hash of the inputs (not the labels): the feature cache key."""
        h = hashlib.sha256()
        h.update(self.modality.encode())
        inp = self.inputs
        if isinstance(inp, np.ndarray):
            h.update(str(inp.shape).encode() + str(inp.dtype).encode())
            h.update(np.ascontiguousarray(inp).tobytes())
        elif hasattr(inp, "fingerprint"):
            h.update(inp.fingerprint().encode())
        else:
            for item in inp:
                if isinstance(item, str):
                    h.update(item.encode("utf-8") + b"\x00")
                else:
                    h.update(np.ascontiguousarray(item).tobytes())
        return h.hexdigest()[:20]

    def __repr__(self) -> str:
        nl = int(self.labeled_mask.sum())
        return (
            f"DomainDataset(name={self.name!r}, modality={self.modality!r}, n={len(self)}, "
            f"labeled={nl}, n_classes={self.n_classes})"
        )


def concat_datasets(datasets: Sequence[DomainDataset], name: str | None = None) -> DomainDataset:
    """Several domains of one modality and one class list as one dataset (pooled sources).

    Rows keep their order (the first dataset's first); ``meta["attributes"]["domain"]`` is an
    int64 array with the index of each row's dataset (it follows the rows through
    :meth:`DomainDataset.subset`) and ``meta["domain_names"]`` their names. Array inputs
    are concatenated (images of the same size; tables of the same width); text and lazy image
    inputs become one list (lazy images are read).

    Raises
    ------
    DataError
        No dataset, or datasets of different modalities, class lists or input shapes.
    """
    parts = list(datasets)
    if not parts:
        raise DataError("concat_datasets needs at least one dataset.")
    first = parts[0]
    for i, d in enumerate(parts[1:], 1):
        if d.modality != first.modality:
            raise DataError(f"dataset {i} ({d.name!r}) is {d.modality} but dataset 0 ({first.name!r}) is "
                            f"{first.modality}; pooled domains must share a modality.")
        if (d.classes is not None and first.classes is not None) and list(d.classes) != list(first.classes):
            raise DataError(f"dataset {i} ({d.name!r}) has classes {list(d.classes)} but dataset 0 ({first.name!r}) "
                            f"has {list(first.classes)}; pooled domains must use the same class list.")
    if all(isinstance(d.inputs, np.ndarray) for d in parts):
        shapes = {d.inputs.shape[1:] for d in parts}
        if len(shapes) > 1:
            raise DataError(f"the pooled domains have inputs of shapes {sorted(map(tuple, shapes))}; give them one "
                            "input size (size= in the dataset specs) or feature width.")
        inputs: Any = np.concatenate([d.inputs for d in parts])
    else:
        inputs = [x for d in parts for x in (d.inputs if isinstance(d.inputs, list) else
                                             [d.inputs[j] for j in range(len(d))])]
    labels = np.concatenate([d.labels if d.labels is not None else np.full(len(d), UNLABELED, dtype=np.int64)
                             for d in parts]).astype(np.int64)
    domains = np.concatenate([np.full(len(d), i, dtype=np.int64) for i, d in enumerate(parts)])
    classes = next((d.classes for d in parts if d.classes is not None), None)
    return DomainDataset(inputs=inputs, labels=labels, name=name or "+".join(d.name for d in parts),
                         modality=first.modality, classes=None if classes is None else list(classes),
                         meta={"attributes": {"domain": domains}, "domain_names": [d.name for d in parts]})
