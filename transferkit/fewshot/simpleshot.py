"""SimpleShot (Wang et al. 2019): nearest centroid on centred, L2-normalised features.

With the meta-train feature mean :math:`\\bar x`, a feature ``f(x)`` is transformed by

- ``norm="cl2n"`` (centring then L2 normalisation):
  :math:`\\phi(x) = \\frac{f(x) - \\bar x}{\\lVert f(x) - \\bar x\\rVert}`;
- ``norm="l2"``: :math:`\\phi(x) = f(x) / \\lVert f(x)\\rVert`;
- ``norm="none"``: :math:`\\phi(x) = f(x)`;

and a query gets :math:`\\mathrm{logit}_k(x) = -\\lVert \\phi(x) - c_k\\rVert^2` with the centroid
:math:`c_k = \\frac{1}{|S_k|}\\sum_{i \\in S_k} \\phi(x_i)` of the transformed support features.

The mean :math:`\\bar x` is that of the features of every meta-train row, computed in
:meth:`SimpleShot.meta_train` (after the optional supervised pre-training, as in the paper, which
trains the network with cross-entropy on the meta-train classes first). Without meta-train classes
(``meta_train`` never called) CL2N centres on the episode's support mean instead; that uses only
the episode's labeled rows, so it stays a valid few-shot protocol, but it is not the paper's CL2N.

References
----------
Wang, Chao, Weinberger and van der Maaten, "SimpleShot: revisiting nearest-neighbor classification
for few-shot learning", arXiv:1911.04623, 2019.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._registry import register
from .._validation import check_choice, check_number
from ..errors import ConfigError
from ._episodic import EMBED_BATCH, Pretrained, embed, meta_train_rows, prototypes, sq_euclidean

NORMS = ("cl2n", "l2", "none")

#: Meta-train rows whose mean centres the features while pre-training selects (a seeded subset;
#: the final mean uses every row).
SELECT_MEAN_ROWS = 2048


@register("fewshot", "simpleshot")
class SimpleShot(Pretrained):
    """SimpleShot: nearest centroid on centred and L2-normalised (CL2N) encoder features.

    Parameters
    ----------
    norm
        ``"cl2n"`` (subtract the meta-train mean, then L2-normalise), ``"l2"`` or ``"none"``.
    pretrain_lr, batch_size
        Adam learning rate and batch size of the optional supervised pre-training in
        :meth:`meta_train` (linear classifier over the meta-train classes, cross-entropy).

    Notes
    -----
    :meth:`meta_train` pre-trains a trainable encoder for ``steps`` steps (``steps=0`` or a
    parameter-free encoder: no training), selecting on meta-val episodes with this nearest-centroid
    rule, then stores the meta-train feature mean ``mean_``. Features are computed in eval mode
    (BatchNorm running statistics).
    """

    def __init__(self, norm: str = "cl2n", pretrain_lr: float = 1e-3, batch_size: int = 64):
        self.norm = norm
        self.pretrain_lr = pretrain_lr
        self.batch_size = batch_size

    def _check_params(self) -> None:
        check_choice("norm", self.norm, NORMS)
        check_number("pretrain_lr", self.pretrain_lr, low=0, low_inclusive=False)
        check_number("batch_size", self.batch_size, low=2, integer=True)

    def setup(self, encoder, feature_dim, seed=0):
        super().setup(encoder, feature_dim, seed)
        self.mean_ = None
        return self

    def _rows_mean(self, data, limit: int | None = None) -> torch.Tensor:
        rows, _ = meta_train_rows(data)
        if limit is not None and len(rows) > limit:
            rows = np.sort(np.random.default_rng([self.seed_, 1]).choice(rows, size=limit, replace=False))
        total = None
        for i in range(0, len(rows), EMBED_BATCH):
            z = embed(self.encoder_, data.inputs[torch.as_tensor(rows[i:i + EMBED_BATCH])])
            s = z.sum(0, dtype=torch.float64)
            total = s if total is None else total + s
        return (total / len(rows)).to(z.dtype)

    def meta_train(self, data, *, steps, log=None, eval_every=100, val_episodes=100):
        if not hasattr(self, "encoder_"):
            raise ConfigError(f"{type(self).__name__}: call setup(encoder, feature_dim) first.")
        self._check_meta_train_data(data)
        history = super().meta_train(data, steps=steps, log=log, eval_every=eval_every, val_episodes=val_episodes)
        self.mean_ = self._rows_mean(data) if self.norm == "cl2n" else None
        return history

    def _before_selection(self, data) -> None:
        # While pre-training selects, the mean follows the current encoder (a seeded subset of rows).
        self._select_mean = self._rows_mean(data, SELECT_MEAN_ROWS) if self.norm == "cl2n" else None

    def _select_predict(self, support_x, support_y, query_x, n_way):
        return self._centroid_logits(support_x, support_y, query_x, n_way, self._select_mean)

    def _transform(self, z: torch.Tensor, centre: torch.Tensor | None) -> torch.Tensor:
        if self.norm == "cl2n":
            z = z - centre
        if self.norm in ("cl2n", "l2"):
            z = F.normalize(z, dim=1, eps=1e-12)
        return z

    def _predict(self, support_x, support_y, query_x, n_way):
        return self._centroid_logits(support_x, support_y, query_x, n_way, self.mean_)

    def _centroid_logits(self, support_x, support_y, query_x, n_way, mean):
        z = embed(self.encoder_, torch.cat([support_x, query_x]))
        zs, zq = z[: len(support_x)], z[len(support_x):]
        centre = None
        if self.norm == "cl2n":
            centre = mean.to(z) if mean is not None else zs.mean(0)
        ps, pq = self._transform(zs, centre), self._transform(zq, centre)
        return -sq_euclidean(pq, prototypes(ps, support_y.to(z.device), n_way))
