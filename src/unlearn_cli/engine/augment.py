"""Batched, differentiable random transformations (flip, shift, rescale) on image tensors.

One ``grid_sample`` call per batch: cheap enough to run inside every training and PGD step, and
differentiable so that noise can be optimised in expectation over what an attacker's training
pipeline does to a photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random affine transform; the defaults mimic crop-with-padding plus flip."""

    max_shift: float = 0.125
    min_scale: float = 0.9
    max_scale: float = 1.1
    flip: bool = True


def random_affine(
    images: torch.Tensor, generator: torch.Generator, settings: AugmentSettings = AugmentSettings()
) -> torch.Tensor:
    """Apply an independent random flip / shift / zoom to each image of an NCHW batch."""
    count = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=generator)

    scale = 1.0 / uniform(settings.min_scale, settings.max_scale)
    shift_x = uniform(-2 * settings.max_shift, 2 * settings.max_shift)
    shift_y = uniform(-2 * settings.max_shift, 2 * settings.max_shift)
    mirror = torch.ones(count)
    if settings.flip:
        mirror = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = scale * mirror
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = shift_x
    theta[:, 1, 2] = shift_y
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
