"""What a protect run reports: progress events (the caller, such as the CLI, decides how to
show them), the photos that failed, and its result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_cli.engine import RoundReport
from unlearn_cli.errors import ImageError
from unlearn_cli.io.inputs import InputPhoto


@dataclass(frozen=True)
class PhaseStarted:
    name: str
    total: int | None = None


@dataclass(frozen=True)
class PhaseAdvanced:
    steps: int = 1


@dataclass(frozen=True)
class RoundFinished:
    report: RoundReport
    max_rounds: int


@dataclass(frozen=True)
class PhotoFailed:
    source: str
    error: str


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class PhotoNote:
    """A photo was protected, with something the user should know (e.g. 16-bit written as 8)."""

    source: str
    message: str


Event = PhaseStarted | PhaseAdvanced | RoundFinished | PhotoFailed | PhotoNote | Notice


@dataclass
class ProtectResult:
    manifest: dict
    manifest_path: Path | None
    failures: list[dict] = field(default_factory=list)


def describe_error(error: BaseException) -> str:
    """The one-line reason shown for a photo that could not be protected."""
    if isinstance(error, ImageError):
        return error.reason
    if isinstance(error, OSError):
        return error.strerror or str(error)
    if isinstance(error, ValueError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error} (--debug shows the traceback)"


def record_failure(
    failures: list[dict], emit: Callable[[Event], None], photo: InputPhoto, reason: str
) -> None:
    failures.append({"source": photo.relative.as_posix(), "error": reason})
    emit(PhotoFailed(str(photo.path), reason))
