"""Stage presize_pets: label, split and presize Oxford-IIIT Pets (fastai's item transform ``Resize(presize)``).

Reads:  data/raw/pets/images, data/raw/pets/annotations
Writes: data/pets/{train,valid}_images.npy   (N, presize, presize, 3) uint8
        data/pets/{train,valid}_labels.npy   class index of each image
        data/pets/index.json                 breed names in fastai's sorted vocab order; the file of every image
        metrics/data/pets.json               images per split, and the files that could not be decoded
Worker processes: PIPELINE_WORKERS (stages/core/settings.py); the results are the same for any number.
"""

from pathlib import Path

from stages.core import atomic, settings, stage
from stages.pets import layout
from stages.pets import schema as pets_schema

PARAMS = ["pets.split", "pets.valid_pct", "pets.seed", "pets.presize"]
SCHEMA = pets_schema.SCHEMA  # the blocks PARAMS are in
RAW = Path("data/raw/pets")
OUT = Path("data/pets")
SUMMARY = Path("metrics/data/pets.json")


def main(p: dict) -> None:
    import numpy as np

    from stages.pets import presize

    images_dir = RAW / "images"
    if not images_dir.is_dir():
        raise stage.UserError(f"{images_dir}: not found; run 'dvc repro fetch_pets' first")
    labelled = layout.labelled_images(images_dir)
    files = [name for name, _ in labelled]
    classes = sorted({breed for _, breed in labelled})  # fastai's vocab: sorted, so cats come first
    split_index = layout.split_files(
        files, p["pets.split"], valid_pct=p["pets.valid_pct"], seed=p["pets.seed"], annotations=RAW / "annotations"
    )

    summary: dict = {"classes": len(classes), "skipped": [], "splits": {}}
    index: dict = {"classes": classes, "files": {}}
    with atomic.output_dir(OUT) as tmp:
        for name, idx in split_index.items():
            paths = [images_dir / files[i] for i in idx]
            failed = presize.presize_to_file(
                paths,
                p["pets.presize"],
                workers=settings.workers(),
                out=tmp / f"{name}_images.npy",
                description=f"presize {name}",
            )
            kept = [i for k, i in enumerate(idx) if k not in set(failed)] if failed else list(idx)
            labels = np.array([classes.index(labelled[i][1]) for i in kept], dtype=np.int64)
            np.save(tmp / f"{name}_labels.npy", labels)
            index["files"][name] = [files[i] for i in kept]
            summary["skipped"] += [files[idx[k]] for k in failed]
            summary["splits"][name] = {"images": len(kept), "skipped": len(failed)}
        presize.check_skipped(summary["skipped"], len(files), images_dir)
        atomic.write_json(tmp / "index.json", index)
    summary["skipped_total"] = len(summary["skipped"])
    atomic.write_json(SUMMARY, summary)
    for skipped in summary["skipped"]:
        # The real set has such files, and the stand-in copies one on purpose; metrics/data/pets.json lists them.
        print(f"warning: skipped {images_dir / skipped}: cannot be decoded (listed in {SUMMARY})")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
