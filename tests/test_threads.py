"""The CPU thread policy: idle cores now, never fewer than one, an explicit count wins."""

from __future__ import annotations

import torch

from unlearn_cli import threads


def test_an_explicit_thread_count_wins_and_is_restored() -> None:
    before = torch.get_num_threads()
    with threads.torch_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_busy_cores_are_left_alone(monkeypatch) -> None:
    # /proc/stat's first line: user nice system idle iowait ...; one of two cores busy
    samples = iter([[100, 0, 0, 100, 0], [200, 0, 0, 200, 0]])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads, "SAMPLE_SECONDS", 0)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    assert threads.cpu_threads(None) == 1


def test_an_idle_machine_gets_every_core_and_a_busy_one_still_one(monkeypatch) -> None:
    monkeypatch.setattr(threads, "SAMPLE_SECONDS", 0)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    samples = iter([[0, 0, 0, 0, 0], [0, 0, 0, 400, 0], [0, 0, 0, 0, 0], [400, 0, 0, 0, 0]])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    assert threads.cpu_threads(None) == 4
    assert threads.cpu_threads(None) == 1
