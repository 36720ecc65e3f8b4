"""A content-keyed cache of tensors and model weights, so repeated runs skip fixed costs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")


def cache_key(*parts: object) -> str:
    """A stable hash of JSON-serialisable parts (paths and enums are turned into strings)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_fingerprint(paths: list[Path]) -> str:
    """Cheap identity of a set of files: path, size and modification time of each."""
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    return cache_key(stats)


def cached(folder: Path, key: str, compute: Callable[[], T]) -> T:
    """Load ``folder/key.pt`` if present, else compute it and store it atomically. Processes
    sharing the cache (``--workers``, Ray tasks on one machine) compute each value once: the
    others wait for it under a lock instead of computing it again beside it."""
    path = folder / f"{key}.pt"
    if (value := _load(path)) is not None:
        return value
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder / f"{key}.lock"):
        if (value := _load(path)) is not None:  # computed by another process meanwhile
            return value
        value = compute()
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(handle)
        try:
            torch.save(value, temporary)
            os.replace(temporary, path)
        except OSError:
            Path(temporary).unlink(missing_ok=True)
    return value


def _load(path: Path):
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=False)
    except (OSError, RuntimeError, EOFError):
        path.unlink(missing_ok=True)
        return None


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory lock between processes (POSIX ``flock``; no lock where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent processes may compute a value twice, harmlessly
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_dir() -> Path:
    """``$UNLEARN_CACHE_DIR``, else ``$XDG_CACHE_HOME/unlearn``, else ``~/.cache/unlearn``."""
    if explicit := os.environ.get("UNLEARN_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "unlearn"
