r"""JAN: joint MMD over features and classifier outputs (Long et al., 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..._registry import register
from ..._validation import check_choice, check_number
from ...nn.kernels import DEFAULT_MULTIPLIERS, check_multipliers, pooled_kernel_blocks
from ._base import DALoss
from .dan import ESTIMATORS, mmd_from_kernels

__all__ = ["JANLoss"]


@register("da_loss", "jan")
class JANLoss(DALoss):
    r"""Joint Adaptation Network: MMD of the joint distribution of several layers' activations.

    The joint kernel is the product of one kernel per layer (a kernel on the tensor-product
    space of the layers, JAN eq. 6):

    .. math::
        k\big((z^1,\dots,z^L),(z'^1,\dots,z'^L)\big) = \prod_{\ell=1}^{L} k^\ell(z^\ell, z'^\ell),

    with :math:`z^1, \dots, z^{L-1}` the feature layers (multi-Gaussian kernels, bandwidth by
    heuristic) and :math:`z^L = \mathrm{softmax}(\text{logits})` (one Gaussian kernel with fixed
    :math:`\sigma`), and the joint MMD :math:`\widehat{D}_{\mathcal L}(P, Q)` estimated from the
    product kernel blocks exactly like DAN's MMD. Unlike DAN's sum of per-layer MMDs, this
    compares :math:`P(f, g)` with :math:`Q(f, g)`, so it also sees a shift in how features relate
    to predictions when each marginal matches.

    Parameters
    ----------
    weight
        :math:`\lambda`.
    estimator
        ``"unbiased"`` (default), ``"linear"`` (the paper's linear-time estimator) or
        ``"biased"``.
    multipliers, heuristic
        Feature-layer multi-kernel (as in :class:`~transferkit.adapt.deep.DANLoss`).
    softmax_sigma
        Bandwidth :math:`\sigma` of the Gaussian kernel on softmax outputs; 0.92 as in the
        authors' code and Transfer-Learning-Library.

    Notes
    -----
    The adversarial variant JAN-A (kernel parameters maximising the MMD) is not implemented.

    References
    ----------
    .. [1] M. Long, H. Zhu, J. Wang and M. Jordan. "Deep Transfer Learning with Joint Adaptation
       Networks." ICML 2017.
    """

    name = "jan"
    needs_logits = True
    min_batch = 2
    multi_layer = True

    def __init__(self, weight: float = 1.0, estimator: str = "unbiased",
                 multipliers: Sequence[float] = DEFAULT_MULTIPLIERS, heuristic: str = "median",
                 softmax_sigma: float = 0.92):
        super().__init__(weight)
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)
        self.multipliers = check_multipliers(multipliers)
        self.heuristic = check_choice("heuristic", heuristic, ("median", "mean"))
        self.softmax_sigma = float(check_number("softmax_sigma", softmax_sigma, low=0, low_inclusive=False))

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        g_s, g_t = torch.softmax(logits_s, 1), torch.softmax(logits_t, 1)
        k_ss, k_tt, k_st = pooled_kernel_blocks(g_s, g_t, multipliers=(1.0,), sigma2=self.softmax_sigma ** 2)
        for a, b in zip(f_s, f_t):
            a_ss, a_tt, a_st = pooled_kernel_blocks(a, b, multipliers=self.multipliers, heuristic=self.heuristic)
            k_ss, k_tt, k_st = k_ss * a_ss, k_tt * a_tt, k_st * a_st
        return mmd_from_kernels(k_ss, k_tt, k_st, self.estimator), {}

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, estimator={self.estimator!r}, softmax_sigma={self.softmax_sigma:g}"
