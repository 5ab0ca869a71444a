"""Chapter 4's linear model, written out as the lesson does: no nn.Module, no torch.optim.

Parameters are plain tensors with ``requires_grad``; ``calc_grad`` lets autograd fill ``.grad``; ``step`` is
the SGD update ``p -= p.grad * lr`` followed by zeroing the gradient. Two digits use one output and
``mnist_loss`` (target 1 means "the first digit", as the book's 1 for a 3); more digits use one output per
digit and softmax cross-entropy, written out the same way (chapter 5's lesson).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

Params = list[torch.Tensor]


def init_params(size: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.randn(size, generator=generator) * std).requires_grad_()


def linear1(xb: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return xb @ weights + bias


def mnist_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The book's loss: how far the sigmoid of each prediction is from its 0/1 target."""
    predictions = predictions.sigmoid()
    return torch.where(targets == 1, 1 - predictions, predictions).mean()


def softmax_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy by hand: minus the log of the softmax probability of the right class."""
    log_probs = predictions - predictions.logsumexp(dim=1, keepdim=True)
    return -log_probs[torch.arange(len(targets)), targets].mean()


def batch_accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One output: the book's ``(preds.sigmoid() > 0.5) == yb`` with (N, 1) 0/1 targets; else argmax."""
    if predictions.shape[1] == 1:
        if targets.shape != predictions.shape:
            raise ValueError(f"binary targets must have the predictions' shape {tuple(predictions.shape)}")
        correct = (predictions.sigmoid() > 0.5) == (targets == 1)
    else:
        correct = predictions.argmax(1) == targets
    return correct.float().mean()


def calc_grad(xb: torch.Tensor, yb: torch.Tensor, model: Callable, *, loss_fn: Callable) -> torch.Tensor:
    loss = loss_fn(model(xb), yb)
    loss.backward()
    return loss


def step(params: Params, lr: float) -> None:
    for p in params:
        p.data -= p.grad * lr
        p.grad.zero_()


def train_epoch(model: Callable, batches: Iterable, *, lr: float, params: Params, loss_fn: Callable) -> float:
    losses = []
    for xb, yb in batches:
        losses.append(calc_grad(xb, yb, model, loss_fn=loss_fn).item())
        step(params, lr)
    return sum(losses) / len(losses)


def validate_epoch(model: Callable, batches: Iterable, loss_fn: Callable) -> tuple[float, float]:
    """(accuracy, loss) over all validation batches, weighted by batch size."""
    correct = loss_sum = count = 0.0
    with torch.no_grad():
        for xb, yb in batches:
            predictions = model(xb)
            correct += batch_accuracy(predictions, yb).item() * len(yb)
            loss_sum += loss_fn(predictions, yb).item() * len(yb)
            count += len(yb)
    return correct / count, loss_sum / count
