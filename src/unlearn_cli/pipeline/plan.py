"""What a run does with each photo: protect, redo, skip or refuse, from the output folder's
earlier manifest and the settings; and the dry-run answer.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from unlearn_cli.config import ProtectConfig
from unlearn_cli.errors import SetupError
from unlearn_cli.io.images import sha256_file
from unlearn_cli.io.inputs import InputPhoto, InputSet
from unlearn_cli.pipeline.events import (
    Event,
    Notice,
    PhaseAdvanced,
    PhaseStarted,
    ProtectResult,
    describe_error,
    record_failure,
)
from unlearn_cli.report.budget import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
)


class Action(StrEnum):
    """What a run does with one photo (``--dry-run`` lists these)."""

    PROTECT = "protect"
    REDO = "redo"  # an earlier protected copy is out of date
    SKIP = "skip"  # already protected from this original with these settings
    REFUSE = "refuse"  # the output name is taken by a file unlearn did not write


@dataclass(frozen=True)
class PlannedPhoto:
    photo: InputPhoto
    sha256: str
    action: Action
    reason: str
    previous: dict | None = None

    def as_dict(self) -> dict:
        return {
            "source": self.photo.relative.as_posix(),
            "output": self.photo.output.as_posix(),
            "class": self.photo.class_name,
            "action": str(self.action),
            "reason": self.reason,
        }


def previous_manifest(output_root: Path, emit: Callable[[Event], None]) -> dict | None:
    """The manifest of an earlier run into the same folder, if there is a readable one."""
    path = output_root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("schema_version") == SCHEMA_VERSION and "run_key" in manifest:
            return manifest
    except (OSError, ValueError):
        pass
    emit(Notice(f"{path} is from another version or unreadable: every photo is protected anew"))
    return None


def settings_changed(previous: dict, config: ProtectConfig, compute: str) -> str:
    """Why an earlier run's photos are redone: its compute, when only that changed."""
    ignored = ("device", "threads")
    earlier = {k: v for k, v in previous.get("settings", {}).items() if k not in ignored}
    now = {k: v for k, v in config.as_dict().items() if k not in ignored}
    made_with = previous.get("compute")
    if earlier == now and made_with and made_with != compute:
        return f"made with {made_with}, this run uses {compute} (the noise depends on it)"
    return "the settings changed"


def plan_photos(
    input_set: InputSet,
    previous: dict | None,
    run_key: str,
    journaled: dict[str, dict],
    changed: str,
    overwrite: bool,
    failures: list[dict],
    emit: Callable[[Event], None],
    debug: bool,
) -> list[PlannedPhoto]:
    """Decide per photo: protect, redo (``changed`` says why, when the settings or compute
    changed), skip (already done) or refuse (foreign output). ``journaled`` are the entries of
    photos that a killed run of these settings wrote but did not list in its manifest."""
    earlier = {entry["source"]: entry for entry in (previous or {}).get("photos", [])}
    earlier.update(journaled)
    same_settings = previous is not None and previous.get("run_key") == run_key
    emit(PhaseStarted("checking photos", len(input_set.photos)))
    plan = []
    for photo in input_set.photos:
        try:
            sha = sha256_file(photo.path)
        except Exception as error:
            if debug and not isinstance(error, OSError):
                raise
            record_failure(failures, emit, photo, describe_error(error))
            emit(PhaseAdvanced())
            continue
        target = input_set.output_root / photo.output
        entry = earlier.get(photo.relative.as_posix())
        ours = entry is not None and entry.get("output") == photo.output.as_posix()
        if overwrite:
            action, reason = Action.PROTECT, "--overwrite"
        elif not target.exists():
            action, reason = Action.PROTECT, "not protected yet"
        elif not ours:
            action = Action.REFUSE
            reason = (
                f"{target} exists and was not written by unlearn for this photo; "
                "move it away or use --overwrite"
            )
        elif entry["source_sha256"] != sha:
            action, reason = Action.REDO, "the original changed"
        elif not (same_settings or photo.relative.as_posix() in journaled):
            action, reason = Action.REDO, changed
        elif sha256_file(target) != entry.get("output_sha256"):
            action, reason = Action.REDO, "the protected copy was modified"
        else:
            action, reason = Action.SKIP, "already protected with these settings"
        plan.append(PlannedPhoto(photo, sha, action, reason, entry))
        emit(PhaseAdvanced())
    return plan


def dry_run_result(
    input_set: InputSet, config: ProtectConfig, plan: list[PlannedPhoto], failures: list[dict]
) -> ProtectResult:
    counts = {str(action): 0 for action in Action}
    for item in plan:
        counts[str(item.action)] += 1
    report = {
        "schema_version": SCHEMA_VERSION,
        "dry_run": True,
        "settings": config.as_dict(),
        "input_root": str(input_set.root),
        "output_root": str(input_set.output_root),
        "photos": [item.as_dict() for item in plan],
        "failures": failures,
        "totals": {"photos": len(plan) + len(failures), **counts, "failed": len(failures)},
    }
    return ProtectResult(manifest=report, manifest_path=None, failures=failures)


def check_writable(output_root: Path) -> None:
    """Fail before any work when the output folder cannot be created or written."""
    try:
        output_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_root):
            pass
    except OSError as error:
        raise SetupError(
            f"cannot write to {output_root}: {error.strerror or error}; choose another --out"
        ) from error


def photo_identity(item: PlannedPhoto) -> tuple[str, str, str]:
    return (item.photo.relative.as_posix(), item.sha256, item.photo.class_name)
