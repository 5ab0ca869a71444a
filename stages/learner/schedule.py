"""Learning-rate schedules as fastai uses them: one-cycle, and discriminative rates across layer groups."""

from __future__ import annotations

import torch

from stages.core.errors import UserError


def one_cycle(
    optimizer: torch.optim.Optimizer,
    max_lr,
    total_steps: int,
    *,
    pct_start: float,
    div: float = 25.0,
    div_final: float = 1e5,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """fastai's ``fit_one_cycle`` schedule: cosine warm-up from ``max_lr / div`` to ``max_lr``, cosine down to
    ``max_lr / div_final``; momentum (Adam's beta1) cycled 0.95 -> 0.85 -> 0.95. ``max_lr`` may be a list,
    one per parameter group (discriminative learning rates)."""
    if pct_start * total_steps < 2:  # torch's OneCycleLR divides by zero below that
        raise UserError(
            f"one-cycle needs at least 2 warm-up steps, got {total_steps} steps x pct_start {pct_start}: "
            "use a smaller batch_size or more epochs"
        )
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy="cos",
        div_factor=div,
        final_div_factor=div_final / div,  # torch divides the initial lr, fastai the maximum
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """fastai's ``even_mults``: ``n`` values from start to stop, evenly spaced on a log scale."""
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step**i for i in range(n)]


def discriminative_lrs(lr_min: float | None, lr_max: float, n_groups: int) -> list[float]:
    """fastai's ``slice(lr_min, lr_max)``: geometric from first to last group; ``slice(lr_max)`` alone gives
    the last group ``lr_max`` and the others a tenth of it."""
    if lr_min is None:
        return [lr_max / 10] * (n_groups - 1) + [lr_max]
    return even_mults(lr_min, lr_max, n_groups)
