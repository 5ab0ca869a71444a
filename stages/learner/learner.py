"""fastai's ``Learner``, written out: one object holds the model, the data, the loss, the optimiser factory and where
it computes, and its methods take only schedule arguments.

    learn = Learner(model, dls, loss_func, compute, opt_func=adam, splitter=layer_groups)
    learn.lr_find(start_lr, end_lr, num_it)
    learn.fine_tune(epochs, base_lr, freeze_epochs, lr_mult, pct_start, div)

The loop itself is two helpers in the style of torchvision's ``references/classification``: ``train_one_epoch``
and ``evaluate``. Batches arrive as the loaders give them (uint8 images for Pets) and are copied to the device,
where the batch transform runs (augmentation for training, resizing for validation).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from stages.core.devices import Compute
from stages.core.errors import UserError
from stages.core.progress import progress
from stages.learner import distributed
from stages.learner import lr_find as finder
from stages.learner.optimizer import BN_TYPES, WEIGHT_DECAY, OptFunc, adam, param_groups
from stages.learner.schedule import discriminative_lrs, one_cycle

EpochCallback = Callable[[dict], None]
BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generator (weights, dropout, augmentation) and return a generator of the same seed."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Shuffle(Sampler[int]):
    """A new order of ``n`` items each epoch from a generator of ``seed`` that nothing else draws from, drawn whole
    when the epoch starts: neither the number of loader workers (``PIPELINE_WORKERS``) nor an epoch cut short
    (``batches_per_epoch``) changes a later epoch's order.

    The two draws below are those torch's ``RandomSampler`` and ``DataLoader`` make with persistent workers (a base
    seed, and an unused second permutation per epoch), so results trained that way keep their order; why torch's
    own sampler is not used is in docs/design-notes.md."""

    def __init__(self, n: int, seed: int):
        self.n, self.generator = n, torch.Generator().manual_seed(seed)
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # the base seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        torch.randperm(self.n, generator=self.generator)  # the unused one
        return iter(order)


def loader(
    dataset: Dataset,
    batch_size: int,
    compute: Compute,
    *,
    shuffle: bool,
    seed: int,
    workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """Shuffled (or not) in this process by ``Shuffle``, so worker processes change no result."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=Shuffle(len(dataset), seed) if shuffle else None,
        num_workers=workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=compute.pin_memory,
        persistent_workers=workers > 0,
    )


@dataclass
class DataLoaders:
    """fastai's ``DataLoaders``: the two loaders, and the batch transform each applies on the device."""

    train: DataLoader
    valid: DataLoader
    train_tfm: BatchTransform | None = None
    valid_tfm: BatchTransform | None = None


def decode(outputs: torch.Tensor) -> torch.Tensor:
    """Class indices from model outputs: one output is "is it the first class?" (the book's 3s), else argmax."""
    if outputs.shape[1] == 1:
        return torch.where(outputs[:, 0] > 0, 0, 1)
    return outputs.argmax(1)


def train_step(
    model: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    loss_func: Callable,
    opt: torch.optim.Optimizer,
    compute: Compute,
    tfm: BatchTransform | None,
) -> torch.Tensor:
    """One optimiser step on one batch (copied to the device and transformed there); returns the loss."""
    xb, yb = compute.to_device(xb, yb, tfm)
    with compute.autocast():
        loss = loss_func(model(xb).float(), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def train_one_epoch(
    model: nn.Module,
    data: DataLoader,
    *,
    loss_func: Callable,
    opt: torch.optim.Optimizer,
    compute: Compute,
    tfm: BatchTransform | None,
    scheduler=None,
    description: str = "",
) -> float:
    """Train on every batch of ``data``; ``scheduler`` steps every batch (one-cycle). Returns the mean loss."""
    model.train()
    losses, sizes = [], []
    for xb, yb in progress(data, description, unit="batches"):
        loss = train_step(model, xb, yb, loss_func=loss_func, opt=opt, compute=compute, tfm=tfm)
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.detach())
        sizes.append(len(yb))
    return image_weighted_mean(losses, sizes)


def evaluate(
    model: nn.Module, data: DataLoader, *, loss_func: Callable, compute: Compute, tfm: BatchTransform | None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """All outputs (float32, on the CPU) for ``data``, its targets, and the mean loss."""
    model.eval()
    outputs, targets, losses, sizes = [], [], [], []
    with torch.no_grad(), compute.autocast():
        for xb, yb in data:
            targets.append(yb)
            xb, yb = compute.to_device(xb, yb, tfm)
            out = model(xb).float()
            losses.append(loss_func(out, yb))
            sizes.append(len(yb))
            outputs.append(out)
    return torch.cat(outputs).cpu(), torch.cat(targets), image_weighted_mean(losses, sizes)


def image_weighted_mean(losses: list[torch.Tensor], sizes: list[int]) -> float:
    """The mean over images of per-batch mean losses, read from the device once, not once per batch: a read waits for
    the GPU to finish every step queued before it. Summed as Python floats in batch order, as per-batch ``.item()``
    reads were, so the figure is the same to the last bit."""
    total = 0.0
    for loss, size in zip(torch.stack(losses).tolist(), sizes, strict=True):
        total += loss * size
    return total / sum(sizes)


def _items(data) -> int:
    """The items one process draws from ``data`` per epoch (a wrapper such as pets' ``Limited`` has ``loader``)."""
    return len(getattr(data, "loader", data).sampler)


def _batch_size(data) -> int:
    return getattr(data, "loader", data).batch_size


def whole_model(model: nn.Module) -> list[nn.Module]:
    return [model]


@dataclass
class Learner:
    """``opt`` is created by the first fit and kept by the ones after it, as fastai does."""

    model: nn.Module
    dls: DataLoaders
    loss_func: Callable
    compute: Compute
    opt_func: OptFunc = adam
    splitter: Callable[[nn.Module], list[nn.Module]] = whole_model  # the layer groups, first to last
    wd: float = WEIGHT_DECAY
    on_epoch: EpochCallback | None = None
    name: str = "fit"
    world: distributed.World = distributed.SINGLE  # the processes torchrun started, if any
    opt: torch.optim.Optimizer | None = field(default=None, init=False)
    # the last epoch's validation pass (outputs, targets, mean loss), valid right after a fit: a stage's final
    # metrics, without a second pass
    last_preds: tuple[torch.Tensor, torch.Tensor, float] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.dls.train) == 0:  # an epoch of no batch: lr_find's cycling over it would never return
            raise UserError(
                f"the training data makes no batch: {_items(self.dls.train)} images, fewer than one batch of "
                f"{_batch_size(self.dls.train)} (the last, smaller training batch is dropped); lower the batch size "
                "in params.yaml or use more images"
            )
        if len(self.dls.valid) == 0:
            raise UserError("the validation data makes no batch: 0 images; raise valid_pct or use more images")
        self.model = distributed.prepare(self.compute.prepare(self.model), self.world)

    # --- fastai's schedules ----------------------------------------------------------------------------
    def fit(self, n_epoch: int, lr: float) -> list[dict]:
        """Constant learning rate (chapter 4's ``learn.fit``)."""
        opt = self._optimizer([lr] * len(self.splitter(self.model)))
        for group in opt.param_groups:
            group["lr"] = lr
        return self._fit(n_epoch, opt, scheduler=None, description=self.name)

    def fit_one_cycle(
        self,
        n_epoch: int,
        lr_max: float | list[float],
        *,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        description: str | None = None,
    ) -> list[dict]:
        """``lr_max`` a number, or one per layer group (discriminative rates)."""
        n_groups = len(self.splitter(self.model))
        lrs = lr_max if isinstance(lr_max, list) else [lr_max] * n_groups
        opt = self._optimizer(lrs)
        max_lr = [lr for lr in lrs for _ in (0, 1)]  # two optimiser groups per layer group (decay, no decay)
        scheduler = one_cycle(
            opt, max_lr, n_epoch * len(self.dls.train), pct_start=pct_start, div=div, div_final=div_final
        )
        return self._fit(n_epoch, opt, scheduler=scheduler, description=description or self.name)

    def fine_tune(
        self,
        epochs: int,
        base_lr: float = 2e-3,
        *,
        freeze_epochs: int = 1,
        lr_mult: float = 100,
        pct_start: float = 0.3,
        div: float = 5.0,
        freeze_lr: float | None = None,
        freeze_pct_start: float = 0.99,
    ) -> list[dict]:
        """fastai's ``fine_tune``: the body frozen (BatchNorm still trains) for ``freeze_epochs`` of one-cycle at
        ``slice(base_lr)``; then ``base_lr /= 2``, unfreeze, and one-cycle for ``epochs`` with rates from
        ``base_lr / lr_mult`` (first layer group) to ``base_lr`` (head). ``freeze_lr`` and ``freeze_pct_start``
        default to fastai's (``base_lr``, 0.99); the book's ``fit_one_cycle(3, 3e-3)`` then
        ``fit_one_cycle(12, slice(1e-6, 1e-4))`` sets them. Both phases share one optimiser (``Learner.fit`` creates
        one only when there is none) whose state ``freeze``/``unfreeze`` clear, as fastai's do."""
        n_groups = len(self.splitter(self.model))
        history = []
        if freeze_epochs > 0:
            self.freeze()
            lrs = discriminative_lrs(None, freeze_lr or base_lr, n_groups)
            history += self.fit_one_cycle(
                freeze_epochs, lrs, pct_start=freeze_pct_start, div=25.0, description="frozen"
            )
        base_lr /= 2
        self.unfreeze()
        lrs = discriminative_lrs(base_lr / lr_mult, base_lr, n_groups)
        history += self.fit_one_cycle(epochs, lrs, pct_start=pct_start, div=div, description="unfrozen")
        return history

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10, num_it: int = 100) -> tuple[list[float], list[float]]:
        """``(lrs, smoothed losses)``, one per batch, on a copy of the model: ``self`` is left as it was."""
        model = copy.deepcopy(self.model)
        model.train()
        opt = self.opt_func(param_groups(self.splitter(model), [start_lr] * len(self.splitter(model)), self.wd))
        num_it = max(num_it, finder.MIN_ITERATIONS)
        lrs, losses, smooth = [], [], finder.SmoothedLoss()
        for xb, yb in progress(self._cycle(self.dls.train), "lr_find", total=num_it, unit="batches"):
            lr = finder.exponential_lr(start_lr, end_lr, i=len(lrs), num_it=num_it)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = train_step(
                model, xb, yb, loss_func=self.loss_func, opt=opt, compute=self.compute, tfm=self.dls.train_tfm
            )
            smoothed = smooth.add(loss.item())
            lrs.append(lr)
            losses.append(smoothed)
            if smooth.diverged(smoothed) or len(lrs) >= num_it:
                break
        return lrs, losses

    @staticmethod
    def _cycle(data: DataLoader):
        while True:  # the sweep runs for num_it batches, over as many epochs as that takes
            yield from data

    # --- freezing --------------------------------------------------------------------------------------
    def freeze_to(self, n: int) -> None:
        """Groups before ``n`` stop training, except their BatchNorm layers (fastai's ``train_bn``). Adam's averages
        are cleared, as fastai's ``freeze_to`` does: moments from the other phase's rates would misstep the new one."""
        if self.opt is not None:
            self.opt.state.clear()
        for index, group in enumerate(self.splitter(self.model)):
            for module in group.modules():
                for param in module.parameters(recurse=False):
                    param.requires_grad_(index >= n or isinstance(module, BN_TYPES))

    def freeze(self) -> None:
        self.freeze_to(len(self.splitter(self.model)) - 1)

    def unfreeze(self) -> None:
        self.freeze_to(0)

    # --- predictions -----------------------------------------------------------------------------------
    def get_preds(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Validation outputs (float32, CPU), targets and mean loss."""
        return evaluate(
            self.model, self.dls.valid, loss_func=self.loss_func, compute=self.compute, tfm=self.dls.valid_tfm
        )

    # --- the loop ----------------------------------------------------------------------------------------
    def _optimizer(self, lrs: list[float]) -> torch.optim.Optimizer:
        if self.opt is None:
            self.opt = self.opt_func(param_groups(self.splitter(self.model), lrs, self.wd))
        return self.opt

    def _fit(self, n_epoch: int, opt: torch.optim.Optimizer, *, scheduler, description: str) -> list[dict]:
        history = []
        self.last_preds = None  # a fit cut short must not leave the pass of the weights before it
        train_model = distributed.wrap(self.model, self.world)  # what the training steps call: DDP on several
        for epoch in range(n_epoch):
            start = time.perf_counter()
            distributed.start_epoch(self.dls.train, epoch)
            train_loss = train_one_epoch(
                train_model,
                self.dls.train,
                loss_func=self.loss_func,
                opt=opt,
                compute=self.compute,
                tfm=self.dls.train_tfm,
                scheduler=scheduler,
                description=f"{description} epoch {epoch + 1}/{n_epoch}",
            )
            self.last_preds = outputs, targets, valid_loss = self.get_preds()
            record = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                "accuracy": (decode(outputs) == targets).float().mean().item(),
                "seconds": time.perf_counter() - start,
            }
            history.append(record)
            if not self.world.is_main:
                continue  # only rank 0 speaks and logs
            print(
                f"{description} epoch {record['epoch']}: train_loss {train_loss:.4f} valid_loss {valid_loss:.4f} "
                f"accuracy {record['accuracy']:.4f} ({record['seconds']:.1f}s)"
            )
            if self.on_epoch is not None:
                self.on_epoch(record)
        return history
