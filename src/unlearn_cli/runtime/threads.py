"""How many CPU threads torch uses while we run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def cpu_threads(choice: int | None) -> int:
    """Threads for CPU work: ``choice``, or every core this process may use. Never the cores
    that happen to be idle: CPU results depend on the thread count (oneDNN sums convolution
    gradients in per-thread parts), so a count that followed the machine's load would change
    the noise with it. A busy machine is instead handled by OpenMP's passive waiting (set
    before torch loads, in the package's ``__init__``)."""
    if choice is not None:
        return choice
    return usable_cores()


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(choice: int | None) -> Iterator[int]:
    """Run the block with ``cpu_threads(choice)`` torch threads; the previous count is restored."""
    previous = torch.get_num_threads()
    count = cpu_threads(choice)
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)
