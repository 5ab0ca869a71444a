"""Where training computes: the device and its numeric precision, and a description of the run (recorded beside
the weights, never in metrics).

``compute.precision``: ``auto`` trains in bf16 mixed precision with channels-last convolutions on CUDA and in float32
on the CPU; ``bf16`` runs that same mixed-precision path on any device (so CI runs, on the CPU, the code a GPU
runs); ``fp32`` turns it off everywhere. Batches are copied to CUDA from pinned memory without blocking.

``compute.numerics: native`` on the CPU also lays convolutions out channels-last: oneDNN's AVX-512 kernels run a
resnet18 training step 1.09x faster that way on an AVX-512 Zen 4 (docs/benchmarks.md), and its sums run in another order
than the channels-first kernels': allowed for ``native``, whose results are the machine's own, not for ``portable``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from stages.core import cpu
from stages.core.errors import UserError


def pick(name: str) -> torch.device:
    """``auto``: CUDA if present, else Apple's MPS, else CPU; ``cuda:N`` is GPU N. A named device that is absent
    is an error. (The schema has already checked the form of ``name``.)"""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return torch.device(next(kind for kind in ("cuda", "mps", "cpu") if available[kind]))
    device = torch.device(name)
    if not available[device.type]:
        raise UserError(f"params.yaml: compute.device {name!r} is not available here; use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"params.yaml: compute.device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


@dataclass(frozen=True)
class Compute:
    """A device and how to compute on it: ``mixed`` means bf16 autocast (and channels-last memory, as ``native``
    numerics on the CPU also do)."""

    device: torch.device
    mixed: bool
    numerics: str = "portable"  # compute.numerics, applied before torch loaded (stages/core/cpu.py); recorded here

    @classmethod
    def from_params(cls, compute: dict) -> Compute:
        """From the ``compute`` params block; also pins the CPU's intra-op thread count (it decides sums)."""
        cpu.use_threads(compute["cpu_threads"])
        picked = pick(compute["device"])
        mixed = compute["precision"] == "bf16" or (compute["precision"] == "auto" and picked.type == "cuda")
        return cls(picked, mixed=mixed, numerics=compute["numerics"])

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.mixed)

    @property
    def channels_last(self) -> bool:
        """Convolutions in channels-last memory: with mixed precision, and with native numerics on the CPU."""
        return self.mixed or (self.device.type == "cpu" and self.numerics == "native")

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def to_device(self, xb: torch.Tensor, yb: torch.Tensor, transform=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy a batch to the device, then apply the batch transform there (augmentation runs on the device)."""
        xb = xb.to(self.device, non_blocking=True)
        if transform is not None:
            xb = transform(xb)
        if self.channels_last and xb.ndim == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb, yb.to(self.device, non_blocking=True)

    def holds(self, nbytes: int) -> bool:
        """Whether a dataset of ``nbytes`` goes to the device whole (stages/pets/data.py's ``OnDevice``): on a GPU,
        when it takes at most a quarter of the free memory, which leaves the rest to the model and its activations.
        Never on the CPU, whose loader already reads from memory (the page cache)."""
        if self.device.type != "cuda":
            return False
        free, _ = torch.cuda.mem_get_info(self.device)
        return nbytes <= free // 4

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def loader_workers(self, workers: int) -> int:
        """Processes that load batches: ``workers`` for a GPU, whose steps they overlap; none on the CPU, where the
        training process gathers a presized batch in milliseconds between steps of a second, and workers only
        compete with its threads for the cores (measured: docs/design-notes.md)."""
        return 0 if self.device.type == "cpu" else workers

    def run_info(self) -> dict:
        """What computed the weights. No interpreter or host facts: this file is part of a DVC output, and the same
        bits from Python 3.11, 3.12 or 3.13 must hash the same."""
        info = {
            "device": self.device.type,
            "torch": torch.__version__,
            "mixed_precision": "bf16" if self.mixed else "off",
        }
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            info["cpu_threads"] = torch.get_num_threads()
            info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
            if self.numerics == "native":  # portable's record stays as it was, byte for byte
                info["numerics"] = "native"
        return info
