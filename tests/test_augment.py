"""The batched augmentation: its geometry against exact references, its parameters against fastai's per-image
definitions (aug_transforms with min_scale < 1), and its independence from the device."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from stages.core.devices import Compute
from stages.learner.learner import train_step
from stages.pets import augment

SETTINGS = augment.AugTransforms(size=64, min_scale=0.75)


def plain(n: int, presize: int) -> augment.AugParams:
    """Parameters that change nothing: the whole image, no flip, rotation, zoom, warp or lighting."""
    ones, zeros = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    full = torch.full((n,), presize, dtype=torch.long)
    return augment.AugParams(full, full * 0, full * 0, ones, zeros, ones, zeros + 0.5, zeros + 0.5, zeros, zeros,
                             zeros + 0.5, ones)  # fmt: skip


def sample(batch: torch.Tensor, p: augment.AugParams, size: int) -> torch.Tensor:
    grid = augment.sampling_grid(augment.projective_matrices(p, batch.shape[-1]).to(batch.device), size=size)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def smooth_images(n: int, presize: int) -> torch.Tensor:
    """Smooth random images (low frequencies only), so one resampling and two differ by little."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 6, 6, generator=g)
    return F.interpolate(coarse, size=(presize, presize), mode="bicubic", align_corners=True).clamp(0, 1)


def test_plain_parameters_reproduce_the_validation_resize():
    batch = (smooth_images(4, 48) * 255).to(torch.uint8)
    x = batch.float() / 255
    expected = augment.resize_batch(batch, 32, normalized=False)
    assert torch.allclose(augment.lighting(sample(x, plain(4, 48), 32), plain(4, 48)), expected, atol=1e-5)


def test_a_flip_mirrors_exactly_and_a_quarter_turn_rotates_exactly():
    x = torch.rand(2, 3, 17, 17)
    p = plain(2, 17)
    p.flip = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    out = sample(x, p, 17)
    assert torch.allclose(out[0], x[0].flip(-1), atol=1e-5) and torch.allclose(out[1], x[1], atol=1e-5)
    p = plain(1, 17)
    p.rotate = torch.tensor([90.0], dtype=torch.float64)
    assert torch.allclose(sample(x[:1], p, 17)[0], torch.rot90(x[0], k=1, dims=(1, 2)), atol=1e-4) or \
        torch.allclose(sample(x[:1], p, 17)[0], torch.rot90(x[0], k=-1, dims=(1, 2)), atol=1e-4)  # fmt: skip


def test_a_crop_reads_exactly_the_chosen_pixels():
    x = torch.rand(1, 3, 20, 20)
    p = plain(1, 20)
    p.crop, p.top, p.left = torch.tensor([13]), torch.tensor([3]), torch.tensor([5])
    # 13 pixels onto 5 outputs: every third pixel of rows 3..15 and columns 5..17
    assert torch.allclose(sample(x, p, 5)[0], x[0, :, 3:16:3, 5:18:3], atol=1e-5)


def test_the_warp_moves_the_corners_as_fastai_defines_it():
    p = plain(1, 8)
    p.warp_x, p.warp_y = torch.tensor([0.1], dtype=torch.float64), torch.tensor([-0.15], dtype=torch.float64)
    h = augment.warp_homographies(p)[0]
    x, y = 0.1, -0.15
    targets = [(-1 - y, -1 - x), (-1 + y, 1 + x), (1 + y, -1 + x), (1 - y, 1 - x)]
    for (tx, ty), (sx, sy) in zip(targets, [(-1, -1), (-1, 1), (1, -1), (1, 1)]):
        mapped = h @ torch.tensor([tx, ty, 1.0], dtype=torch.float64)
        assert (mapped[:2] / mapped[2]).tolist() == pytest.approx([sx, sy], abs=1e-9)


def fastai_two_step(x: torch.Tensor, p: augment.AugParams, size: int) -> torch.Tensor:
    """fastai's order written out: flip/rotate/zoom and warp at full size, then crop the result and resize."""
    n, presize = len(x), x.shape[-1]
    whole = plain(n, presize)
    affine_only = augment.AugParams(whole.crop, whole.top, whole.left, p.flip, p.rotate, p.zoom, p.zoom_col,
                                    p.zoom_row, p.warp_x, p.warp_y, p.brightness, p.contrast)  # fmt: skip
    transformed = sample(x, affine_only, presize)
    crops = [transformed[i : i + 1, :, t : t + c, l : l + c] for i, (c, t, l) in enumerate(zip(p.crop, p.top, p.left))]
    return torch.cat([F.interpolate(c, size=(size, size), mode="bilinear", align_corners=True) for c in crops])


def test_one_composed_sampling_matches_fastais_two_resamplings():
    x = smooth_images(16, 48)
    p = SETTINGS.draw(16, 48, torch.Generator().manual_seed(3))
    ours, theirs = sample(x, p, 32), fastai_two_step(x, p, 32)
    assert (ours - theirs).abs().mean() < 0.01  # interpolation differences only; a wrong composition is ~0.1
    shuffled = augment.AugParams(*(getattr(p, f).roll(1) for f in p.__dataclass_fields__))
    assert (sample(x, shuffled, 32) - theirs).abs().mean() > 0.03  # the comparison can tell


def test_lighting_is_fastais_brightness_then_contrast_in_logit_space():
    x = torch.full((2, 3, 2, 2), 0.5)
    p = plain(2, 2)
    p.brightness = torch.tensor([0.6, 0.5], dtype=torch.float64)
    p.contrast = torch.tensor([1.0, 1.25], dtype=torch.float64)
    out = augment.lighting(x, p)
    assert out[0].mean().item() == pytest.approx(0.6, abs=1e-6)  # logit(0.5) = 0, + logit(0.6)
    assert out[1].mean().item() == pytest.approx(0.5, abs=1e-6)  # contrast leaves the midpoint alone


@pytest.fixture(scope="module")
def draws():
    return SETTINGS.draw(40000, 96, torch.Generator().manual_seed(0))


def uniform_fit(values: torch.Tensor, low: float, high: float) -> float:
    return stats.kstest(values.numpy(), "uniform", args=(low, high - low)).pvalue


def test_the_crop_keeps_a_uniform_share_of_the_area_at_a_uniform_place(draws):
    share = (draws.crop.double() ** 2 / 96**2).numpy()
    assert share.min() >= 0.74 and share.max() <= 1.0  # rounding the side to whole pixels
    assert abs(share.mean() - (0.75 + 1) / 2) < 0.003
    room = (96 - draws.crop).double()
    assert (draws.top.double() <= room).all() and (draws.left.double() <= room).all()
    movable = room > 0
    assert abs(((draws.top.double()[movable] + 0.5) / (room[movable] + 1)).mean() - 0.5) < 0.01


def test_flip_rotation_zoom_warp_and_lighting_follow_fastais_probabilities_and_ranges(draws):
    n = len(draws.crop)
    assert abs((draws.flip < 0).double().mean() - 0.5) < 0.01
    for values, neutral, low, high in [(draws.rotate, 0.0, -10, 10), (draws.zoom, 1.0, 1.0, 1.1),
                                       (draws.warp_x, 0.0, -0.2, 0.2), (draws.warp_y, 0.0, -0.2, 0.2),
                                       (draws.brightness, 0.5, 0.4, 0.6)]:  # fmt: skip
        drawn = values[values != neutral]
        assert abs(len(drawn) / n - 0.75) < 0.01  # p_affine and p_lighting are 0.75
        assert uniform_fit(drawn, low, high) > 0.001
    drawn = draws.contrast[draws.contrast != 1.0]
    assert abs(len(drawn) / n - 0.75) < 0.01 and uniform_fit(drawn.log(), math.log(0.8), -math.log(0.8)) > 0.001
    assert uniform_fit(draws.zoom_col, 0, 1) > 0.001
    # warp's two axes are drawn independently, as fastai's _WarpCoord does
    both = ((draws.warp_x != 0) & (draws.warp_y != 0)).double().mean()
    assert abs(both - 0.75**2) < 0.01


def test_each_image_gets_its_own_parameters_and_the_same_seed_the_same_ones():
    batch = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8).expand(8, 3, 40, 40).clone()
    batch[:] = batch[0]
    out = augment.BatchAugment(augment.AugTransforms(24), seed=5, normalize=True)(batch)
    assert out.shape == (8, 3, 24, 24) and out.dtype == torch.float32
    assert not torch.allclose(out[0], out[1])
    again = augment.BatchAugment(augment.AugTransforms(24), seed=5, normalize=True)(batch)
    assert torch.equal(out, again)


def test_kept_buffers_change_no_result_and_each_batch_gets_a_new_output():
    """The augmentation reuses its float input and grid between batches; a batch's output must not depend on what
    came before it, must survive the next call, and a smaller last batch must work."""
    first, second = (torch.randint(0, 256, (n, 3, 40, 40), dtype=torch.uint8) for n in (6, 4))
    kept = augment.BatchAugment(augment.AugTransforms(24), seed=3, normalize=True)
    out_first = kept(first)
    saved = out_first.clone()
    out_second = kept(second)
    assert torch.equal(out_first, saved) and out_first.data_ptr() != out_second.data_ptr()
    fresh = augment.BatchAugment(augment.AugTransforms(24), seed=3, normalize=True)
    fresh.params(first)  # the same draws as the first call consumed, without its buffers
    assert torch.equal(fresh(second), out_second) and out_second.shape == (4, 3, 24, 24)


def test_the_output_memory_is_reused_only_once_nothing_holds_the_last_batch():
    """A new 38 MB output per batch costs page faults, so the last one's memory is reused, but never while the
    caller keeps that batch, a view of it, or autograd saved it for a backward pass not yet run."""
    batch = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    augmentation = augment.BatchAugment(augment.AugTransforms(24), seed=0, normalize=True)
    first = augmentation(batch)
    memory = first.data_ptr()
    del first
    released = augmentation(batch)
    assert released.data_ptr() == memory  # nothing held it: reused
    row = released[1:]
    saved, memory = row.clone(), released.data_ptr()
    del released
    assert augmentation(batch).data_ptr() != memory and torch.equal(row, saved)  # a view of it was held
    weight = torch.randn(2, 3, 3, 3, requires_grad=True)
    graph_input = augmentation(batch)
    loss, memory, kept = F.conv2d(graph_input, weight).square().sum(), graph_input.data_ptr(), graph_input.clone()
    del graph_input
    assert augmentation(batch).data_ptr() != memory  # autograd still held it
    loss.backward()  # the gradient of the input as it was, not of a later batch written over it
    reference = weight.detach().clone().requires_grad_()
    F.conv2d(kept, reference).square().sum().backward()
    assert torch.equal(weight.grad, reference.grad)


def test_the_training_loop_lets_the_augmentation_reuse_its_output():
    """After a training step nothing holds the augmented batch, so the next one writes into the same memory."""
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(2))
    batch, targets = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8), torch.tensor([0, 1, 0, 1])
    augmentation = augment.BatchAugment(augment.AugTransforms(24), seed=0, normalize=True)
    model(torch.zeros(1, 3, 24, 24))  # the lazy layer's shape
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cpu = Compute.from_params({"device": "cpu", "precision": "auto", "cpu_threads": 2})
    train_step(model, batch, targets, loss_func=nn.CrossEntropyLoss(), opt=opt, compute=cpu, tfm=augmentation)
    assert not augment._held_elsewhere(augmentation._scratch["output"])


@pytest.mark.parametrize("presize", [40, 96])  # 96 -> 24 area-averages first, 40 -> 24 does not
def test_sampling_a_few_images_at_a_time_gives_the_bits_of_the_whole_batch_at_once(monkeypatch, presize):
    """On the CPU the float conversion and the sampling go a part at a time (for the cache); a GPU does the whole
    batch. Every image's values must be the same either way, a short last part included."""
    batch = torch.randint(0, 256, (7, 3, presize, presize), dtype=torch.uint8)
    outputs = []
    for images_per_part in (7, 2):
        monkeypatch.setattr(augment, "CPU_PART_BYTES", images_per_part * batch[0].numel() * 4)
        outputs.append(augment.BatchAugment(augment.AugTransforms(24), seed=5, normalize=True)(batch))
    assert torch.equal(*outputs)


def test_parameters_are_drawn_on_the_cpu_so_every_device_augments_alike():
    p = augment.BatchAugment(SETTINGS, seed=1, normalize=False).params(torch.zeros(4, 3, 96, 96, device="meta"))
    assert all(getattr(p, f).device.type == "cpu" for f in p.__dataclass_fields__)


def test_validation_resize_is_deterministic_and_normalised():
    batch = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    out = augment.resize_batch(batch, 24, normalized=True)
    assert torch.equal(out, augment.resize_batch(batch, 24, normalized=True)) and out.shape == (4, 3, 24, 24)
    assert out.mean().abs() < 3 and np.isfinite(out.numpy()).all()
