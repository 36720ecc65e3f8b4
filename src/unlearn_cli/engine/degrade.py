"""Batched, differentiable models of what a photo meets after upload: colour edits, grayscale
filters, downscaling and JPEG re-encoding.

Error-minimizing noise is a faint, high-frequency pattern; JPEG quantisation, resizing and colour
changes wipe most of it out. Optimising the noise through these transforms (expectation over
transformation) makes it survive them. Everything here is pure tensor arithmetic, so it runs
inside every PGD and training step, and every random draw comes from the caller's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The IJG example tables (ITU-T T.81, Annex K), which libjpeg and Pillow scale by quality.
LUMINANCE_TABLE = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)
CHROMINANCE_TABLE = torch.tensor(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ]
)

# JFIF colour conversion (full-range BT.601) on 0-255 values; chroma samples are offset by 128.
RGB_TO_YCBCR = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ]
)
YCBCR_TO_RGB = torch.tensor(
    [
        [1.0, 0.0, 1.402],
        [1.0, -0.344136, -0.714136],
        [1.0, 1.772, 0.0],
    ]
)
CHROMA_OFFSET = torch.tensor([0.0, 128.0, 128.0]).view(1, 3, 1, 1)
LUMA_WEIGHTS = RGB_TO_YCBCR[0]


def dct_matrix(size: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix: ``D @ block @ D.T`` is exactly JPEG's forward DCT."""
    frequency = torch.arange(size, dtype=torch.float64).view(-1, 1)
    position = torch.arange(size, dtype=torch.float64).view(1, -1)
    matrix = torch.cos(torch.pi * (2 * position + 1) * frequency / (2 * size))
    matrix[0] /= 2**0.5
    return matrix * (2 / size) ** 0.5


# The 2D DCT of 8x8 blocks flattened row by row; built in float64, then rounded once.
DCT_8X8 = torch.kron(dct_matrix(), dct_matrix()).float()


def quantisation_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image luminance and chrominance tables [N, 8, 8], scaled as libjpeg's
    ``jpeg_set_quality(..., force_baseline=TRUE)`` does it, in integer arithmetic."""
    quality = quality.long().clamp(1, 100)
    scale = torch.where(quality < 50, 5000 // quality, 200 - 2 * quality).view(-1, 1, 1)

    def scaled(table: torch.Tensor) -> torch.Tensor:
        return ((table.to(quality.device) * scale + 50) // 100).clamp(1, 255)

    return scaled(LUMINANCE_TABLE), scaled(CHROMINANCE_TABLE)


def soft_round(values: torch.Tensor) -> torch.Tensor:
    """Exact rounding forward, as libjpeg quantises, with the gradient of Shin & Song's (2017)
    ``round(x) + (x - round(x))**3``: 3 * (x - round(x))**2, which, unlike round's, is not zero
    almost everywhere. (Their cubic as the forward value too lands up to twice as far from
    Pillow's output, at quality 50 on face crops.)"""
    rounded = torch.round(values)
    cubic = (values - rounded) ** 3
    return rounded + cubic - cubic.detach()


def to_samples(values: torch.Tensor) -> torch.Tensor:
    """libjpeg's 8-bit samples: rounded and clamped to 0..255 forward, the gradient passed straight
    through the rounding, whose error (half a level at most) is far below any noise budget."""
    return (values + (torch.round(values) - values).detach()).clamp(0, 255)


def quantise_planes(planes: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Level shift, 8x8 block DCT, quantisation, dequantisation and inverse DCT of [N, C, H, W]
    sample planes (H, W multiples of 8), one table per image. Each 2D DCT is one product of the
    flattened block with the 64x64 ``kron(D, D)``: one large matrix product, not many tiny ones."""
    count, channels, height, width = planes.shape
    blocks = (planes - 128).reshape(count, channels, height // 8, 8, width // 8, 8)
    blocks = blocks.transpose(3, 4).reshape(count, channels, height // 8, width // 8, 64)
    dct = DCT_8X8.to(device=planes.device, dtype=planes.dtype)
    table = tables.to(planes.dtype).view(count, 1, 1, 1, 64)
    coefficients = blocks @ dct.T
    restored = (soft_round(coefficients / table) * table) @ dct
    restored = restored.reshape(count, channels, height // 8, width // 8, 8, 8).transpose(3, 4)
    return restored.reshape(count, channels, height, width) + 128


def differentiable_jpeg(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """A differentiable stand-in for a baseline JPEG round trip as Pillow does it by default.

    ``images`` is [N, 3, H, W] in [0, 1]; ``quality`` is [N] with integer values 1..100. The
    steps follow libjpeg: JFIF YCbCr as 8-bit samples, 4:2:0 chroma (2x2 mean; decoded with
    bilinear, which is libjpeg's default "fancy" triangle upsampling), level shift, 8x8 DCT,
    quantisation with the IJG tables, and back. Edges are replicated to whole 16x16 macroblocks,
    as libjpeg pads them. Only libjpeg's integer DCT is not imitated.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape [N, 3, H, W], got {list(images.shape)}")
    height, width = images.shape[-2:]
    padded = F.pad(images, (0, -width % 16, 0, -height % 16), mode="replicate") * 255
    to_ycbcr = RGB_TO_YCBCR.to(device=images.device, dtype=images.dtype)
    to_rgb = YCBCR_TO_RGB.to(device=images.device, dtype=images.dtype)
    chroma_offset = CHROMA_OFFSET.to(device=images.device, dtype=images.dtype)
    ycbcr = to_samples(torch.einsum("ij,njhw->nihw", to_ycbcr, padded) + chroma_offset)
    luminance_table, chrominance_table = quantisation_tables(quality.to(images.device))
    luma = to_samples(quantise_planes(ycbcr[:, :1], luminance_table))
    chroma = to_samples(F.avg_pool2d(ycbcr[:, 1:], 2))
    chroma = to_samples(quantise_planes(chroma, chrominance_table))
    chroma = to_samples(F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False))
    rgb = torch.einsum("ij,njhw->nihw", to_rgb, torch.cat([luma, chroma], dim=1) - chroma_offset)
    return to_samples(rgb[..., :height, :width]) / 255


@dataclass(frozen=True)
class DegradeSettings:
    """How often and how strongly photos are degraded after upload (defaults, open to tuning).

    - JPEG, p=0.5, quality 50-95: nearly every platform re-encodes; social networks land around
      70-85, messengers lower, and below 50 photos look visibly blocky and are rarely kept. Half
      of the draws stay clean so that the noise keeps its full strength on pristine copies.
    - downscale, p=0.3, to 0.5-1 of the side: platforms cap the long side and scrapers resize;
      the engine already works at low resolution, so a factor of two is the plausible extra loss.
    - grayscale, p=0.1: a filter some users and pipelines apply; rare, but it removes the
      chroma pattern entirely, so the noise must also live in luminance.
    - brightness / contrast / saturation +-10%: ordinary edits and colour-management drift;
      larger swings change the photo more than an attacker's pipeline would.
    """

    jpeg_probability: float = 0.5
    jpeg_quality: tuple[int, int] = (50, 95)
    downscale_probability: float = 0.3
    min_downscale: float = 0.5
    grayscale_probability: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1

    def __post_init__(self) -> None:
        probabilities = (
            self.jpeg_probability,
            self.downscale_probability,
            self.grayscale_probability,
        )
        if not all(0 <= p <= 1 for p in probabilities):
            raise ValueError("probabilities must be in [0, 1]")
        low, high = self.jpeg_quality
        if not 1 <= low <= high <= 100:
            raise ValueError(f"jpeg_quality must satisfy 1 <= low <= high <= 100, got {low, high}")
        if not 0 < self.min_downscale <= 1:
            raise ValueError(f"min_downscale must be in (0, 1], got {self.min_downscale}")
        if not all(0 <= j < 1 for j in (self.brightness, self.contrast, self.saturation)):
            raise ValueError("brightness, contrast and saturation must be in [0, 1)")


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma (JFIF weights) of an NCHW RGB batch, as [N, 1, H, W]."""
    weights = LUMA_WEIGHTS.to(device=images.device, dtype=images.dtype)
    return torch.einsum("c,nchw->nhw", weights, images).unsqueeze(1)


def downscale_and_back(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Shrink by ``factor`` (bilinear, antialiased as PIL does) and enlarge back to the size."""
    height, width = images.shape[-2:]
    small = (max(1, round(height * factor)), max(1, round(width * factor)))
    if small == (height, width):
        return images
    shrunk = F.interpolate(images, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(shrunk, size=(height, width), mode="bilinear", align_corners=False)


def random_degrade(
    images: torch.Tensor, generator: torch.Generator, settings: DegradeSettings = DegradeSettings()
) -> torch.Tensor:
    """Degrade each image of an NCHW RGB batch in [0, 1] independently, in upload order:
    colour jitter, grayscale, downscale, JPEG.

    The same number of values is drawn from ``generator`` (on the CPU) whatever the outcome, so a
    seed gives the same degradations on every device. The downscaled images share one factor per
    call, because one resize call has one output size; each call draws a new factor.
    """
    count = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=generator)

    def chosen(probability: float) -> torch.Tensor:
        return torch.rand(count, generator=generator) < probability

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.to(device=images.device, dtype=images.dtype).view(-1, 1, 1, 1)

    brightness = per_image(uniform(1 - settings.brightness, 1 + settings.brightness))
    contrast = per_image(uniform(1 - settings.contrast, 1 + settings.contrast))
    saturation = per_image(uniform(1 - settings.saturation, 1 + settings.saturation))
    to_gray = chosen(settings.grayscale_probability).to(images.device).view(-1, 1, 1, 1)
    to_downscale = chosen(settings.downscale_probability)
    shrink = float(torch.rand(1, generator=generator))
    factor = settings.min_downscale + (1 - settings.min_downscale) * shrink
    to_jpeg = chosen(settings.jpeg_probability)
    low, high = settings.jpeg_quality
    quality = torch.randint(low, high + 1, (count,), generator=generator)

    images = (images * brightness).clamp(0, 1)
    mean_luma = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean_luma) * contrast + mean_luma).clamp(0, 1)
    gray = grayscale(images)
    images = ((images - gray) * saturation + gray).clamp(0, 1)
    images = torch.where(to_gray, grayscale(images).expand_as(images), images)
    if to_downscale.any():
        index = to_downscale.nonzero().squeeze(1).to(images.device)
        images = images.index_copy(0, index, downscale_and_back(images[index], factor))
    if to_jpeg.any():
        index = to_jpeg.nonzero().squeeze(1)
        compressed = differentiable_jpeg(images[index.to(images.device)], quality[index])
        images = images.index_copy(0, index.to(images.device), compressed)
    return images
