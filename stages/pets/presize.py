"""Presizing (fastai's item transform ``Resize(presize)``): decode each image once, as RGB, shorter side
resized to ``presize`` and centre-cropped square, so training reads one uint8 array instead of files.

JPEG draft mode lets libjpeg decode at a reduced scale (never below the target), and worker processes decode
in parallel. An image that fails to decode is reported, not fatal: the real set has one or two. The array is
streamed to its ``.npy`` file as the images come, so memory stays small however many there are (the real set at
460 pixels is 4.7 GB).
"""

from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.core.errors import UserError
from stages.core.progress import progress

DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)
CHUNK = 32  # images per task a worker decodes
MAX_SKIPPED_SHARE = 0.05  # the real set has a handful of bad files in 7,390; more means the wrong folder or a fault


def cannot_decode(exc: Exception) -> bool:
    """Whether ``exc`` (one of DECODE_ERRORS) says the file's data is bad or hostile. An OSError with an errno
    (permission denied, an I/O error, a missing file) is the system's, not the image's: it must not be counted."""
    return not (isinstance(exc, OSError) and exc.errno is not None)


def presize_image(path: Path, size: int) -> np.ndarray | None:
    """The image at ``path`` as a (size, size, 3) uint8 array, or None if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale when that suffices
            # convert() handles grayscale, CMYK, palette and alpha alike; fit() resizes and centre-crops.
            rgb = image.convert("RGB")
        return np.asarray(ImageOps.fit(rgb, (size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    except DECODE_ERRORS as exc:
        if not cannot_decode(exc):
            raise
        return None


def check_skipped(skipped: list[str], total: int, folder: Path) -> None:
    """Refuse a presizing that kept nothing, or skipped more than ``MAX_SKIPPED_SHARE`` of the images."""
    if total == 0:
        raise UserError(f"{folder}: no labelled images (<breed>_<n>.jpg) found")
    if len(skipped) > MAX_SKIPPED_SHARE * total:  # all skipped is more than that too
        first = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        raise UserError(
            f"{folder}: {len(skipped)} of {total} images cannot be decoded (at most "
            f"{MAX_SKIPPED_SHARE:.0%} may be): {first}"
        )


def _presize_chunk(args: tuple[list[Path], int]) -> list[np.ndarray | None]:
    paths, size = args
    return [presize_image(path, size) for path in paths]


def _chunks(paths: list[Path], size: int, workers: int):
    tasks = [(paths[i : i + CHUNK], size) for i in range(0, len(paths), CHUNK)]
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(_presize_chunk, tasks)  # in order, whatever the worker count
    else:
        yield from map(_presize_chunk, tasks)


def presize_to_file(
    paths: list[Path], size: int, *, workers: int, out: Path, description: str = "presize"
) -> list[int]:
    """Presize ``paths`` into the ``.npy`` file ``out``, (N_ok, size, size, 3) uint8; return the indices that failed.

    The decoded images are appended to a raw file as they arrive; the ``.npy`` header, which needs their final
    count, is written at the end and the pixels copied behind it in blocks.
    """
    failed, count = [], 0
    raw = Path(out).with_suffix(".raw")
    with open(raw, "wb") as pixels:
        chunks = progress(_chunks(paths, size, workers), description, total=-(-len(paths) // CHUNK), unit="chunks")
        for start, chunk in zip(range(0, len(paths), CHUNK), chunks):
            for offset, image in enumerate(chunk):
                if image is None:
                    failed.append(start + offset)
                else:
                    pixels.write(image.tobytes())
                    count += 1
    with open(out, "wb") as npy, open(raw, "rb") as pixels:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
            "fortran_order": False,
            "shape": (count, size, size, 3),
        }
        np.lib.format.write_array_header_1_0(npy, header)
        shutil.copyfileobj(pixels, npy, length=16 << 20)
    raw.unlink()
    return failed
