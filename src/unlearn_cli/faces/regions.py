"""What part of a photo is protected: its faces, or the whole image.

A face-recognition model sees each face cut out and aligned, never the whole photo, so in a
photo of people the noise is optimised on aligned face crops and carried back into each face's
region; every other pixel stays as it was. A photo that already is an aligned face crop (the
face fills a small image) and a photo without faces are protected whole, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from unlearn_cli.faces.detection import (
    DetectedFace,
    FaceDetector,
    aligned_crop,
    alignment_matrix,
    apply_face_noise,
    is_aligned_crop,
)
from unlearn_cli.io.images import Photo, apply_noise, resize_for_model


class FaceMode(StrEnum):
    """auto: faces in photos, aligned crops and photos without faces whole; on: always look
    for faces (even in small crops); off: every photo whole (no face detection)."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class Protection(StrEnum):
    """How a photo was protected (recorded per photo in the manifest)."""

    FACES = "faces"
    ALIGNED_CROP = "whole image: an aligned face crop"
    NO_FACE = "whole image: no face found"
    FACES_OFF = "whole image: --faces off"


@dataclass(frozen=True)
class Regions:
    """The faces of a photo to protect (empty: the whole image) and every face found."""

    protection: Protection
    faces: tuple[DetectedFace, ...] = ()
    found: tuple[DetectedFace, ...] = ()

    def crops(self, photo: Photo, size: int) -> torch.Tensor:
        """uint8 N x 3 x size x size: one aligned crop per face, or the whole image squeezed."""
        if not self.faces:
            return resize_for_model(photo, size).unsqueeze(0)
        return torch.stack(
            [aligned_crop(photo.rgb, alignment_matrix(face, size), size) for face in self.faces]
        )

    def apply(self, photo: Photo, noise: torch.Tensor, eps_levels: int) -> np.ndarray:
        """The protected photo: ``noise`` (one CHW noise per crop, as from ``crops``) carried
        back into each face's region, or over the whole image."""
        if not self.faces:
            return apply_noise(photo, noise[0], eps_levels)
        size = noise.shape[-1]
        matrices = [alignment_matrix(face, size) for face in self.faces]
        return apply_face_noise(photo, list(zip(matrices, noise, strict=True)), eps_levels)

    def keeping(self, index: int) -> Regions:
        """Only face ``index`` protected (the user's own face in a group photo)."""
        return Regions(self.protection, (self.faces[index],), self.found)

    def as_dict(self) -> dict:
        protected = {id(face) for face in self.faces}
        return {
            "protected_as": str(self.protection),
            "faces": [
                {**face.as_dict(), "protected": id(face) in protected} for face in self.found
            ],
        }


class RegionFinder:
    """Decides, per photo, what to protect. The face detector is loaded once, on first use."""

    def __init__(
        self,
        mode: FaceMode,
        min_face_size: int = 40,
        min_confidence: float = 0.95,
        device: torch.device | None = None,
    ) -> None:
        self.mode = mode
        self.min_face_size = min_face_size
        self.min_confidence = min_confidence
        self.device = device
        self._detector: FaceDetector | None = None

    def find(self, photo: Photo) -> Regions:
        if self.mode is FaceMode.OFF:
            return Regions(Protection.FACES_OFF)
        if self._detector is None:
            self._detector = FaceDetector(self.min_face_size, self.min_confidence, self.device)
        found = tuple(self._detector.detect(photo.rgb))
        if self.mode is FaceMode.AUTO and is_aligned_crop(photo.rgb, list(found)):
            return Regions(Protection.ALIGNED_CROP, (), found)
        if not found:
            return Regions(Protection.NO_FACE)
        return Regions(Protection.FACES, found, found)
