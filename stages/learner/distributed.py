"""Training on several processes with PyTorch's own engine, DistributedDataParallel, launched by torchrun:

    torchrun --standalone --nproc_per_node N -m stages.train_pets        # or: -m stages.train_mnist resnet18

Each process trains on its share of every batch (``batch_size`` stays the global batch, split N ways), DDP averages
the gradients, and only the first process (rank 0) logs and writes outputs. With CUDA each process takes GPU
``LOCAL_RANK`` and talks over NCCL, with BatchNorm synchronised across GPUs as fastai's ``distrib_ctx`` does; on
the CPU the processes talk over gloo and keep per-process BatchNorm statistics. Started without torchrun, a stage
is one process and none of this applies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from stages.core.devices import Compute
from stages.core.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    compute: Compute | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def main_only(self, context: AbstractContextManager) -> AbstractContextManager:
        """``context`` on rank 0; elsewhere a stand-in that yields None and writes nothing."""
        return context if self.is_main else nullcontext(None)


SINGLE = World()


@contextmanager
def process_group(compute: Compute) -> Iterator[World]:
    """The processes torchrun started, joined; one process (``SINGLE`` with ``compute``) when torchrun did not."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        yield replace(SINGLE, compute=compute)
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if compute.device.type == "cuda":
        gpus, per_machine = torch.cuda.device_count(), int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if per_machine > gpus:  # every process says so, rather than one failing inside CUDA while the others wait
            raise UserError(
                f"torchrun: {per_machine} processes on a machine with {gpus} GPU(s), one GPU each; start "
                "at most that many (--nproc_per_node), or set compute.device: cpu"
            )
        compute = replace(compute, device=torch.device("cuda", local_rank))
        torch.cuda.set_device(compute.device)
    elif compute.device.type != "cpu":
        raise UserError(f"torchrun: several processes need CUDA or the CPU, not {compute.device.type}")
    dist.init_process_group("nccl" if compute.device.type == "cuda" else "gloo")
    if rank != 0:
        os.environ["PIPELINE_PROGRESS"] = "off"  # one progress display, rank 0's
    try:
        yield World(rank, size, compute)
    finally:
        dist.destroy_process_group()


def sharded(loader: DataLoader, world: World, seed: int) -> DataLoader:
    """This process's share of ``loader``: a different part of the shuffled data each, ``batch_size / size`` a batch."""
    if world.size == 1:
        return loader
    if loader.batch_size % world.size:
        raise UserError(
            f"params.yaml: batch_size {loader.batch_size} does not split evenly over {world.size} processes"
        )
    sampler = DistributedSampler(
        loader.dataset, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed, drop_last=True
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size // world.size,
        sampler=sampler,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        persistent_workers=loader.num_workers > 0,
    )


def prepare(model: nn.Module, world: World) -> nn.Module:
    """Once, before training: BatchNorm synchronised across GPUs (gloo on the CPU has no SyncBatchNorm)."""
    if world.size > 1 and world.compute.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap(model: nn.Module, world: World) -> nn.Module:
    """The model as one fit's training steps call it: DDP-wrapped on several processes, itself on one. Wrapped
    anew for each fit, because DDP expects gradients for exactly the parameters that required them when it was
    made, and freezing changes those between fine_tune's phases."""
    if world.size == 1:
        return model
    device_ids = [world.compute.device.index] if world.compute.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def start_epoch(loader, epoch: int) -> None:
    """A DistributedSampler reshuffles only when told the epoch."""
    sampler = getattr(getattr(loader, "loader", loader), "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
