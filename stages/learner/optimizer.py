"""The optimisers fastai's ``Learner`` uses, built from layer groups: every parameter in exactly one group, each
group with its learning rate, and no weight decay on BatchNorm or biases (fastai's ``wd_bn_bias=False``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
WEIGHT_DECAY = 0.01  # fastai's default for Adam, decoupled (AdamW)

OptFunc = Callable[[list[dict]], torch.optim.Optimizer]


def param_groups(groups: list[nn.Module], lrs: list[float], weight_decay: float) -> list[dict]:
    """Two optimiser groups per layer group: its parameters with decay, and its BatchNorm and biases without."""
    result = []
    for group, lr in zip(groups, lrs, strict=True):
        decay, no_decay = [], []
        for module in group.modules():
            for name, param in module.named_parameters(recurse=False):
                (no_decay if isinstance(module, BN_TYPES) or name == "bias" else decay).append(param)
        result += [
            {"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]
    return result


def adam(groups: list[dict]) -> torch.optim.AdamW:
    """fastai's default optimiser: Adam with betas (0.9, 0.99), eps 1e-5, decoupled weight decay.

    Fused: one kernel per parameter, on the CPU as on a GPU. The unfused step takes ``exp_avg_sq.sqrt()``, which on the
    CPU is MKL's vector math, whose last bit depends on the CPU (stages/core/cpu.py); the fused kernel's square root
    is IEEE's, the same everywhere."""
    return torch.optim.AdamW(groups, betas=(0.9, 0.99), eps=1e-5, fused=True)


def sgd(groups: list[dict]) -> torch.optim.SGD:
    """fastai's ``SGD`` as chapter 4 uses it: no momentum, no weight decay."""
    return torch.optim.SGD(groups)
