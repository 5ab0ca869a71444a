"""Image files that attack a decoder, for the tests of every stage that reads images."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image


def decompression_bomb(path: Path, side: int = 100_000) -> Path:
    """A small PNG whose header declares ``side`` x ``side`` pixels (10 gigapixels by default): Pillow refuses it
    as a decompression bomb on opening, before it would allocate the pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")  # width and height are the chunk's first 8 bytes; its CRC follows the 13 of them
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", side, side)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path.write_bytes(bytes(data))
    return path
