"""fastai's ``fit_one_cycle`` and ``fine_tune`` on the shared training loop.

``fine_tune(epochs, base_lr, freeze_epochs, lr_mult, pct_start, div)``: freeze the body and train the head
(BatchNorm too) with one-cycle for ``freeze_epochs`` at ``slice(base_lr)`` with pct_start 0.99; then halve
``base_lr``, unfreeze, and one-cycle for ``epochs`` with learning rates from ``base_lr / lr_mult`` (first group)
to ``base_lr`` (head), geometric across the layer groups, with ``pct_start`` and ``div``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from stages import pets_model, training


@dataclass
class Loop:
    """What every fit needs besides its schedule."""

    model: nn.Sequential
    train: DataLoader
    valid: DataLoader
    loss_fn: Callable
    device: torch.device
    train_transform: training.BatchTransform
    valid_transform: training.BatchTransform
    on_epoch: training.EpochCallback


def fit_one_cycle(loop: Loop, epochs: int, lrs: list[float], pct_start: float, div: float, name: str) -> list[dict]:
    optimizer = pets_model.adam(pets_model.param_groups(loop.model, lrs, pets_model.WEIGHT_DECAY))
    max_lr = [group["lr"] for group in optimizer.param_groups]
    scheduler = training.one_cycle(optimizer, max_lr, epochs * len(loop.train), pct_start, div)
    return training.fit(
        loop.model, loop.train, loop.valid, loop.loss_fn, optimizer, epochs, loop.device, scheduler,
        loop.on_epoch, name, loop.train_transform, loop.valid_transform,
    )  # fmt: skip


def fine_tune(loop: Loop, epochs: int, base_lr: float, freeze_epochs: int, lr_mult: float, pct_start: float,
              div: float, freeze_lr: float | None = None, freeze_pct_start: float = 0.99) -> list[dict]:  # fmt: skip
    """``freeze_lr`` and ``freeze_pct_start`` default to fastai's (``base_lr``, 0.99); the book's manual
    schedule, ``fit_one_cycle(3, 3e-3)`` then ``fit_one_cycle(12, slice(1e-6, 1e-4))``, sets them."""
    n_groups = len(pets_model.layer_groups(loop.model))
    history = []
    if freeze_epochs > 0:
        pets_model.freeze(loop.model)
        lrs = pets_model.discriminative_lrs(None, freeze_lr or base_lr, n_groups)
        history += fit_one_cycle(loop, freeze_epochs, lrs, pct_start=freeze_pct_start, div=25.0, name="frozen")
    base_lr /= 2
    pets_model.unfreeze(loop.model)
    lrs = pets_model.discriminative_lrs(base_lr / lr_mult, base_lr, n_groups)
    history += fit_one_cycle(loop, epochs, lrs, pct_start=pct_start, div=div, name="unfrozen")
    return history
