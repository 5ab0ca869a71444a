"""Chapter 4's three training recipes on the prepared digits. Each returns the same ``Result``.

- linear: the lesson by hand (stages.mnist.linear_by_hand), its own loop, no torch.optim.
- simple_net: ``Linear -> ReLU -> Linear`` with plain SGD and a constant rate (the book's ``learn.fit``).
- resnet18: cross-entropy, fastai's Adam and one-cycle (the book's ``fit_one_cycle``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import TensorDataset

from stages.core.devices import Compute
from stages.learner import distributed
from stages.learner.learner import DataLoaders, EpochCallback, Learner, loader, seed_everything
from stages.learner.optimizer import sgd
from stages.mnist import linear_by_hand, models
from stages.mnist.data import Digits


@dataclass
class Result:
    outputs: torch.Tensor  # validation outputs, (N, 1) for two digits with one output, else (N, K)
    history: list[dict]
    state_dict: dict
    extra: dict = field(default_factory=dict)


def n_outputs(digits: Digits) -> int:
    """One output for two digits (the book's sigmoid model); one per digit otherwise (chapter 5)."""
    return 1 if len(digits.classes) == 2 else len(digits.classes)


def binary_target(class_index: torch.Tensor) -> torch.Tensor:
    """The book's 0/1 target column: 1 for the first digit (its 3s), 0 for the second."""
    return (class_index == 0).float()[:, None]


def nn_loss(n_out: int) -> Callable:
    if n_out == 1:
        return lambda out, y: linear_by_hand.mnist_loss(out, binary_target(y))
    return nn.functional.cross_entropy


def train_linear(d: Digits, cfg: dict, compute: Compute, on_epoch: EpochCallback) -> Result:
    del compute  # the lesson runs on the CPU: 785 parameters, nothing to accelerate
    generator = seed_everything(cfg["seed"])
    n_out = n_outputs(d)
    weights = linear_by_hand.init_params((28 * 28, n_out), cfg["init_std"], generator)
    bias = linear_by_hand.init_params((n_out,), cfg["init_std"], generator)
    params = [weights, bias]

    def model(xb: torch.Tensor) -> torch.Tensor:
        return linear_by_hand.linear1(xb, weights, bias)

    target = binary_target if n_out == 1 else (lambda y: y)
    loss_fn = linear_by_hand.mnist_loss if n_out == 1 else linear_by_hand.softmax_loss
    cpu = Compute(torch.device("cpu"), mixed=False)
    train = loader(
        TensorDataset(d.train_x.flatten(1), target(d.train_y)), cfg["batch_size"], cpu, shuffle=True, seed=cfg["seed"]
    )
    valid = loader(
        TensorDataset(d.valid_x.flatten(1), target(d.valid_y)), cfg["batch_size"], cpu, shuffle=False, seed=0
    )

    before, _ = linear_by_hand.validate_epoch(model, valid, loss_fn)
    history = []
    for epoch in range(cfg["epochs"]):
        train_loss = linear_by_hand.train_epoch(model, train, lr=cfg["lr"], params=params, loss_fn=loss_fn)
        accuracy, valid_loss = linear_by_hand.validate_epoch(model, valid, loss_fn)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss, "accuracy": accuracy}
        history.append(record)
        on_epoch(record)
    with torch.no_grad():
        outputs = model(d.valid_x.flatten(1))
    state = {"weights": weights.detach().clone(), "bias": bias.detach().clone()}
    return Result(outputs, history, state, {"accuracy_before_training": round(before, 6)})


def _digits_loaders(
    d: Digits, cfg: dict, compute: Compute, add_channel: bool, world: distributed.World = distributed.SINGLE
) -> DataLoaders:
    shape = (lambda x: x[:, None]) if add_channel else (lambda x: x)
    train = loader(
        TensorDataset(shape(d.train_x), d.train_y), cfg["batch_size"], compute, shuffle=True, seed=cfg["seed"]
    )
    valid = loader(TensorDataset(shape(d.valid_x), d.valid_y), cfg["batch_size"], compute, shuffle=False, seed=0)
    return DataLoaders(train=distributed.sharded(train, world, cfg["seed"]), valid=valid)


def _result(learn: Learner, history: list[dict]) -> Result:
    outputs, _, _ = learn.last_preds
    return Result(outputs, history, {k: v.cpu() for k, v in learn.model.state_dict().items()})


def train_simple_net(d: Digits, cfg: dict, compute: Compute, on_epoch: EpochCallback) -> Result:
    seed_everything(cfg["seed"])
    model = models.simple_net(n_outputs(d), cfg["hidden"])
    learn = Learner(
        model,
        _digits_loaders(d, cfg, compute, add_channel=False),
        nn_loss(n_outputs(d)),
        compute,
        opt_func=sgd,
        wd=0.0,
        on_epoch=on_epoch,
        name="simple_net",
    )
    return _result(learn, learn.fit(cfg["epochs"], lr=cfg["lr"]))


def train_resnet18(
    d: Digits, cfg: dict, compute: Compute, on_epoch: EpochCallback, world: distributed.World = distributed.SINGLE
) -> Result:
    """The one MNIST model that also trains on several processes (torchrun), ``world`` being them."""
    seed_everything(cfg["seed"])
    model = models.resnet18_for_digits(len(d.classes))  # cross-entropy: always one output per digit
    learn = Learner(
        model,
        _digits_loaders(d, cfg, compute, add_channel=True, world=world),
        nn.functional.cross_entropy,
        compute,
        on_epoch=on_epoch,
        name="resnet18",
        world=world,
    )
    return _result(learn, learn.fit_one_cycle(cfg["epochs"], cfg["lr"], pct_start=cfg["pct_start"]))


RECIPES = {"linear": train_linear, "simple_net": train_simple_net, "resnet18": train_resnet18}


class _ByHand(nn.Module):
    """The hand-written linear model's weights in a module, for inference only (training stays by hand)."""

    def __init__(self, weights: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_by_hand.linear1(x.flatten(1), self.weights, self.bias)


class _WithChannel(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, None])


def model_for(name: str, state_dict: dict, n_classes: int) -> nn.Module:
    """The trained model ``name`` rebuilt from its weights, taking (N, 28, 28) digits in [0, 1] like training."""
    if name == "linear":
        return _ByHand(state_dict["weights"], state_dict["bias"])
    if name == "simple_net":
        hidden, n_out = state_dict["1.weight"].shape[0], state_dict["3.weight"].shape[0]
        net = models.simple_net(n_out, hidden)
    else:
        net = _WithChannel(models.resnet18_for_digits(n_classes))
        state_dict = {f"net.{key}": value for key, value in state_dict.items()}
    net.load_state_dict(state_dict)
    return net
