"""The optimisation's checkpoint in the hidden work folder, so an interrupted run resumes."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict
from pathlib import Path

import torch

from unlearn_cli.engine import (
    RoundReport,
)
from unlearn_cli.engine.minmin import MinMinCheckpoint
from unlearn_cli.io.images import temporary_beside
from unlearn_cli.pipeline.plan import (
    Action,
    PlannedPhoto,
    photo_identity,
)
from unlearn_cli.pipeline.prepare import (
    PreparedPhoto,
)
from unlearn_cli.runtime.cache import cache_key

WORK_FOLDER = ".unlearn-work"  # hidden: never taken for input; removed when a run completes
CHECKPOINT_NAME = "checkpoint.pt"


class Checkpoint:
    """The optimisation's state after each round, in the output folder, for resuming. It names
    the run's settings and the photos it optimises jointly, so it is used only for those."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key: str | None = None
        self.photos: list[list[str]] = []
        self.saved: dict | None = None
        if path.is_file():
            try:
                self.saved = torch.load(path, weights_only=True)
            except Exception:  # a torn or foreign file: start again rather than fail
                self.saved = None

    def photos_to_optimise(
        self, plan: list[PlannedPhoto], todo: list[PlannedPhoto]
    ) -> list[PlannedPhoto]:
        """The photos to optimise: those to do, or, when an interrupted run optimised a set
        that holds them all, that same set (done ones are optimised along, not rewritten)."""
        if self.saved is None:
            return todo
        saved = {tuple(photo) for photo in self.saved["photos"]}
        if not all(photo_identity(item) in saved for item in todo):
            return todo
        return [
            item
            for item in plan
            if photo_identity(item) in saved and item.action is not Action.REFUSE
        ]

    def load(self, run_key: str, prepared: list[PreparedPhoto]) -> MinMinCheckpoint | None:
        """The saved state if it belongs to these settings and exactly these photos."""
        photos = [[p.photo.relative.as_posix(), p.sha256, p.photo.class_name] for p in prepared]
        self.key = cache_key(run_key, photos)
        self.photos = photos
        if self.saved is None or self.saved.get("key") != self.key:
            return None
        state = dict(self.saved["state"])
        state["rounds"] = [RoundReport(**report) for report in state["rounds"]]
        return MinMinCheckpoint(**state)

    def save(self, checkpoint: MinMinCheckpoint) -> None:
        state = {**vars(checkpoint), "rounds": [asdict(r) for r in checkpoint.rounds]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = temporary_beside(self.path)
        os.close(handle)
        try:
            torch.save({"key": self.key, "photos": self.photos, "state": state}, temporary)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # of a killed save
            stale.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()
