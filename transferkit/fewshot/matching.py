"""Matching Networks (Vinyals et al. 2016), without full-context embeddings.

A query ``x`` attends to every support row ``x_i`` with
:math:`a(x, x_i) = \\mathrm{softmax}_i\\big(s \\cos(f(x), f(x_i))\\big)` and its class distribution is
the attention-weighted sum of the one-hot support labels,
:math:`P(y = k \\mid x, S) = \\sum_i a(x, x_i)\\,[y_i = k]`. The logits returned are the
log-probabilities :math:`\\log P(y = k \\mid x, S)`, computed as
``logsumexp_{i: y_i = k}(s cos_i) - logsumexp_i(s cos_i)`` (exact, and finite for every class with a
support row); cross-entropy on them is the paper's negative log-likelihood.

The paper's full-context embeddings (a bidirectional LSTM over the support set and an attention
LSTM for the query) are left out: support and query share one encoder ``f = g``, as in the paper's
ablation without FCE.

References
----------
Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra, "Matching networks for one shot learning",
NeurIPS 2016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._registry import register
from .._validation import check_number
from ._episodic import MetricMethod, Scale, check_bool, cosine_similarity


@register("fewshot", "matching")
class MatchingNetworks(MetricMethod):
    """Matching Networks: softmax attention over cosine similarity to the support rows (no full-context embeddings).

    Parameters
    ----------
    scale
        Multiplier ``s > 0`` of the cosine similarities inside the softmax (the paper: 1).
    learn_scale
        Learn ``log s`` with the encoder during meta-training.
    lr
        Adam learning rate of episodic meta-training.

    Notes
    -----
    Meta-training and BatchNorm as for :class:`~transferkit.fewshot.protonet.ProtoNet` (one shared
    loop, :func:`transferkit.fewshot._episodic.train_episodic`).
    """

    def __init__(self, scale: float = 1.0, learn_scale: bool = False, lr: float = 1e-3):
        self.scale = scale
        self.learn_scale = learn_scale
        self.lr = lr

    def _check_params(self) -> None:
        check_number("scale", self.scale, low=0, low_inclusive=False)
        check_bool("learn_scale", self.learn_scale)
        check_number("lr", self.lr, low=0, low_inclusive=False)

    def _make_extra(self):
        return Scale(float(self.scale), learnable=bool(self.learn_scale))

    def _embedded_logits(self, zs: torch.Tensor, ys: torch.Tensor, zq: torch.Tensor, n_way: int) -> torch.Tensor:
        sim = self.extra_().to(zq.dtype) * cosine_similarity(zq, zs)  # (Q, S)
        member = F.one_hot(ys, n_way).T.bool()  # (N, S)
        masked = sim[:, None, :].masked_fill(~member[None], float("-inf"))  # (Q, N, S)
        return torch.logsumexp(masked, dim=2) - torch.logsumexp(sim, dim=1, keepdim=True)
