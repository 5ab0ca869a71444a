"""A generated stand-in for Oxford-IIIT Pets, in its exact file layout, deterministic from a seed.

Each breed gets a style (background and body colours, a body shape, a coat pattern and its scale); each image
draws that style with random size, placement, rotation, colour jitter, clutter and noise, so a model must learn
colour, shape and texture together and confusions remain. It also carries the real set's quirks: PNG and GIF
data under a ``.jpg`` name, grayscale, CMYK and RGBA images, one undecodable file and stray ``.mat`` files.
"""

from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stages.core.progress import progress
from stages.pets.layout import BREEDS, LIST_HEADER, annotation_row

SHAPES = ["ellipse", "rectangle", "triangle", "pentagon", "hexagon", "star"]
PATTERNS = ["plain", "stripes", "spots", "checks"]
# Which images carry which quirk: (kind, breed index, image number). Fixed, like the real set's few odd files.
QUIRKS = [
    ("png", 1, 1),
    ("png", 14, 2),
    ("png", 30, 3),
    ("gif", 8, 1),
    ("gray", 4, 2),
    ("gray", 22, 1),
    ("gray", 35, 2),
    ("cmyk", 6, 3),
    ("cmyk", 27, 1),
    ("rgba", 11, 2),
    ("rgba", 19, 3),
    ("broken", 20, 1),
]
STRAY_FILES = ["Abyssinian_100.mat", "Abyssinian_101.mat", "Abyssinian_102.mat"]


@dataclass(frozen=True)
class BreedStyle:
    background: np.ndarray
    body: np.ndarray
    pattern_colour: np.ndarray
    shape: str
    pattern: str
    pattern_period: float  # as a fraction of the body size, so texture scales with the animal
    aspect: float


def breed_styles(seed: int) -> list[BreedStyle]:
    rng = np.random.default_rng(seed)
    # Spread shape/pattern pairs across breeds so no two share all of colour, shape and texture.
    combos = [(s, p) for s in SHAPES for p in PATTERNS]
    order = rng.permutation(len(combos))
    return [
        BreedStyle(
            background=rng.integers(0, 256, 3),
            body=rng.integers(0, 256, 3),
            pattern_colour=rng.integers(0, 256, 3),
            shape=combos[order[i % len(combos)]][0],
            pattern=combos[order[i % len(combos)]][1],
            pattern_period=float(rng.uniform(0.08, 0.3)),
            aspect=float(rng.uniform(0.6, 1.6)),
        )
        for i in range(len(BREEDS))
    ]


def _outline(shape: str, *, cx: float, cy: float, radius: float, aspect: float, angle: float) -> list[tuple]:
    if shape == "ellipse":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "rectangle":
        pts = np.array([[-1, -0.7], [1, -0.7], [1, 0.7], [-1, 0.7]])
    elif shape == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    else:
        n = {"triangle": 3, "pentagon": 5, "hexagon": 6}[shape]
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    pts = pts * [radius * aspect, radius]
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T + [cx, cy]
    return [tuple(p) for p in pts]


def _jitter(colour: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(colour + rng.normal(0, amount, 3), 0, 255)


def render(style: BreedStyle, rng: np.random.Generator, *, min_side: int, max_side: int) -> Image.Image:
    width, height = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Background: jittered colour with a gradient, plus clutter blobs of random colours.
    bg = _jitter(style.background, rng, 30)
    gradient = (xx / width - 0.5)[..., None] * rng.normal(0, 40, 3)
    canvas = Image.fromarray(np.clip(bg + gradient, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 4))):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.03, 0.12) * min(width, height)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    image = np.asarray(canvas, dtype=np.float32)

    # The animal: a body of the breed's shape, coat colour and pattern.
    side = min(width, height)
    radius = rng.uniform(0.22, 0.4) * side
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    angle = rng.uniform(0, 2 * np.pi)
    mask_img = Image.new("L", (width, height))
    ImageDraw.Draw(mask_img).polygon(
        _outline(style.shape, cx=cx, cy=cy, radius=radius, aspect=style.aspect, angle=angle), fill=255
    )
    mask = np.asarray(mask_img) > 0
    period = style.pattern_period * radius * 2 * rng.uniform(0.8, 1.25)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    wave_u, wave_v = np.sin(2 * np.pi * u / period), np.sin(2 * np.pi * v / period)
    coat = {
        "plain": np.zeros_like(u, dtype=bool),
        "stripes": wave_u > 0.3,
        "spots": (wave_u * wave_v) > 0.45,
        "checks": (wave_u * wave_v) > 0,
    }[style.pattern]
    body, pattern = _jitter(style.body, rng, 22), _jitter(style.pattern_colour, rng, 22)
    image[mask] = np.where(coat[mask][:, None], pattern, body)
    image += rng.normal(0, 10, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def _encode(image: Image.Image, quirk: str | None, rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    if quirk == "broken":
        # A JPEG start marker and then noise: a strict decoder rejects it, as one or two real files are.
        return b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()
    if quirk == "png":
        image.save(out, "PNG")
    elif quirk == "gif":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(out, "GIF")
    elif quirk == "rgba":
        rgba = image.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(out, "PNG")  # JPEG has no alpha channel; the real set's RGBA files are PNG data too
    elif quirk == "gray":
        image.convert("L").save(out, "JPEG", quality=90)
    elif quirk == "cmyk":
        image.convert("CMYK").save(out, "JPEG", quality=90)
    else:
        image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _generate_breed(root: Path, seed: int, b: int, images_per_breed: int, min_side: int, max_side: int) -> list[str]:
    """Write breed ``b``'s images; return their annotation rows. Its own generator, so breeds can be made in any
    order or in parallel with the same bytes."""
    breed, style = BREEDS[b], breed_styles(seed)[b]
    quirks = {(breed_index, number): kind for kind, breed_index, number in QUIRKS}
    rng = np.random.default_rng([seed, b])
    rows = []
    for number in range(1, images_per_breed + 1):
        stem = f"{breed}_{number}"
        image = render(style, rng, min_side=min_side, max_side=max_side)
        (root / "images" / f"{stem}.jpg").write_bytes(_encode(image, quirks.get((b, number)), rng))
        rows.append(annotation_row(stem, breed))
    return rows


def _generate_breed_star(args: tuple) -> list[str]:
    return _generate_breed(*args)


def generate(root: Path, seed: int, images_per_breed: int, min_side: int, max_side: int, workers: int = 1) -> None:
    """Write ``images/`` and ``annotations/`` under ``root`` in the Oxford-IIIT Pets layout, ``workers`` breeds at a
    time (the files are the same for any number)."""
    root = Path(root)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    tasks = [(root, seed, b, images_per_breed, min_side, max_side) for b in range(len(BREEDS))]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            per_breed = list(
                progress(pool.map(_generate_breed_star, tasks), "stand-in", total=len(tasks), unit="breeds")
            )
    else:
        per_breed = list(progress(map(_generate_breed_star, tasks), "stand-in", total=len(tasks), unit="breeds"))
    rows: dict[str, list[str]] = {"trainval": [], "test": []}
    for breed_rows in per_breed:
        for number, row in enumerate(breed_rows, 1):
            # Like the real set, the official lists split each breed about half and half.
            rows["trainval" if number % 2 else "test"].append(row)
    for name in STRAY_FILES:
        (root / "images" / name).write_bytes(b"MATLAB 5.0 MAT-file, stand-in stray file\n")
    (root / "annotations" / "trainval.txt").write_text("\n".join(rows["trainval"]) + "\n")
    (root / "annotations" / "test.txt").write_text("\n".join(rows["test"]) + "\n")
    listed = sorted(rows["trainval"] + rows["test"], key=lambda row: (int(row.split()[1]), row))
    (root / "annotations" / "list.txt").write_text(LIST_HEADER + "\n".join(listed) + "\n")
