"""Image transforms for the classification family: batched, deterministic, in torch.

Each kernel takes (B, C, H, W) images in [0, 1] and one parameter per image; `apply` runs a cell's
levels through the axes' kernels in axis order and clips to [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from failfade.concepts import ConceptSpace
from failfade.tasks.classification.concept_names import KERNELS


def apply(space: ConceptSpace, images: torch.Tensor, cells) -> torch.Tensor:
    """Apply each image's cell (levels of every axis, in axis order). images: (B, C, H, W) in [0, 1]."""
    coords = space.coords(np.asarray(cells))
    out = images
    for k, axis in enumerate(space.axes):
        # the levels stay on the host: kernels group by level there and move only what they
        # compute with, so a batch on the GPU is transformed without waiting on the device
        values = torch.from_numpy(np.asarray(axis.levels, dtype=np.float32)[coords[:, k]])
        out = TRANSFORMS[axis.transform](out, values)
    return out.clamp(0.0, 1.0)


# --- batched image transforms: (B, C, H, W) images, one parameter per image -------------------

def _per_level(images: torch.Tensor, values: torch.Tensor, fn, identity: float) -> torch.Tensor:
    """Apply fn(subset, scalar) once per distinct level in the batch; identity levels are skipped.

    Levels are discrete, so a batch holds only a handful of distinct values: grouping them lets
    each transform use one shared kernel (or grid) per level instead of one per image.
    """
    out = images
    host = values.cpu().numpy()
    for v in np.unique(host).tolist():
        if v == identity:
            continue
        idx = torch.from_numpy(np.flatnonzero(host == v)).to(images.device)
        if out is images:
            out = images.clone()
        out[idx] = fn(images[idx], v)
    return out


_GRIDS: dict[tuple, torch.Tensor] = {}


def _rotation_grid(deg: float, h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The sampling grid of one rotation at one image size, (1, H, W, 2): built once, then shared
    by every batch (building it was a third of the digits transforms' time)."""
    key = (deg, h, w, dtype, device)
    if key not in _GRIDS:
        if len(_GRIDS) > 256:
            _GRIDS.clear()
        theta = math.radians(deg)
        mat = torch.tensor([[[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0]]],
                           dtype=dtype, device=device)
        _GRIDS[key] = F.affine_grid(mat, [1, 1, h, w], align_corners=False)
    return _GRIDS[key]


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate about the centre, filling with black (the digits' background)."""

    def one(x, deg):
        grid = _rotation_grid(deg, x.shape[-2], x.shape[-1], x.dtype, x.device).expand(len(x), -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    return _per_level(images, degrees, one, 0.0)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (pixels), kernel radius ceil(3σ); σ 0 = unchanged.

    One grouped convolution over the whole batch (a fixed shape per batch size, so oneDNN reuses
    its kernels), with each image's taps beyond its own radius zeroed, so an image's blur is its
    own sigma's up to the convolution's rounding: the batch's largest radius sets the kernel's
    length and with it the order of the sums, which moves a result in its last bit (up to 2.4e-7
    in a pixel, 1.8e-7 in Δ; no decision changed in the review that measured it). Grouping the
    batch by radius made results independent of their companions only within a batch size and
    doubled the blur's cost, so it is not done. σ ≤ 0 leaves an image unchanged (configs refuse it).
    """
    host = sigmas.cpu()
    if torch.all(host <= 0):
        return images
    radius = int(math.ceil(3 * float(host.max())))
    sigmas = sigmas.to(images.device, images.dtype)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    s = sigmas.clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (x[None, :] / s) ** 2)
    k = k * (x[None, :].abs() <= torch.ceil(3 * sigmas)[:, None]).to(images.dtype)
    k = torch.where(sigmas[:, None] > 0, k, (x[None, :] == 0).to(images.dtype))
    k = k / k.sum(1, keepdim=True)  # (B, K)
    b, c, h, w = images.shape
    flat = images.reshape(1, b * c, h, w)
    kk = k.repeat_interleave(c, 0)  # (B*C, K)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kk[:, None, None, :], groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kk[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


def contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend towards each image's mean intensity: factor 1 keeps it, 0 gives a flat grey image."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    f = factors.to(images.device, images.dtype)[:, None, None, None]
    return torch.where(f == 1, images, mean + f * (images - mean))  # factor 1: exactly the image


def saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend each RGB image towards its own grey (torchvision's luma weights: the same result as
    adjust_saturation, which the paper used): factor 1 keeps it, 0 gives greyscale, the paper's
    0.5-0.7 desaturate. A one-channel image has no colour to take away and is returned unchanged."""
    if images.shape[1] != 3:
        return images
    luma = torch.tensor([0.2989, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    grey = (images * luma).sum(1, keepdim=True)
    f = factors.to(images.device, images.dtype)[:, None, None, None]
    return torch.where(f == 1, images, grey + f * (images - grey))  # factor 1: exactly the image


def darken(images: torch.Tensor, amounts: torch.Tensor) -> torch.Tensor:
    """Scale brightness by 1 - amount (the paper's darkening)."""
    return images * (1.0 - amounts.to(images.device, images.dtype))[:, None, None, None]


def occlude(images: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Black out a centred square whose side is `fraction` of the image side."""
    b, _, h, w = images.shape
    fractions = fractions.to(images.device, images.dtype)
    ys = torch.arange(h, device=images.device, dtype=images.dtype)[None, :] + 0.5
    xs = torch.arange(w, device=images.device, dtype=images.dtype)[None, :] + 0.5
    half_h = (fractions * h / 2)[:, None]
    half_w = (fractions * w / 2)[:, None]
    in_y = (ys - h / 2).abs() < half_h
    in_x = (xs - w / 2).abs() < half_w
    mask = (in_y[:, :, None] & in_x[:, None, :])[:, None]
    return images.masked_fill(mask, 0.0)


# every name a config may give (concept_names.KERNELS) -> its kernel above
TRANSFORMS = {name: globals()[kernel] for name, kernel in KERNELS.items()}
