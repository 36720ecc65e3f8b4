"""A generator of bad and unusual inputs, made at test time (nothing binary is committed).

``make_bad_inputs(folder)`` writes one file per case and returns what each case must get:
``Expect.PROTECTED`` (written, with an optional note), ``Expect.FAILED`` (a one-line error whose
reason contains ``reason``) or ``Expect.IGNORED`` (skipped quietly: not an input at all).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import pattern_image


class Expect(Enum):
    PROTECTED = "protected"
    FAILED = "failed"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Case:
    expect: Expect
    reason: str = ""  # for FAILED: part of the error; for PROTECTED: part of a note, if any
    grey: bool = False
    alpha: bool = False


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG built chunk by chunk, for what Pillow cannot write (16-bit RGB, absurd headers)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def make_bad_inputs(folder: Path) -> dict[str, Case]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    base = pattern_image(1, (40, 32))
    jpeg = _encoded(base, "JPEG", quality=90)
    png = _encoded(base, "PNG")
    files: dict[str, bytes] = {
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "text.png": b"these are my holiday notes, not a picture\n" * 20,
        "random.jpg": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "png named as.jpg": png,  # an extension that lies: decoded by content
        "bomb.png": png_bytes(40_000, 40_000, 8, 0, b"\0" * 16),  # 1.6 gigapixels claimed
        "cmyk.jpg": _encoded(base.convert("CMYK"), "JPEG", quality=92),
        "grey16.png": _encoded(
            Image.fromarray((rng.integers(0, 65535, (20, 30))).astype(np.uint16)), "PNG"
        ),
        "rgb16.png": png_bytes(
            12,
            9,
            16,
            2,
            b"".join(b"\0" + rng.integers(0, 65535, 36).astype(">u2").tobytes() for _ in range(9)),
        ),
        "grey.jpg": _encoded(base.convert("L"), "JPEG", quality=90),
        "palette.png": _palette_with_transparency(),
        "rgba.png": _encoded(_rgba(), "PNG"),
        "animated.gif": _animated_gif(),
        "pages.tiff": _multipage_tiff(),
        "photo.webp": _encoded(base, "WEBP", quality=90),
        "tiny.png": _encoded(pattern_image(3, (1, 1)), "PNG"),
        "thin.png": _encoded(pattern_image(4, (3, 2)), "PNG"),
        "with spaces and ünïcødé 写真.jpg": jpeg,
        "-leading-dash.jpg": jpeg,
        ".hidden.jpg": jpeg,
        "notes.txt": b"not an image",
        "sidecar.xmp": b"<x:xmpmeta/>",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "loop.jpg").symlink_to("loop.jpg")  # a symbolic link to itself
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.png").write_bytes(png)
    (folder / "sub" / "back").symlink_to("..", target_is_directory=True)  # a folder loop
    return {
        "empty.jpg": Case(Expect.FAILED, "empty file"),
        "truncated.jpg": Case(Expect.FAILED, "truncated"),
        "truncated.png": Case(Expect.FAILED, "truncated"),
        "text.png": Case(Expect.FAILED, "not a recognised image format"),
        "random.jpg": Case(Expect.FAILED, "not a recognised image format"),
        "png named as.jpg": Case(Expect.PROTECTED),
        "bomb.png": Case(Expect.FAILED, "--max-pixels"),
        "cmyk.jpg": Case(Expect.PROTECTED, "CMYK"),
        "grey16.png": Case(Expect.PROTECTED, "16-bit grey", grey=True),
        "rgb16.png": Case(Expect.PROTECTED, "16 bits per channel"),
        "grey.jpg": Case(Expect.PROTECTED, grey=True),
        "palette.png": Case(Expect.PROTECTED, alpha=True),
        "rgba.png": Case(Expect.PROTECTED, alpha=True),
        "animated.gif": Case(Expect.FAILED, "frames"),
        "pages.tiff": Case(Expect.FAILED, "frames"),
        "photo.webp": Case(Expect.PROTECTED),
        "tiny.png": Case(Expect.PROTECTED),
        "thin.png": Case(Expect.PROTECTED),
        "with spaces and ünïcødé 写真.jpg": Case(Expect.PROTECTED),
        "-leading-dash.jpg": Case(Expect.PROTECTED),
        ".hidden.jpg": Case(Expect.IGNORED),
        "notes.txt": Case(Expect.IGNORED),
        "sidecar.xmp": Case(Expect.IGNORED),
        "loop.jpg": Case(Expect.FAILED, os.strerror(40)),  # ELOOP
        "sub/nested.png": Case(Expect.PROTECTED),
    }


def _palette_with_transparency() -> bytes:
    image = pattern_image(5, (20, 16)).quantize(16)
    image.info["transparency"] = 0
    return _encoded(image, "PNG", transparency=0)


def _rgba() -> Image.Image:
    image = pattern_image(6, (20, 16)).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 20, dtype=np.uint8), (16, 1))
    image.putalpha(Image.fromarray(alpha, "L"))
    return image


def _animated_gif() -> bytes:
    frames = [pattern_image(seed, (16, 16)).convert("P") for seed in (7, 8)]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _multipage_tiff() -> bytes:
    pages = [pattern_image(seed, (16, 16)) for seed in (9, 10)]
    return _encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])
