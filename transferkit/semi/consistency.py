"""Consistency regularization in the FixMatch style (Sohn et al., NeurIPS 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_number


class FixMatchLoss(nn.Module):
    """``mean_i 1[max p_w(i) >= tau] * CE(argmax p_w(i), z_s(i))``.

    ``p_w`` are the (detached) predictions on a weakly augmented view of each unlabeled
    sample and ``z_s`` the logits on a strongly augmented view: confident weak predictions
    become hard targets for the strong view. Returns ``{"loss", "fixmatch", "mask_rate"}``.

    Parameters
    ----------
    threshold
        Confidence ``tau`` (0.95 in the paper).
    weight
        Multiplier ``lambda_u`` of the unlabeled loss.
    """

    def __init__(self, threshold: float = 0.95, weight: float = 1.0):
        super().__init__()
        self.threshold = check_number("threshold", threshold, low=0, high=1)
        self.weight = check_number("weight", weight, low=0)

    def forward(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor) -> dict:
        with torch.no_grad():
            p = torch.softmax(logits_weak.detach().float(), dim=1)
            conf, target = p.max(1)
            mask = (conf >= self.threshold).float()
        ce = F.cross_entropy(logits_strong, target, reduction="none")
        term = (ce * mask).mean()
        return {"loss": self.weight * term, "fixmatch": term.detach(), "mask_rate": mask.mean()}


class FixMatchTerm(nn.Module):
    r"""FixMatch on unlabeled target images as a :class:`~transferkit.train.Trainer` loss term.

    At every step, from the un-augmented target batch ``ctx.target_inputs`` it builds a weak
    view (a light random affine warp) and a strong view (:class:`~transferkit.train.augment.RandAugment`
    + Cutout), runs ``ctx.model`` on both, and applies :class:`FixMatchLoss`:

    .. math::
        \ell_u = \frac{1}{B} \sum_{i=1}^{B} \mathbb{1}\big[\max_k p_w(i)_k \ge \tau\big]\,
                 \mathrm{CE}\big(\arg\max_k p_w(i)_k,\; z_s(i)\big),
        \qquad p_w = \mathrm{softmax}(\mathrm{model}(\alpha(x))),\; z_s = \mathrm{model}(\mathcal{A}(x))

    with :math:`\alpha` the weak and :math:`\mathcal{A}` the strong augmentation (Sohn et al.,
    "FixMatch: Simplifying semi-supervised learning with consistency and confidence", NeurIPS
    2020). The weak pass runs without gradient (its prediction is a fixed target); the labeled
    batch's cross-entropy is the Trainer's own loss. Use it as
    ``Trainer(..., losses=[FixMatchTerm()]).fit(source, target=unlabeled_target)``.

    Parameters
    ----------
    threshold, weight
        Confidence threshold :math:`\tau` and weight :math:`\lambda_u` (0.95 and 1 in the paper).
    weak
        Callable ``(x, generator) -> x`` for the weak view; default
        ``RandomAffine(rotate=10, translate=0.1, scale=(0.9, 1.1))`` (no flips: they change
        digits and text). ``"none"`` uses the Trainer's own (un-augmented) ``ctx.target_logits``
        as the weak prediction and saves one forward pass.
    strong
        Callable ``(x, generator) -> x`` for the strong view; default :class:`RandAugment`
        (2 ops, magnitude 1, Cutout 0.5) normalized with ``mean``/``std``.
    mean, std
        The backbone's input normalization (``model.spec.mean``/``std``) for the default strong
        augmentation's photometric operations; ``None``: each image's own range is used.
    seed
        Seed of the term's own generator: the views never consume the Trainer's generator, so
        adding the term leaves the order of source batches unchanged.

    Returns (per call)
    -------
    dict
        ``{"loss": weight * l_u, "fixmatch": l_u, "mask_rate": fraction of confident samples}``.
    """

    def __init__(self, threshold: float = 0.95, weight: float = 1.0, weak="light", strong=None,
                 mean=None, std=None, seed: int = 0):
        super().__init__()
        from ..train.augment import RandAugment, make_augment

        self.fixmatch = FixMatchLoss(threshold, weight)
        if weak == "none" or weak is None:
            self.weak = None
        elif isinstance(weak, str):
            self.weak = make_augment(weak)
        elif callable(weak):
            self.weak = weak
        else:
            from ..errors import ConfigError

            raise ConfigError(f"weak={weak!r} must be an augmentation name ('light', 'none', ...) "
                              "or a callable (x, gen) -> x.")
        self.strong = strong if strong is not None else RandAugment(mean=mean, std=std)
        if not callable(self.strong):
            from ..errors import ConfigError

            raise ConfigError(f"strong={strong!r} must be a callable (x, gen) -> x, e.g. RandAugment().")
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The weak (``None`` when ``weak="none"``) and strong views of ``x``, from the term's generator."""
        weak = self.weak(x, self.generator) if self.weak is not None else None
        return weak, self.strong(x, self.generator)

    def forward(self, ctx) -> dict:
        from ..errors import DataError

        x = ctx.target_inputs
        if x is None:
            raise DataError("FixMatchTerm needs unlabeled target images: call trainer.fit(train, val, target=dataset).")
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise DataError("FixMatchTerm augments image batches (N, C, H, W); the target inputs are "
                            f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}.")
        weak, strong = self.views(x)
        if weak is None:
            if ctx.target_logits is None:
                raise DataError("weak='none' needs ctx.target_logits (a Trainer fit with target=...).")
            logits_w = ctx.target_logits.detach()
        else:
            with torch.no_grad():
                logits_w = ctx.model(weak.contiguous(memory_format=torch.channels_last))
        logits_s = ctx.model(strong.contiguous(memory_format=torch.channels_last))
        return self.fixmatch(logits_w, logits_s)

    # the generator's position is part of the state, so a checkpointed run resumes the same views
    def get_extra_state(self):
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state) -> None:
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        return f"threshold={self.fixmatch.threshold:g}, weight={self.fixmatch.weight:g}, seed={self.seed}"
