"""A batch of many people split into one job per person (``--per-class``), and the jobs'
manifests merged into the batch's.

Each class (a first-level subfolder: one person) is protected in its own run, into its own
folder ``<out>/<class>/`` with its own manifest, exactly as a separate ``unlearn protect
<input>/<class> --out <out>/<class>`` would: its noise does not depend on who else is in the
batch, and a person's folder is complete on its own (verify it, hand it over). The batch's
manifest at ``<out>/`` lists every person's photos with paths relative to the batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from unlearn_cli.config import ProtectConfig
from unlearn_cli.errors import SetupError, UnlearnError
from unlearn_cli.io.inputs import InputPhoto, InputSet
from unlearn_cli.pipeline.events import Event, PhotoFailed, ProtectResult
from unlearn_cli.pipeline.plan import Action
from unlearn_cli.report.budget import MANIFEST_NAME, SCHEMA_VERSION, totals, write_json_atomic
from unlearn_cli.runtime.cache import cache_key


@dataclass(frozen=True)
class PersonJob:
    """One person's run: the class's photos re-rooted at the person's own input folder and
    output folder, and the settings it runs with (its own thread count)."""

    name: str
    input_set: InputSet
    config: ProtectConfig
    surrogate: str | None
    exclude_classes: frozenset[str]
    overwrite: bool
    dry_run: bool
    debug: bool


@dataclass
class PersonOutcome:
    """What a person's job returned: its manifest, or why the whole job failed."""

    name: str
    manifest: dict | None
    error: str | None = None
    seconds: float = 0.0
    written: list[dict] = field(default_factory=list)  # of a failed job: what it listed

    @property
    def photos(self) -> list[dict]:
        return self.manifest["photos"] if self.manifest else self.written


def split_people(input_set: InputSet) -> list[tuple[str, InputSet, tuple[InputPhoto, ...]]]:
    """One input set per class, output under ``<out>/<class>/``, with the batch's own photos
    in the same order. A class that is one folder of the batch (a first-level subfolder) is
    rooted at that folder, as a run on it alone; other photos (a folder's own images, files
    given one by one) keep their paths."""
    people = []
    for name in input_set.class_names:
        originals = tuple(photo for photo in input_set.photos if photo.class_name == name)
        in_own_folder = all(
            len(photo.relative.parts) > 1 and photo.relative.parts[0] == name for photo in originals
        )
        root, photos = input_set.root, originals
        if in_own_folder:
            root = input_set.root / name
            photos = tuple(
                replace(
                    photo,
                    relative=Path(*photo.relative.parts[1:]),
                    output=Path(*photo.output.parts[1:]),
                )
                for photo in originals
            )
        person = InputSet(root, input_set.output_root / name, photos, input_set.skipped_folders)
        people.append((name, person, originals))
    return people


def person_jobs(
    input_set: InputSet,
    config: ProtectConfig,
    surrogate: str | None,
    exclude_classes: frozenset[str],
    overwrite: bool,
    dry_run: bool,
    debug: bool,
) -> list[PersonJob]:
    if _is_joint_run(input_set.output_root):
        raise SetupError(
            f"{input_set.output_root} holds the output of a run without --per-class; "
            "choose another --out"
        )
    return [
        PersonJob(name, people, config, surrogate, exclude_classes, overwrite, dry_run, debug)
        for name, people, _ in split_people(input_set)
    ]


def _is_joint_run(output_root: Path) -> bool:
    manifest = _read_manifest(output_root)
    return manifest is not None and "people" not in manifest and bool(manifest.get("photos"))


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_person(job: PersonJob, on_event: Callable[[Event], None] | None = None) -> PersonOutcome:
    """Run one person's job; a failure of the whole job (no surrogate, an unwritable folder, an
    unexpected error) is returned, not raised, so that the other people go on. Its failed
    photos are reported by the driver from the outcome, so ``on_event`` sees the rest only."""
    from unlearn_cli.pipeline.run import protect

    def progress(event: Event) -> None:
        if on_event is not None and not isinstance(event, PhotoFailed):
            on_event(event)

    started = time.perf_counter()
    try:
        result = protect(
            job.input_set,
            job.config,
            surrogate=job.surrogate,
            exclude_classes=job.exclude_classes,
            on_event=progress,
            overwrite=job.overwrite,
            dry_run=job.dry_run,
            debug=job.debug,
        )
    except UnlearnError as error:
        return PersonOutcome(job.name, None, str(error), time.perf_counter() - started)
    except Exception as error:
        if job.debug:
            raise
        reason = f"unexpected {type(error).__name__}: {error} (--debug shows the traceback)"
        return PersonOutcome(job.name, None, reason, time.perf_counter() - started)
    return PersonOutcome(job.name, result.manifest, None, time.perf_counter() - started)


class BatchManifest:
    """The batch's manifest, rewritten atomically as each person's job finishes."""

    def __init__(
        self, input_set: InputSet, config: ProtectConfig, runner: str, dry_run: bool
    ) -> None:
        self.input_set = input_set
        self.dry_run = dry_run
        self.path = input_set.output_root / MANIFEST_NAME
        self.started = time.perf_counter()
        self.outcomes: dict[str, PersonOutcome] = {}
        self.originals = {  # (class, source in the person's run): the photo in the batch
            (name, photo.relative.as_posix()): original
            for name, people, originals in split_people(input_set)
            for photo, original in zip(people.photos, originals, strict=True)
        }
        self.content = {
            "schema_version": SCHEMA_VERSION,
            "per_class": True,
            "runner": runner,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": config.as_dict(),
            "input_root": str(input_set.root),
            "output_root": str(input_set.output_root),
            "classes": input_set.class_names,
        }

    def add(self, outcome: PersonOutcome) -> list[tuple[InputPhoto, str]]:
        """Record a finished person; returns the photos that could not be protected, and why,
        for the caller to report."""
        if outcome.manifest is None and not self.dry_run:  # what it wrote stays: listed
            earlier = _read_manifest(self.input_set.output_root / outcome.name)
            outcome.written = (earlier or {}).get("photos", [])
        self.outcomes[outcome.name] = outcome
        return [
            (self.originals[(outcome.name, entry["source"])], entry["error"])
            for entry in self._failed(outcome)
        ]

    def _failed(self, outcome: PersonOutcome) -> list[dict]:
        if outcome.manifest is None:
            reason = f"the job for {outcome.name} failed: {outcome.error}"
            written = {entry["source"] for entry in outcome.written}
            return [
                {"source": source, "error": reason}
                for name, source in self.originals
                if name == outcome.name and source not in written
            ]
        return outcome.manifest["failures"]

    def save(self) -> ProtectResult:
        dry_run = self.dry_run
        photos: list[dict] = []
        failures: list[dict] = []
        people = []
        for name in sorted(self.outcomes):
            outcome = self.outcomes[name]
            manifest = outcome.manifest or {}
            photos += [self._in_batch(name, entry) for entry in outcome.photos]
            failures += [self._in_batch(name, entry) for entry in self._failed(outcome)]
            people.append(
                {
                    "class": name,
                    "manifest": None if dry_run else f"{name}/{MANIFEST_NAME}",
                    "complete": bool(manifest.get("complete", dry_run)) and not outcome.error,
                    "run_key": manifest.get("run_key"),
                    "error": outcome.error,
                    "seconds": round(outcome.seconds, 2),
                }
            )
        keys = sorted({person["run_key"] for person in people if person["run_key"]})
        manifest = {
            **self.content,
            "dry_run": dry_run,
            "complete": len(people) == len(self.input_set.class_names)
            and all(person["complete"] for person in people),
            "run_key": cache_key("per-class", keys),
            "optimisation": {
                "device": self._devices(),
                "seconds": round(time.perf_counter() - self.started, 2),
            },
            "people": people,
            "photos": photos,
            "failures": failures,
            "totals": _totals(photos, failures, dry_run),
        }
        if dry_run:
            return ProtectResult(manifest=manifest, manifest_path=None, failures=failures)
        write_json_atomic(self.path, manifest)
        return ProtectResult(manifest=manifest, manifest_path=self.path, failures=failures)

    def _in_batch(self, name: str, entry: dict) -> dict:
        """A person's manifest entry with its paths relative to the batch's input and output."""
        photo = self.originals.get((name, entry["source"]))
        batch = {**entry, "source": photo.relative.as_posix() if photo else entry["source"]}
        if "output" in entry:
            batch["output"] = str(PurePosixPath(name) / entry["output"])
        return batch

    def _devices(self) -> str:
        devices = {
            outcome.manifest.get("optimisation", {}).get("device")
            for outcome in self.outcomes.values()
            if outcome.manifest
        }
        return ", ".join(sorted(device for device in devices if device)) or "none"


def _totals(photos: list[dict], failures: list[dict], dry_run: bool) -> dict:
    if not dry_run:
        return totals(photos, failures)
    counts = {str(action): 0 for action in Action}
    for photo in photos:
        counts[photo["action"]] += 1
    return {"photos": len(photos) + len(failures), **counts, "failed": len(failures)}
