"""How many CPU threads torch uses while we run."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch

SAMPLE_SECONDS = 0.25


def cpu_threads(choice: int | None) -> int:
    """Threads for CPU work. Small convolutions gain from a second thread when the machine is
    idle (1.7x on 2 cores) and lose badly when the cores are busy (33x slower with another
    process running), so by default only the cores idle right now are used, at least one."""
    if choice is not None:
        return choice
    cores = os.cpu_count() or 1
    return max(1, min(cores, round(idle_cores(cores))))


def idle_cores(cores: int) -> float:
    """Cores idle over the next SAMPLE_SECONDS, from /proc/stat; where there is none, the cores
    the load average leaves free (it lags by about a minute, so /proc/stat comes first)."""
    try:
        first = _cpu_times()
        time.sleep(SAMPLE_SECONDS)
        second = _cpu_times()
    except OSError:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return cores - busy
    total = sum(second) - sum(first)
    idle = (second[3] + second[4]) - (first[3] + first[4])  # idle and iowait
    return cores * idle / total if total > 0 else cores


def _cpu_times() -> list[int]:
    with open("/proc/stat", encoding="ascii") as stat:
        return [int(value) for value in stat.readline().split()[1:]]


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
