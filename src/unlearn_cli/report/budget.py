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

A ``--per-class`` batch writes one such manifest per person in ``<out>/<class>/`` and a batch
manifest in ``<out>/`` (``per_class``, ``runner``, ``people``, and every person's ``photos``,
``failures`` and ``totals`` with paths relative to the batch; see pipeline.people).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from unlearn_cli.io.images import OUTPUT_MARKER, temporary_beside

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
    """Compare two HxWx3 uint8 images (the original upright and the decoded written file),
    a strip of rows at a time so that memory stays bounded on very large photos."""
    if original.shape != protected.shape:
        raise ValueError(f"size changed: {original.shape} -> {protected.shape}")
    height, width = original.shape[:2]
    linf, abs_sum, square_sum = 0, 0, 0
    changed_rows = np.zeros(height, dtype=bool)
    changed_columns = np.zeros(width, dtype=bool)
    for top in range(0, height, BUDGET_STRIP_ROWS):
        bottom = min(top + BUDGET_STRIP_ROWS, height)
        difference = np.abs(original[top:bottom].astype(np.int32) - protected[top:bottom])
        linf = max(linf, int(difference.max()))
        abs_sum += int(difference.sum())
        square_sum += int(np.square(difference, dtype=np.int64).sum())
        changed = difference.any(axis=2)
        changed_rows[top:bottom] = changed.any(axis=1)
        changed_columns |= changed.any(axis=0)
    count = original.size
    psnr = math.inf if linf == 0 else 10 * math.log10(255**2 / (square_sum / count))
    ssim = _ssim(original, protected, changed_rows, changed_columns)
    return Budget(linf=linf, mean_abs=abs_sum / count, psnr=psnr, ssim=ssim)


def _ssim(
    original: np.ndarray,
    protected: np.ndarray,
    changed_rows: np.ndarray,
    changed_columns: np.ndarray,
) -> float:
    """skimage's SSIM of the whole image (7x7 windows, mean over the valid region), computed
    only over the box of windows that see a changed pixel: every other window compares identical
    pixels and scores exactly 1. A face protected in a large photo costs the face's box, not the
    photo. The box is worked in strips of rows, each with the neighbouring rows and columns its
    windows need, keeping only its own part of the SSIM map: the figure equals the whole-image
    one."""
    from skimage.metrics import structural_similarity

    height, width = original.shape[:2]
    window = min(7, height, width)
    window -= 1 - window % 2  # odd, at most 7, at most the image side
    if window < 3 or not changed_rows.any():
        return 1.0
    pad = (window - 1) // 2
    rows, columns = np.flatnonzero(changed_rows), np.flatnonzero(changed_columns)
    # the map entries that can differ from 1, within the valid region
    keep_top, keep_bottom = max(pad, rows[0] - pad), min(height - pad, rows[-1] + pad + 1)
    keep_left, keep_right = max(pad, columns[0] - pad), min(width - pad, columns[-1] + pad + 1)
    ssim_sum = 0.0
    for top in range(keep_top, keep_bottom, BUDGET_STRIP_ROWS):
        bottom = min(top + BUDGET_STRIP_ROWS, keep_bottom)
        seen = np.s_[top - pad : bottom + pad, keep_left - pad : keep_right + pad]
        _, similarity = structural_similarity(  # float32: four times faster, same figure
            original[seen].astype(np.float32),
            protected[seen].astype(np.float32),
            channel_axis=2,
            data_range=255,
            win_size=window,
            full=True,
        )
        channels = similarity.shape[2]  # the map is per channel; the figure, their mean
        ssim_sum += float(similarity[pad:-pad, pad:-pad].sum(dtype=np.float64)) / channels
    valid = (height - 2 * pad) * (width - 2 * pad)
    computed = (keep_bottom - keep_top) * (keep_right - keep_left)
    return float(ssim_sum + (valid - computed)) / valid


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
    handle, temporary = temporary_beside(path)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(content, stream, indent=2, ensure_ascii=False)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
