"""The library's exceptions. Each carries a one-line, actionable message; the CLI prints it."""

from __future__ import annotations

from pathlib import Path


class UnlearnError(Exception):
    """Base class of every error the library raises on purpose."""


class SetupError(UnlearnError):
    """Raised before any photo is touched: bad settings, no input, no surrogate (exit code 2)."""


class NoImagesError(SetupError):
    """No image was found in the inputs."""


class SurrogateUnavailableError(SetupError):
    """The surrogate dataset can be neither found in the cache nor downloaded."""


class ImageError(UnlearnError):
    """One photo could not be read or written; the rest of the batch goes on."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class OutputError(UnlearnError):
    """The output location stopped accepting files (disk full, read-only): the run stops, with
    what was written kept and listed in the manifest (exit code 1)."""
