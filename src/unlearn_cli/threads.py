"""How many CPU threads torch uses while we run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def cpu_threads(choice: int | None) -> int:
    """Threads for CPU work. Small convolutions gain little from threads when the machine is
    idle (2 threads were 15% faster than 1 on a 2-core machine) and lose badly when the cores
    are busy (33x slower with another process running), so by default only the cores that the
    load average shows idle are used, at least one."""
    if choice is not None:
        return choice
    cores = os.cpu_count() or 1
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, cores - busy)


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
