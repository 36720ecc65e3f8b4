"""The record of each protected copy, made before the copy takes its final name, so that a
run killed outright (SIGKILL, out of memory, a lost cluster worker) leaves no file on disk that
the next run cannot tell is its own."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

JOURNAL_NAME = "written.jsonl"


class WriteJournal:
    """One JSON line per written photo (its manifest entry and the run key), flushed to disk
    before the photo is renamed into place. The manifest is rewritten only every few seconds;
    the next run adopts what the journal lists and the manifest does not."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()  # photos are written by several threads

    def record(self, run_key: str, entry: dict) -> None:
        line = json.dumps({"run_key": run_key, "entry": entry}, ensure_ascii=False)
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as stream:
                stream.write(line + "\n")
                stream.flush()
                os.fsync(stream.fileno())

    def entries(self, run_key: str) -> dict[str, dict]:
        """The recorded entries of ``run_key`` by source; a line torn by the kill is ignored."""
        if not self.path.is_file():
            return {}
        found = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(line)
                if record["run_key"] == run_key:
                    found[record["entry"]["source"]] = record["entry"]
        return found

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
