"""The Pets model as a self-contained inference program: validation's resampling and normalisation, the network and
the softmax in one ``torch.export`` program that loads with torch alone (fastai's ``learn.export``)."""

from __future__ import annotations

import io
import json

import torch
from torch import nn

from stages.pets import augment, model

INPUT = (
    "uint8 RGB images (N, 3, presize, presize), channels first: each image's shorter side resized to presize "
    "(PIL bilinear) and centre-cropped, as presize_pets does"
)
OUTPUT = "class probabilities (N, len(classes)), in the order of classes"
META_FILE = "pets.json"  # the extra file inside the program


class InferenceModel(nn.Module):
    def __init__(self, net: nn.Module, size: int, normalized: bool):
        super().__init__()
        self.net, self.size, self.normalized = net, size, normalized

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(augment.resize_batch(images, self.size, self.normalized)).softmax(1)


def from_checkpoint(saved: dict) -> InferenceModel:
    net = model.build(saved["arch"], pretrained=False, n_classes=len(saved["classes"]))
    net.load_state_dict(saved["state_dict"])
    return InferenceModel(net, saved["size"], saved["normalized"]).eval()


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
    example = torch.zeros(2, 3, saved["presize"], saved["presize"], dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(inference, (example,), dynamic_shapes={"images": {0: batch}})
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)  # it names files on this machine
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={META_FILE: json.dumps(metadata(saved), indent=2)})
    return buffer.getvalue()
