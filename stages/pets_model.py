"""Transfer-learning model as fastai builds it: a torchvision body cut before its pooling, a new head, and
layer groups that can be frozen and given their own learning rates.

- body: torchvision ``resnet18/34/50`` without ``avgpool`` and ``fc``; ImageNet weights through torchvision's
  weight enums (downloaded into the torch hub cache on first use).
- head: fastai's ``create_head``: concat pooling (average and max), then BatchNorm, Dropout, Linear twice.
- layer groups: fastai's resnet split, stem..layer2 | layer3..layer4 | head.
- freezing keeps BatchNorm trainable in frozen groups (fastai's ``train_bn=True``).
"""

from __future__ import annotations

import urllib.error

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from stages.cli import UserError

ARCHS = ("resnet18", "resnet34", "resnet50")
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
WEIGHT_DECAY = 0.01  # fastai's default, decoupled (AdamW)


class AdaptiveConcatPool2d(nn.Module):
    """Average and max pooling side by side: twice the features of either (fastai)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([nn.functional.adaptive_max_pool2d(x, 1), nn.functional.adaptive_avg_pool2d(x, 1)], 1)


def create_head(n_features: int, n_classes: int, hidden: int = 512) -> nn.Sequential:
    head = nn.Sequential(
        AdaptiveConcatPool2d(), nn.Flatten(),
        nn.BatchNorm1d(2 * n_features), nn.Dropout(0.25), nn.Linear(2 * n_features, hidden, bias=False), nn.ReLU(),
        nn.BatchNorm1d(hidden), nn.Dropout(0.5), nn.Linear(hidden, n_classes, bias=False),
    )  # fmt: skip
    for layer in head:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
    return head


def load_torchvision(arch: str, pretrained: bool) -> nn.Module:
    if arch not in ARCHS:
        raise UserError(f"params.yaml: pets_model.arch must be one of {list(ARCHS)}, not {arch!r}")
    weights = get_model_weights(arch).IMAGENET1K_V1 if pretrained else None
    try:
        return get_model(arch, weights=weights)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        cache = f"{torch.hub.get_dir()}/checkpoints/{weights.url.rsplit('/', 1)[-1]}"
        raise UserError(
            f"could not load ImageNet weights for {arch} from {weights.url} ({exc}); offline, set "
            f"'pets_model.weights: none' to train from scratch, or place the file at {cache}"
        ) from None


def build(arch: str, pretrained: bool, n_classes: int) -> nn.Sequential:
    net = load_torchvision(arch, pretrained)
    n_features = net.fc.in_features
    body = nn.Sequential(*list(net.children())[:-2])
    return nn.Sequential(body, create_head(n_features, n_classes))


def layer_groups(model: nn.Sequential) -> list[nn.Module]:
    body, head = model[0], model[1]
    return [body[:6], body[6:], head]


def freeze_to(model: nn.Sequential, n: int) -> None:
    """Groups before ``n`` stop training, except their BatchNorm layers; groups from ``n`` on train."""
    for index, group in enumerate(layer_groups(model)):
        for module in group.modules():
            for param in module.parameters(recurse=False):
                param.requires_grad_(index >= n or isinstance(module, BN_TYPES))


def freeze(model: nn.Sequential) -> None:
    freeze_to(model, len(layer_groups(model)) - 1)


def unfreeze(model: nn.Sequential) -> None:
    freeze_to(model, 0)


def param_groups(model: nn.Sequential, lrs: list[float], weight_decay: float) -> list[dict]:
    """Optimizer groups: per layer group its learning rate, and no weight decay on BatchNorm or biases
    (fastai's ``wd_bn_bias=False``)."""
    groups = []
    for group, lr in zip(layer_groups(model), lrs, strict=True):
        decay, no_decay = [], []
        for module in group.modules():
            for name, param in module.named_parameters(recurse=False):
                (no_decay if isinstance(module, BN_TYPES) or name == "bias" else decay).append(param)
        groups += [{"params": decay, "lr": lr, "weight_decay": weight_decay},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0}]  # fmt: skip
    return groups


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


def adam(groups: list[dict]) -> torch.optim.AdamW:
    """fastai's default optimiser: Adam with betas (0.9, 0.99), eps 1e-5, decoupled weight decay."""
    return torch.optim.AdamW(groups, betas=(0.9, 0.99), eps=1e-5)
