"""Batched, differentiable random transformations (flip, shift, rescale) on image tensors.

One ``grid_sample`` call per batch: cheap enough to run inside every training and PGD step, and
differentiable so that noise can be optimised in expectation over what an attacker's training
pipeline does to a photo, and optionally over what uploading did to it before (``degrade``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .degrade import DegradeSettings, random_degrade


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random affine transform; the defaults mimic crop-with-padding plus flip.
    ``degrade`` adds JPEG, downscaling and colour changes; None keeps the affine transform alone."""

    max_shift: float = 0.125
    min_scale: float = 0.9
    max_scale: float = 1.1
    flip: bool = True
    degrade: DegradeSettings | None = None


def random_augment(
    images: torch.Tensor, generator: torch.Generator, settings: AugmentSettings = AugmentSettings()
) -> torch.Tensor:
    """The random affine transform, then the upload degradations if ``settings.degrade`` is set.

    Degrading after the shift and zoom puts the JPEG block grid at a random offset from the noise,
    as it is on a full-size photo, whose grid the engine at its low resolution cannot know.
    Without ``degrade`` the draws and results are exactly those of ``random_affine``.
    """
    images = random_affine(images, generator, settings)
    if settings.degrade is not None:
        images = random_degrade(images, generator, settings.degrade)
    return images


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
