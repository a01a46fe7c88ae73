r"""Deep CORAL: match second-order statistics of source and target features (Sun & Saenko, 2016)."""

from __future__ import annotations

import torch

from ..._registry import register
from ._base import DALoss

__all__ = ["DeepCORALLoss", "batch_covariance"]


def batch_covariance(x: torch.Tensor) -> torch.Tensor:
    r"""Unbiased covariance of a batch of features:

    .. math::
        C = \frac{1}{n-1}\Big(X^\top X - \frac1n (\mathbf 1^\top X)^\top(\mathbf 1^\top X)\Big).

    Parameters
    ----------
    x : (n, d) tensor, n >= 2

    Returns
    -------
    (d, d) tensor
    """
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / (x.shape[0] - 1)


@register("da_loss", "deep_coral")
class DeepCORALLoss(DALoss):
    r"""CORAL loss :math:`\ell_{\mathrm{CORAL}} = \frac{1}{4d^2}\lVert C_S - C_T\rVert_F^2`.

    :math:`C_S, C_T` are the unbiased covariance matrices (:func:`batch_covariance`) of the
    source and target feature batches and :math:`d` the feature dimension (Sun & Saenko 2016,
    eq. 1). Gradients flow to both domains' features, as in the paper.

    Parameters
    ----------
    weight
        :math:`\lambda` (the paper chooses it so that the classification and CORAL losses are
        about equal at the end of training).

    References
    ----------
    .. [1] B. Sun and K. Saenko. "Deep CORAL: Correlation Alignment for Deep Domain
       Adaptation." ECCV 2016 Workshops.
    """

    name = "deep_coral"
    min_batch = 2

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        d = f_s.shape[1]
        diff = batch_covariance(f_s) - batch_covariance(f_t)
        return (diff * diff).sum() / (4.0 * d * d), {}
