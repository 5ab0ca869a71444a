import numpy as np
import pytest

from stages.core.stage import UserError
from stages.mnist import data as mnist_data


@pytest.fixture(scope="module")
def sample():
    return mnist_data.read_sample()


def test_sample_is_mlxtends_5000_real_digits(sample):
    images, labels = sample
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    # Real handwriting: mostly-black background, bright strokes, and digits differ from each other.
    assert (images == 0).mean() > 0.7 and images.max() == 255
    assert not np.array_equal(images[labels == 3].mean(0), images[labels == 7].mean(0))


def test_sample_file_with_wrong_shape_is_a_clear_error(tmp_path):
    bad = tmp_path / "mnist.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(UserError, match="expected 785 columns"):
        mnist_data.read_sample(bad)


def test_raw_layout_roundtrip_and_corrupt_file(tmp_path):
    arrays = {"images": np.zeros((2, 28, 28), np.uint8), "labels": np.array([3, 7])}
    mnist_data.save_raw(tmp_path, arrays)
    assert mnist_data.load_raw(tmp_path)["labels"].tolist() == [3, 7]
    (tmp_path / mnist_data.RAW_FILE).write_bytes(b"not a zip")
    with pytest.raises(UserError, match="mnist.npz: cannot read raw MNIST"):
        mnist_data.load_raw(tmp_path)


def test_sample_split_is_stratified_and_seeded(sample):
    raw = {"images": sample[0], "labels": sample[1]}
    split = mnist_data.select_and_split(raw, [3, 7], valid_pct=0.2, seed=42, source="raw")
    counts = mnist_data.counts(split)
    assert counts == {"train": {"total": 800, "3": 400, "7": 400}, "valid": {"total": 200, "3": 100, "7": 100}}
    again = mnist_data.select_and_split(raw, [3, 7], valid_pct=0.2, seed=42, source="raw")
    np.testing.assert_array_equal(split["valid"][0], again["valid"][0])
    other = mnist_data.select_and_split(raw, [3, 7], valid_pct=0.2, seed=43, source="raw")
    assert not np.array_equal(split["valid"][0], other["valid"][0])


def test_official_split_is_kept_when_the_source_has_one():
    labels = np.array([3, 7, 1, 3, 7, 7])
    raw = {
        "images": np.arange(6 * 784, dtype=np.uint8).reshape(6, 28, 28) % 255,
        "labels": labels,
        "in_test_set": np.array([0, 0, 0, 1, 1, 0], bool),
    }
    split = mnist_data.select_and_split(raw, [3, 7], valid_pct=0.5, seed=0, source="raw")
    assert split["train"][1].tolist() == [3, 7, 7] and split["valid"][1].tolist() == [3, 7]
    ids = sorted(split["train"][2].tolist() + split["valid"][2].tolist())
    assert all(raw["labels"][i] in (3, 7) for i in ids) and len(set(ids)) == 5  # rows of the raw file


def test_all_ten_digits_and_missing_digit(sample):
    raw = {"images": sample[0], "labels": sample[1]}
    split = mnist_data.select_and_split(raw, list(range(10)), valid_pct=0.2, seed=0, source="raw")
    assert sorted(np.unique(split["valid"][1]).tolist()) == list(range(10))
    raw_no_9 = {"images": sample[0][sample[1] != 9], "labels": sample[1][sample[1] != 9]}
    with pytest.raises(UserError, match=r"mnist.digits .*digit\(s\) \[9\]"):
        mnist_data.select_and_split(raw_no_9, [3, 9], valid_pct=0.2, seed=0, source="raw")
