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
    return augment.AugParams(
        crop=full,
        top=full * 0,
        left=full * 0,
        flip=ones,
        rotate=zeros,
        zoom=ones,
        zoom_col=zeros + 0.5,
        zoom_row=zeros + 0.5,
        warp_x=zeros,
        warp_y=zeros,
        brightness=zeros + 0.5,
        contrast=ones,
    )


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
    # fastai's +90 degrees turns the image clockwise as displayed (rows down): torch's rot90 with k=-1, not k=1
    assert torch.allclose(sample(x[:1], p, 17)[0], torch.rot90(x[0], k=-1, dims=(1, 2)), atol=1e-4)


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


# fastai's definitions (fastai/vision/augment.py, fastai 2.8.12), written out here in float64 from the drawn
# parameters, none of them through stages/pets/augment.py's matrices or grids: a formula wrong in both can't pass.
# Pipeline order (stable sort by `order`): AffineCoordTfm (30, flip @ rotate @ zoom then the warp, at full size),
# RandomResizedCropGPU (30, slice then resize), LightingTfm (40, brightness then contrast in logit space).


def fastai_affine_mat(*ms: torch.Tensor) -> torch.Tensor:
    """fastai's ``affine_mat``: six (N,) entries as (N, 3, 3) with a last row 0, 0, 1."""
    zero, one = torch.zeros_like(ms[0]), torch.ones_like(ms[0])
    return torch.stack([torch.stack(ms[:3], 1), torch.stack(ms[3:], 1), torch.stack([zero, zero, one], 1)], 1)


def fastai_affine(p: augment.AugParams) -> torch.Tensor:
    """(N, 3, 3) ``AffineCoordTfm._get_affine_mat``: ``flip_mat @ rotate_mat @ zoom_mat`` (aug_transforms' order;
    ``_prepare_mat`` changes nothing on a square image)."""
    mask = p.flip.double()
    t0, t1 = torch.zeros_like(mask), torch.ones_like(mask)
    flip = fastai_affine_mat(mask, t0, t0, t0, t1, t0)
    thetas = p.rotate.double() * math.pi / 180
    rotate = fastai_affine_mat(thetas.cos(), thetas.sin(), t0, -thetas.sin(), thetas.cos(), t0)
    s = 1 / p.zoom.double()
    col_c, row_c = (1 - s) * (2 * p.zoom_col.double() - 1), (1 - s) * (2 * p.zoom_row.double() - 1)
    zoom = fastai_affine_mat(s, t0, col_c, t0, s, row_c)
    return flip @ rotate @ zoom


def fastai_warp_coeffs(p: augment.AugParams) -> torch.Tensor:
    """(N, 8, 1) ``_WarpCoord.__call__``'s ``find_coeffs(orig_pts, targ_pts)`` for the drawn magnitudes."""
    x_t, y_t = p.warp_x.double(), p.warp_y.double()
    t0, t1 = torch.zeros_like(x_t), torch.ones_like(x_t)
    p1 = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=torch.float64).expand(len(x_t), 4, 2)
    targ = [[-1 - y_t, -1 - x_t], [-1 + y_t, 1 + x_t], [1 + y_t, -1 + x_t], [1 - y_t, 1 - x_t]]
    p2 = torch.stack([torch.stack(pair) for pair in targ]).permute(2, 0, 1)
    m = []
    for i in range(4):
        x1, y1, x2, y2 = p1[:, i, 0], p1[:, i, 1], p2[:, i, 0], p2[:, i, 1]
        m.append(torch.stack([x2, y2, t1, t0, t0, t0, -x1 * x2, -x1 * y2]))
        m.append(torch.stack([t0, t0, t0, x2, y2, t1, -y1 * x2, -y1 * y2]))
    return torch.linalg.solve(torch.stack(m).permute(2, 0, 1), p1.reshape(len(x_t), 8, 1))


def fastai_apply_perspective(coords: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """fastai's ``apply_perspective``: coords (N, H, W, 2) through the homography of ``coeffs`` (N, 8, 1)."""
    sz = coords.shape
    coords = coords.reshape(sz[0], -1, 2)
    coeffs = torch.cat([coeffs, torch.ones_like(coeffs[:, :1])], dim=1).view(coeffs.shape[0], 3, 3)
    coords1 = coords @ coeffs[..., :2].transpose(1, 2) + coeffs[..., 2].unsqueeze(1)
    return (coords1 / coords1[..., 2].unsqueeze(-1))[..., :2].reshape(sz)


def fastai_crop_coords(p: augment.AugParams, presize: int, size: int) -> torch.Tensor:
    """(N, size, size, 2) where ``RandomResizedCropGPU``'s output pixels read the presized image, in
    ``align_corners=True`` units: its slice ``x[..., top:top + crop, left:left + crop]`` resized by an identity
    ``affine_grid``, so output pixel j reads pixel ``left + j (crop - 1) / (size - 1)``."""
    steps = torch.linspace(0, 1, size, dtype=torch.float64)
    span = (p.crop.double() - 1)[:, None] * steps
    cols = (p.left.double()[:, None] + span) * 2 / (presize - 1) - 1
    rows = (p.top.double()[:, None] + span) * 2 / (presize - 1) - 1
    return torch.stack(torch.broadcast_tensors(cols[:, None, :], rows[:, :, None]), -1)


def fastai_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``affine_coord``'s sampler (bilinear, reflection padding, align_corners=True), in float64."""
    return F.grid_sample(x.double(), grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def fastai_one_grid(x: torch.Tensor, p: augment.AugParams, size: int) -> torch.Tensor:
    """fastai's chain for each output pixel: the crop's coordinates, then the affine (``affine_grid``'s
    ``theta @ (x, y, 1)``), then the warp, read from ``x`` in one sampling (fastai samples twice, see below)."""
    mat = fastai_affine(p)
    coords = fastai_crop_coords(p, x.shape[-1], size)
    coords = coords @ mat[:, None, :2, :2].transpose(-1, -2) + mat[:, None, None, :2, 2]
    return fastai_sample(x, fastai_apply_perspective(coords, fastai_warp_coeffs(p)))


def fastai_logit(x: torch.Tensor) -> torch.Tensor:
    """fastai.torch_core.logit: clamped to [1e-7, 1 - 1e-7]."""
    x = x.clamp(1e-7, 1 - 1e-7)
    return -(1 / x - 1).log()


def fastai_lighting(x: torch.Tensor, p: augment.AugParams) -> torch.Tensor:
    """``TensorImage.lighting``: ``sigmoid`` of ``_BrightnessLogit`` (adds ``logit(change)``) then
    ``_ContrastLogit`` (multiplies by ``change``) applied to ``logit(x)``, in float64."""
    brightness, contrast = (v.double()[:, None, None, None] for v in (p.brightness, p.contrast))
    return torch.sigmoid((fastai_logit(x.double()) + fastai_logit(brightness)) * contrast)


def fastai_two_step(x: torch.Tensor, p: augment.AugParams, size: int) -> torch.Tensor:
    """fastai's order written out: flip/rotate/zoom and warp at full size, then crop the result and resize."""
    n, presize = len(x), x.shape[-1]
    grid = F.affine_grid(fastai_affine(p)[:, :2], [n, 1, presize, presize], align_corners=True)
    transformed = fastai_sample(x, fastai_apply_perspective(grid, fastai_warp_coeffs(p)))
    crops = [
        transformed[i : i + 1, :, top : top + c, left : left + c]
        for i, (c, top, left) in enumerate(zip(p.crop, p.top, p.left))
    ]
    identity = F.affine_grid(torch.eye(2, 3, dtype=torch.float64)[None], [1, 1, size, size], align_corners=True)
    return torch.cat([fastai_sample(c, identity) for c in crops]).float()


def test_one_composed_sampling_matches_fastais_two_resamplings():
    """The one composed grid against fastai's two resamplings (affine and warp at full size, then crop), both
    references built from fastai's own formulas."""
    x = smooth_images(16, 48)
    p = SETTINGS.draw(16, 48, torch.Generator().manual_seed(3))
    ours, theirs = sample(x, p, 32), fastai_two_step(x, p, 32)
    assert (ours - theirs).abs().mean() < 0.01  # interpolation differences only; a wrong composition is ~0.1
    shuffled = augment.AugParams(*(getattr(p, f).roll(1) for f in p.__dataclass_fields__))
    assert (sample(x, shuffled, 32) - theirs).abs().mean() > 0.03  # the comparison can tell


BOLD = augment.AugTransforms(
    size=32, min_scale=0.35, max_rotate=40.0, max_zoom=1.6, max_warp=0.4, max_lighting=0.5, p_affine=1.0, p_lighting=1.0
)


@pytest.mark.parametrize("settings", [augment.AugTransforms(size=32, min_scale=0.75), BOLD], ids=["default", "bold"])
def test_the_batch_augmentation_is_fastais_for_the_parameters_it_drew(settings):
    """BatchAugment's whole output against fastai's crop, flip, rotation, zoom, warp and lighting written out from
    the same drawn parameters and sampled once (the one resampling is the project's documented choice): any wrong
    sign, scale, centre or order in the geometry or the lighting moves pixels by far more than the tolerance."""
    # pixel values 28..228: at 0 or 255 a contrast below 1 magnifies float32's rounding of the clamped logit
    batch = (smooth_images(16, 48) * 200 + 28).round().to(torch.uint8)
    p = settings.draw(16, 48, torch.Generator().manual_seed(11))  # the draws BatchAugment's seed 11 makes
    ours = augment.BatchAugment(settings, seed=11, normalize=False)(batch)
    expected = fastai_lighting(fastai_one_grid(batch.float() / 255, p, 32), p)
    assert (ours.double() - expected).abs().max() < 1e-5  # 7e-7 measured
    assert (p.rotate != 0).any() and (p.zoom != 1).any() and (p.warp_x != 0).any() and (p.flip < 0).any()


def test_a_positive_angle_turns_the_image_clockwise_as_displayed():
    """fastai's rotate_mat ``[[cos, sin], [-sin, cos]]`` maps output to input coordinates (x right, y down), so +30
    degrees carries a spot right of the centre down to (row, col) ``(20 + 10 sin 30, 20 + 10 cos 30)``: one way only."""
    rows, cols = torch.arange(41, dtype=torch.float64)[:, None], torch.arange(41, dtype=torch.float64)
    x = (-((rows - 20) ** 2 + (cols - 30) ** 2) / (2 * 1.5**2)).exp().float()[None, None]  # a blob at row 20, col 30
    p = plain(1, 41)
    p.rotate = torch.tensor([30.0], dtype=torch.float64)
    out = sample(x, p, 41)[0, 0].double()
    centroid = ((out * rows).sum() / out.sum()).item(), ((out * cols).sum() / out.sum()).item()
    assert centroid == pytest.approx((25.0, 20 + 10 * math.cos(math.pi / 6)), abs=0.05)


def test_lighting_is_fastais_brightness_then_contrast_in_logit_space():
    """The 0.5 grey every contrast leaves alone: brightness alone shows there."""
    x = torch.full((2, 3, 2, 2), 0.5)
    p = plain(2, 2)
    p.brightness = torch.tensor([0.6, 0.5], dtype=torch.float64)
    p.contrast = torch.tensor([1.0, 1.25], dtype=torch.float64)
    out = augment.lighting(x, p)
    assert out[0].mean().item() == pytest.approx(0.6, abs=1e-6)  # logit(0.5) = 0, + logit(0.6)
    assert out[1].mean().item() == pytest.approx(0.5, abs=1e-6)  # contrast leaves the midpoint alone


def test_lighting_on_a_ramp_is_fastais_brightness_then_contrast():
    """Brightness, contrast (above and below 1) and both together on a 0..1 ramp, against fastai's
    ``sigmoid((logit(x) + logit(b)) c)``: a contrast that does nothing, acts on the pixel values rather than their
    logits, or comes before the brightness fails."""
    x = torch.linspace(0, 1, 101).expand(5, 3, 2, 101).contiguous()  # 0 and 1 included: the logit's clamp
    p = plain(5, 2)
    p.brightness = torch.tensor([0.5, 0.58, 0.5, 0.5, 0.43], dtype=torch.float64)
    p.contrast = torch.tensor([1.0, 1.0, 1.22, 0.83, 1.18], dtype=torch.float64)
    expected = fastai_lighting(x, p)
    assert (augment.lighting(x, p).double() - expected).abs().max() < 2e-6
    assert (expected[2:] - x[2:]).abs().amax(dim=(1, 2, 3)).min() > 0.02  # each contrast changes the ramp


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
    ranges = [
        (draws.rotate, 0.0, -10, 10),
        (draws.zoom, 1.0, 1.0, 1.1),
        (draws.warp_x, 0.0, -0.2, 0.2),
        (draws.warp_y, 0.0, -0.2, 0.2),
        (draws.brightness, 0.5, 0.4, 0.6),
    ]
    for values, neutral, low, high in ranges:
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
    cpu = Compute.from_params({"device": "cpu", "precision": "auto", "numerics": "portable", "cpu_threads": 2})
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
