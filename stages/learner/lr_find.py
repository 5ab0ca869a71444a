"""fastai's learning-rate finder, the parts that are not the training step: the exponential schedule, the
smoothed loss, when to stop, and the suggestions read off the curve. ``Learner.lr_find`` runs the sweep.

- schedule: ``lr_i = start_lr * (end_lr / start_lr) ** (i / num_it)`` for batch i (fastai's ``SchedExp``);
- smoothing: exponential moving average, beta 0.98, debiased (fastai's ``AvgSmoothLoss``);
- stop: after ``num_it`` batches, or once the smoothed loss exceeds 4x the best so far;
- suggestions on the curve without its first tenth (``num_it // 10``) and last 5 points: ``valley``,
  ``minimum`` (lr at the lowest loss / 10) and ``steep`` (steepest descent in log lr), as fastai computes them.
"""

from __future__ import annotations

import math

import torch

from stages.core.errors import UserError
from stages.learner import LR_SUGGESTIONS

MIN_ITERATIONS = 6  # fastai's floor on num_it


def exponential_lr(start_lr: float, end_lr: float, *, i: int, num_it: int) -> float:
    return start_lr * (end_lr / start_lr) ** (i / num_it)


class SmoothedLoss:
    """Debiased exponential moving average of the batch losses; ``diverged`` once it passes 4x its best."""

    def __init__(self, beta: float = 0.98):
        self.beta, self.average, self.count, self.best = beta, 0.0, 0, math.inf

    def add(self, loss: float) -> float:
        self.average = self.beta * self.average + (1 - self.beta) * loss
        self.count += 1
        smoothed = self.average / (1 - self.beta**self.count)
        self.best = min(self.best, smoothed)
        return smoothed

    def diverged(self, smoothed: float) -> bool:
        return smoothed > 4 * self.best or math.isnan(smoothed)


def valley(lrs: torch.Tensor, losses: torch.Tensor) -> tuple[float, int]:
    """fastai's default: inside the longest run of decreasing losses, two thirds of the way to its end."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n  # length of the longest decreasing subsequence ending at i
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx]), idx


def minimum(lrs: torch.Tensor, losses: torch.Tensor) -> tuple[float, int]:
    idx = int(losses.argmin())
    return float(lrs[idx]) / 10, idx


def steep(lrs: torch.Tensor, losses: torch.Tensor) -> tuple[float, int]:
    grads = (losses[1:] - losses[:-1]) / (lrs[1:].log() - lrs[:-1].log())
    idx = int(grads.argmin())
    return float(lrs[idx]), idx


def suggest(lrs: list[float], losses: list[float], num_it: int) -> dict[str, dict]:
    """Each suggestion's learning rate, and the point of the curve it was read from (for the plot)."""
    lrs_t, losses_t = torch.tensor(lrs[num_it // 10 : -5]), torch.tensor(losses[num_it // 10 : -5])
    nan = torch.nonzero(torch.isnan(losses_t))
    if len(nan):
        lrs_t, losses_t = lrs_t[: nan.min()], losses_t[: nan.min()]
    if len(lrs_t) < 2:
        raise UserError(
            f"lr_find stopped after {len(lrs)} of {num_it} iterations, too few to suggest a learning rate: "
            "lower lr_find.start_lr, or set fine_tune.base_lr to a number"
        )
    functions = {"valley": valley, "minimum": minimum, "steep": steep}
    result = {}
    for name in LR_SUGGESTIONS:
        lr, idx = functions[name](lrs_t, losses_t)
        result[name] = {"lr": lr, "point_lr": float(lrs_t[idx]), "point_loss": float(losses_t[idx])}
    return result
