"""The Pets model as a self-contained inference program (fastai's ``learn.export``): presizing (Pillow's bilinear
``ImageOps.fit``, written in torch), validation's resampling and normalisation, the network and the softmax in one
``torch.export`` program that loads with torch alone and takes decoded images of any size."""

from __future__ import annotations

import io
import json

import torch
from torch import nn

from stages.pets import augment, model

INPUT = (
    "uint8 RGB images (N, 3, H, W), channels first, any H and W (at least 8), as decoded (N images of one size; "
    "one image is a batch of 1); the program centre-crops each square and presizes it as presize_pets does"
)
OUTPUT = "class probabilities (N, len(classes)), in the order of classes, detached (no autograd history)"
META_FILE = "pets.json"  # the extra file inside the program
PRECISION_BITS = 22  # Pillow's fixed-point coefficients for 8-bit images (Resample.c: 32 - 8 - 2)
MIN_SIDE, MAX_SIDE = 8, 16384  # the image sizes the program accepts


def pil_bilinear_weights(in_size, start, length, out_size: int) -> torch.Tensor:
    """Pillow's bilinear resampling of the span [start, start + length) of ``in_size`` pixels to ``out_size``, as a
    dense (out_size, in_size) matrix of its fixed-point coefficients (Resample.c: precompute_coeffs, then
    normalize_coeffs_8bpc): a triangle as wide as the scale when shrinking, each row normalised, then rounded to
    22-bit integers. float64 holds these products and sums exactly."""
    scale = length / out_size
    filterscale = torch.full((), scale, dtype=torch.float64).clamp(min=1.0)  # widens the filter only to shrink
    centers = start + (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    x = torch.arange(in_size, dtype=torch.float64)
    w = (1 - ((x[None, :] - centers[:, None] + 0.5) / filterscale).abs()).clamp(min=0)
    return torch.floor(w / w.sum(1, keepdim=True) * (1 << PRECISION_BITS) + 0.5)


def _pass(x: torch.Tensor, weights: torch.Tensor, *, rows: bool) -> torch.Tensor:
    """One pass of Pillow's resampling, rounded back to 8 bits as Pillow keeps its intermediate image."""
    total = weights @ x if rows else x @ weights.T
    return torch.floor((total + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)).clamp(0, 255)


def fit_like_pil(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, 3, size, size): ``ImageOps.fit(image, (size, size), BILINEAR)``, which presizing
    uses, the centre square resampled by Pillow's coefficients. Equal to Pillow's bytes for landscape and square
    images; within one level for some portrait ones (Pillow 13 then runs its vertical pass first)."""
    h, w = images.shape[-2], images.shape[-1]
    side = torch.sym_min(h, w)
    rows = pil_bilinear_weights(h, (h - side) / 2, side, size)
    cols = pil_bilinear_weights(w, (w - side) / 2, side, size)
    x = _pass(images.to(torch.float64), cols, rows=False)
    return _pass(x, rows, rows=True).to(torch.uint8)


class InferenceModel(nn.Module):
    def __init__(self, net: nn.Module, presize: int, size: int, normalized: bool):
        super().__init__()
        self.net, self.presize, self.size, self.normalized = net, presize, size, normalized

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        presized = fit_like_pil(images, self.presize)
        return self.net(augment.resize_batch(presized, self.size, self.normalized)).softmax(1)


def from_checkpoint(saved: dict) -> InferenceModel:
    net = model.build(saved["arch"], pretrained=False, n_classes=len(saved["classes"]))
    net.load_state_dict(saved["state_dict"])
    # No parameter asks for gradients: the program's probabilities come out detached, with or without inference_mode.
    return InferenceModel(net, saved["presize"], saved["size"], saved["normalized"]).eval().requires_grad_(False)


def metadata(saved: dict) -> dict:
    return {
        "classes": saved["classes"],
        "arch": saved["arch"],
        "presize": saved["presize"],
        "size": saved["size"],
        "normalized": saved["normalized"],
        "input": INPUT,
        "output": OUTPUT,
    }


def export_program(saved: dict) -> bytes:
    """The exported program's bytes, the same on every machine: no source paths inside."""
    inference = from_checkpoint(saved)
    example = torch.zeros(2, 3, saved["presize"] + 20, saved["presize"] + 40, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65536)
    height, width = (torch.export.Dim(name, min=MIN_SIDE, max=MAX_SIDE) for name in ("height", "width"))
    program = torch.export.export(inference, (example,), dynamic_shapes={"images": {0: batch, 2: height, 3: width}})
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)  # it names files on this machine
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={META_FILE: json.dumps(metadata(saved), indent=2)})
    return buffer.getvalue()
