r"""What multi-source adaptation and domain generalisation share: several labeled sources pooled
into one training set whose rows know their domain.

The Trainer draws batches from the pooled rows; a loss term that needs each row's domain (moment
matching across sources, IRM's per-environment penalty, GroupDRO's group risks) holds the pooled
``domains`` array and reads the batch's entries through ``ctx.indices`` (skada's
``sample_domain`` integers: ``0 .. n_sources - 1`` for the sources here). :func:`check_sources`
is the one gate every multi-source entry point passes its sources through.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError

__all__ = ["DomainTerm", "check_sources", "per_domain_risks", "pool_sources"]


def check_sources(sources: Sequence, *, what: str = "sources") -> list:
    """Check a list of labeled source datasets (or ``(X, y)`` pairs) that will be pooled.

    Every source must be labeled, share the first one's modality, class names (as a set, in the
    same order) and, for arrays, feature width. Returns the sources as a list.

    Raises
    ------
    ConfigError
        Not a list, or fewer than one source.
    DataError
        A source without labels, or one whose modality, classes or feature width differs from
        the first's (the message names both).
    """
    if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence):
        raise ConfigError(f"{what} must be a list of labeled source datasets, got {type(sources).__name__}.")
    sources = list(sources)
    if not sources:
        raise ConfigError(f"{what} is empty; pass at least one labeled source dataset.")

    def describe(i, s):
        name = getattr(s, "name", None)
        return f"{what}[{i}]" + (f" ({name!r})" if name else "")

    def width(s):
        x = s[0] if isinstance(s, tuple) else getattr(s, "inputs", None)
        if isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim >= 2:
            return tuple(x.shape[1:])
        return None

    def labels(s):
        return np.asarray(s[1]) if isinstance(s, tuple) else getattr(s, "labels", None)

    first = sources[0]
    for i, s in enumerate(sources):
        y = labels(s)
        if y is None or not (np.asarray(y) >= 0).any():
            raise DataError(f"{describe(i, s)} has no labels; every source must be labeled.")
        if i == 0:
            continue
        for attr in ("modality",):
            a, b = getattr(first, attr, None), getattr(s, attr, None)
            if a is not None and b is not None and a != b:
                raise DataError(f"{describe(i, s)} is {b} but {describe(0, first)} is {a}; "
                                "every source must have the same modality.")
        ca, cb = getattr(first, "classes", None), getattr(s, "classes", None)
        if ca is not None and cb is not None and list(ca) != list(cb):
            raise DataError(f"{describe(i, s)} has classes {list(cb)} but {describe(0, first)} has {list(ca)}; "
                            "every source must use the same class names in the same order.")
        wa, wb = width(first), width(s)
        if wa is not None and wb is not None and wa != wb:
            raise DataError(f"{describe(i, s)} has features of shape {wb} but {describe(0, first)} has {wa}; "
                            "every source must have the same feature width (use the same backbone and image size).")
    return sources


def pool_sources(Xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate per-source feature matrices and labels: ``(X, y, domains)`` with ``domains[i]``
    the index of row ``i``'s source. Unlabeled rows (label -1) are dropped."""
    pairs = check_sources([(np.asarray(x), np.asarray(y)) for x, y in zip(Xs, ys, strict=True)])
    X, y, d = [], [], []
    for k, (x, lab) in enumerate(pairs):
        if len(x) != len(lab):
            raise DataError(f"sources[{k}] has {len(x)} rows but {len(lab)} labels.")
        keep = lab >= 0
        X.append(x[keep])
        y.append(lab[keep].astype(np.int64))
        d.append(np.full(int(keep.sum()), k, dtype=np.int64))
    return np.concatenate(X), np.concatenate(y), np.concatenate(d)


def per_domain_risks(logits: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor,
                     n_domains: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of each domain's rows in a batch: ``(risks (n_domains,), present (n_domains,) bool)``.

    A domain with no row in the batch has risk 0 and ``present`` false."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    sums = torch.zeros(n_domains, dtype=ce.dtype, device=ce.device).index_add(0, domains, ce)
    counts = torch.zeros(n_domains, dtype=ce.dtype, device=ce.device).index_add(0, domains, torch.ones_like(ce))
    present = counts > 0
    return sums / counts.clamp_min(1), present


class DomainTerm(nn.Module):
    """Base of the Trainer loss terms that need each labeled row's domain.

    Parameters
    ----------
    domains
        ``(n_train,)`` integers ``0 .. n_domains - 1``: the domain of each row of the pooled
        training set, in the Trainer's row order.
    weight
        Factor of the term.
    """

    def __init__(self, domains, weight: float = 1.0):
        super().__init__()
        d = torch.as_tensor(np.asarray(domains), dtype=torch.int64)
        if d.ndim != 1 or len(d) == 0 or int(d.min()) < 0:
            raise DataError("domains must be a non-empty 1-D array of domain indices >= 0 (one per training row).")
        self.register_buffer("domains", d, persistent=False)
        self.n_domains = int(d.max()) + 1
        self.weight = float(weight)

    def batch_domains(self, ctx) -> torch.Tensor:
        """The domain of each row of the step's labeled batch (on the logits' device)."""
        if getattr(ctx, "indices", None) is None:
            raise DataError(f"{type(self).__name__} needs the batch's row indices (ctx.indices); "
                            "train it through transferkit.train.Trainer.")
        idx = ctx.indices.to(self.domains.device)
        if int(idx.max()) >= len(self.domains):
            raise DataError(f"{type(self).__name__}: batch row {int(idx.max())} is outside the {len(self.domains)} "
                            "rows its domains array covers; build the term from the pooled training set.")
        return self.domains[idx].to(ctx.logits.device)
