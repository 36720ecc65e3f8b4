"""Finding the faces in a photo and carrying face-crop noise back into it.

A face-recognition model never sees a whole photo: it sees each face cut out and aligned (the
five landmarks moved onto the ArcFace template). So the noise is optimised on such crops, and
this module finds the faces (facenet-pytorch's MTCNN, imported lazily), cuts the crops and maps
each crop's noise back into the photo through the inverse transform. Only face regions change,
and the L-inf budget holds at every pixel.

Coordinates are (x, y) in pixels with pixel centres at integers, as in scikit-image and OpenCV.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.transform import SimilarityTransform, warp

from unlearn_cli.io.images import Photo

# The five-point template of ArcFace / insightface for 112 x 112 crops: left eye, right eye,
# nose, mouth left, mouth right (the face as the crop shows it, so "left" is the image's left).
ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)

# MTCNN's smallest reliable face, in pixels of the image it runs on (facenet-pytorch's default).
MTCNN_MIN_FACE = 20
# Photos are detected at this long side at most. Measured on the 89 portraits and group photos
# of ../shared/data/photos (one thread of a busy 2-core machine): the same faces as at 1280 px,
# and as at full size but for one blurred bystander; 0.16 s a photo (median; 0.10 s at 640 px,
# which adds a false face on the back of a head; 0.20 s at 1280 px), where 12-14 MP photos at
# full size take 1.8-2.3 s. The cost: faces under MTCNN_MIN_FACE / max_side (2%) of the long
# side are not found.
DEFAULT_MAX_SIDE = 1024
# Feathering of carried-back noise: it fades from full strength to zero over this fraction of
# the crop at its border, so that the crop's square edge does not show on smooth backgrounds.
DEFAULT_MARGIN = 0.05
# Rows of this many pixels are processed at a time, so a 50 MP photo needs no full-size floats.
BAND_PIXELS = 1 << 20
# is_aligned_crop: an aligned crop is small, about square, and the transform that would align
# its face is near identity. Measured on MTCNN's landmarks: the 1,628 crops of ../shared/data/faces
# where a face is found need scale factors up to 1.57 and centre shifts up to 0.19 of the size;
# portraits thumbnailed to 160-256 px need 1.16 to 4 (median 2) and 0.05 to 1.2 (median 0.35).
ALIGNED_MAX_SIDE = 256
ALIGNED_MAX_ASPECT = 1.25
ALIGNED_MAX_SCALE = 1.6
ALIGNED_MAX_SHIFT = 0.25


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face found in an upright photo, in that photo's pixels.

    ``box`` is (x1, y1, x2, y2), clipped to the photo; ``landmarks`` is (5, 2) x, y: left eye,
    right eye, nose, mouth left, mouth right (as the photo shows them)."""

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @classmethod
    def from_dict(cls, record: dict) -> DetectedFace:
        """A face as the manifest recorded it (``as_dict``; rounded to 0.1 pixel)."""
        x1, y1, x2, y2 = (float(value) for value in record["box"])
        landmarks = np.asarray(record["landmarks"], dtype=np.float64)
        return cls((x1, y1, x2, y2), float(record["confidence"]), landmarks)

    def resized(self, scale_x: float, scale_y: float) -> DetectedFace:
        """The same face in the photo resized by these factors (pixel centres kept aligned)."""
        scale = np.array([scale_x, scale_y])
        x1, y1, x2, y2 = self.box
        box = (x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y)
        return DetectedFace(box, self.confidence, (self.landmarks + 0.5) * scale - 0.5)

    def as_dict(self) -> dict:
        """JSON-ready and rounded, for the manifest."""
        return {
            "box": [round(float(value), 1) for value in self.box],
            "confidence": round(float(self.confidence), 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
        }


class FaceDetector:
    """facenet-pytorch MTCNN (weights ship in the wheel; no download), imported lazily.

    Faces are looked for in a copy of the photo downscaled to ``max_side`` (see
    DEFAULT_MAX_SIDE), so faces narrower than MTCNN_MIN_FACE pixels of that copy are not
    found; faces narrower than ``min_face_size`` photo pixels, or less sure than
    ``min_confidence``, are left out. Weights are loaded once per detector: reuse it."""

    def __init__(
        self,
        min_face_size: int = 40,
        min_confidence: float = 0.95,
        device: torch.device | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        from facenet_pytorch import MTCNN

        self.min_face_size = min_face_size
        self.max_side = max_side
        self.mtcnn = MTCNN(
            keep_all=True,
            min_face_size=MTCNN_MIN_FACE,
            thresholds=[0.6, 0.7, min_confidence],
            device=device or torch.device("cpu"),
        )

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces in an upright HxWx3 uint8 photo, largest box first."""
        height, width = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if min(small_size) < MTCNN_MIN_FACE:  # no face fits (and MTCNN fails on empty pyramids)
            return []
        small = rgb
        if small_size != (width, height):
            small = np.asarray(
                Image.fromarray(rgb).resize(small_size, Image.Resampling.BILINEAR, reducing_gap=3.0)
            )
        with torch.inference_mode():
            boxes, probs, points = self.mtcnn.detect(small, landmarks=True)
        if boxes is None:
            return []
        # The resize maps pixel areas: a small pixel's centre x is the photo's (x + 0.5) / k - 0.5.
        factor = np.array([width / small_size[0], height / small_size[1]])
        faces = []
        for box, prob, marks in zip(boxes, probs, points, strict=True):
            corners = (np.asarray(box, dtype=np.float64).reshape(2, 2) + 0.5) * factor - 0.5
            if corners[1, 0] - corners[0, 0] < self.min_face_size:
                continue
            corners = np.clip(corners, 0, [width, height])
            photo_marks = (np.asarray(marks, dtype=np.float64) + 0.5) * factor - 0.5
            photo_marks.flags.writeable = False
            x1, y1, x2, y2 = (float(value) for value in corners.ravel())
            faces.append(DetectedFace((x1, y1, x2, y2), float(prob), photo_marks))
        return sorted(faces, key=lambda face: face.area, reverse=True)


def alignment_matrix(face: DetectedFace, size: int) -> np.ndarray:
    """3x3 similarity transform from photo pixels to the pixels of a ``size`` crop that puts
    the face's landmarks on the ArcFace template (least squares, as insightface aligns)."""
    template = (ARCFACE_TEMPLATE + 0.5) * (size / ARCFACE_SIZE) - 0.5
    return _similarity(np.asarray(face.landmarks, dtype=np.float64), template)


def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity transform (3x3) that maps ``source`` points to ``target``."""
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        transform = SimilarityTransform.from_estimate(source, target)
        ok = bool(transform)
    else:
        transform = SimilarityTransform()
        ok = transform.estimate(source, target)
    if not ok or not np.isfinite(transform.params).all():
        raise ValueError("cannot align a face whose landmarks coincide")
    return transform.params


def _scale(matrix: np.ndarray) -> float:
    """Crop pixels per photo pixel."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))


def _footprint(
    shape: tuple[int, int], matrix: np.ndarray, crop_shape: tuple[int, int], pad: float = 0.0
) -> tuple[slice, slice]:
    """The photo rows and columns that a crop of ``crop_shape`` (h, w) covers, plus ``pad``."""
    crop_h, crop_w = crop_shape
    left, top, right, bottom = -0.5, -0.5, crop_w - 0.5, crop_h - 0.5
    corners = np.array([[left, top, 1], [right, top, 1], [left, bottom, 1], [right, bottom, 1]])
    photo = (np.linalg.inv(matrix) @ corners.T)[:2]
    limits = [shape[1], shape[0]]
    x0, y0 = np.clip(np.floor(photo.min(axis=1) - pad), 0, limits).astype(int)
    x1, y1 = np.clip(np.ceil(photo.max(axis=1) + pad) + 1, 0, limits).astype(int)
    return slice(int(y0), int(max(y0, y1))), slice(int(x0), int(max(x0, x1)))


def aligned_crop(rgb: np.ndarray, matrix: np.ndarray, size: int) -> torch.Tensor:
    """The ``size`` x ``size`` aligned face crop (uint8 CHW) that ``matrix`` describes.

    Bilinear, and antialiased where the face shrinks: the photo region is first downscaled by
    Pillow to about the crop's resolution, and only the remaining rotation is interpolated.
    Crop pixels outside the photo are black, as in insightface's crops."""
    rows, cols = _footprint(rgb.shape[:2], matrix, (size, size), pad=2 / min(_scale(matrix), 1))
    region = rgb[rows, cols]
    if region.size == 0:
        return torch.zeros((3, size, size), dtype=torch.uint8)
    scale = min(_scale(matrix), 1.0)
    region_h, region_w = region.shape[:2]
    small_w, small_h = max(1, round(region_w * scale)), max(1, round(region_h * scale))
    if (small_w, small_h) != (region_w, region_h):
        region = np.asarray(
            Image.fromarray(region).resize((small_w, small_h), Image.Resampling.BILINEAR)
        )
    kx, ky = small_w / region_w, small_h / region_h
    # photo pixel -> downscaled-region pixel, by the same pixel-area rule as the resize
    to_small = np.array(
        [
            [kx, 0, kx * (0.5 - cols.start) - 0.5],
            [0, ky, ky * (0.5 - rows.start) - 0.5],
            [0, 0, 1],
        ]
    )
    crop_to_small = to_small @ np.linalg.inv(matrix)
    pixels = warp(
        region,
        crop_to_small,
        output_shape=(size, size),
        order=1,
        mode="constant",
        cval=0,
        preserve_range=True,
    )
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _carry(
    rows: slice,
    cols: slice,
    matrix: np.ndarray,
    noise: torch.Tensor,
    eps_levels: int,
    margin: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop noise sampled at the photo pixels ``rows`` x ``cols``: the feathered levels
    (h, w, 3; already multiplied by the weight) and the weight (h, w) in [0, 1]."""
    crop_h, crop_w = noise.shape[-2:]
    xs = np.arange(cols.start, cols.stop, dtype=np.float64)
    ys = np.arange(rows.start, rows.stop, dtype=np.float64)[:, None]
    u = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    v = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    # distance to the crop's nearest edge, as a fraction of the crop; negative outside it
    inside = np.minimum(
        np.minimum(u + 0.5, crop_w - 0.5 - u) / crop_w,
        np.minimum(v + 0.5, crop_h - 0.5 - v) / crop_h,
    )
    if margin > 0:
        weight = np.clip(inside / margin, 0, 1).astype(np.float32)
    else:
        weight = (inside >= 0).astype(np.float32)
    # grid_sample with align_corners=False: -1 and 1 are the outer edges of the edge pixels
    grid = np.stack([(u + 0.5) / crop_w * 2 - 1, (v + 0.5) / crop_h * 2 - 1], axis=-1)
    levels = noise.detach().float().cpu().unsqueeze(0) * 255.0
    sampled = F.grid_sample(
        levels.clamp(-eps_levels, eps_levels),
        torch.from_numpy(grid.astype(np.float32)).unsqueeze(0),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )[0]
    sampled = sampled.clamp_(-eps_levels, eps_levels).permute(1, 2, 0).numpy()
    return sampled * weight[:, :, None], weight


def face_noise_levels(
    shape: tuple[int, int],
    matrix: np.ndarray,
    noise: torch.Tensor,
    eps_levels: int,
    margin: float = DEFAULT_MARGIN,
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Carry one crop's noise (CHW, [0, 1] units) back into a photo of ``shape`` (h, w).

    Returns the photo region (rows, cols) that the crop covers and the noise there in levels
    (float32, h x w x 3, within +-eps_levels): bilinear from the crop, faded out over ``margin``
    of the crop at its border, zero outside it. Only that region is ever allocated."""
    rows, cols = _footprint(shape, matrix, tuple(noise.shape[-2:]))
    levels = np.zeros((rows.stop - rows.start, cols.stop - cols.start, 3), dtype=np.float32)
    for band in _bands(rows, cols.stop - cols.start):
        band_levels, _ = _carry(band, cols, matrix, noise, eps_levels, margin)
        levels[band.start - rows.start : band.stop - rows.start] = band_levels
    return (rows, cols), levels


def _bands(rows: slice, width: int) -> Iterator[slice]:
    """``rows`` cut into bands of about BAND_PIXELS pixels."""
    step = max(1, BAND_PIXELS // max(width, 1))
    for start in range(rows.start, rows.stop, step):
        yield slice(start, min(start + step, rows.stop))


def apply_face_noise(
    photo: Photo,
    faces: list[tuple[np.ndarray, torch.Tensor]],
    eps_levels: int,
    margin: float = DEFAULT_MARGIN,
) -> np.ndarray:
    """Add every face's crop noise, given as (alignment matrix, CHW noise), to the photo.

    Where faces overlap, a later face's noise replaces an earlier one's (blended by its
    feathering weight), so the noise stays within the budget. Grey photos get grey noise. The
    sum is rounded and clipped, so every pixel differs from the original by at most
    ``eps_levels``, and pixels outside every face's crop are unchanged."""
    height, width = photo.rgb.shape[:2]
    output = photo.rgb.copy()
    regions = []
    for matrix, noise in faces:
        rows, cols = _footprint((height, width), matrix, tuple(noise.shape[-2:]))
        if rows.stop > rows.start and cols.stop > cols.start:
            regions.append((rows, cols, matrix, noise))
    if not regions:
        return output
    top = min(rows.start for rows, _, _, _ in regions)
    bottom = max(rows.stop for rows, _, _, _ in regions)
    for band in _bands(slice(top, bottom), width):
        present = [
            (slice(max(rows.start, band.start), min(rows.stop, band.stop)), cols, matrix, noise)
            for rows, cols, matrix, noise in regions
            if rows.start < band.stop and rows.stop > band.start
        ]
        if not present:
            continue
        left = min(cols.start for _, cols, _, _ in present)
        right = max(cols.stop for _, cols, _, _ in present)
        total = np.zeros((band.stop - band.start, right - left, 3), dtype=np.float32)
        for rows, cols, matrix, noise in present:
            levels, weight = _carry(rows, cols, matrix, noise, eps_levels, margin)
            target = total[
                rows.start - band.start : rows.stop - band.start,
                cols.start - left : cols.stop - left,
            ]
            target *= 1 - weight[:, :, None]
            target += levels
        if photo.grayscale:
            total = np.repeat(total.mean(axis=2, keepdims=True), 3, axis=2)
        np.clip(total, -eps_levels, eps_levels, out=total)
        original = output[band, left:right].astype(np.float32)
        output[band, left:right] = np.clip(np.rint(original + total), 0, 255).astype(np.uint8)
    return output


def is_aligned_crop(rgb: np.ndarray, faces: list[DetectedFace]) -> bool:
    """Whether the image already is an aligned face crop (for ``--faces auto``), given the
    faces that FaceDetector.detect found in it.

    An aligned crop is small and about square, and aligning its largest face (``faces[0]``) to
    the template, with the image taken as the template's frame, would barely move it: scale
    within ALIGNED_MAX_SCALE, image centre shifted by at most ALIGNED_MAX_SHIFT of the size.
    MTCNN misses a few tight crops (the face fills the frame, 9 of ../shared/data/faces' 1,637),
    so a small, about square image without a detected face counts as a crop too."""
    height, width = rgb.shape[:2]
    if max(height, width) > ALIGNED_MAX_SIDE:
        return False
    if max(height, width) > ALIGNED_MAX_ASPECT * min(height, width):
        return False
    if not faces:
        return True
    frame = (np.asarray(faces[0].landmarks) + 0.5) / [width, height] * ARCFACE_SIZE - 0.5
    matrix = _similarity(frame, ARCFACE_TEMPLATE)
    centre = np.array([(ARCFACE_SIZE - 1) / 2, (ARCFACE_SIZE - 1) / 2, 1])
    shift = np.linalg.norm((matrix @ centre - centre)[:2]) / ARCFACE_SIZE
    return bool(
        abs(np.log(_scale(matrix))) <= np.log(ALIGNED_MAX_SCALE) and shift <= ALIGNED_MAX_SHIFT
    )
