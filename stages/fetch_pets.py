"""Stage fetch_pets: Oxford-IIIT Pets in its own layout, generated (source: sample) or downloaded (source: full).

Reads:  nothing but params (the stand-in is generated from pets.standin), or images.tar.gz and annotations.tar.gz
        from pets.download's mirrors, md5-checked (source: full)
Writes: data/raw/pets/images/        <Breed_name>_<n>.jpg (and the set's few odd files)
        data/raw/pets/annotations/   list.txt, trainval.txt, test.txt
Worker processes: PIPELINE_WORKERS (stages/core/settings.py); the stand-in is the same bytes for any number.
"""

from pathlib import Path

from stages.core import atomic, download, settings, stage
from stages.pets import schema as pets_schema

PARAMS = ["source", "pets.download", "pets.standin"]
SCHEMA = pets_schema.SCHEMA  # the blocks PARAMS are in
OUT = Path("data/raw/pets")


def main(p: dict) -> None:
    with atomic.output_dir(OUT) as tmp:
        if p["source"] == "sample":
            from stages.pets import standin  # numpy and Pillow: after the command line is parsed

            standin.generate(tmp, **p["pets.standin"], workers=settings.workers())
        else:  # full (the schema allows nothing else)
            spec = p["pets.download"]
            download.fetch_and_extract(spec["mirrors"], spec["files"], tmp)
            for folder in ("images", "annotations"):
                if not (tmp / folder).is_dir():
                    raise stage.UserError(f"Pets archives did not contain '{folder}/' as Oxford-IIIT Pets does")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
