"""The Pets learner as lr_find_pets, train_pets and the benchmarks build it from the ``pets_model`` params: the
model, the presized data with its device transforms, and the loss."""

from __future__ import annotations

from torch import nn

from stages.core.devices import Compute
from stages.learner.learner import DataLoaders, Learner, loader, seed_everything
from stages.pets import data, model


def wants_pretrained(weights: str, source: str) -> bool:
    """``auto`` follows the data switch: ImageNet weights with the full download, none with the offline sample."""
    return weights == "imagenet" or (weights == "auto" and source == "full")


def pets_learner(cfg: dict, pretrained: bool, compute: Compute, classes: list[str], on_epoch=None) -> Learner:
    """``cfg`` is the ``pets_model`` block; ``classes`` the vocab of the presized data."""
    seed_everything(cfg["seed"])
    net = model.build(cfg["arch"], pretrained, len(classes))

    def split(name: str, shuffle: bool):
        return loader(data.PresizedPets(name), cfg["batch_size"], compute, shuffle, cfg["seed"], cfg["workers"])

    dls = DataLoaders(
        train=split("train", True), valid=split("valid", False),
        train_tfm=data.train_batch_transform(cfg["size"], cfg["min_scale"]),
        valid_tfm=data.valid_batch_transform(cfg["size"]),
    )  # fmt: skip
    return Learner(net, dls, nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"]), compute,
                   splitter=model.layer_groups, on_epoch=on_epoch, name="pets")  # fmt: skip
