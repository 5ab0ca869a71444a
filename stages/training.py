"""The shared training loop (fastai's ``Learner.fit``, written out): one loop for every nn.Module model.

On CUDA it trains in bf16 mixed precision with channels-last convolutions and pinned, non-blocking host to
device copies; on CPU it runs in float32 and, seeded, gives identical results twice.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stages.cli import UserError

EpochCallback = Callable[[dict], None]
BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def loader(dataset: Dataset, batch_size: int, device: torch.device, shuffle: bool, seed: int, workers: int = 0):
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )  # fmt: skip


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(xb: torch.Tensor, yb: torch.Tensor, device: torch.device, transform: BatchTransform | None = None):
    """Copy a batch to the device, then apply the batch transform there (augmentation runs on the GPU)."""
    xb = xb.to(device, non_blocking=True)
    if transform is not None:
        xb = transform(xb)
    if device.type == "cuda" and xb.ndim == 4:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb, yb.to(device, non_blocking=True)


def autocast(device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_step(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, loss_fn: Callable,
               optimizer: torch.optim.Optimizer, device: torch.device, transform: BatchTransform | None = None):  # fmt: skip
    """One optimiser step on one batch (copied to the device and transformed there); returns the loss."""
    xb, yb = to_device(xb, yb, device, transform)
    with autocast(device):
        loss = loss_fn(model(xb).float(), yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def decode(outputs: torch.Tensor) -> torch.Tensor:
    """Class indices from model outputs: one output is "is it the first class?" (the book's 3s), else argmax."""
    if outputs.shape[1] == 1:
        return torch.where(outputs[:, 0] > 0, 0, 1)
    return outputs.argmax(1)


def predict(model: nn.Module, data: DataLoader, device: torch.device, loss_fn: Callable, transform=None):
    """All outputs (float32, on the CPU) for ``data``, its targets, and the mean loss."""
    model.eval()
    outputs, targets, loss_sum = [], [], 0.0
    with torch.no_grad(), autocast(device):
        for xb, yb in data:
            targets.append(yb)
            xb, yb = to_device(xb, yb, device, transform)
            out = model(xb).float()
            loss_sum += loss_fn(out, yb).item() * len(yb)
            outputs.append(out.cpu())
    targets = torch.cat(targets)
    return torch.cat(outputs), targets, loss_sum / len(targets)


def fit(
    model: nn.Module,
    train: DataLoader,
    valid: DataLoader,
    loss_fn: Callable,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_epoch: EpochCallback | None = None,
    description: str = "fit",
    train_transform: BatchTransform | None = None,
    valid_transform: BatchTransform | None = None,
) -> list[dict]:
    """Train for ``epochs``; ``scheduler`` steps every batch (one-cycle). Returns one record per epoch.

    The transforms run on the device after the copy: augmentation for training, resizing for validation.
    """
    history = []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        loss_sum, count = 0.0, 0
        for xb, yb in tqdm(train, desc=f"{description} epoch {epoch + 1}/{epochs}", leave=False, mininterval=2,
                       disable=None):
            loss = train_step(model, xb, yb, loss_fn, optimizer, device, train_transform)
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.item() * len(yb)
            count += len(yb)
        outputs, targets, valid_loss = predict(model, valid, device, loss_fn, valid_transform)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / count,
            "valid_loss": valid_loss,
            "accuracy": (decode(outputs) == targets).float().mean().item(),
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        print(
            f"{description} epoch {record['epoch']}: train_loss {record['train_loss']:.4f} "
            f"valid_loss {valid_loss:.4f} accuracy {record['accuracy']:.4f} ({record['seconds']:.1f}s)"
        )
        if on_epoch is not None:
            on_epoch(record)
    return history


def one_cycle(optimizer: torch.optim.Optimizer, max_lr, total_steps: int, pct_start: float, div: float = 25.0,
              div_final: float = 1e5) -> torch.optim.lr_scheduler.OneCycleLR:  # fmt: skip
    """fastai's ``fit_one_cycle`` schedule: cosine warm-up from ``max_lr / div`` to ``max_lr``, cosine down to
    ``max_lr / div_final``; momentum (Adam's beta1) cycled 0.95 -> 0.85 -> 0.95. ``max_lr`` may be a list,
    one per parameter group (discriminative learning rates)."""
    if pct_start * total_steps < 2:  # torch's OneCycleLR divides by zero below that
        raise UserError(
            f"one-cycle needs at least 2 warm-up steps, got {total_steps} steps x pct_start {pct_start}: "
            "use a smaller batch_size or more epochs"
        )
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start, anneal_strategy="cos",
        div_factor=div, final_div_factor=div_final / div,  # torch divides the initial lr, fastai the maximum
        cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
    )  # fmt: skip
