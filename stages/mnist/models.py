"""Chapter 4's networks: the simple net and resnet18 adapted to 28x28 single-channel digits."""

from __future__ import annotations

from torch import nn


def simple_net(n_out: int, hidden: int) -> nn.Module:
    """The book's ``Linear(784, 30) -> ReLU -> Linear(30, 1)``; one output per digit beyond two digits."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def resnet18_for_digits(n_classes: int) -> nn.Module:
    """torchvision's resnet18, untrained, with its stem adapted to 28x28 grayscale.

    The ImageNet stem (7x7 stride-2 conv, then max-pool) would shrink 28 pixels to 7 before the first residual
    block; a 3x3 stride-1 conv on one channel keeps the max-pool, so the blocks see 14, 7, 4 and 2 pixels.
    """
    from torchvision.models import resnet18  # here: importing torchvision costs the other two models 1.5 s a stage

    model = resnet18(weights=None, num_classes=n_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    return model
