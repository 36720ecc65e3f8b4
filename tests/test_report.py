"""Budget measurements and the learnability split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearn_cli.errors import SetupError
from unlearn_cli.report import budget as report
from unlearn_cli.report.budget import budget_dict, measure_budget, totals
from unlearn_cli.verify.learnability import split_photos


def test_identical_images_have_infinite_psnr_and_unit_ssim() -> None:
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    budget = measure_budget(image, image.copy())
    assert budget.linf == 0 and budget.mean_abs == 0 and math.isinf(budget.psnr)
    assert budget.ssim == pytest.approx(1.0)
    assert budget_dict(budget)["psnr"] is None


def _whole_image_ssim(original: np.ndarray, protected: np.ndarray) -> float:
    """skimage's SSIM of the whole image, the figure measure_budget must give."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            original.astype(np.float32),
            protected.astype(np.float32),
            channel_axis=2,
            data_range=255,
            win_size=7,
        )
    )


@pytest.mark.parametrize(
    ("shape", "changed_box"),
    [
        ((300, 200), (np.s_[100:140], np.s_[60:90])),  # a face in a photo
        ((300, 200), (np.s_[0:2], np.s_[197:200])),  # a corner
        ((9, 300), (np.s_[4:5], np.s_[150:151])),  # one pixel of a thin image
        ((260, 40), (np.s_[120:140], np.s_[0:40])),  # a band across a strip boundary
    ],
)
def test_ssim_computed_only_where_pixels_changed_equals_the_whole_image_figure(
    shape: tuple[int, int], changed_box: tuple[slice, slice], monkeypatch
) -> None:
    monkeypatch.setattr(report, "BUDGET_STRIP_ROWS", 128)
    rng = np.random.default_rng(sum(shape))
    original = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    protected = original.copy()
    box = protected[changed_box]
    protected[changed_box] = np.clip(box + rng.integers(-8, 9, box.shape), 0, 255)
    whole = _whole_image_ssim(original, protected)
    assert report.measure_budget(original, protected).ssim == pytest.approx(whole, abs=1e-6)


def test_known_difference_is_measured_exactly() -> None:
    original = np.full((16, 16, 3), 100, dtype=np.uint8)
    changed = original.copy()
    changed[0, 0, 0] = 108
    budget = measure_budget(original, changed)
    assert budget.linf == 8 and budget.mean_abs == pytest.approx(8 / (16 * 16 * 3))
    assert budget.psnr == pytest.approx(10 * math.log10(255**2 / (64 / (16 * 16 * 3))))
    assert measure_budget(original[:2, :2], changed[:2, :2]).ssim == 1.0  # too small for SSIM


def test_size_change_is_an_error() -> None:
    with pytest.raises(ValueError, match="size changed"):
        measure_budget(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


def test_totals_report_the_worst_figures() -> None:
    photos = [
        {"budget": {"linf": 8, "mean_abs": 6.0, "psnr": 31.0, "ssim": 0.9}},
        {"budget": {"linf": 5, "mean_abs": 2.0, "psnr": None, "ssim": 0.99}},
    ]
    summary = totals(photos, [{"source": "x.jpg", "error": "bad"}])
    assert summary == {
        "photos": 3,
        "protected": 2,
        "failed": 1,
        "max_linf": 8,
        "mean_abs": 4.0,
        "min_psnr": 31.0,
        "min_ssim": 0.9,
    }


def test_learnability_split_holds_out_a_seeded_share_per_class() -> None:
    photos = [{"class": "a", "output": f"a{i}"} for i in range(9)] + [
        {"class": "b", "output": f"b{i}"} for i in range(3)
    ]
    splits = split_photos(photos, holdout=0.34, seed=1)
    assert (len(splits["a"].test), len(splits["a"].train)) == (4, 5)
    assert (len(splits["b"].test), len(splits["b"].train)) == (2, 1)
    assert splits == split_photos(photos, holdout=0.34, seed=1)
    with pytest.raises(SetupError, match="at least 2"):
        split_photos([{"class": "c", "output": "c0"}], holdout=0.3, seed=0)


@pytest.mark.parametrize("height", [7, 8, 129, 130, 255, 256, 257, 385])
def test_strip_wise_budget_equals_the_whole_image_figures(height: int, monkeypatch) -> None:
    """Strips of 128 rows (the last one as short as one row) give skimage's whole-image SSIM."""
    monkeypatch.setattr(report, "BUDGET_STRIP_ROWS", 128)
    rng = np.random.default_rng(height)
    original = rng.integers(0, 256, (height, 9, 3), dtype=np.uint8)
    protected = np.clip(original + rng.integers(-8, 9, original.shape), 0, 255).astype(np.uint8)
    budget = report.measure_budget(original, protected)
    whole = _whole_image_ssim(original, protected)
    assert budget.ssim == pytest.approx(whole, abs=1e-5)
    assert budget.linf == int(np.abs(original.astype(int) - protected).max())
