"""Finding, decoding and writing photos.

The reference for every budget is the original as Pillow decodes it, turned upright by its EXIF
orientation, in 8-bit RGB. Alpha, where there is one, is carried through unchanged.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def find_images(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), skipping hidden entries and ``exclude``."""
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and (exclude is None or (root_path / d).resolve() != exclude.resolve())
        )
        found += [root_path / name for name in sorted(files) if is_image_path(root_path / name)]
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Photo:
    """An upright 8-bit RGB photo (H x W x 3), its untouched alpha channel and its RGB colour
    profile (ICC), if any: the profile travels to the output so colours display the same.
    A black-and-white photo stays black-and-white: it gets grey noise and is written grey."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    grayscale: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.rgb.shape[1], self.rgb.shape[0]


def load_photo(path: Path) -> Photo:
    """Decode ``path`` upright (EXIF orientation applied) as 8-bit RGB, keeping alpha apart."""
    try:
        with Image.open(path) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as error:
        raise ImageError(path, "cannot decode image (not a recognised image format)") from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        detail = str(error).replace(f"'{path}'", "").replace(str(path), "").strip(" :")
        raise ImageError(path, f"cannot decode image ({detail or type(error).__name__})") from error
    if upright.mode.startswith("I"):  # 16- or 32-bit grey: scale to 8 bits, do not clip
        deep = np.asarray(upright, dtype=np.int64)
        if deep.max() > 255:
            deep = (deep + 128) // 257
        upright = Image.fromarray(np.clip(deep, 0, 255).astype(np.uint8), "L")
    grayscale = upright.mode in ("1", "L", "LA")
    icc_profile = upright.info.get("icc_profile") if upright.mode in ("RGB", "RGBA") else None
    alpha = None
    if upright.mode in ("RGBA", "LA", "PA") or (
        upright.mode == "P" and "transparency" in upright.info
    ):
        rgba = upright.convert("RGBA")
        alpha = np.asarray(rgba)[:, :, 3].copy()
        rgb = np.asarray(rgba.convert("RGB"))
    else:
        rgb = np.asarray(upright.convert("RGB"))
    return Photo(np.ascontiguousarray(rgb), alpha, icc_profile or None, grayscale)


def resize_for_model(photo: Photo, resolution: int) -> torch.Tensor:
    """The photo squeezed to ``resolution`` x ``resolution`` (antialiased), as a uint8 CHW tensor.

    The whole photo is squeezed rather than cropped so that the noise optimised at this size
    maps back onto every pixel of the original."""
    small = Image.fromarray(photo.rgb).resize((resolution, resolution), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1).contiguous()


def apply_noise(photo: Photo, noise: torch.Tensor, eps_levels: int) -> np.ndarray:
    """Carry model-resolution noise (CHW, [0, 1] units) to full size and add it to the photo.

    The noise is upsampled bilinearly, clamped to +-eps levels and added to the 8-bit original;
    the sum is rounded and clipped to [0, 255]. Because the original and eps are integers, every
    pixel of the result differs from the original by at most ``eps_levels``.
    """
    height, width = photo.rgb.shape[:2]
    levels = noise.detach().float().cpu().unsqueeze(0) * 255.0
    levels = F.interpolate(levels, size=(height, width), mode="bilinear", align_corners=False)[0]
    levels = levels.clamp_(-eps_levels, eps_levels).permute(1, 2, 0).numpy()
    if photo.grayscale:
        levels = levels.mean(axis=2, keepdims=True)
    protected = np.rint(photo.rgb.astype(np.float32) + levels)
    return np.clip(protected, 0, 255).astype(np.uint8)


def write_png_atomic(
    path: Path,
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    icc_profile: bytes | None = None,
    grayscale: bool = False,
) -> None:
    """Write a lossless PNG (grey when ``grayscale``) through a temporary file renamed into
    place, so that no half-written file is ever seen under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(rgb[:, :, 0], "L") if grayscale else Image.fromarray(rgb, "RGB")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha, "L"))
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format="PNG", compress_level=6, icc_profile=icc_profile)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
