"""L2-SP: weight decay toward the pretrained weights (Li, Grandvalet & Davoine, 2018)."""

from __future__ import annotations

import torch

from ..._registry import register
from ._base import Penalty, backbone_and_head_names, check_strength, unwrap


@register("penalty", "l2sp")
class L2SPPenalty(Penalty):
    r"""L2-SP: pull the pretrained weights toward their starting point, decay the new head.

    .. math::

        \Omega(w) = \frac{\alpha}{2} \lVert w_S - w_S^0 \rVert_2^2
                  + \frac{\beta}{2} \lVert w_{\bar S} \rVert_2^2

    where :math:`w_S` are the parameters shared with the source model (the backbone),
    :math:`w_S^0` their pretrained values (kept in buffers), and :math:`w_{\bar S}` the new
    head's parameters (Li et al., 2018, eq. 3).

    Bayesian reading: :math:`\Omega` is the negative log of a Gaussian prior
    :math:`\mathcal N(w_S^0, \alpha^{-1} I)` centred on the *source* weights (and
    :math:`\mathcal N(0, \beta^{-1} I)` on the head), so MAP fine-tuning with L2-SP is
    "start from the source and stay near it unless the target data say otherwise". Plain weight
    decay is the same prior centred at zero, which forgets the source. EWC
    (:class:`EWCPenalty`) replaces the isotropic precision :math:`\alpha` by a per-weight one.

    Decoupled weight decay (AdamW's ``weight_decay``) still pulls toward zero; set it to 0 on
    the backbone when the prior should be centred on the source alone, as in the paper.

    Parameters
    ----------
    alpha
        Precision of the prior on the shared weights (paper default 0.1; the term is a sum over
        all backbone weights, so useful values depend on the architecture).
    beta
        Precision of the zero-centred prior on the new head (paper default 0.01).

    References
    ----------
    Li, X., Grandvalet, Y., Davoine, F. "Explicit inductive bias for transfer learning with
    convolutional networks", ICML 2018.
    """

    name = "l2sp"

    def __init__(self, alpha: float = 0.1, beta: float = 0.01):
        super().__init__()
        self.alpha = check_strength("alpha", alpha)
        self.beta = check_strength("beta", beta)

    @property
    def strength(self) -> float:
        return 1.0  # alpha and beta weigh the two parts inside compute

    def _attach(self, model, *, source, source_head, seed, batch_size) -> None:
        params = dict(model.named_parameters())
        body, head = backbone_and_head_names(model)
        self._store("w0", {n: params[n] for n in body})
        self._head = list(head)

    def compute(self, ctx):
        params = dict(unwrap(ctx.model).named_parameters())
        dev = next(iter(params.values())).device
        sp = torch.zeros((), device=dev)
        for n, w0 in self._stored("w0"):
            sp = sp + (params[n] - w0).pow(2).sum()
        hd = torch.zeros((), device=dev)
        for n in self._head:
            hd = hd + params[n].pow(2).sum()
        raw = 0.5 * self.alpha * sp + 0.5 * self.beta * hd
        return raw, {"l2sp_dist": sp.detach().sqrt()}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, attached={self.attached_}"
