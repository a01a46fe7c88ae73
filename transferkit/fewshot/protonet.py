"""Prototypical Networks (Snell et al. 2017).

Each class of an episode is represented by the mean of its support embeddings, its *prototype*
:math:`c_k = \\frac{1}{|S_k|}\\sum_{(x_i, y_i) \\in S_k} f(x_i)`, and a query is scored against every
prototype:

- ``distance="sqeuclidean"`` (the paper): :math:`\\mathrm{logit}_k(x) = -\\lVert f(x) - c_k\\rVert^2`;
- ``distance="cosine"``: :math:`\\mathrm{logit}_k(x) = s \\cos(f(x), c_k)` with a scale ``s``
  (``scale``, learned with the encoder when ``learn_scale``; metric scaling as in Oreshkin et al.
  2018, TADAM), since cosine logits in ``[-1, 1]`` give a soft softmax that trains slowly.

With one shot the prototypes are the support embeddings, so ProtoNet is nearest neighbour under the
chosen distance.

References
----------
Snell, Swersky and Zemel, "Prototypical networks for few-shot learning", NeurIPS 2017.
Oreshkin, Rodriguez and Lacoste, "TADAM: task dependent adaptive metric", NeurIPS 2018.
"""

from __future__ import annotations

import torch

from .._registry import register
from .._validation import check_choice, check_number
from ._episodic import MetricMethod, Scale, check_bool, cosine_similarity, prototypes, sq_euclidean

DISTANCES = ("sqeuclidean", "cosine")


@register("fewshot", "protonet")
class ProtoNet(MetricMethod):
    """Prototypical Networks: nearest class mean of support embeddings (squared Euclidean or scaled cosine).

    Parameters
    ----------
    distance
        ``"sqeuclidean"`` (logits ``-||f(x) - c_k||^2``) or ``"cosine"`` (logits ``s cos(f(x), c_k)``).
    scale
        Initial (or fixed) cosine scale ``s > 0``; unused with ``"sqeuclidean"``.
    learn_scale
        Learn ``log s`` with the encoder during meta-training (cosine only).
    lr
        Adam learning rate of episodic meta-training.

    Notes
    -----
    Meta-training (:meth:`meta_train`): one meta-train episode per step, cross-entropy of the logits
    above on its query rows, Adam; the meta-val checkpoint with the best accuracy is restored
    (see :func:`transferkit.fewshot._episodic.train_episodic`). On an encoder without trainable
    parameters (``nn.Identity`` on cached features) there is nothing to train:
    ``needs_meta_training`` is False and :meth:`meta_train` returns ``[]``.

    BatchNorm: during meta-training the encoder runs in train mode on each episode's support and
    query rows as one batch (batch statistics, the running ones updated); prediction runs it in
    eval mode (running statistics), so a query's logits do not depend on the other queries.
    """

    def __init__(self, distance: str = "sqeuclidean", scale: float = 10.0, learn_scale: bool = True,
                 lr: float = 1e-3):
        self.distance = distance
        self.scale = scale
        self.learn_scale = learn_scale
        self.lr = lr

    def _check_params(self) -> None:
        check_choice("distance", self.distance, DISTANCES)
        check_number("scale", self.scale, low=0, low_inclusive=False)
        check_bool("learn_scale", self.learn_scale)
        check_number("lr", self.lr, low=0, low_inclusive=False)

    def _make_extra(self):
        if self.distance != "cosine":
            return None
        return Scale(float(self.scale), learnable=bool(self.learn_scale))

    def _embedded_logits(self, zs: torch.Tensor, ys: torch.Tensor, zq: torch.Tensor, n_way: int) -> torch.Tensor:
        protos = prototypes(zs, ys, n_way)
        if self.distance == "sqeuclidean":
            return -sq_euclidean(zq, protos)
        return self.extra_().to(zq.dtype) * cosine_similarity(zq, protos)
