r"""DeepJDOT: minibatch joint-distribution optimal transport (Damodaran et al., 2018)."""

from __future__ import annotations

import numpy as np
import torch

from ..._registry import register
from ..._validation import check_number, require
from ...errors import DataError
from ...nn.kernels import sq_dists
from ._base import DALoss

__all__ = ["DeepJDOTLoss"]


@register("da_loss", "deepjdot")
class DeepJDOTLoss(DALoss):
    r"""Optimal transport between the joint source :math:`(f_s, y_s)` and target
    :math:`(f_t, \hat y_t)` minibatch distributions.

    Ground cost between source sample :math:`i` and target sample :math:`j`:

    .. math::
        C_{ij} = \alpha\,\lVert f^s_i - f^t_j\rVert^2
                 + \lambda_t\, \mathrm{CE}\big(y^s_i, z^t_j\big),
        \qquad \mathrm{CE}(y, z) = -\log \mathrm{softmax}(z)_y,

    coupling :math:`\gamma^\star = \arg\min_{\gamma\in\Pi(a, b)} \langle\gamma, C\rangle` with
    uniform marginals :math:`a = \mathbf 1/n_s`, :math:`b = \mathbf 1/n_t`, solved exactly by
    POT's ``ot.emd`` on the detached cost, and

    .. math::
        \mathcal{L}_{\mathrm{DeepJDOT}} = \langle \gamma^\star, C \rangle_F ,

    differentiated through :math:`C` with :math:`\gamma^\star` fixed (the paper's alternating
    scheme, one step of each per batch). The source classification term of the paper's
    objective is the trainer's usual cross-entropy.

    Parameters
    ----------
    weight
        Overall factor on the transport loss.
    alpha
        :math:`\alpha`, weight of the feature distance (0.01, the authors' code default).
    lambda_t
        :math:`\lambda_t`, weight of the target classification cost (1.0, ditto).

    Notes
    -----
    The authors' Keras code computes the coupling with a squared distance between the one-hot
    source label and the target softmax, but trains with the cross-entropy; here the coupling
    and the loss use the same cost (the paper's formulation), so the loss is the OT value of
    the minibatch problem. Needs the optional POT package (``pip install 'transferkit[ot]'``);
    the solver runs on the CPU in float64.

    References
    ----------
    .. [1] B. B. Damodaran, B. Kellenberger, R. Flamary, D. Tuia and N. Courty. "DeepJDOT: Deep
       Joint Distribution Optimal Transport for Unsupervised Domain Adaptation." ECCV 2018.
    """

    name = "deepjdot"
    needs_logits = True
    target_logits_only = True
    needs_labels = True

    def __init__(self, weight: float = 1.0, alpha: float = 0.01, lambda_t: float = 1.0):
        super().__init__(weight)
        self.alpha = float(check_number("alpha", alpha, low=0))
        self.lambda_t = float(check_number("lambda_t", lambda_t, low=0))

    def costs(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_t: torch.Tensor,
              y_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature cost :math:`\\lVert f^s_i - f^t_j\\rVert^2` and label cost
        :math:`\\mathrm{CE}(y^s_i, z^t_j)`, both ``(n_s, n_t)``, unweighted."""
        k = logits_t.shape[1]
        if int(y_s.max()) >= k:
            raise DataError(f"y_s holds class {int(y_s.max())} but logits_t has only {k} classes.")
        d2 = sq_dists(f_s, f_t)
        ce = -torch.log_softmax(logits_t, 1)[:, y_s].T
        return d2, ce

    @staticmethod
    def solve_coupling(cost: torch.Tensor) -> torch.Tensor:
        """Exact OT plan with uniform marginals for a detached ``(n_s, n_t)`` cost (sums to 1)."""
        ot = require("ot", "ot", "da_loss 'deepjdot'")
        ns, nt = cost.shape
        m = cost.detach().to("cpu", torch.float64).numpy()
        g = ot.emd(np.full(ns, 1.0 / ns), np.full(nt, 1.0 / nt), m)
        return torch.as_tensor(g, dtype=cost.dtype, device=cost.device)

    def coupling(self, f_s, f_t, logits_t, y_s) -> torch.Tensor:
        """The optimal coupling :math:`\\gamma^\\star` for one batch, ``(n_s, n_t)``."""
        d2, ce = self.costs(f_s, f_t, logits_t, y_s)
        return self.solve_coupling(self.alpha * d2 + self.lambda_t * ce)

    def compute(self, f_s, f_t, logits_s, logits_t, y_s):
        d2, ce = self.costs(f_s, f_t, logits_t, y_s)
        feat, lab = self.alpha * d2, self.lambda_t * ce
        gamma = self.solve_coupling(feat + lab)
        fc, lc = (gamma * feat).sum(), (gamma * lab).sum()
        return fc + lc, {"feature_cost": fc, "label_cost": lc}

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, alpha={self.alpha:g}, lambda_t={self.lambda_t:g}"
