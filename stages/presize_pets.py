"""Stage presize_pets: label, split and presize Oxford-IIIT Pets into data/pets.

Writes ``{train,valid}_images.npy`` (N, presize, presize, 3 uint8, memory-mappable), ``{train,valid}_labels.npy``
and ``index.json`` (breed names in fastai's sorted vocab order, and the file of every stored image), plus a
summary with counts and the files that failed to decode.
"""

from pathlib import Path

import numpy as np

from stages import atomic, cli, params, pets_layout, presize, splits

PARAMS = ["pets.split", "pets.valid_pct", "pets.seed", "pets.presize", "pets.presize_workers"]
RAW = Path("data/raw/pets")
OUT = Path("data/pets")
SUMMARY = Path("metrics/data/pets.json")


def split_files(files: list[str], how: str, valid_pct: float, seed: int) -> dict[str, list[int]]:
    if how == "random":
        train, valid = splits.random_split(len(files), valid_pct, seed)
    else:  # official
        listed = {name: pets_layout.read_split_list(RAW / "annotations" / f"{name}.txt") for name in ("trainval", "test")}
        train = [i for i, f in enumerate(files) if f in listed["trainval"]]
        valid = [i for i, f in enumerate(files) if f in listed["test"]]
    return {"train": list(train), "valid": list(valid)}


def main() -> None:
    p = params.load(PARAMS)
    images_dir = RAW / "images"
    if not images_dir.is_dir():
        raise cli.UserError(f"{images_dir}: not found; run 'dvc repro fetch_pets' first")
    labelled = pets_layout.labelled_images(images_dir)
    files = [name for name, _ in labelled]
    classes = sorted({breed for _, breed in labelled})  # fastai's vocab: sorted, so cats come first
    split_index = split_files(files, p["pets.split"], p["pets.valid_pct"], p["pets.seed"])

    summary: dict = {"classes": len(classes), "skipped": [], "splits": {}}
    index: dict = {"classes": classes, "files": {}}
    with atomic.output_dir(OUT) as tmp:
        for name, idx in split_index.items():
            paths = [images_dir / files[i] for i in idx]
            array, failed = presize.presize_all(paths, p["pets.presize"], p["pets.presize_workers"])
            kept = [i for k, i in enumerate(idx) if k not in set(failed)] if failed else list(idx)
            labels = np.array([classes.index(labelled[i][1]) for i in kept], dtype=np.int64)
            np.save(tmp / f"{name}_images.npy", array)
            np.save(tmp / f"{name}_labels.npy", labels)
            index["files"][name] = [files[i] for i in kept]
            summary["skipped"] += [files[idx[k]] for k in failed]
            summary["splits"][name] = {"images": len(kept), "skipped": len(failed)}
        atomic.write_json(tmp / "index.json", index)
    summary["skipped_total"] = len(summary["skipped"])
    atomic.write_json(SUMMARY, summary)
    for skipped in summary["skipped"]:
        print(f"warning: skipped {images_dir / skipped}: cannot be decoded")


if __name__ == "__main__":
    cli.run(main)
