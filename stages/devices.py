"""Pick the training device and describe the run (recorded beside the weights, never in metrics)."""

from __future__ import annotations

import platform

import torch

from stages.cli import UserError


def pick(name: str) -> torch.device:
    """``auto``: CUDA if present, else Apple's MPS, else CPU. A named device that is absent is an error.
    (params_schema has already checked ``name`` is one of auto, cuda, mps, cpu.)"""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return torch.device(next(kind for kind in ("cuda", "mps", "cpu") if available[kind]))
    if not available[name]:
        raise UserError(f"params.yaml: device {name!r} is not available here; use 'auto' or 'cpu'")
    return torch.device(name)


def run_info(device: torch.device) -> dict:
    info = {
        "device": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "mixed_precision": "bf16" if device.type == "cuda" else "off",
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
