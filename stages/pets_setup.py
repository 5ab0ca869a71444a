"""What lr_find_pets and train_pets build identically from the ``pets_model`` params: the model, the loaders,
the device transforms and the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from stages import pets_data, pets_model, training


def wants_pretrained(weights: str, source: str) -> bool:
    """``auto`` follows the data switch: ImageNet weights with the full download, none with the offline sample."""
    return weights == "imagenet" or (weights == "auto" and source == "full")


@dataclass
class PetsSetup:
    model: nn.Sequential
    train: DataLoader
    valid: DataLoader
    train_transform: training.BatchTransform
    valid_transform: training.BatchTransform
    loss_fn: nn.Module
    classes: list[str]
    pretrained: bool


def prepare(cfg: dict, source: str, device: torch.device) -> PetsSetup:
    classes = pets_data.read_index()["classes"]
    pretrained = wants_pretrained(cfg["weights"], source)
    training.seed_everything(cfg["seed"])
    model = training.prepare_model(pets_model.build(cfg["arch"], pretrained, len(classes)), device)
    loader = lambda split, shuffle: training.loader(  # noqa: E731
        pets_data.PresizedPets(split), cfg["batch_size"], device, shuffle, cfg["seed"], cfg["workers"]
    )
    return PetsSetup(
        model=model,
        train=loader("train", True),
        valid=loader("valid", False),
        train_transform=pets_data.train_batch_transform(cfg["size"], cfg["min_scale"]),
        valid_transform=pets_data.valid_batch_transform(cfg["size"]),
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"]),
        classes=classes,
        pretrained=pretrained,
    )
