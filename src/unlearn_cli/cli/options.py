"""Choices of ``unlearn protect`` options, and reading file lists from stdin."""

from __future__ import annotations

import os
import sys
from enum import StrEnum


class Mode(StrEnum):
    sample = "sample"
    class_ = "class"


class Classes(StrEnum):
    auto = "auto"
    one = "one"


class FacesChoice(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


class StripChoice(StrEnum):
    location = "location"
    all = "all"


class EmbedderChoice(StrEnum):
    auto = "auto"
    face = "face"
    surrogate = "surrogate"


def read_stdin_paths(null_separated: bool) -> list[str]:
    """Paths from stdin: one per line, or NUL-separated; bytes that are not UTF-8 are kept as
    the file system's own (os.fsdecode), so any file name survives the pipe."""
    data = sys.stdin.buffer.read()
    parts = data.split(b"\0") if null_separated else data.splitlines()
    return [os.fsdecode(part) for part in parts if part.strip()]
