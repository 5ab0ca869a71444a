"""fastai's ``aug_transforms(size, min_scale)`` for a whole batch on the device: one sampling grid per image, one
``grid_sample`` per batch.

Each training image gets its own random parameters, drawn as fastai draws them:
- random resized crop: a square (fastai's ``ratio=(1, 1)``) of ``U(min_scale, 1)`` of the presized area, at a
  uniform position (fastai draws one crop per batch; here each image has its own);
- flip left-right with p 0.5;
- warp (perspective) with p 0.75 on each axis, magnitude ``U(-max_warp, max_warp)``;
- rotation with p 0.75, ``U(-max_rotate, max_rotate)`` degrees;
- zoom with p 0.75, scale ``U(1, max_zoom)`` about a uniform centre;
- lighting in logit space: brightness with p 0.75, ``U(0.5 (1 - l), 0.5 (1 + l))`` added as a logit; contrast with
  p 0.75, ``exp(U(log(1 - l), -log(1 - l)))`` as a factor.
Crop, flip, rotation, zoom and warp compose into one grid read straight from the presized image at ``size``
(bilinear, reflection padding, ``align_corners=True`` as fastai); fastai resamples twice (the affine at full size,
then the crop). Validation resizes the whole presized image with the same sampler. The parameters are drawn on
the CPU from a seeded generator, so a batch is augmented identically on the CPU and on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stages.core.cpu import exact_sqrt

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class AugParams:
    """One row per image (all on the CPU): what :func:`draw` chose."""

    crop: torch.Tensor  # (N,) side of the square crop, in pixels of the presized image
    top: torch.Tensor  # (N,) its top-left corner
    left: torch.Tensor
    flip: torch.Tensor  # (N,) -1 to flip left-right, else 1
    rotate: torch.Tensor  # (N,) degrees, 0 when not drawn
    zoom: torch.Tensor  # (N,) scale >= 1, 1 when not drawn
    zoom_col: torch.Tensor  # (N,) zoom centre, each in [0, 1]
    zoom_row: torch.Tensor
    warp_x: torch.Tensor  # (N,) perspective magnitudes, 0 when not drawn
    warp_y: torch.Tensor
    brightness: torch.Tensor  # (N,) in (0, 1), 0.5 when not drawn
    contrast: torch.Tensor  # (N,) > 0, 1 when not drawn


def _uniform(n: int, low: float, high: float, *, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64) * (high - low) + low


def _masked(values: torch.Tensor, *, p: float, neutral: float, g: torch.Generator) -> torch.Tensor:
    """fastai's ``mask_tensor``: each value kept with probability ``p``, else ``neutral``."""
    keep = torch.rand(len(values), generator=g, dtype=torch.float64) < p
    return torch.where(keep, values, torch.full_like(values, neutral))


@dataclass(frozen=True)
class AugTransforms:
    """The augmentation's settings (fastai's defaults) and the presized and output sizes."""

    size: int
    min_scale: float = 0.75
    max_rotate: float = 10.0
    max_zoom: float = 1.1
    max_warp: float = 0.2
    max_lighting: float = 0.2
    p_affine: float = 0.75
    p_lighting: float = 0.75

    def draw(self, n: int, presize: int, g: torch.Generator) -> AugParams:
        area = _uniform(n, self.min_scale, 1.0, g=g) * presize * presize
        crop = exact_sqrt(area).round().clamp(1, presize).long()  # fastai: int(round(sqrt(area * ratio))), ratio 1
        top = (torch.rand(n, generator=g, dtype=torch.float64) * (presize - crop + 1)).floor().long()
        left = (torch.rand(n, generator=g, dtype=torch.float64) * (presize - crop + 1)).floor().long()
        flip = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0).double()
        warp_x = _masked(_uniform(n, -self.max_warp, self.max_warp, g=g), p=self.p_affine, neutral=0.0, g=g)
        warp_y = _masked(_uniform(n, -self.max_warp, self.max_warp, g=g), p=self.p_affine, neutral=0.0, g=g)
        rotate = _masked(_uniform(n, -self.max_rotate, self.max_rotate, g=g), p=self.p_affine, neutral=0.0, g=g)
        zoom = _masked(_uniform(n, 1.0, self.max_zoom, g=g), p=self.p_affine, neutral=1.0, g=g)
        zoom_col, zoom_row = _uniform(n, 0.0, 1.0, g=g), _uniform(n, 0.0, 1.0, g=g)
        light = self.max_lighting
        brightness = _uniform(n, 0.5 * (1 - light), 0.5 * (1 + light), g=g)
        brightness = _masked(brightness, p=self.p_lighting, neutral=0.5, g=g)
        contrast = _uniform(n, math.log(1 - light), -math.log(1 - light), g=g).exp()
        contrast = _masked(contrast, p=self.p_lighting, neutral=1.0, g=g)
        return AugParams(crop, top, left, flip, rotate, zoom, zoom_col, zoom_row, warp_x, warp_y, brightness, contrast)


def affine_matrices(p: AugParams, presize: int) -> torch.Tensor:
    """(N, 3, 3) maps from output coordinates to presized-image coordinates (both in [-1, 1]): fastai's
    ``flip @ rotate @ zoom`` applied after the crop's own map."""
    n = len(p.crop)
    eye = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    flip = eye.clone()
    flip[:, 0, 0] = p.flip
    theta = p.rotate * math.pi / 180
    rotate = eye.clone()
    rotate[:, 0, 0], rotate[:, 0, 1], rotate[:, 1, 0], rotate[:, 1, 1] = (
        theta.cos(),
        theta.sin(),
        -theta.sin(),
        theta.cos(),
    )
    s = 1 / p.zoom
    zoom = eye.clone()
    zoom[:, 0, 0], zoom[:, 1, 1] = s, s
    zoom[:, 0, 2], zoom[:, 1, 2] = (1 - s) * (2 * p.zoom_col - 1), (1 - s) * (2 * p.zoom_row - 1)
    # The crop: output [-1, 1] -> pixels top..top+crop-1 of the presized image, in align_corners=True coordinates.
    scale = (p.crop - 1).double() / (presize - 1)
    crop = eye.clone()
    crop[:, 0, 0], crop[:, 1, 1] = scale, scale
    crop[:, 0, 2] = -1 + (2 * p.left + p.crop - 1).double() / (presize - 1)
    crop[:, 1, 2] = -1 + (2 * p.top + p.crop - 1).double() / (presize - 1)
    return flip @ rotate @ zoom @ crop


def warp_homographies(p: AugParams) -> torch.Tensor:
    """(N, 3, 3) fastai's ``_WarpCoord``: the perspective that moves the corners by the warp magnitudes."""
    x, y = p.warp_x, p.warp_y
    source = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=torch.float64).expand(len(x), 4, 2)
    target = torch.stack(
        [
            torch.stack([-1 - y, -1 - x], 1),
            torch.stack([-1 + y, 1 + x], 1),
            torch.stack([1 + y, -1 + x], 1),
            torch.stack([1 - y, 1 - x], 1),
        ],
        1,
    )
    # fastai's find_coeffs(orig, targ): h with orig = H(targ); 8 unknowns from 4 point pairs.
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows = []
    for i in range(4):
        tx, ty, sx, sy = target[:, i, 0], target[:, i, 1], source[:, i, 0], source[:, i, 1]
        rows.append(torch.stack([tx, ty, one, zero, zero, zero, -sx * tx, -sx * ty], 1))
        rows.append(torch.stack([zero, zero, zero, tx, ty, one, -sy * tx, -sy * ty], 1))
    a = torch.stack(rows, 1)  # (N, 8, 8)
    b = source.reshape(len(x), 8, 1)
    h = torch.linalg.solve(a, b)[:, :, 0]
    return torch.cat([h, one[:, None]], 1).reshape(len(x), 3, 3)


def projective_matrices(p: AugParams, presize: int) -> torch.Tensor:
    """(N, 3, 3) float32: each image's warp applied after its affine map, composed into one projective matrix
    (computed in float64 on the CPU)."""
    return (warp_homographies(p) @ affine_matrices(p, presize)).float()


def sampling_grid(h: torch.Tensor, *, size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """(N, size, size, 2): for each output pixel, where to read the presized image, from the images' projective
    matrices ``h`` (N, 3, 3) on the device. Each of h's three rows applied to the output's pixel grid is a small
    column term plus a small row term, so every full-size pass is one addition, one reciprocal or one product. The
    grid is a view of x and y planes (N, 2, size, size), a layout grid_sample reads as fast as an interleaved one and
    that every pass writes contiguously. ``out``, when given, is that (N, 2, size, size) buffer, filled."""
    h = h[:, :, :, None, None]  # (N, 3, 3, 1, 1)
    u = torch.linspace(-1, 1, size, device=h.device)  # output columns (x) and rows (y), align_corners=True
    columns, rows = u[None, :], u[:, None]

    def plane(
        r: int, out: torch.Tensor | None = None
    ) -> torch.Tensor:  # h[r, 0] x + h[r, 1] y + h[r, 2]: (N, size, size)
        return torch.add(h[:, r, 0] * columns, h[:, r, 1] * rows + h[:, r, 2], out=out)

    planes = torch.empty(len(h), 2, size, size, device=h.device) if out is None else out
    inverse_w = plane(2).reciprocal_()
    for r in (0, 1):
        plane(r, out=planes[:, r]).mul_(inverse_w)
    return planes.permute(0, 2, 3, 1)


# fastai shrinks by area averaging before any bilinear downscale of more than 2x (a factor above 1 here); at a
# factor near 1 that costs as much as the rest of the augmentation and changes no pixel that matters, so it waits
# for a real shrink (460 -> 224 is 1.03; 460 -> 128 is 1.8).
PRESAMPLE_ABOVE = 1.25


def _presample(x: torch.Tensor, *, crop_max: int, size: int) -> torch.Tensor:
    """Shrink by area averaging first when the bilinear sampling would skip pixels (fastai's ``_grid_sample``)."""
    factor = crop_max / size / 2
    if factor > PRESAMPLE_ABOVE:
        return F.interpolate(x, scale_factor=1 / factor, mode="area", recompute_scale_factor=True)
    return x


LOGIT_EPS = 1e-7  # fastai's logit clamps to [1e-7, 1 - 1e-7]; torch.logit's eps does the same


def lighting(x: torch.Tensor, p: AugParams, out: torch.Tensor | None = None) -> torch.Tensor:
    """fastai's Brightness then Contrast, composed in logit space: ``sigmoid((logit(x) + logit(b)) * c)``, in three
    passes that write ``out`` (a new tensor if None; ``x`` itself may be given): fastai's values, up to rounding."""
    return _lit(x, *lighting_factors(p, x.device, x.shape[-1]), out=out)


def lighting_factors(p: AugParams, device: torch.device, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, ``logit(b) c`` (N, 1, 1, 1) and ``c`` along a row (N, 1, 1, width), as
    (z + logit(b)) c = z c + logit(b) c."""
    contrast = p.contrast.float().to(device)[:, None, None, None]
    shift = p.brightness.float().logit(LOGIT_EPS).to(device)[:, None, None, None] * contrast
    return shift, _along_rows(contrast, width)


def _lit(x: torch.Tensor, shift: torch.Tensor, contrast: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    z = torch.logit(x, LOGIT_EPS, out=out)
    return torch.addcmul(shift, z, contrast, out=z).sigmoid_()


def _along_rows(values: torch.Tensor, width: int) -> torch.Tensor:
    """``values`` (each broadcast over whole images or channels) repeated along a row of ``width``: torch's CPU loops
    are vectorised when at most one operand is a broadcast scalar, and addcmul has two (the same fused
    multiply-add either way, twice as fast)."""
    return values.expand(*values.shape[:-1], width).contiguous()


# On the CPU the batch goes a few images at a time, each part's grid computed, its images converted, sampled, lit
# and normalised while they are still in cache, instead of a whole batch's float copy read back from memory
# (measurements: docs/design-notes.md). 12 MB is four 460-pixel images; a batch of 96-pixel images fits in one
# part. Every image's values are the same either way; a GPU takes the batch at once.
CPU_PART_BYTES = 12 * 2**20


class BatchAugment:
    """Training transform: uint8 (N, 3, P, P) on the device -> float (N, 3, size, size), augmented per image.

    The parameters and the projective matrices are computed for the whole batch; on the CPU the rest goes a part at
    a time (``CPU_PART_BYTES``).
    The float input, the grid and the output are buffers kept from one batch to the next, since fresh ones cost
    page faults (docs/design-notes.md). A buffer is written again only once nothing holds what it gave last
    (:func:`_held_elsewhere`), so a batch the caller still keeps is never overwritten."""

    def __init__(self, settings: AugTransforms, seed: int, normalize: bool):
        self.settings, self.normalize = settings, normalize
        self.generator = torch.Generator().manual_seed(seed)
        self._scratch: dict[str, torch.Tensor] = {}

    def params(self, batch: torch.Tensor) -> AugParams:
        return self.settings.draw(len(batch), batch.shape[-1], self.generator)

    def _buffer(self, name: str, shape: tuple, device: torch.device) -> torch.Tensor:
        """A new tensor on the kept buffer ``name``, or on a new one (kept in its place) when the shape or device
        changed or anything still holds what it gave last."""
        kept = self._scratch.get(name)
        if kept is None or kept.shape != shape or kept.device != device or _held_elsewhere(kept):
            kept = self._scratch[name] = torch.empty(shape, device=device)
        return kept.view(shape)  # not kept itself: while the caller holds this, the buffer counts as held

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        p = self.params(batch)
        n, presize, size, device = len(batch), batch.shape[-1], self.settings.size, batch.device
        h = projective_matrices(p, presize).to(device)
        per_part = n if device.type != "cpu" else max(1, CPU_PART_BYTES // (batch[0].numel() * 4))
        floats = self._buffer("input", (min(n, per_part), *batch.shape[1:]), device)
        grids = self._buffer("grid", (min(n, per_part), 2, size, size), device)
        crop_max = int(p.crop.max())
        shift, contrast = lighting_factors(p, device, size)
        offset, scale = normalize_factors(device, size)
        out = self._buffer("output", (n, batch.shape[1], size, size), device)
        for start in range(0, n, per_part):
            part = slice(start, start + per_part)
            count = len(batch[part])
            x = floats[:count].copy_(batch[part])
            x = _presample(x, crop_max=crop_max, size=size)
            grid = sampling_grid(h[part], size=size, out=grids[:count])
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
            x = _lit(x.mul_(1 / 255), shift[part], contrast[part], out=out[part])  # scaled after sampling: fewer pixels
            if self.normalize:
                torch.addcmul(offset, x, scale, out=x)
        return out


def _held_elsewhere(buffer: torch.Tensor) -> bool:
    """Whether any tensor besides ``buffer`` still uses its memory: a batch the caller keeps, any view of it, or one
    saved by autograd for a backward pass not yet run. torch counts the tensors on a storage (the count read here
    also includes the storage object made to read it); its Python refcount would miss views and autograd. The count
    is torch's private API: tests/test_augment.py fails if it stops counting a kept batch, a view or autograd."""
    return torch._C._storage_Use_Count(buffer.untyped_storage()._cdata) > 2


def resize_batch(batch: torch.Tensor, size: int, normalized: bool) -> torch.Tensor:
    """Validation (and prediction): the whole presized image resampled to ``size`` as fastai's validation crop."""
    presize = batch.shape[-1]
    x = _presample(batch.float(), crop_max=presize, size=size)
    n = x.shape[0]  # not len(x): torch.export keeps the batch size symbolic
    theta = torch.eye(2, 3, device=x.device).expand(n, 2, 3)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=True)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True) / 255
    return normalize(x) if normalized else x


def normalize(x: torch.Tensor) -> torch.Tensor:
    offset, scale = normalize_factors(x.device, x.shape[-1])
    return torch.addcmul(offset, x, scale)  # (x - mean) / std in one pass


def normalize_factors(device: torch.device, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``-mean / std`` per channel (3, 1, 1) and ``1 / std`` along a row (3, 1, width)."""
    mean = torch.tensor(IMAGENET_MEAN, device=device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[:, None, None]
    return -mean / std, _along_rows(1 / std, width)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
    return x * std + mean
