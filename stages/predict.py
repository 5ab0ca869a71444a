"""Predict the class of images with a model the pipeline trained (fastai's ``learn.predict``).

    python -m stages.predict [--model pets|mnist/linear|mnist/simple_net|mnist/resnet18] [--top-k K]
                             [--device cpu|cuda|cuda:N|mps|auto] IMAGE...

Prints, for each image, the top-k classes with their probabilities. Each image goes through exactly the pipeline's
validation transform:
- pets: decoded as RGB, shorter side resized to the presize and centre-cropped (presize_pets), then resampled to
  the model's size and normalised as in validation (interpret_pets);
- mnist: as grayscale, resized to 28x28 if it is not (MNIST digits are white on black), scaled to [0, 1].
A missing, non-image or undecodable file is one error line and a non-zero exit.

Reads: data/models/pets/model.pt or data/models/mnist/<model>/model.pt. Writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stages.core import stage
from stages.mnist import MODELS

if TYPE_CHECKING:  # numpy, Pillow and torch load after the command line is parsed: --help answers at once
    import torch
    from PIL import Image

CHOICES = ["pets"] + [f"mnist/{name}" for name in MODELS]


def read_image(path: Path) -> Image.Image:
    from PIL import Image

    from stages.pets import presize

    if not path.is_file():
        raise stage.UserError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except presize.DECODE_ERRORS as exc:
        if not presize.cannot_decode(exc):
            raise  # a system error about the file: stage.guarded names it
        raise stage.UserError(f"{path}: not an image that can be decoded ({' '.join(str(exc).split())})") from None


def pets_probabilities(paths: list[Path], device: torch.device) -> tuple[torch.Tensor, list[str]]:
    import numpy as np
    import torch

    from stages.core import checkpoint
    from stages.pets import augment, model, presize

    saved = checkpoint.load(Path("data/models/pets/model.pt"), rerun="train_pets")
    net = model.build(saved["arch"], pretrained=False, n_classes=len(saved["classes"]))
    net.load_state_dict(saved["state_dict"])
    arrays = []
    for path in paths:
        array = presize.presize_image(path, saved["presize"])
        if array is None:
            raise stage.UserError(f"{path}: not an image that can be decoded")
        arrays.append(array)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device)
    with torch.no_grad():
        x = augment.resize_batch(batch, saved["size"], saved["normalized"])
        return net.to(device).eval()(x).float().softmax(1).cpu(), saved["classes"]


def mnist_probabilities(name: str, images: list[Image.Image], device: torch.device) -> tuple[torch.Tensor, list[str]]:
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    from stages.core import checkpoint
    from stages.mnist.recipes import model_for

    saved = checkpoint.load(Path(f"data/models/mnist/{name}/model.pt"), rerun=f"train_mnist@{name}")
    classes = saved["classes"]
    digits = []
    for image in images:
        gray = image.convert("L")
        if gray.size != (28, 28):
            gray = ImageOps.fit(gray, (28, 28), Image.Resampling.BILINEAR)
        digits.append(torch.from_numpy(np.array(gray, dtype=np.uint8)).float() / 255)  # a writable copy
    x = torch.stack(digits).to(device)
    net = model_for(name, saved["state_dict"], len(classes)).to(device).eval()
    with torch.no_grad():
        outputs = net(x).float()
    if outputs.shape[1] == 1:  # the book's one output: "is it the first digit?"
        first = outputs[:, 0].sigmoid()
        return torch.stack([first, 1 - first], 1).cpu(), classes
    return outputs.softmax(1).cpu(), classes


def main(model_name: str, images: list[str], *, top_k: int, device_name: str) -> None:
    paths = [Path(image) for image in images]
    decoded = [read_image(path) for path in paths]  # every file checked before torch loads: a bad one fails at once
    from stages.core import devices

    device = devices.pick(device_name)
    if model_name == "pets":
        probabilities, classes = pets_probabilities(paths, device)
    else:
        probabilities, classes = mnist_probabilities(model_name.split("/", 1)[1], decoded, device)
    top = probabilities.topk(min(top_k, len(classes)), 1)
    for path, values, indices in zip(paths, top.values.tolist(), top.indices.tolist()):
        print(f"{path}: " + ", ".join(f"{classes[i]} {v:.3f}" for v, i in zip(values, indices)))


def at_least_one(text: str) -> int:
    """``--top-k``: 0 classes would print an empty answer and succeed."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected an integer of at least 1")
    return value


def cli(argv: list[str] | None = None) -> None:
    parser = stage.parser(__doc__, [], prog="python -m stages.predict")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--model", choices=CHOICES, default="pets")
    parser.add_argument("--top-k", type=at_least_one, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    stage.guarded(lambda: main(args.model, args.images, top_k=args.top_k, device_name=args.device))


if __name__ == "__main__":
    cli(sys.argv[1:])
