"""The presized Pets as training reads them: ``(uint8 image (3, P, P), class index)`` pairs, and the index of breeds
and files. Batches stay uint8 until the device, where stages/pets/augment.py transforms them (fastai's presizing:
resize once on disk, augment per batch on the GPU).

Images are read from the ``.npy`` file with ``pread``, one at a time, rather than through a memory map: the
operating system still caches the file, but a map would count every page touched against the process, which at the
real set's size (4.7 GB at 460 pixels) is more memory than the training itself. A GPU with room for them takes a
split's images whole instead (``OnDevice``), so its batches are indexed where they are computed on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stages.core.errors import UserError

DATA = Path("data/pets")


class PresizedPets(Dataset):
    """One split of the presized images; safe to use from DataLoader worker processes."""

    def __init__(self, split: str, folder: Path = DATA):
        given = Path(folder) / f"{split}_images.npy"
        # Images are read later (first item, or in a worker): bind to the file checked here, not to a name a later
        # working directory would resolve to another file or none.
        self.path = given.absolute()
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran_order, dtype = read_header(f)
                self.offset = f.tell()
            self.labels = np.load(Path(folder) / f"{split}_labels.npy")
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{folder}: cannot read presized Pets ({exc}); rerun 'dvc repro presize_pets'") from None
        if dtype != np.uint8 or fortran_order or len(shape) != 4 or shape[-1] != 3:
            raise UserError(f"{given}: expected (N, P, P, 3) uint8 images, found {shape} {dtype}")
        if shape[0] != len(self.labels):
            raise UserError(f"{folder}: {split} has {shape[0]} images but {len(self.labels)} labels")
        self.presize = shape[1]
        self.image_bytes = shape[1] * shape[2] * 3
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as a (P, P, 3) uint8 array."""
        if self._fd is None or self._pid != os.getpid():  # a worker process opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        buffer = bytearray(self.image_bytes)
        os.preadv(self._fd, [buffer], self.offset + i * self.image_bytes)
        return np.frombuffer(buffer, np.uint8).reshape(self.presize, self.presize, 3)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.image(i)).permute(2, 0, 1), int(self.labels[i])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}  # a file descriptor does not travel to a worker


class OnDevice(Dataset):
    """A split's presized images copied whole to the device once, as ``(N, 3, P, P)`` uint8. Item ``i`` is ``(i, label
    i)``: the loader batches indices, and :meth:`gather` takes a batch's images on the device. On a GPU this replaces
    every batch's reading, pinning and host-to-device copy with an index there; the images are those the loader would
    have given, in the same order, so training is the same (tests/test_learnability.py)."""

    COPY_IMAGES = 256  # images per copy to the device: the host holds no more than these at once

    def __init__(self, images: PresizedPets, device: torch.device):
        self.presize, self.labels = images.presize, images.labels
        on_disk = np.load(images.path, mmap_mode="r")  # (N, P, P, 3), read a part at a time
        self.images = torch.empty((len(on_disk), 3, self.presize, self.presize), dtype=torch.uint8, device=device)
        for start in range(0, len(on_disk), self.COPY_IMAGES):
            part = torch.from_numpy(np.array(on_disk[start : start + self.COPY_IMAGES]))  # a writable copy
            self.images[start : start + len(part)].copy_(part.permute(0, 3, 1, 2))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return i, int(self.labels[i])

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The images of a batch of indices, as the loader of :class:`PresizedPets` batches them."""
        return self.images[indices.to(self.images.device)]


def read_index(folder: Path = DATA) -> dict:
    path = Path(folder) / "index.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read ({exc}); rerun 'dvc repro presize_pets'") from None
