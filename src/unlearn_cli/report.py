"""Budget measurements on written files, and the manifest that records a run.

Manifest schema (``schema_version`` 1), written as ``unlearn-manifest.json`` in the output folder:

- ``tool``: name, version, torch and torchvision versions; ``created``: UTC ISO time
- ``settings``: every ProtectConfig field (eps and step_size in 8-bit levels)
- ``input_root``: absolute folder the photos' ``source`` paths are relative to
- ``classes``: protected class names; ``surrogate``: source, root, kind, used and excluded
  classes, embedding source, k, per protected class the ranked matches with similarities
- ``optimisation``: device, seconds, converged, and per round the surrogate's loss and accuracy
  on the protected photos
- ``photos``: per protected photo ``source`` (relative to input_root), ``output`` (relative to
  the manifest's folder), ``class``, ``source_sha256``, ``output_sha256``, ``width``, ``height``,
  ``has_alpha`` and ``budget`` (``linf`` and ``mean_abs`` in levels, ``psnr`` in dB, ``ssim``)
- ``failures``: per photo that could not be protected, ``source`` and ``error``
- ``totals``: counts and the worst / mean budget figures
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

MANIFEST_NAME = "unlearn-manifest.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Budget:
    """How far a written photo is from its original: L-inf and mean |delta| in 8-bit levels."""

    linf: int
    mean_abs: float
    psnr: float
    ssim: float


def measure_budget(original: np.ndarray, protected: np.ndarray) -> Budget:
    """Compare two HxWx3 uint8 images (the original upright and the decoded written file)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if original.shape != protected.shape:
        raise ValueError(f"size changed: {original.shape} -> {protected.shape}")
    difference = np.abs(original.astype(np.int16) - protected.astype(np.int16))
    linf = int(difference.max())
    psnr = (
        math.inf
        if linf == 0
        else float(peak_signal_noise_ratio(original, protected, data_range=255))
    )
    window = min(7, *original.shape[:2])
    window -= 1 - window % 2  # odd, at most 7, at most the image side
    ssim = 1.0
    if window >= 3:
        ssim = float(  # float32 input: same figure, four times faster than skimage's float64
            structural_similarity(
                original.astype(np.float32),
                protected.astype(np.float32),
                channel_axis=2,
                data_range=255,
                win_size=window,
            )
        )
    return Budget(linf=linf, mean_abs=float(difference.mean()), psnr=psnr, ssim=ssim)


def budget_dict(budget: Budget) -> dict:
    values = asdict(budget)
    values["psnr"] = None if math.isinf(budget.psnr) else round(budget.psnr, 3)
    values["mean_abs"] = round(budget.mean_abs, 4)
    values["ssim"] = round(budget.ssim, 5)
    return values


def totals(photos: list[dict], failures: list[dict]) -> dict:
    budgets = [photo["budget"] for photo in photos]
    psnrs = [b["psnr"] for b in budgets if b["psnr"] is not None]
    return {
        "photos": len(photos) + len(failures),
        "protected": len(photos),
        "failed": len(failures),
        "max_linf": max((b["linf"] for b in budgets), default=None),
        "mean_abs": round(sum(b["mean_abs"] for b in budgets) / len(budgets), 4)
        if budgets
        else None,
        "min_psnr": min(psnrs, default=None),
        "min_ssim": min((b["ssim"] for b in budgets), default=None),
    }


def write_json_atomic(path: Path, content: dict) -> None:
    """Write JSON through a temporary file renamed into place, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(content, stream, indent=2, ensure_ascii=False)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
