"""Chapter 4's three training recipes on the prepared digits. Each returns the same ``Result``.

- linear: the lesson by hand (stages.linear_by_hand), its own loop, no torch.optim.
- simple_net: ``Linear -> ReLU -> Linear`` with plain SGD through the shared loop (the book's ``Learner.fit``).
- resnet18: cross-entropy, Adam and one-cycle through the shared loop (the book's ``fit_one_cycle``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset

from stages import linear_by_hand, mnist_models, training


@dataclass
class Digits:
    train_x: torch.Tensor  # (N, 28, 28) float in [0, 1]
    train_y: torch.Tensor  # class index into ``classes``
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    classes: list[str]


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


def train_linear(d: Digits, cfg: dict, device: torch.device, on_epoch: training.EpochCallback) -> Result:
    del device  # the lesson runs on the CPU: 785 parameters, nothing to accelerate
    generator = training.seed_everything(cfg["seed"])
    n_out = n_outputs(d)
    weights = linear_by_hand.init_params((28 * 28, n_out), cfg["init_std"], generator)
    bias = linear_by_hand.init_params((n_out,), cfg["init_std"], generator)
    params = [weights, bias]

    def model(xb: torch.Tensor) -> torch.Tensor:
        return linear_by_hand.linear1(xb, weights, bias)

    target = binary_target if n_out == 1 else (lambda y: y)
    loss_fn = linear_by_hand.mnist_loss if n_out == 1 else linear_by_hand.softmax_loss
    cpu = torch.device("cpu")
    train = training.loader(TensorDataset(d.train_x.flatten(1), target(d.train_y)), cfg["batch_size"], cpu, True, cfg["seed"])
    valid = training.loader(TensorDataset(d.valid_x.flatten(1), target(d.valid_y)), cfg["batch_size"], cpu, False, 0)

    before, _ = linear_by_hand.validate_epoch(model, valid, loss_fn)
    history = []
    for epoch in range(cfg["epochs"]):
        train_loss = linear_by_hand.train_epoch(model, train, cfg["lr"], params, loss_fn)
        accuracy, valid_loss = linear_by_hand.validate_epoch(model, valid, loss_fn)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss, "accuracy": accuracy}
        history.append(record)
        on_epoch(record)
    with torch.no_grad():
        outputs = model(d.valid_x.flatten(1))
    state = {"weights": weights.detach().clone(), "bias": bias.detach().clone()}
    return Result(outputs, history, state, {"accuracy_before_training": round(before, 6)})


def _fit_module(model: nn.Module, d: Digits, cfg: dict, device: torch.device, on_epoch, make_opt, loss_fn: Callable,
                add_channel: bool, name: str):  # fmt: skip
    shape = (lambda x: x[:, None]) if add_channel else (lambda x: x)
    train = training.loader(TensorDataset(shape(d.train_x), d.train_y), cfg["batch_size"], device, True, cfg["seed"])
    valid = training.loader(TensorDataset(shape(d.valid_x), d.valid_y), cfg["batch_size"], device, False, 0)
    model = training.prepare_model(model, device)
    optimizer, scheduler = make_opt(model, len(train))
    history = training.fit(model, train, valid, loss_fn, optimizer, cfg["epochs"], device, scheduler, on_epoch, name)
    outputs, _, _ = training.predict(model, valid, device, loss_fn)
    return Result(outputs, history, {k: v.cpu() for k, v in model.state_dict().items()})


def train_simple_net(d: Digits, cfg: dict, device: torch.device, on_epoch: training.EpochCallback) -> Result:
    training.seed_everything(cfg["seed"])
    model = mnist_models.simple_net(n_outputs(d), cfg["hidden"])

    def plain_sgd(model: nn.Module, steps_per_epoch: int):
        return torch.optim.SGD(model.parameters(), lr=cfg["lr"]), None  # fastai's SGD: no momentum

    loss_fn = nn_loss(n_outputs(d))
    return _fit_module(model, d, cfg, device, on_epoch, plain_sgd, loss_fn, add_channel=False, name="simple_net")


def train_resnet18(d: Digits, cfg: dict, device: torch.device, on_epoch: training.EpochCallback) -> Result:
    training.seed_everything(cfg["seed"])
    model = mnist_models.resnet18_for_digits(len(d.classes))  # cross-entropy: always one output per digit

    def adam_one_cycle(model: nn.Module, steps_per_epoch: int):
        # fastai's default optimiser: Adam, betas (0.9, 0.99), decoupled weight decay 0.01.
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.99), weight_decay=0.01)
        return opt, training.one_cycle(opt, cfg["lr"], cfg["epochs"] * steps_per_epoch, cfg["pct_start"])

    loss_fn = nn.functional.cross_entropy
    return _fit_module(model, d, cfg, device, on_epoch, adam_one_cycle, loss_fn, add_channel=True, name="resnet18")


RECIPES = {"linear": train_linear, "simple_net": train_simple_net, "resnet18": train_resnet18}
