"""Stage export_pets: the trained Pets model as a self-contained inference program (fastai's ``learn.export``).

Reads:  data/models/pets/model.pt
Writes: data/export/pets/model.pt2   a torch.export program: presized uint8 images in, class probabilities out,
                                     the class names and the preprocessing inside (extra file pets.json)
        data/export/pets/pets.json   the same description, readable: classes, presize, size, input, output
It loads with torch alone, without this repository:

    import json, torch
    extra = {"pets.json": ""}
    program = torch.export.load("data/export/pets/model.pt2", extra_files=extra)
    meta = json.loads(extra["pets.json"])
    probabilities = program.module()(images)   # images: uint8 (N, 3, presize, presize), as meta["input"] says
"""

from pathlib import Path

from stages.core import atomic, checkpoint, stage
from stages.core.schema import CORE
from stages.pets import inference

PARAMS: list[str] = []
SCHEMA = CORE  # source and compute only
MODEL = Path("data/models/pets/model.pt")
OUT = Path("data/export/pets")


def main(p: dict) -> None:
    saved = checkpoint.load(MODEL, rerun="train_pets")
    with atomic.output_dir(OUT) as out:
        (out / "model.pt2").write_bytes(inference.export_program(saved))
        atomic.write_json(out / inference.META_FILE, inference.metadata(saved))
    print(f"export_pets: {OUT / 'model.pt2'} ({len(saved['classes'])} classes, input {saved['presize']} px)")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
