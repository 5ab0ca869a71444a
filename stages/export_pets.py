"""Stage export_pets: the trained Pets model as a self-contained inference program (fastai's ``learn.export``).

Reads:  data/models/pets/model.pt
Writes: data/export/pets/model.pt2   a torch.export program: decoded uint8 RGB images of any size in, detached
                                     class probabilities out; the centre crop, presizing, resampling and
                                     normalisation inside, and the class names (extra file pets.json)
        data/export/pets/pets.json   the same description, readable: classes, presize, size, input, output
It loads with torch alone, without this repository (the README's snippet, run by tests/test_predict_export.py):

    import json, torch
    extra = {"pets.json": ""}
    program = torch.export.load("data/export/pets/model.pt2", extra_files=extra).module()
    meta = json.loads(extra["pets.json"])
    with torch.inference_mode():
        probabilities = program(pixels)   # pixels: uint8 (N, 3, H, W), as decoded; meta["input"] says more
"""

from pathlib import Path

from stages.core import stage
from stages.core.schema import CORE

PARAMS: list[str] = []
SCHEMA = CORE  # source and compute only
MODEL = Path("data/models/pets/model.pt")
OUT = Path("data/export/pets")


def main(p: dict) -> None:
    from stages.core import atomic, checkpoint
    from stages.pets import inference

    saved = checkpoint.load(MODEL, rerun="train_pets")
    with atomic.output_dir(OUT) as out:
        (out / "model.pt2").write_bytes(inference.export_program(saved))
        atomic.write_json(out / inference.META_FILE, inference.metadata(saved))
    classes, presize = len(saved["classes"]), saved["presize"]
    print(f"export_pets: {OUT / 'model.pt2'} ({classes} classes; images of any size, presized to {presize} px)")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
