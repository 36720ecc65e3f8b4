"""The upload degradations: the JPEG approximation against Pillow, gradients, shapes, seeding,
and the min-min loop optimising through them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unlearn_cli.engine import (
    AugmentSettings,
    DegradeSettings,
    ErrorMinimizingNoise,
    MinMinSettings,
    create_model,
    differentiable_jpeg,
    random_affine,
    random_augment,
    random_degrade,
)
from unlearn_cli.engine.degrade import quantisation_tables

QUALITIES = (50, 75, 95)
NOTHING = DegradeSettings(
    jpeg_probability=0,
    downscale_probability=0,
    grayscale_probability=0,
    brightness=0,
    contrast=0,
    saturation=0,
)
EVERYTHING = DegradeSettings(jpeg_probability=1, downscale_probability=1, grayscale_probability=0)


def as_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def pillow_jpeg(array: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def smooth_image(height: int = 112, width: int = 96) -> np.ndarray:
    """Low-frequency colour waves on a diagonal ramp: what JPEG keeps best."""
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    waves = [(1.0, 0.5, 0.0), (0.3, 1.2, 1.0), (0.7, 0.8, 2.0)]
    channels = [
        128 + 60 * np.sin(2 * np.pi * (xs * fx + ys * fy) + phase) + 30 * (xs - ys)
        for fx, fy, phase in waves
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255).round().astype(np.uint8)


def assert_close_to_pillow(arrays: list[np.ndarray], bound_levels: float) -> None:
    """At every quality the approximation is within ``bound_levels`` (mean absolute difference,
    in 0-255 levels) of Pillow's decoded JPEG, at least twice closer to it than to Pillow at the
    other qualities (so quality scaling matters), and at quality 50 far closer than the
    uncompressed image is (so it models the compression, not the identity)."""
    images = as_tensor(arrays)
    pillow = {q: as_tensor([pillow_jpeg(array, q) for array in arrays]) for q in QUALITIES}
    for quality in QUALITIES:
        approximation = differentiable_jpeg(images, torch.full((len(arrays),), quality))
        error = {q: float((approximation - pillow[q]).abs().mean()) * 255 for q in QUALITIES}
        assert error[quality] <= bound_levels, (quality, error)
        assert all(2 * error[quality] < error[q] for q in QUALITIES if q != quality), error
    uncompressed_error = float((images - pillow[50]).abs().mean()) * 255
    approximation = differentiable_jpeg(images, torch.full((len(arrays),), 50))
    assert float((approximation - pillow[50]).abs().mean()) * 255 < 0.25 * uncompressed_error


@pytest.mark.parametrize("quality", [1, 10, 49, 50, 75, 95, 100])
def test_quantisation_tables_are_those_pillow_writes(quality: int) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG", quality=quality)
    written = Image.open(buffer).quantization
    luminance, chrominance = quantisation_tables(torch.tensor([quality]))
    assert luminance[0].flatten().tolist() == list(written[0])
    assert chrominance[0].flatten().tolist() == list(written[1])


def test_jpeg_approximation_is_close_to_pillow_on_real_faces(shared_data: Path) -> None:
    faces = shared_data / "faces"
    if not faces.is_dir():
        pytest.skip(f"no face crops at {faces}")
    paths = [
        path for folder in sorted(faces.iterdir()) for path in sorted(folder.glob("*.png"))[:2]
    ]
    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    # Measured on the first 2 crops of each of the 15 identities (112x112): 0.45, 0.49 and 0.35
    # levels at qualities 50, 75 and 95; the uncompressed crops are 4.09, 3.03 and 0.60 away.
    assert_close_to_pillow(arrays, bound_levels=0.6)


def test_jpeg_approximation_is_close_to_pillow_on_a_smooth_image() -> None:
    # Measured: 0.37, 0.43 and 0.41 levels at qualities 50, 75 and 95 (uncompressed: 1.92 at 50).
    assert_close_to_pillow([smooth_image()], bound_levels=0.55)


def test_gradients_flow_through_jpeg_and_degradations() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 24, 24, generator=generator).requires_grad_()
    weights = torch.randn(4, 3, 24, 24, generator=generator)
    for transform in (
        lambda x: differentiable_jpeg(x, torch.tensor([10, 50, 75, 95])),
        lambda x: random_degrade(x, torch.Generator().manual_seed(1), EVERYTHING),
    ):
        images.grad = None
        (transform(images) * weights).sum().backward()
        assert images.grad is not None and torch.isfinite(images.grad).all()
        assert (images.grad != 0).float().mean() > 0.5


@pytest.mark.parametrize("size", [(8, 8), (17, 9), (37, 53)])
def test_odd_sizes_keep_their_shape(size: tuple[int, int]) -> None:
    images = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(0))
    compressed = differentiable_jpeg(images, torch.tensor([30, 60, 90]))
    degraded = random_degrade(images, torch.Generator().manual_seed(0), EVERYTHING)
    assert compressed.shape == degraded.shape == images.shape
    assert compressed.min() >= 0 and compressed.max() <= 1


def test_nothing_to_degrade_is_the_identity() -> None:
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = random_degrade(images, torch.Generator().manual_seed(0), NOTHING)
    assert torch.allclose(out, images, atol=1e-6)


def test_grayscale_for_sure_gives_three_equal_channels() -> None:
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    settings = DegradeSettings(jpeg_probability=0, downscale_probability=0, grayscale_probability=1)
    out = random_degrade(images, torch.Generator().manual_seed(0), settings)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert not torch.allclose(out, images, atol=0.01)


def test_the_same_seed_gives_the_same_degradations() -> None:
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first, second, other = (
        random_degrade(images, torch.Generator().manual_seed(seed), DegradeSettings())
        for seed in (3, 3, 4)
    )
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_without_degrade_random_augment_is_random_affine_draw_for_draw() -> None:
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    augment_generator = torch.Generator().manual_seed(5)
    affine_generator = torch.Generator().manual_seed(5)
    augmented = random_augment(images, augment_generator, AugmentSettings())
    assert torch.equal(augmented, random_affine(images, affine_generator, AugmentSettings()))
    assert torch.equal(augment_generator.get_state(), affine_generator.get_state())


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="jpeg_quality"):
        DegradeSettings(jpeg_quality=(90, 50))
    with pytest.raises(ValueError, match="probabilities"):
        DegradeSettings(jpeg_probability=1.5)


def test_min_min_through_degradations_keeps_noise_within_eps() -> None:
    generator = torch.Generator().manual_seed(0)
    protected = torch.rand(4, 3, 16, 16, generator=generator)
    others = torch.rand(8, 3, 16, 16, generator=generator)
    settings = MinMinSettings(
        eps=8 / 255,
        steps=2,
        train_steps=2,
        max_rounds=2,
        min_rounds=2,
        batch_size=6,
        augment=AugmentSettings(degrade=DegradeSettings()),
    )
    result = ErrorMinimizingNoise(create_model("vgg_small", 3, seed=0), settings).generate(
        protected,
        torch.zeros(4, dtype=torch.long),
        others,
        torch.arange(8) % 2 + 1,
        generator,
    )
    assert result.noise.shape == protected.shape and len(result.rounds) == 2
    assert result.noise.abs().max() <= settings.eps + 1e-6 and result.noise.abs().max() > 0
