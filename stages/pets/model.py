"""The transfer-learning model as fastai builds it: a torchvision body cut before its pooling, a new head, and the
layer groups that can be frozen and given their own learning rates.

- body: torchvision ``resnet18/34/50`` without ``avgpool`` and ``fc``; ImageNet weights through torchvision's
  weight enums (downloaded into the torch hub cache on first use).
- head: fastai's ``create_head``: concat pooling (average and max), then BatchNorm, Dropout, Linear twice.
- layer groups: fastai's resnet split, stem..layer2 | layer3..layer4 | head.
"""

from __future__ import annotations

import urllib.error

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from stages.core.errors import UserError
from stages.pets import ARCHS


class AdaptiveConcatPool2d(nn.Module):
    """Average and max pooling side by side: twice the features of either (fastai)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([nn.functional.adaptive_max_pool2d(x, 1), nn.functional.adaptive_avg_pool2d(x, 1)], 1)


def create_head(n_features: int, n_classes: int, hidden: int = 512) -> nn.Sequential:
    head = nn.Sequential(
        AdaptiveConcatPool2d(),
        nn.Flatten(),
        nn.BatchNorm1d(2 * n_features),
        nn.Dropout(0.25),
        nn.Linear(2 * n_features, hidden, bias=False),
        nn.ReLU(),
        nn.BatchNorm1d(hidden),
        nn.Dropout(0.5),
        nn.Linear(hidden, n_classes, bias=False),
    )
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
    """fastai's ``_resnet_split``: the Learner's ``splitter`` for these models."""
    body, head = model[0], model[1]
    return [body[:6], body[6:], head]
