"""fastai's learning-rate finder: train on a copy of the model while the learning rate grows exponentially,
record the smoothed loss, stop when it diverges, and suggest a learning rate from the curve.

- schedule: ``lr_i = start_lr * (end_lr / start_lr) ** (i / num_it)`` for batch i (fastai's ``SchedExp``);
- smoothing: exponential moving average, beta 0.98, debiased (fastai's ``AvgSmoothLoss``);
- stop: after ``num_it`` batches, or once the smoothed loss exceeds 4x the best so far;
- suggestions on the curve without its first tenth (``num_it // 10``) and last 5 points: ``valley``,
  ``minimum`` (lr at the lowest loss / 10) and ``steep`` (steepest descent in log lr), as fastai computes them.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from stages import training
from stages.cli import UserError


def sweep(
    model: nn.Module,
    train: DataLoader,
    loss_fn: Callable,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    device: torch.device,
    start_lr: float,
    end_lr: float,
    num_it: int,
    transform: training.BatchTransform | None = None,
    beta: float = 0.98,
) -> tuple[list[float], list[float]]:
    """``(lrs, smoothed losses)``, one per batch. ``model`` itself is never touched: the sweep trains a copy."""
    model = copy.deepcopy(model)
    model.train()
    optimizer = make_optimizer(model)
    num_it = max(num_it, 6)  # as fastai
    lrs, losses, average, best = [], [], 0.0, math.inf
    while True:
        for xb, yb in train:
            i = len(lrs)
            lr = start_lr * (end_lr / start_lr) ** (i / num_it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = training.train_step(model, xb, yb, loss_fn, optimizer, device, transform)
            average = beta * average + (1 - beta) * loss.item()
            smoothed = average / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > 4 * best or math.isnan(smoothed) or len(lrs) >= num_it:
                return lrs, losses


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
            "lower lr_find.start_lr, or set fine_tune.lr to a number"
        )
    result = {}
    for name, func in (("valley", valley), ("minimum", minimum), ("steep", steep)):
        lr, idx = func(lrs_t, losses_t)
        result[name] = {"lr": lr, "point_lr": float(lrs_t[idx]), "point_loss": float(losses_t[idx])}
    return result
