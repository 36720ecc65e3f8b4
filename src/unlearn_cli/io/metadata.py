"""What metadata a protected copy carries: a privacy policy over EXIF and XMP.

Protected copies are shared online, so by default they lose what locates or identifies the
photographer (GPS, serial numbers, owner name, the vendor's opaque MakerNote, XMP, which may hold
location) and keep what helps the user (capture date, camera and exposure fields). The EXIF
thumbnail, an unprotected small copy of the photo, is never carried over. Pixels are written
upright, so the Orientation tag is always set to 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum

from PIL import ExifTags, Image

ORIENTATION = ExifTags.Base.Orientation
GPS_IFD = ExifTags.IFD.GPSInfo
EXIF_IFD = ExifTags.IFD.Exif

IDENTIFYING_TAGS = {
    ExifTags.Base.MakerNote: "MakerNote (vendor data, may hold location and previews)",
    ExifTags.Base.BodySerialNumber: "camera serial number",
    ExifTags.Base.LensSerialNumber: "lens serial number",
    ExifTags.Base.CameraOwnerName: "camera owner name",
    ExifTags.Base.ImageUniqueID: "image unique ID",
}


class MetadataPolicy(StrEnum):
    """location: remove location and identifying fields (default); all: remove all EXIF and
    XMP; none: keep everything (``--keep-metadata``)."""

    LOCATION = "location"
    ALL = "all"
    NONE = "none"


@dataclass(frozen=True)
class CleanMetadata:
    """Metadata for the written file, and what was removed (for the manifest)."""

    exif: bytes | None
    xmp: bytes | None
    removed: list[str] = field(default_factory=list)


def clean_metadata(
    exif: Image.Exif | None, xmp: bytes | None, policy: MetadataPolicy
) -> CleanMetadata:
    """Apply ``policy`` to a photo's EXIF and XMP; the input objects are not modified."""
    removed: list[str] = []
    has_exif = exif is not None and len(exif) > 0
    if policy is MetadataPolicy.ALL:
        if has_exif:
            removed.append("all EXIF")
        if xmp:
            removed.append("XMP")
        return CleanMetadata(None, None, removed)
    if not has_exif:
        kept_exif = None
    else:
        # looked for in a copy: on Pillow 11-12, get_ifd(IFD1) leaves an IFD1 entry behind
        # (empty when there is no thumbnail) that tobytes() then fails to write
        if copy.deepcopy(exif).get_ifd(ExifTags.IFD.IFD1):
            removed.append("EXIF thumbnail (an unprotected copy of the photo)")
        cleaned = Image.Exif()
        cleaned.load(exif.tobytes())  # a copy; tobytes() never writes the thumbnail (IFD1)
        if policy is MetadataPolicy.LOCATION:
            if GPS_IFD in cleaned:
                del cleaned[GPS_IFD]
                removed.append("GPS")
            details = cleaned.get_ifd(EXIF_IFD)
            for tag, description in IDENTIFYING_TAGS.items():
                if tag in details:
                    del details[tag]
                    removed.append(description)
        cleaned[ORIENTATION] = 1
        kept_exif = cleaned.tobytes()
    if xmp and policy is MetadataPolicy.LOCATION:
        removed.append("XMP (may hold location)")
        xmp = None
    return CleanMetadata(kept_exif, xmp or None, removed)
