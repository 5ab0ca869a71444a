"""Using the trained models: ``python -m stages.predict`` (fastai's ``learn.predict``) and the exported inference
program (``learn.export``), which loads without this repository's code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import hostile_images
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]


def predict(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.predict", *args], cwd=project, capture_output=True, text=True)


def first_class(line: str) -> str:
    return line.split(": ", 1)[1].split(", ")[0].rsplit(" ", 1)[0]


def test_predict_prints_the_class_interpret_pets_recorded_for_a_validation_image(built):
    recorded = pd.read_csv(built / "metrics/pets/interpret/predictions.csv").iloc[:6]
    images = [str(built / "data/raw/pets/images" / item) for item in recorded["item"]]
    result = predict(built, "--top-k", "3", *images)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 6 and all(line.count(",") == 2 for line in lines)  # three classes each
    assert [first_class(line) for line in lines] == recorded["predicted"].tolist()
    probability = float(lines[0].split(", ")[0].rsplit(" ", 1)[1])
    assert probability == pytest.approx(recorded["probability"].iloc[0], abs=1e-3)


def test_predict_for_an_mnist_model_matches_its_recorded_predictions(built, tmp_path):
    with np.load(built / "data/mnist/valid.npz") as valid:
        images, ids = valid["images"][:5], valid["ids"][:5]
    paths = []
    for image, item in zip(images, ids):
        Image.fromarray(image).save(tmp_path / f"digit_{item}.png")
        paths.append(str(tmp_path / f"digit_{item}.png"))
    recorded = pd.read_csv(built / "metrics/mnist/resnet18/predictions.csv", dtype={"item": str}).set_index("item")
    for model in ("resnet18", "linear", "simple_net"):
        result = predict(built, "--model", f"mnist/{model}", "--top-k", "1", *paths)
        assert result.returncode == 0, result.stderr
        got = [first_class(line) for line in result.stdout.strip().splitlines()]
        table = pd.read_csv(built / f"metrics/mnist/{model}/predictions.csv", dtype={"item": str}).set_index("item")
        assert got == [str(table.loc[str(i), "predicted"]) for i in ids]
    assert recorded.index.is_unique


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.jpg", "no such file"),
        (
            lambda d: (d / "notes.jpg").write_text("not an image") and d / "notes.jpg",
            "not an image that can be decoded",
        ),
        (
            lambda d: (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100)) and d / "broken.jpg",
            "not an image",
        ),
        (lambda d: hostile_images.decompression_bomb(d / "bomb.png"), "not an image that can be decoded (Image size"),
    ],
    ids=["missing", "text", "truncated-jpeg", "decompression-bomb"],
)
@pytest.mark.parametrize("model", ["pets", "mnist/linear"])
def test_predict_refuses_a_bad_file_in_one_line(tmp_path, make, message, model):
    # Every file is read before any model: no built project is needed to refuse one.
    result = predict(ROOT, "--model", model, str(make(tmp_path)))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("top_k", ["0", "-1"])
def test_predict_refuses_a_top_k_below_one_in_one_line(tmp_path, top_k):
    result = predict(ROOT, "--top-k", top_k, str(tmp_path / "any.png"))
    assert result.returncode == 2 and "error: python -m stages.predict: argument --top-k: " in result.stderr
    assert "at least 1" in result.stderr and "Traceback" not in result.stderr


LOAD_WITHOUT_THE_REPOSITORY = """
import json, sys, numpy as np, torch
extra = {"pets.json": ""}
program = torch.export.load(sys.argv[1], extra_files=extra)
meta = json.loads(extra["pets.json"])
images = torch.from_numpy(np.load(sys.argv[2])).permute(0, 3, 1, 2)
probabilities = program.module()(images)
# after loading and running: nothing of this repository was needed for either
assert not any(name == "stages" or name.startswith("stages.") for name in sys.modules)
print(json.dumps({"classes": meta["classes"], "presize": meta["presize"],
                  "predicted": [meta["classes"][i] for i in probabilities.argmax(1).tolist()],
                  "probability": probabilities.max(1).values.tolist()}))
"""


def test_the_exported_program_loads_without_this_repository_and_predicts_as_the_checkpoint(built, tmp_path):
    from stages.core import checkpoint
    from stages.pets import inference
    from stages.pets.data import PresizedPets

    valid = PresizedPets("valid", built / "data/pets")
    images = np.stack([valid.image(i) for i in range(len(valid))])
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "load.py").write_text(LOAD_WITHOUT_THE_REPOSITORY)
    # -I: isolated mode, no current directory or PYTHONPATH on sys.path, so nothing of this repository can load
    result = subprocess.run(
        [sys.executable, "-I", "load.py", str(built / "data/export/pets/model.pt2"), "images.npy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    # The checkpoint's own predictions in float32 on the CPU, as the exported program computes them.
    saved = checkpoint.load(built / "data/models/pets/model.pt", rerun="train_pets")
    with torch.no_grad():
        probabilities = inference.from_checkpoint(saved)(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert exported["predicted"] == [saved["classes"][i] for i in probabilities.argmax(1).tolist()]
    np.testing.assert_allclose(exported["probability"], probabilities.max(1).values.numpy(), atol=1e-5)
    # And the ones interpret_pets recorded, when it computed in float32 too (a GPU's bf16 rounds differently).
    if json.loads((built / "data/models/pets/run_info.json").read_text())["mixed_precision"] == "off":
        recorded = pd.read_csv(built / "metrics/pets/interpret/predictions.csv")
        assert exported["predicted"] == recorded["predicted"].tolist()
        np.testing.assert_allclose(exported["probability"], recorded["probability"], atol=1e-5)
    meta = json.loads((built / "data/export/pets/pets.json").read_text())
    assert meta["classes"] == exported["classes"] and meta["presize"] == valid.presize == exported["presize"]


def readme_export_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    snippets = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "model.pt2" in block]
    assert len(snippets) == 1, "the README shows one snippet for the exported program"
    return snippets[0]


def test_the_readme_snippet_runs_as_written_without_this_repository_and_says_what_predict_says(built, tmp_path):
    """The README's snippet, its image swapped for one of the built project's, in an isolated interpreter (-I: no
    current directory or PYTHONPATH on sys.path, so nothing of this repository can load); any image size goes in."""
    recorded = pd.read_csv(built / "metrics/pets/interpret/predictions.csv")
    sizes = {}
    for item in recorded["item"]:
        with Image.open(built / "data/raw/pets/images" / item) as image:
            sizes[item] = image.size
    landscape = next(item for item, (w, h) in sizes.items() if w > h)  # Pillow's pass order is the program's
    snippet = readme_export_snippet().replace(
        "data/raw/pets/images/Abyssinian_22.jpg", f"data/raw/pets/images/{landscape}"
    )
    assert landscape in snippet
    guard = "\nimport sys\nassert not any(n == 'stages' or n.startswith('stages.') for n in sys.modules)\n"
    result = subprocess.run([sys.executable, "-I", "-c", snippet + guard], cwd=built, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    said = predict(built, "--top-k", "1", f"data/raw/pets/images/{landscape}")
    assert said.returncode == 0, said.stderr
    predicted, probability = said.stdout.split(": ", 1)[1].split()
    assert result.stdout.split() == [predicted, probability]


def test_the_exported_program_takes_any_image_size_and_presizes_as_presize_pets(built):
    from stages.pets import inference

    program = torch.export.load(built / "data/export/pets/model.pt2").module()
    # presize_pets's presize_image is Pillow's ImageOps.fit (on a draft-decoded JPEG): the program must match it
    meta = json.loads((built / "data/export/pets/pets.json").read_text())
    rng = np.random.default_rng(0)
    for height, width in [(31, 77), (64, 64), (120, 45), (9, 8), (300, 200)]:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        # smooth it a little, so that it is an image rather than noise
        pixels = np.clip(np.cumsum(pixels.astype(int) - 127, 1) // 6 + 128, 0, 255).astype(np.uint8)
        batch = torch.from_numpy(pixels).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
        probabilities = program(batch)  # no inference_mode: detached all the same
        assert probabilities.shape == (2, len(meta["classes"])) and not probabilities.requires_grad
        assert torch.allclose(probabilities.sum(1), torch.ones(2), atol=1e-5)
        presized = inference.fit_like_pil(batch[:1], meta["presize"])[0].permute(1, 2, 0).numpy()
        by_pillow = np.asarray(ImageOps.fit(Image.fromarray(pixels), (meta["presize"],) * 2, Image.Resampling.BILINEAR))
        levels = np.abs(presized.astype(int) - by_pillow).max()
        assert levels <= (1 if height > width else 0), (height, width, levels)  # see fit_like_pil
