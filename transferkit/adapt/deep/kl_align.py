r"""KL alignment: Kullback-Leibler divergence between Gaussian fits of the feature batches."""

from __future__ import annotations

import torch

from ..._registry import register
from ..._validation import check_choice, check_number
from ._base import DALoss

__all__ = ["KLAlignLoss", "gaussian_kl"]


def gaussian_kl(x0: torch.Tensor, x1: torch.Tensor, covariance: str = "diag", ridge: float = 1e-3) -> torch.Tensor:
    r"""Closed-form :math:`\mathrm{KL}(\mathcal N_0 \,\Vert\, \mathcal N_1)` between Gaussian fits of two samples.

    .. math::
        \mathrm{KL} = \tfrac12\Big[\operatorname{tr}(\Sigma_1^{-1}\Sigma_0)
        + (\mu_1 - \mu_0)^\top \Sigma_1^{-1}(\mu_1 - \mu_0) - d
        + \log\det\Sigma_1 - \log\det\Sigma_0\Big],

    with :math:`\mu, \Sigma` the sample mean and unbiased covariance plus ``ridge`` on the
    diagonal (:math:`\Sigma + \varepsilon I`, which keeps a batch smaller than :math:`d`
    invertible). ``covariance="diag"`` keeps only the variances, so the KL is a sum of
    :math:`d` univariate terms.

    Parameters
    ----------
    x0 : (n0, d) tensor
    x1 : (n1, d) tensor
    covariance
        ``"diag"`` or ``"full"``.
    ridge
        :math:`\varepsilon > 0`.

    Returns
    -------
    0-dim tensor, :math:`\ge 0`
    """
    d = x0.shape[1]
    mu0, mu1 = x0.mean(0), x1.mean(0)
    dm = mu1 - mu0
    if covariance == "diag":
        v0 = x0.var(0, unbiased=True) + ridge
        v1 = x1.var(0, unbiased=True) + ridge
        return 0.5 * (v0 / v1 + dm * dm / v1 - 1.0 + torch.log(v1) - torch.log(v0)).sum()
    eye = torch.eye(d, dtype=x0.dtype, device=x0.device)
    c0 = x0 - mu0
    c1 = x1 - mu1
    s0 = c0.T @ c0 / (x0.shape[0] - 1) + ridge * eye
    s1 = c1.T @ c1 / (x1.shape[0] - 1) + ridge * eye
    l0, l1 = torch.linalg.cholesky(s0), torch.linalg.cholesky(s1)
    tr = torch.cholesky_solve(s0, l1).diagonal().sum()
    maha = (dm * torch.cholesky_solve(dm.unsqueeze(1), l1).squeeze(1)).sum()
    logdet = 2.0 * (torch.log(l1.diagonal()).sum() - torch.log(l0.diagonal()).sum())
    return 0.5 * (tr + maha - d + logdet)


@register("da_loss", "kl_align")
class KLAlignLoss(DALoss):
    r"""KL divergence between Gaussian fits of the source and target feature batches.

    .. math::
        \mathcal{L} = \mathrm{KL}\big(\mathcal N(\mu_s, \Sigma_s) \,\Vert\, \mathcal N(\mu_t, \Sigma_t)\big)
        \quad\text{or, symmetric,}\quad
        \tfrac12\big[\mathrm{KL}(\mathcal N_s \Vert \mathcal N_t) + \mathrm{KL}(\mathcal N_t \Vert \mathcal N_s)\big],

    in closed form (:func:`gaussian_kl`). Matches first and second moments like Deep CORAL plus
    the means, but in a scale-aware way (a variance ratio of 2 costs the same at any scale).

    Parameters
    ----------
    weight
        :math:`\lambda`.
    covariance
        ``"diag"`` (default; cheap and stable for batches smaller than the feature dimension)
        or ``"full"`` (Cholesky, :math:`O(d^3)`).
    ridge
        :math:`\varepsilon` added to the (co)variances. With ``"full"`` and a batch smaller than
        :math:`d` the fitted covariance is singular and the ridge sets the scale of its null
        space, so the loss then depends strongly on it; prefer ``"diag"`` there.
    symmetric
        Average of both directions (Jeffreys divergence / 2) instead of :math:`\mathrm{KL}(S\Vert T)`.

    Notes
    -----
    Not a method from one paper: the Gaussian KL is the classic closed form (e.g. Duchi,
    "Derivations for Linear Algebra and Optimization", or Pardo, "Statistical Inference Based on
    Divergence Measures", 2006); using it as a minibatch alignment loss is in the spirit of
    moment-matching methods such as Deep CORAL (Sun & Saenko, 2016) and CMD (Zellinger et al.,
    ICLR 2017).
    """

    name = "kl_align"
    min_batch = 2

    def __init__(self, weight: float = 1.0, covariance: str = "diag", ridge: float = 1e-3, symmetric: bool = False):
        super().__init__(weight)
        self.covariance = check_choice("covariance", covariance, ("diag", "full"))
        self.ridge = float(check_number("ridge", ridge, low=0, low_inclusive=False))
        self.symmetric = bool(symmetric)

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        kl = gaussian_kl(f_s, f_t, self.covariance, self.ridge)
        if self.symmetric:
            kl = 0.5 * (kl + gaussian_kl(f_t, f_s, self.covariance, self.ridge))
        return kl, {}

    def extra_repr(self) -> str:
        return (f"weight={self.weight:g}, covariance={self.covariance!r}, ridge={self.ridge:g}, "
                f"symmetric={self.symmetric}")
