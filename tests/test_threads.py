"""The CPU thread policy: every usable core, whatever the load; an explicit count wins."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from unlearn_cli.runtime import threads


def test_an_explicit_thread_count_wins_and_is_restored() -> None:
    before = torch.get_num_threads()
    with threads.torch_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_default_is_every_usable_core(monkeypatch) -> None:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    assert threads.cpu_threads(None) == 3


def test_openmp_threads_wait_passively_unless_the_user_chose_otherwise() -> None:
    code = "import os, unlearn_cli; print(os.environ['OMP_WAIT_POLICY'])"
    unset = {name: value for name, value in os.environ.items() if name != "OMP_WAIT_POLICY"}
    default = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=unset
    )
    assert default.stdout.strip() == "PASSIVE"
    chosen = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_WAIT_POLICY": "ACTIVE"},
    )
    assert chosen.stdout.strip() == "ACTIVE"
