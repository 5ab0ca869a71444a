"""A constructed Pets set that any working training recipe learns in seconds: four classes, each a colour far from
the others, with noise. Written in the presized layout (``data/pets``) so the Pets recipe and its stages read it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLOURS = {"Abyssinian": (220, 40, 40), "beagle": (40, 200, 40), "Bombay": (40, 40, 220), "pug": (230, 220, 40)}
CHANCE_ERROR = 1 - 1 / len(COLOURS)


def write(folder: Path, *, per_class: int = 64, presize: int = 24, seed: int = 0) -> list[str]:
    """``per_class`` training and a quarter as many validation images of each class into ``folder``; the classes."""
    rng = np.random.default_rng(seed)
    classes = sorted(COLOURS)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, count in (("train", per_class), ("valid", per_class // 4)):
        labels = np.repeat(np.arange(len(classes)), count)
        colours = np.array([COLOURS[name] for name in classes], dtype=np.float64)[labels]
        noise = rng.normal(0, 40, size=(len(labels), presize, presize, 3))
        images = np.clip(colours[:, None, None, :] + noise, 0, 255).astype(np.uint8)
        np.save(folder / f"{split}_images.npy", images)
        np.save(folder / f"{split}_labels.npy", labels.astype(np.int64))
        files[split] = [f"{classes[label]}_{i}.jpg" for i, label in enumerate(labels)]
    (folder / "index.json").write_text(json.dumps({"classes": classes, "files": files}))
    return classes
