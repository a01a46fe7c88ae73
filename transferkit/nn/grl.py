"""Gradient reversal and the warm-start schedule of adversarial domain adaptation.

The gradient reversal layer (GRL) of Ganin & Lempitsky (2015) is the identity in the forward
pass and multiplies the incoming gradient by ``-coeff`` in the backward pass, so one backward
pass trains a domain discriminator to *separate* the domains while the feature extractor below
the GRL learns to *confuse* it.

References
----------
.. [1] Y. Ganin and V. Lempitsky. "Unsupervised Domain Adaptation by Backpropagation." ICML 2015.
.. [2] Y. Ganin, E. Ustinova, H. Ajakan, P. Germain, H. Larochelle, F. Laviolette, M. Marchand
   and V. Lempitsky. "Domain-Adversarial Training of Neural Networks." JMLR 17(59), 2016.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_number

__all__ = ["GradientReversal", "WarmStartSchedule", "dann_lambda", "grad_reverse"]


class _GradientReverseFunction(torch.autograd.Function):
    """``forward(x) = x``; ``backward(g) = -coeff * g`` (no gradient for ``coeff``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = float(coeff)
        # view_as: a new tensor node, so the reversal applies even when x is a leaf.
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output.neg() * ctx.coeff, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    r"""Identity forward, gradient multiplied by :math:`-\text{coeff}` backward.

    Parameters
    ----------
    x
        Any tensor.
    coeff
        Reversal coefficient :math:`\lambda \ge 0`; ``0`` blocks the gradient entirely.

    Returns
    -------
    torch.Tensor
        A tensor equal to ``x`` whose gradient is :math:`-\lambda\,\partial L/\partial x`.
    """
    return _GradientReverseFunction.apply(x, coeff)


class GradientReversal(nn.Module):
    r"""Module form of :func:`grad_reverse`: :math:`R_\lambda(x) = x`,
    :math:`\partial R_\lambda / \partial x = -\lambda I` (Ganin & Lempitsky, 2015).

    Parameters
    ----------
    coeff
        Initial coefficient :math:`\lambda`; a schedule may overwrite ``self.coeff`` every step.
    """

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = float(check_number("coeff", coeff, low=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff:g}"


def dann_lambda(p: float, gamma: float = 10.0) -> float:
    r"""DANN adaptation-factor schedule :math:`\lambda_p = \frac{2}{1 + e^{-\gamma p}} - 1`.

    Rises smoothly from 0 at :math:`p = 0` to :math:`\approx 0.9999` at :math:`p = 1` (with
    :math:`\gamma = 10`), which suppresses the noisy discriminator signal early in training
    (Ganin & Lempitsky 2015, Sec. 5.2.1).

    Parameters
    ----------
    p
        Training progress in ``[0, 1]``.
    gamma
        Steepness (10 in the paper).
    """
    p = check_number("p", p, low=0, high=1)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class WarmStartSchedule:
    r"""Coefficient rising from ``lo`` to ``hi`` with the DANN sigmoid:

    .. math::
        c(p) = \mathrm{lo} + (\mathrm{hi} - \mathrm{lo})\,\Big(\frac{2}{1 + e^{-\gamma p}} - 1\Big),

    so ``c(0) = lo`` and ``c(1) ~= hi``. ``kind="constant"`` returns ``hi`` for every ``p``
    (no warm start). The same form as Transfer-Learning-Library's
    ``WarmStartGradientReverseLayer``, but driven by the progress ``p`` that the trainer passes
    to ``loss.set_progress(p)`` instead of an internal step counter.

    Parameters
    ----------
    hi, lo
        End and start values.
    gamma
        Steepness of the sigmoid (10 in Ganin & Lempitsky, 2015).
    kind
        ``"dann"`` (warm start) or ``"constant"``.
    """

    def __init__(self, hi: float = 1.0, lo: float = 0.0, gamma: float = 10.0, kind: str = "dann"):
        from .._validation import check_choice

        self.hi = float(check_number("hi", hi, low=0))
        self.lo = float(check_number("lo", lo, low=0))
        self.gamma = float(check_number("gamma", gamma, low=0, low_inclusive=False))
        self.kind = check_choice("schedule", kind, ("dann", "constant"))

    def __call__(self, p: float) -> float:
        if self.kind == "constant":
            return self.hi
        return self.lo + (self.hi - self.lo) * dann_lambda(p, self.gamma)

    def __repr__(self) -> str:
        return f"WarmStartSchedule(hi={self.hi:g}, lo={self.lo:g}, gamma={self.gamma:g}, kind={self.kind!r})"
