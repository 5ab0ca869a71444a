"""Presizing (fastai's item transform ``Resize(presize)``): decode each image once, as RGB, shorter side
resized to ``presize`` and centre-cropped square, so training reads one uint8 array instead of files.

JPEG draft mode lets libjpeg decode at a reduced scale (never below the target), and worker processes decode
in parallel. An image that fails to decode is reported, not fatal: the real set has one or two.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


def presize_image(path: Path, size: int) -> np.ndarray | None:
    """The image at ``path`` as a (size, size, 3) uint8 array, or None if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale when that suffices
            # convert() handles grayscale, CMYK, palette and alpha alike; fit() resizes and centre-crops.
            rgb = image.convert("RGB")
        return np.asarray(ImageOps.fit(rgb, (size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    except DECODE_ERRORS:
        return None


def _presize_chunk(args: tuple[list[Path], int]) -> list[np.ndarray | None]:
    paths, size = args
    return [presize_image(path, size) for path in paths]


def presize_all(paths: list[Path], size: int, workers: int) -> tuple[np.ndarray, list[int]]:
    """Presize ``paths`` into one (N_ok, size, size, 3) array; also return the indices that failed."""
    chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = [img for chunk in pool.map(_presize_chunk, [(c, size) for c in chunks]) for img in chunk]
    else:
        results = [img for chunk in chunks for img in _presize_chunk((chunk, size))]
    failed = [i for i, img in enumerate(results) if img is None]
    images = [img for img in results if img is not None]
    array = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return array, failed
