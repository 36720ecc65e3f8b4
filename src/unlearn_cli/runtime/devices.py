"""Which torch device a command runs on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch

from unlearn_cli.errors import SetupError


def device_problem(choice: str) -> str | None:
    """Why ``choice`` is not a device name, or None."""
    if choice in ("auto", "cpu", "cuda") or choice.startswith("cuda:"):
        return None
    return f"--device must be auto, cpu or cuda, got {choice!r}"


def resolve_device(choice: str) -> torch.device:
    """``auto`` is the GPU when there is one; asking for one where there is none is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise SetupError(
            "--device cuda was asked for but no CUDA GPU is available; use --device cpu"
        )
    return torch.device(choice)


def compute_signature(device: torch.device) -> str:
    """What computed floats depend on besides the inputs and settings: the device type, and on a
    CPU its vector instruction set and the thread count (oneDNN sums convolution gradients in
    per-thread parts; the same run limited to AVX2 on an AVX-512 machine changed 80% of the
    written pixels). It is part of every cache key of computed results and of a run's key, so a
    run on another kind of CPU or with another count never reuses, resumes or mixes their
    results. On a GPU it names the model, whose kernels choose their own summation orders."""
    if device.type == "cpu":
        isa = torch.backends.cpu.get_cpu_capability()
        return f"cpu {isa}, {torch.get_num_threads()} thread(s)"
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return device.type
