"""The generated Pets stand-in, labelling, splitting and presizing."""

from pathlib import Path

import hostile_images
import numpy as np
import pytest
import torch
from PIL import Image

from stages.core import splits
from stages.core.stage import UserError
from stages.pets import layout as pets_layout
from stages.pets import presize
from stages.pets import standin as pets_standin
from stages.pets.data import PresizedPets

PER_BREED = 4


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets") / "raw"
    pets_standin.generate(root, seed=1, images_per_breed=PER_BREED, min_side=60, max_side=120)
    return root


def test_layout_matches_oxford_iiit_pets(standin):
    names = sorted(p.name for p in (standin / "images").iterdir())
    assert len(names) == 37 * PER_BREED + len(pets_standin.STRAY_FILES)
    assert sorted(p.name for p in (standin / "annotations").iterdir()) == ["list.txt", "test.txt", "trainval.txt"]
    labelled = pets_layout.labelled_images(standin / "images")
    assert sorted({breed for _, breed in labelled}) == sorted(pets_layout.BREEDS)
    assert sum(pets_layout.is_cat(b) for b in pets_layout.BREEDS) == 12


def test_annotation_rows_follow_the_real_format(standin):
    rows = (standin / "annotations" / "list.txt").read_text().splitlines()
    assert rows[0] == "#Image CLASS-ID SPECIES BREED ID"
    body = [r.split() for r in rows if not r.startswith("#")]
    assert ["Abyssinian_1", "1", "1", "1"] in body  # first cat
    assert ["american_bulldog_1", "2", "2", "1"] in body  # first dog
    assert ["yorkshire_terrier_1", "37", "2", "25"] in body
    trainval = pets_layout.read_split_list(standin / "annotations" / "trainval.txt")
    test = pets_layout.read_split_list(standin / "annotations" / "test.txt")
    assert not trainval & test and len(trainval | test) == 37 * PER_BREED


def test_generation_is_deterministic_from_the_seed(standin, tmp_path):
    again = tmp_path / "again"
    pets_standin.generate(again, seed=1, images_per_breed=PER_BREED, min_side=60, max_side=120)
    for name in ("Bengal_2.jpg", "pug_3.jpg"):
        assert (again / "images" / name).read_bytes() == (standin / "images" / name).read_bytes()
    other = tmp_path / "other"
    pets_standin.generate(other, seed=2, images_per_breed=1, min_side=60, max_side=120)
    assert (other / "images" / "pug_1.jpg").read_bytes() != (standin / "images" / "pug_1.jpg").read_bytes()


def test_sizes_vary_within_bounds(standin):
    sizes = {Image.open(standin / "images" / f"{b}_4.jpg").size for b in pets_layout.BREEDS}
    assert len(sizes) > 20 and all(60 <= s <= 120 for size in sizes for s in size)


def test_carries_the_real_sets_quirks(standin):
    formats, modes, broken = [], [], []
    for path in sorted((standin / "images").glob("*.jpg")):
        try:
            with Image.open(path) as image:
                image.load()
                formats.append(image.format)
                modes.append(image.mode)
        except OSError:
            broken.append(path.name)
    assert {"PNG", "GIF"} <= set(formats)
    assert {"L", "CMYK", "RGBA"} <= set(modes)
    assert len(broken) == 1
    assert len(list((standin / "images").glob("*.mat"))) == 3


def test_presize_streams_every_decodable_image_into_one_npy_the_same_for_any_worker_count(standin, tmp_path):
    paths = sorted((standin / "images").glob("*.jpg"))
    failed = presize.presize_to_file(paths, 32, workers=1, out=tmp_path / "one.npy")
    array = np.load(tmp_path / "one.npy")
    assert array.shape == (len(paths) - 1, 32, 32, 3) and array.dtype == np.uint8
    assert [paths[i].name for i in failed] == [
        n for n in (p.name for p in paths) if presize.presize_image(standin / "images" / n, 8) is None
    ]
    assert failed == presize.presize_to_file(paths, 32, workers=2, out=tmp_path / "two.npy")
    assert (tmp_path / "one.npy").read_bytes() == (tmp_path / "two.npy").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npy", "two.npy"]  # no raw file left behind
    # the training dataset reads it back image by image
    (tmp_path / "train_images.npy").write_bytes((tmp_path / "one.npy").read_bytes())
    np.save(tmp_path / "train_labels.npy", np.arange(len(array)) % 37)
    dataset = PresizedPets("train", tmp_path)
    image, label = dataset[5]
    assert image.shape == (3, 32, 32) and torch.equal(image.permute(1, 2, 0), torch.from_numpy(array[5])) and label == 5


def test_presized_pets_reads_the_file_it_checked_after_the_working_directory_changes(tmp_path, monkeypatch):
    """It reads lazily (first item, or in a worker): a relative folder must not be looked up again from a later
    working directory, where it names another file or none."""
    images = np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)
    (tmp_path / "here/data/pets").mkdir(parents=True)
    np.save(tmp_path / "here/data/pets/train_images.npy", images)
    np.save(tmp_path / "here/data/pets/train_labels.npy", np.arange(4))
    monkeypatch.chdir(tmp_path / "here")
    dataset = PresizedPets("train", Path("data/pets"))
    monkeypatch.chdir(tmp_path)  # no data/pets here
    image, label = dataset[3]
    assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(images[3])) and label == 3


def test_presize_crops_the_centre_of_the_shorter_side(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 255  # a white centre square on a wide black image
    Image.fromarray(image).save(tmp_path / "wide.png")
    out = presize.presize_image(tmp_path / "wide.png", 10)
    assert out.shape == (10, 10, 3) and out.min() > 200


def test_presize_of_an_undecodable_file_is_none(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    assert presize.presize_image(tmp_path / "x.jpg", 16) is None


def test_presize_counts_a_decompression_bomb_as_undecodable(tmp_path):
    assert presize.presize_image(hostile_images.decompression_bomb(tmp_path / "bomb.png"), 24) is None


def test_presize_raises_a_system_error_instead_of_counting_it_as_a_bad_image(tmp_path):
    """A permission or I/O error says nothing about the image: counting it as undecodable would hide the fault."""
    (tmp_path / "folder.jpg").mkdir()  # opening it fails with an errno, as an unreadable file does
    with pytest.raises(IsADirectoryError):
        presize.presize_image(tmp_path / "folder.jpg", 24)


@pytest.mark.parametrize(
    ("skipped", "total", "refused"),
    [(0, 10, False), (1, 20, False), (2, 20, True), (1, 1, True), (5, 100, False), (6, 100, True)],
)
def test_presizing_refuses_nothing_kept_or_more_than_five_percent_skipped(skipped, total, refused):
    with pytest.raises(UserError, match=r"^images: no labelled images"):
        presize.check_skipped([], 0, Path("images"))
    names = [f"bad_{i}.jpg" for i in range(skipped)]
    if not refused:
        presize.check_skipped(names, total, Path("images"))
        return
    with pytest.raises(
        UserError, match=rf"^images: {skipped} of {total} images cannot be decoded \(at most 5% may be\): bad_0.jpg"
    ):
        presize.check_skipped(names, total, Path("images"))


def test_labels_come_from_the_file_name():
    assert pets_layout.label_of("great_pyrenees_173.jpg") == "great_pyrenees"
    assert pets_layout.label_of("Egyptian_Mau_1.jpg") == "Egyptian_Mau"
    assert pets_layout.label_of("Abyssinian_100.mat") is None


def test_random_split_is_fastais_random_splitter():
    train, valid = splits.random_split(7390, 0.2, 42)
    assert (len(train), len(valid)) == (5912, 1478)
    assert not set(train) & set(valid)
    # fastai: torch.manual_seed(seed); randperm(n); the first int(valid_pct * n) are validation.
    import torch

    torch.manual_seed(42)
    assert sorted(valid.tolist()) == sorted(torch.randperm(7390)[:1478].tolist())


def test_official_split_uses_the_annotation_lists(standin):
    files = [name for name, _ in pets_layout.labelled_images(standin / "images")]
    index = pets_layout.split_files(files, "official", valid_pct=0.2, seed=42, annotations=standin / "annotations")
    assert len(index["train"]) + len(index["valid"]) == len(files)
    assert all(int(files[i].rsplit("_", 1)[1][:-4]) % 2 == 1 for i in index["train"])
