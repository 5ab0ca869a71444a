"""The Pets learner as lr_find_pets, train_pets and the benchmarks build it from the ``pets_model`` params: the
model, the presized data with fastai's batch augmentation on the device, and the loss."""

from __future__ import annotations

from itertools import islice

from torch import nn
from torch.utils.data import DataLoader

from stages.core import settings
from stages.core.devices import Compute
from stages.learner import distributed
from stages.learner.learner import DataLoaders, Learner, loader, seed_everything
from stages.pets import augment, data, model


def wants_pretrained(weights: str, source: str) -> bool:
    """``auto`` follows the data switch: ImageNet weights with the full download, none with the offline sample."""
    return weights == "imagenet" or (weights == "auto" and source == "full")


def wants_normalized(pretrained: bool) -> bool:
    """ImageNet statistics are the pretrained body's: fastai's ``vision_learner`` normalises only then."""
    return pretrained


class Limited:
    """The first ``batches`` batches of a loader each epoch (``pets_model.batches_per_epoch``, for dry runs)."""

    def __init__(self, loader: DataLoader, batches: int):
        self.loader, self.batches = loader, min(batches, len(loader))

    def __iter__(self):
        return islice(iter(self.loader), self.batches)

    def __len__(self) -> int:
        return self.batches


def gathered(batches, transform):
    """The batch transform for ``batches``: an ``OnDevice`` dataset's batches are indices, whose images are gathered
    on the device first."""
    dataset = getattr(batches, "loader", batches).dataset
    if isinstance(dataset, data.OnDevice):
        return lambda indices: transform(dataset.gather(indices))
    return transform


def pets_learner(
    cfg: dict,
    pretrained: bool,
    compute: Compute,
    *,
    classes: list[str],
    on_epoch=None,
    world: distributed.World = distributed.SINGLE,
) -> Learner:
    """``cfg`` is the ``pets_model`` block; ``classes`` the vocab of the presized data; ``world`` the processes
    torchrun started, if any (each trains on its share of every batch)."""
    seed_everything(cfg["seed"])
    net = model.build(cfg["arch"], pretrained, len(classes))
    normalized = wants_normalized(pretrained)

    def split(name: str, shuffle: bool):
        images = data.PresizedPets(name)
        on_device = compute.holds(len(images) * images.image_bytes)
        # fastai drops the last, smaller training batch: BatchNorm statistics of a handful of images are noise.
        return loader(
            data.OnDevice(images, compute.device) if on_device else images,
            cfg["batch_size"],
            compute,
            shuffle=shuffle,
            seed=cfg["seed"],
            workers=0 if on_device else compute.loader_workers(settings.workers()),  # batches of indices
            drop_last=shuffle,
        )

    train, valid = distributed.sharded(split("train", True), world, cfg["seed"]), split("valid", False)
    if cfg["batches_per_epoch"] != "all":
        train = Limited(train, cfg["batches_per_epoch"])
    augmentation = augment.AugTransforms(size=cfg["size"], min_scale=cfg["min_scale"])
    dls = DataLoaders(
        train=train,
        valid=valid,
        train_tfm=gathered(
            train, augment.BatchAugment(augmentation, seed=cfg["seed"] + world.rank, normalize=normalized)
        ),
        valid_tfm=gathered(valid, lambda batch: augment.resize_batch(batch, cfg["size"], normalized)),
    )
    return Learner(
        net,
        dls,
        nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"]),
        compute,
        splitter=model.layer_groups,
        on_epoch=on_epoch,
        name="pets",
        world=world,
    )
