"""Unit tests of stages/pets/augment.py that pin down what the rest of the unit tests leave loose: normalisation on
any device and image shape, and the edges of the drawing and the batch loop. Each was written against a mutant that
the rest of the unit tests let survive (tools/mutation.sh)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stages.pets import augment

MEAN = torch.tensor(augment.IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(augment.IMAGENET_STD)[:, None, None]


def test_normalize_is_imagenets_per_channel_standardisation_for_any_image_shape():
    """``(x - mean) / std`` per channel, on a wide image too (the row factors follow the width, not the height)."""
    x = torch.rand(2, 3, 4, 6)
    torch.testing.assert_close(augment.normalize(x), (x - MEAN) / STD)


def test_denormalize_undoes_normalize():
    """``denormalize`` (for showing normalised batches) maps 0 to the mean and inverts ``normalize``."""
    x = torch.rand(2, 3, 4, 6)
    torch.testing.assert_close(augment.denormalize(augment.normalize(x)), x)
    torch.testing.assert_close(augment.denormalize(torch.zeros(1, 3, 2, 2)), MEAN.expand(1, 3, 2, 2))
    torch.testing.assert_close(augment.denormalize(torch.ones(1, 3, 1, 1)), (MEAN + STD)[None])


def test_normalisation_constants_are_made_on_the_batchs_device():
    """A batch on another device (a GPU in training; the meta device here) gets constants on that device."""
    x = torch.zeros(2, 3, 4, 4, device="meta")
    assert augment.normalize(x).device.type == "meta" and augment.denormalize(x).device.type == "meta"
    offset, scale = augment.normalize_factors(torch.device("meta"), 4)
    assert offset.device.type == scale.device.type == "meta" and scale.shape == (3, 1, 4)


def test_a_batch_on_another_device_is_augmented_and_resized_on_that_device():
    """The parameters are drawn on the CPU, but the matrices, buffers and sampling follow the batch (a GPU in
    training; the meta device here, which computes shapes only)."""
    batch = torch.zeros(2, 3, 40, 40, dtype=torch.uint8, device="meta")
    out = augment.BatchAugment(augment.AugTransforms(24), seed=0, normalize=True)(batch)
    assert out.device.type == "meta" and out.shape == (2, 3, 24, 24)
    resized = augment.resize_batch(batch, 24, normalized=True)
    assert resized.device.type == "meta" and resized.shape == (2, 3, 24, 24)


def test_a_batch_of_one_image_is_augmented():
    """The last training batch can hold a single image (the part size is measured on the first)."""
    batch = torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8)
    out = augment.BatchAugment(augment.AugTransforms(24), seed=0, normalize=False)(batch)
    assert out.shape == (1, 3, 24, 24) and 0 <= out.min() and out.max() <= 1


def test_validation_resize_normalises_only_when_asked():
    """``normalized=True`` is ImageNet's standardisation of the plain resize in [0, 1]."""
    batch = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    plain = augment.resize_batch(batch, 24, normalized=False)
    assert 0 <= plain.min() and plain.max() <= 1
    torch.testing.assert_close(augment.resize_batch(batch, 24, normalized=True), augment.normalize(plain))


@pytest.mark.parametrize(("presize", "shrink"), [(96, 2), (40, 1)])
def test_validation_resize_area_averages_first_only_for_a_real_shrink(presize, shrink):
    """96 -> 24 (4x) averages 2x2 blocks before the bilinear resize, as fastai does; 40 -> 24 resizes directly."""
    batch = torch.randint(0, 256, (2, 3, presize, presize), dtype=torch.uint8)
    x = batch.float()
    if shrink > 1:
        x = F.avg_pool2d(x, shrink)
    expected = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=True) / 255
    torch.testing.assert_close(augment.resize_batch(batch, 24, normalized=False), expected, atol=1e-5, rtol=0)


def test_lighting_writes_into_the_buffer_it_is_given():
    """``out`` (a kept buffer, or ``x`` itself) receives the result: no new tensor for a batch."""
    p = augment.AugTransforms(8).draw(2, 8, torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 8, 8)
    expected = augment.lighting(x, p)
    buffer = torch.empty_like(x)
    assert augment.lighting(x, p, out=buffer) is buffer and torch.equal(buffer, expected)
    assert augment.lighting(x, p, out=x) is x and torch.equal(x, expected)
    meta = torch.zeros(2, 3, 8, 8, device="meta")
    assert augment.lighting(meta, p).device.type == "meta"
