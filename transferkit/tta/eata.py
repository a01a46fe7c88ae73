"""EATA: efficient anti-forgetting test-time adaptation (a continual TENT that resists error
accumulation).

Niu et al. (ICML 2022) keep TENT's parameters (the normalisation affine parameters) and its
entropy loss, and add three things that stop a long stream from drifting into collapse:

1. **reliable samples only**: a sample enters the loss only when its prediction entropy is
   below :math:`E_0` (default :math:`0.4 \\ln K`); high-entropy samples give noisy gradients;
2. **non-redundant samples only**: a sample whose probability vector has cosine similarity
   ``>= d_margin`` with the moving average :math:`m` of the selected predictions
   (:math:`m \\leftarrow 0.9\\,m + 0.1\\,\\bar p`) is dropped, so one predicted class cannot
   dominate the updates;
3. **an anti-forgetting anchor**: :math:`\\alpha \\sum_i F_i (\\theta_i - \\theta^0_i)^2`
   with the diagonal Fisher :math:`F` of the source model estimated on clean unlabeled
   inputs (``fisher_inputs``: their pseudo-labels' cross-entropy gradients), pulling the
   parameters back to the source solution.

Selected samples are weighted by :math:`1/\\exp(H(x) - E_0)` (confident ones count more). The
loss is the weighted mean entropy of the selected samples plus the anchor; a batch with no
selected sample takes no step. Without ``fisher_inputs`` there is no anchor unless ``anchor``
is given, then with uniform weights :math:`F_i = 1` (an L2-SP pull to the source).

Reference: Niu, Wu, Zhang, Chen, Zheng, Zhao, Tan. "Efficient test-time model adaptation
without forgetting", ICML 2022.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .._registry import register
from ..errors import DataError
from .base import check_value, softmax_entropy
from .tent import _GradientTTA


@register("tta", "eata")
class EATA(_GradientTTA):
    """EATA: TENT on reliable, non-redundant samples with a Fisher anchor (the continual method).

    Parameters
    ----------
    e_margin
        :math:`E_0` as a fraction of :math:`\\ln K` (0.4, the paper's).
    d_margin
        Cosine-similarity threshold of the redundancy filter (the paper: 0.05 for ImageNet's
        1,000 classes, 0.4 for CIFAR-10).
    fisher_inputs
        Clean unlabeled model-ready inputs (a tensor/array) for the diagonal Fisher of the
        anchor; ``None``: no Fisher.
    anchor
        :math:`\\alpha`; default 2000 (the paper's) with ``fisher_inputs``, else 0 (no anchor).
    lr, steps, optimizer, momentum, mode, batch_size, copy
        As :class:`~transferkit.tta.Tent`.
    """

    name = "eata"

    def __init__(self, model, *, e_margin: float = 0.4, d_margin: float = 0.4, fisher_inputs=None,
                 anchor: float | None = None, lr: float = 1e-3, steps: int = 1, optimizer: str = "adam",
                 momentum: float = 0.9, mode: str = "online", batch_size: int = 64, copy: bool = True):
        self.e_margin = check_value("e_margin", e_margin, low=0, low_inclusive=False, high=1, example=0.4)
        self.d_margin = check_value("d_margin", d_margin, low=0, high=1, example=0.4)
        self.anchor = (2000.0 if fisher_inputs is not None else 0.0) if anchor is None else \
            check_value("anchor", anchor, low=0, example=2000)
        self._fisher_inputs = fisher_inputs
        super().__init__(model, lr=lr, steps=steps, optimizer=optimizer, momentum=momentum, mode=mode,
                         batch_size=batch_size, copy=copy)
        del self._fisher_inputs

    def _configure(self) -> None:
        super()._configure()
        self.theta0_ = [p.detach().clone() for p in self._params]
        self.fisher_ = self._fisher(self._fisher_inputs) if self._fisher_inputs is not None else \
            [torch.ones_like(p) for p in self._params]
        self.probs_avg_ = None
        self.n_selected_ = 0

    def _fisher(self, inputs) -> list[torch.Tensor]:
        X = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        if len(X) < 2:
            raise DataError(f"eata: fisher_inputs has {len(X)} samples; give at least 2 clean inputs (a few hundred "
                            "is typical), or leave it out.")
        dev = next(self.model.parameters()).device
        fisher = [torch.zeros_like(p) for p in self._params]
        starts = list(range(0, len(X), self.batch_size))
        if len(starts) > 1 and len(X) - starts[-1] == 1:
            starts.pop()
        with torch.enable_grad():
            for i, s in enumerate(starts):
                e = starts[i + 1] if i + 1 < len(starts) else len(X)
                logits = self.model(X[s:e].to(dev))
                loss = F.cross_entropy(logits, logits.argmax(1).detach())
                grads = torch.autograd.grad(loss, self._params)
                for f, g in zip(fisher, grads):
                    f += g.detach() ** 2
        return [f / len(starts) for f in fisher]

    def _method_state(self) -> dict:
        return {**super()._method_state(), "probs_avg": getattr(self, "probs_avg_", None),
                "n_selected": getattr(self, "n_selected_", 0)}

    def _load_method_state(self, state: dict) -> None:
        super()._load_method_state(state)
        self.probs_avg_, self.n_selected_ = state["probs_avg"], state["n_selected"]

    def _extra_description(self) -> str:
        return (f"; only samples with entropy < {self.e_margin:g} ln K and cosine similarity < {self.d_margin:g} "
                f"to the running mean prediction enter the loss; anchor alpha={self.anchor:g}"
                + (" with a Fisher from clean inputs" if self.anchor and self._has_fisher() else
                   " with uniform weights" if self.anchor else ""))

    def _has_fisher(self) -> bool:
        return any(not torch.all(f == 1) for f in self.fisher_)

    def _loss(self, logits):
        k = logits.shape[1]
        e0 = self.e_margin * math.log(k)
        ent = softmax_entropy(logits)
        keep = ent < e0
        probs = logits.softmax(1).detach()
        if self.probs_avg_ is not None and keep.any():
            cos = F.cosine_similarity(self.probs_avg_[None], probs, dim=1)
            keep &= cos.abs() < self.d_margin
        if keep.any():
            mean = probs[keep].mean(0)
            self.probs_avg_ = mean if self.probs_avg_ is None else 0.9 * self.probs_avg_ + 0.1 * mean
        n = int(keep.sum())
        self.n_selected_ += n
        if n == 0:
            return None
        e = ent[keep]
        loss = (e * torch.exp(-(e.detach() - e0))).mean()
        if self.anchor:
            loss = loss + self.anchor * sum((f * (p - p0) ** 2).sum()
                                            for f, p, p0 in zip(self.fisher_, self._params, self.theta0_))
        return loss
