"""Checking what protect promised: the budget and the integrity of every protected photo.

The manifest names every output (relative to its own folder) and every original (relative to the
recorded input root, or to ``--originals``), with both SHA-256 hashes, so a moved output folder
still verifies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_cli.errors import ImageError, SetupError
from unlearn_cli.io.images import find_images, load_photo, sha256_file
from unlearn_cli.report.budget import MANIFEST_NAME, SCHEMA_VERSION, budget_dict, measure_budget

VERIFY_SCHEMA_VERSION = 1


@dataclass
class PhotoVerdict:
    """The budget and integrity verdicts of one protected photo, with every problem named."""

    output: str
    source: str
    original: str
    integrity: str = "ok"  # ok | missing | modified
    budget: dict | None = None
    budget_ok: bool = False
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "output": self.output,
            "source": self.source,
            "original": self.original,
            "integrity": self.integrity,
            "integrity_ok": self.integrity == "ok",
            "budget": self.budget,
            "budget_ok": self.budget_ok,
            "problems": self.problems,
        }


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise SetupError(f"{folder}: no {MANIFEST_NAME} here; is this a protected folder?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SetupError(f"{path}: unreadable manifest ({error})") from error
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise SetupError(
            f"{path}: manifest schema {manifest.get('schema_version')!r} is not supported "
            f"(expected {SCHEMA_VERSION})"
        )
    return manifest


def original_path(manifest: dict, photo: dict, originals: Path | None) -> Path:
    return (originals or Path(manifest["input_root"])) / photo["source"]


def check_photo(folder: Path, manifest: dict, photo: dict, originals: Path | None) -> PhotoVerdict:
    """Integrity of the written file, then its L-inf budget measured against the original."""
    eps = manifest["settings"]["eps"]
    target = folder / photo["output"]
    source = original_path(manifest, photo, originals)
    verdict = PhotoVerdict(photo["output"], photo["source"], str(source))
    if not target.is_file():
        verdict.integrity = "missing"
        verdict.problems.append(f"{photo['output']}: missing from the protected folder")
        return verdict
    if sha256_file(target) != photo["output_sha256"]:
        verdict.integrity = "modified"
        verdict.problems.append(
            f"{photo['output']}: edited, re-encoded or replaced since protection (hash differs)"
        )
    if not source.is_file():
        verdict.problems.append(f"{photo['output']}: original not found at {source}")
        return verdict
    if sha256_file(source) != photo["source_sha256"]:
        verdict.problems.append(
            f"{photo['output']}: the original {source} changed since protection"
        )
        return verdict
    try:
        original = load_photo(source)
        written = load_photo(target)
        budget = measure_budget(original.rgb, written.rgb)
    except (ImageError, ValueError) as error:
        verdict.problems.append(f"{photo['output']}: cannot compare with the original ({error})")
        return verdict
    verdict.budget = budget_dict(budget)
    verdict.budget_ok = budget.linf <= eps
    if not verdict.budget_ok:
        verdict.problems.append(
            f"{photo['output']}: L-inf {budget.linf} levels exceeds the budget of {eps}"
        )
    return verdict


def unknown_files(folder: Path, manifest: dict) -> list[str]:
    """Image files in the protected folder that the manifest does not list."""
    known = {photo["output"] for photo in manifest["photos"]}
    return [
        path.relative_to(folder).as_posix()
        for path in find_images(folder)
        if path.relative_to(folder).as_posix() not in known
    ]


def verify_files(folder: Path, manifest: dict, originals: Path | None = None) -> dict:
    """The budget and integrity checks over a protected folder, as a JSON-ready report."""
    verdicts = [check_photo(folder, manifest, photo, originals) for photo in manifest["photos"]]
    extra = unknown_files(folder, manifest)
    budget_failed = [v.output for v in verdicts if not v.budget_ok]
    integrity_failed = [v.output for v in verdicts if v.integrity != "ok"]
    return {
        "schema_version": VERIFY_SCHEMA_VERSION,
        "folder": str(folder.resolve()),
        "originals": str(originals or manifest["input_root"]),
        "eps": manifest["settings"]["eps"],
        "photos": [v.as_dict() for v in verdicts],
        "unknown_files": extra,
        "checks": {
            "budget": {"passed": not budget_failed, "failed": budget_failed},
            "integrity": {"passed": not integrity_failed, "failed": integrity_failed},
        },
    }
