"""Learning-rate schedules: linear warm-up, then cosine, step or constant (per step)."""

from __future__ import annotations

import math

import torch

from .._validation import check_choice, check_number

#: The learning-rate schedules of :func:`make_schedule`.
SCHEDULES = ("cosine", "step", "constant", "inverse")


def make_schedule(optimizer: torch.optim.Optimizer, total_steps: int, *, schedule: str = "cosine",
                  warmup_steps: int = 0, step_size: int | None = None, gamma: float = 0.1,
                  min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` multiplying every group's initial LR by

    - warm-up: ``(s + 1) / warmup_steps`` for ``s < warmup_steps``;
    - ``cosine``: ``r + (1 - r) (1 + cos(pi t)) / 2`` with ``t`` the post-warm-up progress and
      ``r = min_lr_ratio`` (SGDR without restarts);
    - ``step``: ``gamma ** (s // step_size)``;
    - ``constant``: 1;
    - ``inverse``: ``(1 + 10 t)^{-0.75}`` with ``t`` the post-warm-up progress (the annealing
      of Ganin & Lempitsky 2015 and Long et al. 2015, used by domain adaptation).
    """
    check_choice("schedule", schedule, SCHEDULES)
    total_steps = check_number("total_steps", total_steps, low=1, integer=True)
    warmup_steps = check_number("warmup_steps", warmup_steps, low=0, integer=True)
    step_size = step_size or max(1, total_steps // 3)

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "step":
            return gamma ** ((s - warmup_steps) // step_size)
        t = min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "inverse":
            return (1 + 10 * t) ** -0.75
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
