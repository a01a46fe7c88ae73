"""The contract every deep domain-adaptation loss keeps.

A deep DA loss is an :class:`torch.nn.Module` called once per training step with the source
and target features (and, when it needs them, logits and source labels)::

    out = loss(f_s, f_t, logits_s=z_s, logits_t=z_t, y_s=y_s)
    total = F.cross_entropy(z_s, y_s) + out["loss"]

and returns a dict whose ``"loss"`` is the weighted term to add to the classification loss
and whose other entries are detached 0-dim tensors for logging (the raw, unweighted term
under the loss's own name first). The keys and types never depend on ``train()``/``eval()``.
State (random projections, discriminators, the training progress) lives in parameters and
buffers, so ``.to()`` moves it and ``state_dict()`` checkpoints it; parameters are the ones a
trainer must add to its optimizer (``loss.parameters()``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..._validation import check_number
from ...errors import DataError

__all__ = ["DALoss", "as_feature_list", "logit_entropy"]


def logit_entropy(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    r"""Per-sample Shannon entropy :math:`H(p) = -\sum_k p_k \log p_k` of :math:`p = \mathrm{softmax}(z)`,
    differentiable (the training-time form; the mean entropy of a probability matrix as a
    metric is :func:`transferkit.metrics.information.prediction_entropy`).

    Computed from ``log_softmax`` so one-hot predictions give exactly 0 and no ``log(0)``.

    Parameters
    ----------
    logits : (n, K) tensor
    dim
        Class dimension.

    Returns
    -------
    (n,) tensor
        In ``[0, log K]``.
    """
    logp = torch.log_softmax(logits, dim=dim)
    return -(logp.exp() * logp).sum(dim)


def as_feature_list(f, name: str) -> list[torch.Tensor]:
    """A tensor or a list/tuple of tensors -> a non-empty list of 2-D tensors (``(n, ...)`` is flattened)."""
    fs = list(f) if isinstance(f, (list, tuple)) else [f]
    if not fs:
        raise DataError(f"{name} is an empty list; pass at least one (n, d) feature tensor.")
    out = []
    for i, t in enumerate(fs):
        if not isinstance(t, torch.Tensor):
            raise DataError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() < 2:
            raise DataError(f"{name}[{i}] must have shape (n, d), got {tuple(t.shape)}.")
        out.append(t.flatten(1) if t.dim() > 2 else t)
    return out


class DALoss(nn.Module):
    r"""Base class of the deep domain-adaptation losses (registry kind ``da_loss``).

    Subclasses implement :meth:`compute`, returning the raw term and optional extra logging
    values; :meth:`forward` validates the inputs, multiplies by ``weight`` and builds the dict.

    Parameters
    ----------
    weight
        :math:`\lambda`, the factor in ``total = classification + lambda * term``.

    Attributes
    ----------
    name : str
        Key of the raw term in the returned dict (the registry key).
    needs_logits : bool
        Whether ``logits_s``/``logits_t`` must be passed (only ``logits_t`` when
        ``target_logits_only``).
    needs_labels : bool
        Whether ``y_s`` must be passed.
    min_batch : int
        Fewest samples per domain the estimator is defined for.
    progress : buffer (0-dim)
        Training progress :math:`p \in [0, 1]`, set by the trainer through :meth:`set_progress`
        and used by schedules (DANN/CDAN's gradient-reversal warm start).
    """

    name: str = "da"
    needs_logits: bool = False
    target_logits_only: bool = False  # with needs_logits: only logits_t is required
    needs_labels: bool = False
    min_batch: int = 1
    multi_layer: bool = False  # accepts lists of feature tensors

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(check_number("weight", weight, low=0))
        self.register_buffer("progress", torch.zeros(()))
        self._progress_set = False  # lets schedules warn when no trainer ever calls set_progress

    # ------------------------------------------------------------------ schedule
    def set_progress(self, p: float) -> None:
        """Set the training progress ``p`` in ``[0, 1]`` (step / total steps)."""
        p = float(check_number("p", p, low=0, high=1))
        self.progress.fill_(p)
        self._progress_set = True

    # ------------------------------------------------------------------ contract
    def compute(self, f_s, f_t, logits_s, logits_t, y_s) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(term, extras)``: the raw differentiable term and extra logging scalars."""
        raise NotImplementedError

    def _check(self, f_s, f_t, logits_s, logits_t, y_s):
        ls, lt = as_feature_list(f_s, "f_s"), as_feature_list(f_t, "f_t")
        if not self.multi_layer and (len(ls) > 1 or len(lt) > 1):
            raise DataError(f"da_loss {self.name!r} takes one feature tensor per domain, got lists of "
                            f"{len(ls)} and {len(lt)}; only 'dan' and 'jan' align several layers.")
        if len(ls) != len(lt):
            raise DataError(f"f_s has {len(ls)} layers but f_t has {len(lt)}; pass the same layers for both domains.")
        for i, (a, b) in enumerate(zip(ls, lt)):
            if a.shape[1:] != b.shape[1:]:
                raise DataError(f"source and target features differ in shape at layer {i}: "
                                f"{tuple(a.shape)} vs {tuple(b.shape)}.")
            if a.shape[0] != ls[0].shape[0] or b.shape[0] != lt[0].shape[0]:
                raise DataError(f"layer {i} has a different batch size than layer 0; "
                                "every layer must hold the same samples.")
        ns, nt = ls[0].shape[0], lt[0].shape[0]
        if ns < self.min_batch or nt < self.min_batch:
            raise DataError(f"da_loss {self.name!r} needs at least {self.min_batch} samples per domain, "
                            f"got {ns} source and {nt} target; use a larger batch.")
        if self.needs_logits:
            pairs = [("logits_t", logits_t, nt)]
            if not self.target_logits_only or logits_s is not None:
                pairs.insert(0, ("logits_s", logits_s, ns))
            for nm, z, n in pairs:
                if z is None:
                    raise DataError(f"da_loss {self.name!r} needs {nm}; "
                                    "call loss(f_s, f_t, logits_s=..., logits_t=...).")
                if z.dim() != 2 or z.shape[0] != n:
                    raise DataError(f"{nm} must have shape ({n}, num_classes), got {tuple(z.shape)}.")
            if logits_s is not None and logits_s.shape[1] != logits_t.shape[1]:
                raise DataError("logits_s and logits_t differ in number of classes: "
                                f"{logits_s.shape[1]} vs {logits_t.shape[1]}.")
        if self.needs_labels:
            if y_s is None:
                raise DataError(f"da_loss {self.name!r} needs the source labels; call loss(..., y_s=labels).")
            if y_s.dim() != 1 or y_s.shape[0] != ns:
                raise DataError(f"y_s must have shape ({ns},), got {tuple(y_s.shape)}.")
            if y_s.dtype.is_floating_point or (y_s < 0).any():
                raise DataError("y_s must hold integer class indices >= 0 (labeled source samples only).")
        if self.multi_layer:
            return ls, lt
        return ls[0], lt[0]

    def forward(
        self,
        f_s: torch.Tensor | Sequence[torch.Tensor],
        f_t: torch.Tensor | Sequence[torch.Tensor],
        logits_s: torch.Tensor | None = None,
        logits_t: torch.Tensor | None = None,
        y_s: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Parameters
        ----------
        f_s : (n_s, d) tensor (or a list of them for multi-layer losses)
            Source features.
        f_t : (n_t, d) tensor (or a list of them)
            Target features; ``n_t`` may differ from ``n_s``.
        logits_s : (n_s, K) tensor, optional
        logits_t : (n_t, K) tensor, optional
            Classifier outputs, required when ``needs_logits``.
        y_s : (n_s,) int tensor, optional
            Source labels, required when ``needs_labels``.

        Returns
        -------
        dict
            ``"loss"``: ``weight * term`` (0-dim, differentiable); ``self.name``: the raw term
            (detached); plus loss-specific detached scalars.
        """
        f_s, f_t = self._check(f_s, f_t, logits_s, logits_t, y_s)
        term, extras = self.compute(f_s, f_t, logits_s, logits_t, y_s)
        out = {"loss": self.weight * term, self.name: term.detach()}
        out.update({k: v.detach() for k, v in extras.items()})
        return out

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}"
