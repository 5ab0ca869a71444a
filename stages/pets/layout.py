"""The Oxford-IIIT Pets file layout: breed names, labels from file names, the annotation lists.

``images/<Breed_name>_<n>.jpg`` (cats Capitalised, dogs lowercase) and ``annotations/{list,trainval,test}.txt``
with rows ``<image stem> <class id 1-37> <species 1 cat, 2 dog> <breed id within species>``.
"""

from __future__ import annotations

import re
from pathlib import Path

from stages.core import splits

# The 37 breeds in the dataset's class-id order (1-based ids follow this list).
BREEDS = [
    "Abyssinian",
    "american_bulldog",
    "american_pit_bull_terrier",
    "basset_hound",
    "beagle",
    "Bengal",
    "Birman",
    "Bombay",
    "boxer",
    "British_Shorthair",
    "chihuahua",
    "Egyptian_Mau",
    "english_cocker_spaniel",
    "english_setter",
    "german_shorthaired",
    "great_pyrenees",
    "havanese",
    "japanese_chin",
    "keeshond",
    "leonberger",
    "Maine_Coon",
    "miniature_pinscher",
    "newfoundland",
    "Persian",
    "pomeranian",
    "pug",
    "Ragdoll",
    "Russian_Blue",
    "saint_bernard",
    "samoyed",
    "scottish_terrier",
    "shiba_inu",
    "Siamese",
    "Sphynx",
    "staffordshire_bull_terrier",
    "wheaten_terrier",
    "yorkshire_terrier",
]

# fastai's RegexLabeller pattern from the book: the label is the name without its trailing _<n>.jpg
LABEL_PATTERN = re.compile(r"(.+)_\d+\.jpg$")

LIST_HEADER = """#Image CLASS-ID SPECIES BREED ID
#ID: 1:37 Class ids
#SPECIES: 1:Cat 2:Dog
#BREED ID: 1-12:Cat 1-25:Dog
#All images with 1st letter as captial are cat images
#images with small first letter are dog images
"""


def is_cat(breed: str) -> bool:
    return breed[0].isupper()


def annotation_row(stem: str, breed: str) -> str:
    species_breeds = [b for b in BREEDS if is_cat(b) == is_cat(breed)]
    species = 1 if is_cat(breed) else 2
    return f"{stem} {BREEDS.index(breed) + 1} {species} {species_breeds.index(breed) + 1}"


def label_of(filename: str) -> str | None:
    """The breed in a file name, or None for files that are not labelled images (.mat, stray files)."""
    match = LABEL_PATTERN.match(filename)
    return match.group(1) if match else None


def labelled_images(images_dir: Path) -> list[tuple[str, str]]:
    """``(file name, breed)`` for every labelled image, sorted so the split does not depend on the disk."""
    found = ((path.name, label_of(path.name)) for path in Path(images_dir).iterdir() if path.is_file())
    return sorted((name, breed) for name, breed in found if breed is not None)


def read_split_list(path: Path) -> set[str]:
    """Image file names listed in an annotation file such as ``trainval.txt``."""
    lines = Path(path).read_text().splitlines()
    return {line.split()[0] + ".jpg" for line in lines if line.strip() and not line.startswith("#")}


def split_files(files: list[str], how: str, *, valid_pct: float, seed: int, annotations: Path) -> dict[str, list[int]]:
    """Indices into ``files`` of each split: fastai's ``RandomSplitter(valid_pct, seed)`` (``random``), or the
    dataset's own ``trainval.txt`` / ``test.txt`` (``official``)."""
    if how == "random":
        train, valid = splits.random_split(len(files), valid_pct, seed)
    else:  # official
        listed = {name: read_split_list(Path(annotations) / f"{name}.txt") for name in ("trainval", "test")}
        train = [i for i, f in enumerate(files) if f in listed["trainval"]]
        valid = [i for i, f in enumerate(files) if f in listed["test"]]
    return {"train": list(train), "valid": list(valid)}
