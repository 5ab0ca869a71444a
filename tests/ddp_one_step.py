"""One training step of a small network through the project's Learner, on one process or as one of several under
torchrun (gloo, CPU); rank 0 saves the weights after it to ``sys.argv[1]``. Run by test_learnability.py."""

import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from stages.core.devices import Compute
from stages.learner import distributed
from stages.learner.learner import DataLoaders, Learner, loader

BATCH = 8  # the whole training set: one step, the same eight items on one process or split over two


def main(out: str) -> None:
    compute = Compute(torch.device("cpu"), mixed=False)
    torch.set_num_threads(1)
    with distributed.process_group(compute) as world:
        generator = torch.Generator().manual_seed(0)
        x, y = torch.randn(BATCH, 6, generator=generator), torch.randint(0, 3, (BATCH,), generator=generator)
        torch.manual_seed(0)  # the same starting weights in every process
        net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))  # no BatchNorm: no per-process statistics
        train = distributed.sharded(
            loader(TensorDataset(x, y), BATCH, compute, shuffle=True, seed=0, drop_last=True), world, seed=0
        )
        valid = loader(TensorDataset(x, y), BATCH, compute, shuffle=False, seed=0)
        learn = Learner(net, DataLoaders(train, valid), nn.functional.cross_entropy, compute, world=world)
        learn.fit(1, 0.1)
        if world.is_main:
            torch.save({k: v.detach().clone() for k, v in learn.model.state_dict().items()}, out)


if __name__ == "__main__":
    main(sys.argv[1])
