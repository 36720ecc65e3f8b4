"""What metadata the written files carry, read back from their EXIF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.io.metadata import MetadataPolicy, clean_metadata

from .conftest import FAST_OPTIONS, pattern_image

runner = CliRunner()
Base = ExifTags.Base


def _camera_exif(orientation: int = 1) -> Image.Exif:
    """EXIF as a phone writes it: camera, date, GPS, a serial number, a MakerNote."""
    exif = Image.Exif()
    exif[Base.Make] = "PhoneMaker"
    exif[Base.Model] = "Phone 12"
    exif[Base.Orientation] = orientation
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[Base.DateTimeOriginal] = "2024:06:01 12:34:56"
    details[Base.BodySerialNumber] = "SN123456"
    details[Base.MakerNote] = b"vendor blob"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    return exif


def _protect(folder: Path, surrogate: Path, *options: str) -> dict:
    result = runner.invoke(
        app,
        ["protect", str(folder), "--surrogate", str(surrogate), "--overwrite", "--json"]
        + FAST_OPTIONS
        + list(options),
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def gps_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "trip"
    folder.mkdir()
    for index in range(2):
        pattern_image(index, (32, 24)).save(
            folder / f"{index}.jpg", quality=92, exif=_camera_exif().tobytes()
        )
    return folder


def _written_exif(folder: Path, name: str) -> Image.Exif:
    with Image.open(folder.with_name(folder.name + "-protected") / name) as image:
        return image.getexif()


def test_location_is_stripped_and_camera_fields_kept_by_default(
    gps_folder: Path, tiny_surrogate: Path
) -> None:
    manifest = _protect(gps_folder, tiny_surrogate)
    exif = _written_exif(gps_folder, "0.png")
    assert not exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert exif[Base.Make] == "PhoneMaker" and exif[Base.Model] == "Phone 12"
    details = exif.get_ifd(ExifTags.IFD.Exif)
    assert details[Base.DateTimeOriginal] == "2024:06:01 12:34:56"
    assert Base.BodySerialNumber not in details and Base.MakerNote not in details
    assert exif[Base.Orientation] == 1
    removed = manifest["photos"][0]["metadata_removed"]
    assert "GPS" in removed and "camera serial number" in removed


def test_strip_all_and_keep_everything(gps_folder: Path, tiny_surrogate: Path) -> None:
    manifest = _protect(gps_folder, tiny_surrogate, "--strip-metadata", "all")
    assert len(_written_exif(gps_folder, "0.png")) == 0
    assert manifest["photos"][0]["metadata_removed"] == ["all EXIF"]

    manifest = _protect(gps_folder, tiny_surrogate, "--keep-metadata")
    exif = _written_exif(gps_folder, "0.png")
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] == "N"
    assert exif[Base.Orientation] == 1 and manifest["photos"][0]["metadata_removed"] == []


def test_contradicting_metadata_options_are_a_usage_error(
    gps_folder: Path, tiny_surrogate: Path
) -> None:
    result = runner.invoke(
        app,
        ["protect", str(gps_folder), "--surrogate", str(tiny_surrogate)]
        + ["--keep-metadata", "--strip-metadata", "all"],
    )
    assert result.exit_code == 2 and "contradict" in result.stderr


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_written_photos_are_upright_with_orientation_one(
    tmp_path: Path, tiny_surrogate: Path, orientation: int
) -> None:
    folder = tmp_path / "turned"
    folder.mkdir()
    pattern_image(orientation, (40, 24)).save(
        folder / "a.jpg", quality=92, exif=_camera_exif(orientation).tobytes()
    )
    _protect(folder, tiny_surrogate)
    with Image.open(tmp_path / "turned-protected" / "a.png") as written:
        assert written.getexif()[Base.Orientation] == 1
        assert written.size == ((24, 40) if orientation in (6, 8) else (40, 24))


def test_xmp_and_thumbnail_never_leak_under_the_default_policy() -> None:
    exif = _camera_exif()
    cleaned = clean_metadata(exif, b"<x:xmpmeta>GPSLatitude</x:xmpmeta>", MetadataPolicy.LOCATION)
    assert cleaned.xmp is None and "XMP (may hold location)" in cleaned.removed
    kept = clean_metadata(exif, b"<x:xmpmeta/>", MetadataPolicy.NONE)
    assert kept.xmp == b"<x:xmpmeta/>" and kept.removed == []
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)  # the source's EXIF object is left as it was


def test_the_source_exif_is_never_asked_for_its_thumbnail_ifd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Pillow 11-12, get_ifd(IFD1) keeps an empty IFD1 that tobytes() then cannot write: every
    photo with EXIF failed there. So the thumbnail is looked for in a copy of the source's EXIF."""
    exif = _camera_exif()
    asked = []
    get_ifd = Image.Exif.get_ifd

    def recording(self: Image.Exif, tag: int) -> dict:
        asked.append((self is exif, tag))
        return get_ifd(self, tag)

    monkeypatch.setattr(Image.Exif, "get_ifd", recording)
    for policy in MetadataPolicy:
        clean_metadata(exif, None, policy)
    assert (False, ExifTags.IFD.IFD1) in asked and (True, ExifTags.IFD.IFD1) not in asked


@pytest.mark.integration
def test_real_gps_photos_lose_their_location(shared_data: Path, tmp_path: Path) -> None:
    from unlearn_cli.io.images import load_photo

    for path in sorted((shared_data / "photos" / "camera" / "gps").glob("*.jpg")):
        photo = load_photo(path)
        assert photo.exif.get_ifd(ExifTags.IFD.GPSInfo), path.name  # the source has GPS
        cleaned = clean_metadata(photo.exif, photo.xmp, MetadataPolicy.LOCATION)
        back = Image.Exif()
        back.load(cleaned.exif)
        assert not back.get_ifd(ExifTags.IFD.GPSInfo) and back[Base.Make], path.name
