"""What an attacker can do to scraped photos, or to its training, to get past the noise.

Error-minimizing noise is known to be removed by JPEG re-encoding, grayscale and downscaling
(Image Shortcut Squeezing, ICML 2023) and bypassed by strong augmentation and adversarial
training. ``verify --learnability`` trains its attackers under each of these: photo-level ones
go through :func:`sanitise` (real Pillow operations on the full-size photo, as an uploader or
scraper would apply them), training-time ones through :func:`attack_settings_for`.
"""

from __future__ import annotations

import io
from dataclasses import replace
from enum import StrEnum

import numpy as np
from PIL import Image

from unlearn_cli.engine.attack import AttackSettings
from unlearn_cli.engine.augment import AugmentSettings
from unlearn_cli.errors import SetupError


class Countermeasure(StrEnum):
    plain = "plain"
    jpeg90 = "jpeg90"
    jpeg75 = "jpeg75"
    jpeg50 = "jpeg50"
    grayscale = "grayscale"
    downscale2x = "downscale2x"
    strong_augment = "strong-augment"
    adversarial_training = "adversarial-training"

    @property
    def changes_photos(self) -> bool:
        """True for the photo-level ones, which :func:`sanitise` applies before training."""
        return self in (*JPEG_QUALITY, Countermeasure.grayscale, Countermeasure.downscale2x)


JPEG_QUALITY = {Countermeasure.jpeg90: 90, Countermeasure.jpeg75: 75, Countermeasure.jpeg50: 50}

STRONG_AUGMENT_MIXUP_ALPHA = 1.0
ADVERSARIAL_EPS = 8 / 255
ADVERSARIAL_STEPS = 3


def jpeg_encode(rgb: np.ndarray, quality: int) -> bytes:
    """The file a JPEG re-encode at ``quality`` stores (Pillow's defaults, 4:2:0 chroma)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def sanitise(rgb: np.ndarray, countermeasure: Countermeasure) -> np.ndarray:
    """An HxWx3 uint8 photo after a photo-level countermeasure; unchanged for the others.

    Downscaling leaves the photo at half width and height: the attacker's own resize to its
    model resolution does the rest, as it would on a thumbnail it scraped."""
    if countermeasure in JPEG_QUALITY:
        encoded = jpeg_encode(rgb, JPEG_QUALITY[countermeasure])
        with Image.open(io.BytesIO(encoded)) as image:
            return np.asarray(image.convert("RGB")).copy()
    if countermeasure is Countermeasure.grayscale:
        return np.asarray(Image.fromarray(rgb).convert("L").convert("RGB")).copy()
    if countermeasure is Countermeasure.downscale2x:
        height, width = rgb.shape[:2]
        half = (max(1, width // 2), max(1, height // 2))
        return np.asarray(Image.fromarray(rgb).resize(half, Image.Resampling.LANCZOS)).copy()
    return rgb


def attack_settings_for(countermeasure: Countermeasure, base: AttackSettings) -> AttackSettings:
    """``base`` with a training-time countermeasure; unchanged for the photo-level ones.

    Strong augmentation is mixup (alpha 1) plus a wider random shift and zoom. Adversarial
    training is PGD at eps 8/255 with 3 steps: a weaker, CPU-sized version of the usual 10-step
    PGD (Madry et al.), so it understates how much adversarial training can recover."""
    if countermeasure is Countermeasure.strong_augment:
        augment = replace(
            base.augment or AugmentSettings(), max_shift=0.2, min_scale=0.7, max_scale=1.3
        )
        return replace(base, mixup_alpha=STRONG_AUGMENT_MIXUP_ALPHA, augment=augment)
    if countermeasure is Countermeasure.adversarial_training:
        return replace(base, adversarial_eps=ADVERSARIAL_EPS, adversarial_steps=ADVERSARIAL_STEPS)
    return base


def parse_countermeasures(text: str) -> tuple[Countermeasure, ...]:
    """``"jpeg75,grayscale"`` in the order given (repeats dropped), or ``"all"``: every
    countermeasure but plain, which is always measured anyway."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return tuple(c for c in Countermeasure if c is not Countermeasure.plain)
    chosen: list[Countermeasure] = []
    for name in names:
        try:
            countermeasure = Countermeasure(name)
        except ValueError:
            raise SetupError(
                f"unknown countermeasure {name!r}; choose from "
                f"{', '.join(Countermeasure)} (comma-separated), or all"
            ) from None
        if countermeasure not in chosen:
            chosen.append(countermeasure)
    return tuple(chosen)
