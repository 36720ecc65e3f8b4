"""The GPU path on a real CUDA device: mixed precision, face detection, protect and verify.

These skip on machines without CUDA (CI has none); run them where there is one with
``python -m pytest -m gpu``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_cli.engine import ErrorMinimizingNoise, create_model
from unlearn_cli.faces.detection import FaceDetector
from unlearn_cli.io.images import load_photo

from .conftest import FAST_OPTIONS
from .test_cli import _assert_within_budget, run
from .test_engine import SMALL_RUN, _separable
from .test_face_protection import _check_written, _copy, _protect
from .test_verify import protected_stripes, stripes_learnability_options, verify

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    return torch.device("cuda")


def test_minmin_on_the_gpu_in_mixed_precision_keeps_the_budget_and_lowers_the_loss(
    cuda: torch.device,
) -> None:
    own, _ = _separable(6, 1, seed=1)
    own_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    others, other_labels = _separable(6, 3, seed=2)
    settings = dataclasses.replace(SMALL_RUN.for_device(cuda), mixed_precision=True)
    model = create_model("resnet_small", 5, seed=0).to(cuda)
    noise = (
        ErrorMinimizingNoise(model, settings)
        .generate(own, own_labels, others, other_labels + 2, torch.Generator().manual_seed(0))
        .noise
    )
    assert noise.device.type == "cuda" and noise.dtype == torch.float32
    assert torch.isfinite(noise).all() and noise.abs().max() <= 8 / 255 + 1e-6
    model.eval()
    own, own_labels = own.to(cuda), own_labels.to(cuda)
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(own), own_labels)
        noisy = torch.nn.functional.cross_entropy(model((own + noise).clamp(0, 1)), own_labels)
    assert noisy < clean


def test_the_gpu_finds_the_faces_the_cpu_finds(shared_data: Path, cuda: torch.device) -> None:
    photos = [
        *sorted((shared_data / "photos" / "group").glob("*.jpg"))[:2],
        *sorted((shared_data / "photos" / "portraits").glob("*/*.jpg"))[:3],
    ]
    on_cpu, on_gpu = FaceDetector(device=torch.device("cpu")), FaceDetector(device=cuda)
    for path in photos:
        rgb = load_photo(path).rgb
        expected, found = on_cpu.detect(rgb), on_gpu.detect(rgb)
        assert len(found) == len(expected) > 0, path.name
        for cpu_face, gpu_face in zip(expected, found, strict=True):
            width = cpu_face.box[2] - cpu_face.box[0]  # within 2% of the face's width
            assert np.abs(np.subtract(gpu_face.box, cpu_face.box)).max() <= 0.02 * width, path
            assert np.abs(gpu_face.landmarks - cpu_face.landmarks).max() <= 0.02 * width, path


def test_protect_on_the_gpu_keeps_the_budget_and_says_so(
    photo_folder: Path, tiny_surrogate: Path, cuda: torch.device
) -> None:
    result = run(
        "protect", str(photo_folder), "--surrogate", str(tiny_surrogate), "--json",
        "--device", "cuda", *FAST_OPTIONS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["optimisation"]["device"] == "cuda"
    assert manifest["totals"]["protected"] == 4
    _assert_within_budget(manifest, photo_folder, photo_folder.with_name("me-protected"), 8)


def test_faces_in_group_photos_are_protected_on_the_gpu(
    shared_data: Path, tmp_path: Path, tiny_surrogate: Path, cuda: torch.device
) -> None:
    group = sorted((shared_data / "photos" / "group").glob("*.jpg"))[:3]
    folder = _copy(group, tmp_path / "group")
    result, manifest = _protect(folder, tiny_surrogate, "--device", "cuda")
    assert result.exit_code == 0, result.stderr
    assert {photo["protected_as"] for photo in manifest["photos"]} == {"faces"}
    _check_written(folder, manifest)


def test_learnability_trains_its_attackers_on_the_gpu(tmp_path: Path, cuda: torch.device) -> None:
    protected = protected_stripes(tmp_path, "--device", "cuda")
    options = [*stripes_learnability_options(tmp_path), "--epochs", "20", "--device", "cuda"]
    result, report = verify(str(protected), *options)
    learnability = report["checks"]["learnability"]
    assert result.exit_code == 0, (result.output, learnability["results"])
    assert learnability["settings"]["device"] == "cuda"
    (row,) = learnability["results"]
    assert row["clean"] >= 0.75 and row["protected"] <= 0.5 * row["clean"]
