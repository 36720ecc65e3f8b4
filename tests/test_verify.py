"""unlearn verify: tampering is detected and named, moved folders still verify, and the
learnability check tells protected photos from unprotected copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from unlearn_cli.cli import app

runner = CliRunner()


def verify(*args: str):
    result = runner.invoke(app, ["verify", *args, "--json", "--quiet"])
    return result, json.loads(result.stdout) if result.stdout else None


def test_untouched_folder_passes(protected: Path) -> None:
    result, report = verify(str(protected))
    assert result.exit_code == 0, result.output
    assert report["passed"] and report["checks"]["budget"]["passed"]
    assert all(p["budget"]["linf"] <= 8 and p["integrity"] == "ok" for p in report["photos"])
    assert report["unknown_files"] == []


def test_one_pixel_over_the_budget_is_named(protected: Path) -> None:
    target = protected / "img2.png"
    pixels = np.asarray(Image.open(target)).copy()
    pixels[3, 4, 1] = (int(pixels[3, 4, 1]) + 40) % 256
    Image.fromarray(pixels).save(target)
    result, report = verify(str(protected))
    assert result.exit_code == 1
    assert report["checks"]["budget"]["failed"] == ["img2.png"]
    assert report["checks"]["integrity"]["failed"] == ["img2.png"]
    assert "img2.png: L-inf" in result.stderr and "exceeds the budget of 8" in result.stderr


def test_jpeg_re_encoding_is_named(protected: Path) -> None:
    target = protected / "img1.png"
    Image.open(target).convert("RGB").save(target, format="JPEG", quality=95)
    result, report = verify(str(protected))
    assert result.exit_code == 1
    assert report["checks"]["integrity"]["failed"] == ["img1.png"]
    assert "img1.png: edited, re-encoded or replaced" in result.stderr


def test_deleted_and_added_files_are_named(protected: Path) -> None:
    (protected / "img0.png").unlink()
    shutil.copy(protected / "img3.png", protected / "stranger.png")
    result, report = verify(str(protected))
    assert result.exit_code == 1
    assert report["checks"]["integrity"]["failed"] == ["img0.png"]
    assert report["unknown_files"] == ["stranger.png"]
    assert "img0.png: missing" in result.stderr


def test_moved_folder_and_moved_originals(
    protected: Path, photo_folder: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "done"
    shutil.move(protected, moved)
    result, report = verify(str(moved))
    assert result.exit_code == 0 and report["passed"]
    shutil.move(photo_folder, tmp_path / "originals")
    result, report = verify(str(moved))
    assert result.exit_code == 1 and "original not found" in result.stderr
    result, report = verify(str(moved), "--originals", str(tmp_path / "originals"))
    assert result.exit_code == 0 and report["passed"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 2 and "no unlearn-manifest.json" in result.stderr


def test_verify_help_documents_the_learnability_size() -> None:
    text = runner.invoke(app, ["verify", "--help"]).stdout
    assert "--learnability" in text and "minutes" in text and "Exit codes" in text


def _stripes(seed: int, angle: float, size: int = 32) -> Image.Image:
    """A class is a stripe orientation; colour and phase vary at random within it."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size]
    wave = np.sin((np.cos(angle) * xs + np.sin(angle) * ys) * 0.8 + rng.uniform(0, 2 * np.pi))
    pixels = rng.uniform(60, 190, 3) + 20 * wave[..., None] + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def protected_stripes(tmp_path: Path, *options: str) -> Path:
    """A tiny setting that runs in seconds: stripe classes, class-wise noise with a large budget
    (eps 64) so that the effect is unmistakable; "me" protected against the "ref" classes."""
    seed = 0
    for name, angle in {"me": 0.0, "ref/a": np.pi / 4, "ref/b": np.pi / 2, "ref/c": 2.4}.items():
        (tmp_path / name).mkdir(parents=True)
        for index in range(24):
            _stripes(seed, angle).save(tmp_path / name / f"{index}.png")
            seed += 1
    result = runner.invoke(
        app,
        [
            "protect", str(tmp_path / "me"), "--surrogate", str(tmp_path / "ref"), "--eps", "64",
            "--mode", "class", "--resolution", "16", "--rounds", "5", "--min-rounds", "5",
            "--quiet", *options,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return tmp_path / "me-protected"


def stripes_learnability_options(tmp_path: Path) -> list[str]:
    """One small attacker, trained on ``protected_stripes`` against the "ref" classes."""
    reference = str(tmp_path / "ref")
    return ["--learnability", "--reference", reference, "--architecture", "vgg_small"]


def test_learnability_fails_on_unprotected_copies_and_passes_on_protected(tmp_path: Path) -> None:
    protected = protected_stripes(tmp_path)
    options = [
        *stripes_learnability_options(tmp_path),
        "--epochs",
        "20",
        "--report",
        str(tmp_path / "report"),
    ]
    result, report = verify(str(protected), *options)
    learnability = report["checks"]["learnability"]
    assert result.exit_code == 0, (result.output, learnability["results"])
    (row,) = learnability["results"]
    assert row["clean"] >= 0.75 and row["protected"] <= 0.5 * row["clean"]
    assert not learnability["optimistic"] and learnability["chance"] == 0.25
    assert learnability["settings"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert len(learnability["curves"]["vgg_small"]["protected"]) == 20
    for name in ("contact_sheet.png", "learning_curves.png"):
        with Image.open(tmp_path / "report" / name) as image:
            assert image.format == "PNG" and image.width > 100
    page = (tmp_path / "report" / "report.html").read_text()
    assert "data:image/png;base64," in page and "Learnability" in page

    for photo in json.loads((protected / "unlearn-manifest.json").read_text())["photos"]:
        Image.open(tmp_path / "me" / photo["source"]).save(protected / photo["output"])
    result, report = verify(str(protected), *options)
    learnability = report["checks"]["learnability"]
    assert result.exit_code == 1 and not learnability["passed"]
    assert "not below" in learnability["reason"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_learnability_on_a_gpu_that_is_not_there_is_a_usage_error(protected: Path) -> None:
    result, _ = verify(str(protected), "--learnability", "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA GPU is available" in result.stderr
    result, _ = verify(str(protected), "--learnability", "--device", "tpu")
    assert result.exit_code == 2 and "--device must be auto, cpu or cuda" in result.stderr


def _portrait(tmp_path: Path) -> tuple[Path, dict, dict]:
    """A 300x240 photo with a recorded face (template landmarks, 80 px wide, centre 150, 120)
    and a smaller second face; and its manifest entry as protect writes it."""
    from unlearn_cli.faces.detection import ARCFACE_SIZE, ARCFACE_TEMPLATE

    generator = np.random.default_rng(0)
    small = generator.integers(0, 256, (30, 24, 3), dtype=np.uint8)
    path = tmp_path / "portrait.png"
    Image.fromarray(small).resize((240, 300), Image.Resampling.BICUBIC).save(path)
    marks = (ARCFACE_TEMPLATE - 55.5) * (80 / ARCFACE_SIZE) + (120, 150)
    main = {
        "box": [80.0, 110.0, 160.0, 190.0],
        "confidence": 0.99,
        "landmarks": marks.round(1).tolist(),
        "protected": True,
    }
    other = {**main, "box": [10.0, 10.0, 40.0, 40.0], "landmarks": (marks / 4).tolist()}
    return path, {"protected_as": "faces", "faces": [other, main]}, main


def test_learnability_learns_photos_protected_in_their_faces_as_face_crops(
    tmp_path: Path,
) -> None:
    from unlearn_cli.faces.detection import DetectedFace, aligned_crop, alignment_matrix
    from unlearn_cli.io.images import load_photo
    from unlearn_cli.verify.countermeasures import Countermeasure
    from unlearn_cli.verify.learnability import learned_face, model_input

    path, photo, main = _portrait(tmp_path)
    face = learned_face(photo)
    assert face is not None and face.box == tuple(main["box"])  # the largest protected face
    assert learned_face({**photo, "protected_as": "whole image: no face found"}) is None
    unprotected = {**photo, "faces": [{**f, "protected": False} for f in photo["faces"]]}
    assert learned_face(unprotected) is None

    crop = model_input(path, face, 64, Countermeasure.plain)
    expected = aligned_crop(load_photo(path).rgb, alignment_matrix(face, 64), 64)
    assert torch.equal(crop, expected)
    whole = model_input(path, None, 64, Countermeasure.plain)
    assert (crop.float() - whole.float()).abs().mean() > 20  # not the photo squeezed

    halved = model_input(path, face, 64, Countermeasure.downscale2x)  # the face moved along
    assert (halved.float() - crop.float()).abs().mean() < 6
    assert DetectedFace.from_dict(main).resized(0.5, 0.5).box == (40.0, 55.0, 80.0, 95.0)


def test_learnability_uses_the_recorded_face_of_each_face_mode_photo(
    protected: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    """Every decode of a photo protected in its faces (its protected copy to train on, its
    original as a clean baseline or held-out photo) cuts that face; the others stay whole."""
    from unlearn_cli.verify import learnability
    from unlearn_cli.verify.files import read_manifest

    manifest = read_manifest(protected)
    face_photo = manifest["photos"][0]
    marks = [[10.0, 10.0], [20.0, 10.0], [15.0, 15.0], [11.0, 20.0], [19.0, 20.0]]
    face_photo["protected_as"] = "faces"
    face_photo["faces"] = [
        {"box": [5.0, 5.0, 25.0, 25.0], "confidence": 0.99, "landmarks": marks, "protected": True}
    ]
    seen: dict[str, set[bool]] = {}
    real_model_input = learnability.model_input

    def spy(path: Path, face, resolution: int, countermeasure) -> torch.Tensor:
        seen.setdefault(path.stem, set()).add(face is not None)
        return real_model_input(path, face, resolution, countermeasure)

    monkeypatch.setattr(learnability, "model_input", spy)
    settings = learnability.LearnabilitySettings(
        architectures=("vgg_small",), epochs=1, resolution=16
    )
    learnability.measure_learnability(protected, manifest, None, tiny_surrogate, settings)
    face_stem = Path(face_photo["source"]).stem
    assert seen.pop(face_stem) == {True}
    assert seen and all(faces == {False} for faces in seen.values())
