"""Photos decoded once: the regions protected (faces or the whole photo) at model resolution."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

from unlearn_cli.config import Embedder, ProtectConfig
from unlearn_cli.errors import ImageError
from unlearn_cli.faces.embedder import FACENET_INPUT, facenet_available
from unlearn_cli.faces.regions import FaceMode, Protection, RegionFinder, Regions
from unlearn_cli.io.images import load_photo
from unlearn_cli.io.inputs import InputPhoto
from unlearn_cli.pipeline.events import (
    Event,
    Notice,
    PhaseAdvanced,
    PhaseStarted,
    describe_error,
    record_failure,
)
from unlearn_cli.pipeline.plan import (
    Action,
    PlannedPhoto,
)


@dataclass(frozen=True)
class PreparedPhoto:
    """A photo to protect, decoded once: what of it is protected (its faces or the whole image)
    and those regions at model resolution. The full size is decoded again when writing."""

    photo: InputPhoto
    sha256: str
    label: int
    regions: Regions
    crops: torch.Tensor  # N x 3 x r x r uint8, one per protected face (or the whole image)
    write: bool = True
    face_model_crops: torch.Tensor | None = None  # the same at the face model's input size


def prepare_photos(
    todo: list[PlannedPhoto],
    class_names: list[str],
    config: ProtectConfig,
    device: torch.device,
    failures: list[dict],
    emit: Callable[[Event], None],
    debug: bool,
) -> list[PreparedPhoto]:
    """Decode each photo and cut its crops; faces are found on ``device`` (MTCNN runs on GPUs
    too)."""
    emit(
        PhaseStarted(
            "reading photos" if config.faces is FaceMode.OFF else "finding faces", len(todo)
        )
    )
    finder = RegionFinder(config.faces, config.min_face_size, config.face_confidence, device)
    face_model = config.embedder is Embedder.FACE or (
        config.embedder is Embedder.AUTO and facenet_available()
    )  # then matching may embed with the face model: cut its crops now, not decode again
    prepared = []
    for item in todo:
        try:
            photo = load_photo(item.photo.path, config.max_pixels)
            regions = finder.find(photo)
            if config.require_faces and regions.protection is Protection.NO_FACE:
                raise ImageError(item.photo.path, "no face found (--require-faces)")
            prepared.append(
                PreparedPhoto(
                    item.photo,
                    item.sha256,
                    class_names.index(item.photo.class_name),
                    regions,
                    regions.crops(photo, config.resolution),
                    item.action is not Action.SKIP,
                    regions.crops(photo, FACENET_INPUT) if face_model else None,
                )
            )
        except Exception as error:  # one photo failing never stops the batch
            if debug and not isinstance(error, ImageError | OSError):
                raise
            record_failure(failures, emit, item.photo, describe_error(error))
        emit(PhaseAdvanced())
    summarise_regions(prepared, emit)
    return prepared


def summarise_regions(prepared: list[PreparedPhoto], emit: Callable[[Event], None]) -> None:
    """One line on how the photos are protected: no photo is protected whole silently."""
    counts = Counter(item.regions.protection for item in prepared)
    if counts[Protection.FACES]:
        faces = sum(len(item.crops) for item in prepared if item.regions.faces)
        emit(Notice(f"{faces} face(s) in {counts[Protection.FACES]} photo(s) protected"))
    if counts[Protection.ALIGNED_CROP]:
        emit(Notice(f"{counts[Protection.ALIGNED_CROP]} aligned face crop(s) protected whole"))
    if counts[Protection.NO_FACE]:
        emit(
            Notice(
                f"{counts[Protection.NO_FACE]} photo(s) without a face protected as whole images "
                "(listed in the manifest; --require-faces makes this an error)"
            )
        )


def crop_labels(prepared: list[PreparedPhoto]) -> torch.Tensor:
    """The class of every crop, in the order of ``torch.cat([item.crops ...])``."""
    return torch.tensor([item.label for item in prepared for _ in range(len(item.crops))])
