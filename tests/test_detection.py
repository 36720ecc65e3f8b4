"""Face detection, alignment, and face-crop noise carried back into photos."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn_cli.faces import detection
from unlearn_cli.faces.detection import (
    ARCFACE_SIZE,
    ARCFACE_TEMPLATE,
    DetectedFace,
    FaceDetector,
    aligned_crop,
    alignment_matrix,
    apply_face_noise,
    face_noise_levels,
    is_aligned_crop,
)
from unlearn_cli.io.images import Photo, load_photo


def _face(centre: tuple[float, float], width: float, degrees: float = 0.0) -> DetectedFace:
    """A face whose landmarks are the template's, ``width`` pixels across the template's
    112-pixel frame, rotated by ``degrees`` and centred on ``centre``."""
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    marks = (ARCFACE_TEMPLATE - 55.5) * (width / ARCFACE_SIZE) @ rotation.T + centre
    x, y = centre
    return DetectedFace((x - width / 2, y - width / 2, x + width / 2, y + width / 2), 0.99, marks)


def _to_crop(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _outside_every_crop(shape: tuple[int, int], crops: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Photo pixels that no crop covers (a crop pixel's area is +-0.5 around its centre)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    outside = np.ones(len(points), dtype=bool)
    for matrix, size in crops:
        crop = _to_crop(matrix, points)
        outside &= ~((crop >= -0.5) & (crop <= size - 0.5)).all(axis=1)
    return outside.reshape(shape)


def test_alignment_maps_the_landmarks_onto_the_template() -> None:
    face = _face((300.0, 200.0), 250.0, degrees=20.0)
    jitter = np.random.default_rng(0).uniform(-2, 2, size=(5, 2))
    noisy = DetectedFace(face.box, face.confidence, face.landmarks + jitter)
    for size in (32, 112, 160):
        template = (ARCFACE_TEMPLATE + 0.5) * size / ARCFACE_SIZE - 0.5
        exact = _to_crop(alignment_matrix(face, size), face.landmarks)
        assert np.abs(exact - template).max() < 1e-6
        near = _to_crop(alignment_matrix(noisy, size), noisy.landmarks)
        assert np.abs(near - template).max() < 3 * size / 250  # 3 photo pixels at most


def test_alignment_refuses_coincident_landmarks() -> None:
    with pytest.raises(ValueError, match="landmarks"):
        alignment_matrix(DetectedFace((0, 0, 1, 1), 1.0, np.ones((5, 2))), 112)


def test_aligned_crop_is_a_uint8_chw_square_black_outside_the_photo() -> None:
    rgb = np.full((120, 90, 3), 200, dtype=np.uint8)
    crop = aligned_crop(rgb, alignment_matrix(_face((5.0, 60.0), 60.0), 48), 48)
    assert crop.shape == (3, 48, 48) and crop.dtype == torch.uint8
    assert crop[:, :, 0].max() == 0 and crop[:, :, -1].min() == 200  # left half is off the photo


def test_aligned_crop_samples_where_the_matrix_says() -> None:
    """On a photo whose values are its x and y coordinates, every crop pixel reads the photo
    coordinate that the inverse matrix gives it, shrinking (2000 px face) or not (60 px)."""
    side = 2400
    ys, xs = np.mgrid[0:side, 0:side]
    ramp = np.rint(xs * 255.0 / side).astype(np.uint8)
    rgb = np.stack([ramp, ramp.T, np.full_like(ramp, 100)], axis=2)
    for width, size in [(2000.0, 64), (60.0, 112)]:
        matrix = alignment_matrix(_face((1200.0, 1200.0), width, degrees=10.0), size)
        crop = aligned_crop(rgb, matrix, size).numpy().astype(np.float64)
        v, u = np.mgrid[0:size, 0:size]
        photo = _to_crop(np.linalg.inv(matrix), np.stack([u, v], axis=-1).astype(np.float64))
        assert np.abs(crop[0] - photo[..., 0] * 255 / side).max() < 1.5
        assert np.abs(crop[1] - photo[..., 1] * 255 / side).max() < 1.5
        assert (crop[2] == 100).all()


def test_a_large_face_squeezed_to_a_small_crop_is_not_aliased() -> None:
    """A 1-pixel checkerboard averages to flat grey; plain bilinear sampling aliases it into a
    pattern of about 40 levels standard deviation."""
    side = 2400
    ys, xs = np.mgrid[0:side, 0:side]
    rgb = np.repeat((((xs + ys) % 2) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    crop = aligned_crop(rgb, alignment_matrix(_face((1200.0, 1200.0), 2000.0, 10.0), 32), 32)
    assert crop.float().std() < 2 and abs(crop.float().mean() - 127.5) < 2


def test_noise_carried_back_is_the_crop_noise_seen_again_through_the_crop() -> None:
    """Carry smooth crop noise into a photo and cut the crop again: the same noise comes back
    (to rounding), so the noise is optimised where it ends up."""
    size, eps = 32, 8
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 4, 4, generator=generator) * 2 - 1
    noise = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")[0]
    noise = noise.clamp(-1, 1) * eps / 255
    matrix = alignment_matrix(_face((150.0, 120.0), 160.0, degrees=-15.0), size)
    (rows, cols), levels = face_noise_levels((240, 300), matrix, noise, eps, margin=0.0)
    photo = np.full((240, 300, 3), 128.0, dtype=np.float32)
    photo[rows, cols] += levels
    again = aligned_crop(np.rint(photo).astype(np.uint8), matrix, size).float() - 128
    inner = slice(2, size - 2)  # the crop's edge pixels blend with the photo outside it
    assert (again - noise * 255)[:, inner, inner].abs().max() <= 1.5


def test_noise_levels_cover_only_the_crop_and_stay_within_eps() -> None:
    shape, size, eps = (3000, 4000), 64, 6
    matrix = alignment_matrix(_face((3900.0, 1000.0), 300.0, degrees=30.0), size)
    noise = torch.full((3, size, size), 1.0)  # far over budget: clamped to eps
    (rows, cols), levels = face_noise_levels(shape, matrix, noise, eps)
    assert levels.dtype == np.float32
    assert levels.shape == (rows.stop - rows.start, cols.stop - cols.start, 3)
    assert cols.stop == 4000 and levels.shape[0] < 450  # only the face's region, clipped
    assert np.abs(levels).max() <= eps and levels.max() == eps
    ys, xs = np.mgrid[rows, cols]
    crop = _to_crop(matrix, np.stack([xs, ys], axis=-1).astype(np.float64))
    outside = ~((crop >= -0.5) & (crop <= size - 0.5)).all(axis=-1)
    assert outside.any() and (levels[outside] == 0).all()


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    height=st.integers(8, 90),
    width=st.integers(8, 90),
    faces=st.integers(1, 2),
    size=st.sampled_from([4, 16, 32]),
    eps=st.integers(1, 16),
    grey=st.booleans(),
    over=st.floats(0.5, 3.0),
)
def test_face_noise_keeps_the_budget_and_leaves_the_rest_untouched(
    seed: int, height: int, width: int, faces: int, size: int, eps: int, grey: bool, over: float
) -> None:
    """Property: every pixel within eps of the original, and byte-identical outside every
    face's crop, for any photo, faces (also partly off the photo, also overlapping) and noise
    (also over budget). A grey photo stays grey."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    if grey:
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
    crops = []
    for _ in range(faces):
        face = _face(
            (rng.uniform(-10, width + 10), rng.uniform(-10, height + 10)),
            rng.uniform(4, 60),
            rng.uniform(-180, 180),
        )
        noise = torch.from_numpy(rng.uniform(-over, over, (3, size, size)) * eps / 255).float()
        crops.append((alignment_matrix(face, size), noise))
    protected = apply_face_noise(Photo(rgb, grayscale=grey), crops, eps)
    assert protected.shape == rgb.shape and protected.dtype == np.uint8
    assert np.abs(protected.astype(int) - rgb.astype(int)).max() <= eps
    outside = _outside_every_crop((height, width), [(matrix, size) for matrix, _ in crops])
    assert np.array_equal(protected[outside], rgb[outside])
    if grey:
        assert (protected == protected[:, :, :1]).all()


def test_overlapping_faces_do_not_add_up() -> None:
    """Two faces on the same spot, noise +eps and -eps: the later one replaces the earlier."""
    rgb = np.full((100, 100, 3), 128, dtype=np.uint8)
    matrix = alignment_matrix(_face((50.0, 50.0), 40.0), 16)
    plus, minus = torch.full((3, 16, 16), 8 / 255), torch.full((3, 16, 16), -8 / 255)
    shifted = alignment_matrix(_face((55.0, 50.0), 40.0), 16)
    protected = apply_face_noise(Photo(rgb), [(matrix, plus), (shifted, minus)], 8).astype(int)
    assert np.abs(protected - 128).max() <= 8
    assert protected[50, 55, 0] == 120  # inside both: the later face's noise
    assert protected.max() == 136  # the earlier face's noise where only it lies
    doubled = apply_face_noise(Photo(rgb), [(matrix, plus), (matrix, plus)], 8).astype(int)
    assert doubled.max() == 136


def test_large_photos_are_processed_in_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(300, 200, 3), dtype=np.uint8)
    crops = [
        (alignment_matrix(_face((80.0, 120.0), 150.0, 12.0), 32), torch.rand(3, 32, 32) / 40),
        (alignment_matrix(_face((150.0, 200.0), 90.0, -40.0), 16), -torch.rand(3, 16, 16) / 40),
    ]
    whole = apply_face_noise(Photo(rgb), crops, 8)
    (rows, cols), levels = face_noise_levels(rgb.shape[:2], *crops[0], 8)
    monkeypatch.setattr(detection, "BAND_PIXELS", 1000)  # 5 rows at a time
    assert np.array_equal(apply_face_noise(Photo(rgb), crops, 8), whole)
    assert np.array_equal(face_noise_levels(rgb.shape[:2], *crops[0], 8)[1], levels)
    assert not np.array_equal(whole, rgb)


def test_detected_face_is_json_ready() -> None:
    face = _face((100.123456, 80.0), 64.0)
    record = json.loads(json.dumps(face.as_dict()))
    assert record["box"] == [68.1, 48.0, 132.1, 112.0] and record["confidence"] == 0.99
    assert np.array(record["landmarks"]).shape == (5, 2)


def test_aligned_crops_are_told_from_photos_by_their_landmarks() -> None:
    crop = np.zeros((112, 112, 3), dtype=np.uint8)
    assert is_aligned_crop(crop, [_face((55.5, 55.5), 112.0, degrees=5.0)])
    assert is_aligned_crop(crop, [])  # MTCNN misses a few tight crops
    assert is_aligned_crop(np.zeros((160, 160, 3), np.uint8), [_face((79.5, 79.5), 160.0)])
    assert not is_aligned_crop(crop, [_face((55.5, 55.5), 40.0)])  # a small face in a small photo
    assert not is_aligned_crop(crop, [_face((90.0, 90.0), 112.0)])  # off centre
    assert not is_aligned_crop(np.zeros((112, 200, 3), np.uint8), [])  # not square
    assert not is_aligned_crop(np.zeros((600, 600, 3), np.uint8), [_face((299.5, 299.5), 600.0)])


@pytest.fixture(scope="module")
def detector() -> Iterator[FaceDetector]:
    """One detector for the module, run on one thread: MTCNN's many small convolutions ran
    six times slower on two threads while other work shared this 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield FaceDetector()
    torch.set_num_threads(threads)


def test_no_faces_in_flat_or_tiny_images(detector: FaceDetector) -> None:
    assert detector.detect(np.full((200, 300, 3), 90, dtype=np.uint8)) == []
    assert detector.detect(np.zeros((10, 10, 3), dtype=np.uint8)) == []


@pytest.mark.integration
def test_every_portrait_has_a_face_and_is_not_a_crop(
    shared_data: Path, detector: FaceDetector
) -> None:
    portraits = sorted((shared_data / "photos" / "portraits").glob("*/*"))
    assert len(portraits) > 50
    for path in portraits:
        rgb = load_photo(path).rgb
        faces = detector.detect(rgb)
        assert faces, path
        assert [face.area for face in faces] == sorted((face.area for face in faces), reverse=True)
        assert is_aligned_crop(rgb, faces) == (path.name == "insightface_Tom_Hanks_54745.png")


@pytest.mark.integration
def test_group_photos_have_several_faces(shared_data: Path, detector: FaceDetector) -> None:
    for path in sorted((shared_data / "photos" / "group").iterdir()):
        faces = detector.detect(load_photo(path).rgb)
        assert len(faces) >= 2, path
        assert all(face.confidence >= 0.95 for face in faces)


@pytest.mark.integration
def test_photos_without_people_have_no_faces(shared_data: Path, detector: FaceDetector) -> None:
    photos = sorted((shared_data / "photos" / "camera" / "orientation").iterdir())
    assert len(photos) == 16
    for path in photos:
        assert detector.detect(load_photo(path).rgb) == [], path


@pytest.mark.integration
def test_aligned_face_crops_are_recognised(shared_data: Path, detector: FaceDetector) -> None:
    identities = sorted((shared_data / "faces").iterdir())
    assert len(identities) >= 10
    for identity in identities:
        for path in sorted(identity.iterdir())[:3]:
            rgb = load_photo(path).rgb
            assert is_aligned_crop(rgb, detector.detect(rgb)), path


@pytest.mark.integration
def test_a_group_photo_protected_face_by_face(shared_data: Path, detector: FaceDetector) -> None:
    """Detect, align, cut, carry noise back: within budget, and only the faces change."""
    photo = load_photo(shared_data / "photos" / "group" / "face_recognition_two_people.jpg")
    faces = detector.detect(photo.rgb)
    generator = torch.Generator().manual_seed(0)
    crops = []
    for face in faces:
        matrix = alignment_matrix(face, 112)
        crop = aligned_crop(photo.rgb, matrix, 112)
        assert crop.shape == (3, 112, 112) and crop.float().std() > 10
        noise = (torch.rand(3, 112, 112, generator=generator) * 2 - 1) * 8 / 255
        crops.append((matrix, noise))
    protected = apply_face_noise(photo, crops, 8)
    changed = np.abs(protected.astype(int) - photo.rgb.astype(int))
    assert changed.max() == 8
    outside = _outside_every_crop(photo.rgb.shape[:2], [(matrix, 112) for matrix, _ in crops])
    assert changed[outside].max() == 0 and 0.02 < (~outside).mean() < 0.5
