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

from .images import OUTPUT_MARKER

MANIFEST_NAME = OUTPUT_MARKER
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Budget:
    """How far a written photo is from its original: L-inf and mean |delta| in 8-bit levels."""

    linf: int
    mean_abs: float
    psnr: float
    ssim: float


BUDGET_STRIP_ROWS = 128  # memory stays bounded on very large photos


def measure_budget(original: np.ndarray, protected: np.ndarray) -> Budget:
    """Compare two HxWx3 uint8 images (the original upright and the decoded written file).

    Works a strip of rows at a time. SSIM is skimage's (7x7 windows, mean over the valid
    region): each strip is computed with the neighbouring rows its windows need and only its own
    rows of the SSIM map are kept, so the figure equals the whole-image one."""
    from skimage.metrics import structural_similarity

    if original.shape != protected.shape:
        raise ValueError(f"size changed: {original.shape} -> {protected.shape}")
    height, width = original.shape[:2]
    window = min(7, height, width)
    window -= 1 - window % 2  # odd, at most 7, at most the image side
    pad = (window - 1) // 2
    linf, abs_sum, square_sum, ssim_sum, ssim_count = 0, 0, 0, 0.0, 0
    for top in range(0, height, BUDGET_STRIP_ROWS):
        bottom = min(top + BUDGET_STRIP_ROWS, height)
        difference = np.abs(original[top:bottom].astype(np.int32) - protected[top:bottom])
        linf = max(linf, int(difference.max()))
        abs_sum += int(difference.sum())
        square_sum += int(np.square(difference, dtype=np.int64).sum())
        if window < 3:
            continue
        high = min(height, bottom + pad)
        low = max(0, min(top - pad, high - window))  # a short last strip borrows rows above
        _, similarity = structural_similarity(  # float32: four times faster, same figure
            original[low:high].astype(np.float32),
            protected[low:high].astype(np.float32),
            channel_axis=2,
            data_range=255,
            win_size=window,
            full=True,
        )
        keep_from, keep_to = max(top, pad), min(bottom, height - pad)
        if keep_to > keep_from:
            valid = similarity[keep_from - low : keep_to - low, pad : width - pad]
            ssim_sum += float(valid.sum(dtype=np.float64))
            ssim_count += valid.size
    count = original.size
    psnr = math.inf if linf == 0 else 10 * math.log10(255**2 / (square_sum / count))
    ssim = ssim_sum / ssim_count if ssim_count else 1.0
    return Budget(linf=linf, mean_abs=abs_sum / count, psnr=psnr, ssim=ssim)


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
