import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, pairwise_distances
from statsmodels.stats.proportion import proportion_confint

from stages.core import evaluation
from stages.mnist import data as mnist_data
from stages.mnist import pixel_similarity


def test_distances_match_an_independent_computation():
    rng = np.random.default_rng(0)
    images, means = rng.random((5, 28, 28)), rng.random((3, 28, 28))
    flat_i, flat_m = images.reshape(5, -1), means.reshape(3, -1)
    got_l1 = pixel_similarity.distance(torch.tensor(images), torch.tensor(means), "l1").numpy()
    got_l2 = pixel_similarity.distance(torch.tensor(images), torch.tensor(means), "l2").numpy()
    np.testing.assert_allclose(got_l1, pairwise_distances(flat_i, flat_m, metric="manhattan") / 784, rtol=1e-5)
    np.testing.assert_allclose(got_l2, pairwise_distances(flat_i, flat_m) / np.sqrt(784), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown distance"):
        pixel_similarity.distance(torch.tensor(images), torch.tensor(means), "cosine")


def test_mean_images_and_nearest_mean():
    images = torch.zeros(4, 28, 28)
    images[2:] = 1.0
    labels = torch.tensor([3, 3, 7, 7])
    means = pixel_similarity.mean_images(images, labels, [3, 7])
    assert means[0].max() == 0 and means[1].min() == 1
    probe = torch.stack([torch.full((28, 28), 0.2), torch.full((28, 28), 0.9)])
    assert pixel_similarity.predict(probe, means, "l1").tolist() == [0, 1]


def test_sample_baseline_agrees_with_an_independent_computation():
    images, labels = mnist_data.read_sample()
    split = mnist_data.select_and_split(
        {"images": images, "labels": labels}, [3, 7], valid_pct=0.2, seed=42, source="sample"
    )
    (train_x, train_y, _), (valid_x, valid_y, _) = split["train"], split["valid"]
    to_t = lambda a: torch.from_numpy(a).float() / 255  # noqa: E731
    means = pixel_similarity.mean_images(to_t(train_x), torch.from_numpy(train_y), [3, 7])
    ours = pixel_similarity.predict(to_t(valid_x), means, "l1").numpy()
    actual = (valid_y == 7).astype(int)
    # Independently: centroids with pandas-free numpy, distances with scikit-learn.
    centroids = np.stack([train_x[train_y == d].reshape(-1, 784).mean(0) / 255 for d in (3, 7)])
    theirs = pairwise_distances(valid_x.reshape(-1, 784) / 255, centroids, metric="manhattan").argmin(1)
    our_acc, their_acc = (ours == actual).mean(), (theirs == actual).mean()
    assert abs(our_acc - their_acc) <= 0.015
    assert our_acc > 0.9  # the book's L1 baseline is 0.95 on full MNIST


def test_accuracy_report_agrees_with_sklearn():
    actual = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 0, 1, 1, 0])
    report = evaluation.accuracy_report(actual, predicted, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert report["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(actual, predicted), abs=1e-6)
    assert {k: v["accuracy"] for k, v in report["per_class"].items()} == {
        "a": pytest.approx(2 / 3, abs=1e-6),
        "b": 1.0,
        "c": 0.0,
    }
    assert (report["correct"], report["images"]) == (4, 6)
    # every accuracy with its 95% Wilson interval, from the counts
    assert (report["accuracy_low"], report["accuracy_high"]) == pytest.approx(
        proportion_confint(4, 6, method="wilson"), abs=1e-6
    )
    assert report["per_class"]["a"]["images"] == 3 and report["per_class"]["c"]["accuracy_high"] > 0
