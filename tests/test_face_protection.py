"""Faces in real photos through the real command: found, aligned, protected in place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.faces.detection import DetectedFace, alignment_matrix, face_noise_levels
from unlearn_cli.io.images import load_photo

from .conftest import FAST_OPTIONS

runner = CliRunner()
RESOLUTION = int(FAST_OPTIONS[FAST_OPTIONS.index("--resolution") + 1])
pytestmark = pytest.mark.integration


def _protect(folder: Path, surrogate: Path, *options: str, quiet: bool = True):
    fast = FAST_OPTIONS if quiet else [option for option in FAST_OPTIONS if option != "--quiet"]
    result = runner.invoke(
        app, ["protect", str(folder), "--surrogate", str(surrogate), "--json", *fast, *options]
    )
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def _copy(sources: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for source in sources:
        shutil.copy(source, folder / source.name)
    return folder


def _face_region(shape: tuple[int, int], faces: list[dict]) -> np.ndarray:
    """Where the noise of the protected faces may go: the union of their crops' footprints."""
    mask = np.zeros(shape, dtype=bool)
    for entry in faces:
        if not entry["protected"]:
            continue
        matrix = alignment_matrix(DetectedFace.from_dict(entry), RESOLUTION)
        full = torch.full((3, RESOLUTION, RESOLUTION), 8 / 255)
        (rows, cols), levels = face_noise_levels(shape, matrix, full, 8)
        mask[rows, cols] |= np.abs(levels).max(axis=2) > 0
    return mask


def _check_written(folder: Path, manifest: dict) -> None:
    out = folder.with_name(folder.name + "-protected")
    for photo in manifest["photos"]:
        original = load_photo(folder / photo["source"])
        written = load_photo(out / photo["output"])
        assert written.rgb.shape == original.rgb.shape, photo["source"]  # full size, upright
        difference = np.abs(written.rgb.astype(int) - original.rgb).max(axis=2)
        assert difference.max() <= 8, photo["source"]
        if photo["protected_as"] == "faces":
            region = _face_region(original.rgb.shape[:2], photo["faces"])
            assert not difference[~region].any(), f"{photo['source']}: changed outside its faces"
            assert difference[region].mean() > 1, f"{photo['source']}: faces barely protected"


def test_group_photos_get_every_face_protected(
    shared_data: Path, tmp_path: Path, tiny_surrogate: Path
) -> None:
    group = sorted((shared_data / "photos" / "group").glob("*.jpg"))[:3]
    folder = _copy(group, tmp_path / "group")
    result, manifest = _protect(folder, tiny_surrogate)
    assert result.exit_code == 0, result.stderr
    for photo in manifest["photos"]:
        assert photo["protected_as"] == "faces"
        assert sum(face["protected"] for face in photo["faces"]) >= 2, photo["source"]
    _check_written(folder, manifest)

    result, manifest = _protect(folder, tiny_surrogate, "--main-face-only", "--overwrite")
    assert result.exit_code == 0, result.stderr
    for photo in manifest["photos"]:
        assert sum(face["protected"] for face in photo["faces"]) == 1, photo["source"]
    _check_written(folder, manifest)


def test_portraits_are_protected_in_their_faces_at_full_size(
    shared_data: Path, tmp_path: Path, tiny_surrogate: Path
) -> None:
    portraits = sorted((shared_data / "photos" / "portraits" / "barack_obama").glob("*.jpg"))
    folder = _copy(portraits[:4], tmp_path / "obama")
    result, manifest = _protect(folder, tiny_surrogate)
    assert result.exit_code == 0, result.stderr
    assert {photo["protected_as"] for photo in manifest["photos"]} == {"faces"}
    _check_written(folder, manifest)


def test_photos_without_people_are_protected_whole_and_reported(
    shared_data: Path, tmp_path: Path, tiny_surrogate: Path
) -> None:
    orientation = shared_data / "photos" / "camera" / "orientation"
    folder = _copy(
        [orientation / "landscape_6.jpg", orientation / "portrait_3.jpg"], tmp_path / "c"
    )
    result, manifest = _protect(folder, tiny_surrogate, quiet=False)
    assert result.exit_code == 0, result.stderr
    assert "2 photo(s) without a face protected as whole images" in result.stderr
    for photo in manifest["photos"]:
        assert photo["protected_as"] == "whole image: no face found"
        written = folder.with_name("c-protected") / photo["output"]
        with Image.open(written) as image:
            assert image.getexif().get(0x0112, 1) == 1
        assert load_photo(written).rgb.shape == load_photo(folder / photo["source"]).rgb.shape
    _check_written(folder, manifest)

    result, manifest = _protect(folder, tiny_surrogate, "--require-faces", "--overwrite")
    assert result.exit_code == 1
    assert "landscape_6.jpg: no face found (--require-faces)" in result.stderr


def test_aligned_crops_stay_whole_under_auto_and_are_aligned_under_on(
    shared_data: Path, tmp_path: Path, tiny_surrogate: Path
) -> None:
    crops = sorted((shared_data / "faces" / "Tina_Fey").glob("*.png"))[:3]
    folder = _copy(crops, tmp_path / "crops")
    result, manifest = _protect(folder, tiny_surrogate)
    assert result.exit_code == 0, result.stderr
    assert {p["protected_as"] for p in manifest["photos"]} == {"whole image: an aligned face crop"}
    result, manifest = _protect(folder, tiny_surrogate, "--faces", "on", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert {p["protected_as"] for p in manifest["photos"]} == {"faces"}
    _check_written(folder, manifest)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_faces_are_found_in_any_exif_orientation(
    shared_data: Path, tmp_path: Path, tiny_surrogate: Path, orientation: int
) -> None:
    """A portrait stored sideways or upside down with its EXIF tag: found, protected upright."""
    source = shared_data / "photos" / "portraits" / "barack_obama" / "face_recognition_obama.jpg"
    folder = tmp_path / "turned"
    folder.mkdir()
    stored = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    with Image.open(source) as image:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.transpose(stored[orientation]).save(folder / "obama.jpg", quality=95, exif=exif)
    result, manifest = _protect(folder, tiny_surrogate)
    assert result.exit_code == 0, result.stderr
    (photo,) = manifest["photos"]
    assert photo["protected_as"] == "faces"
    upright = load_photo(source)
    assert (photo["width"], photo["height"]) == upright.size
    _check_written(folder, manifest)
