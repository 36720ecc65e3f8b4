"""Countermeasures and the adaptive attacker: each does what it says, and verify --learnability
reports every requested attack beside the plain one."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.cli.output import print_verify
from unlearn_cli.engine.attack import AttackSettings, probe_recognition
from unlearn_cli.engine.models import create_model
from unlearn_cli.engine.training import (
    TrainSettings,
    adversarial_examples,
    mixup,
    sample_beta,
    train,
)
from unlearn_cli.errors import SetupError
from unlearn_cli.surrogates import load_surrogate, surrogate_images
from unlearn_cli.verify import learnability
from unlearn_cli.verify.countermeasures import (
    Countermeasure,
    attack_settings_for,
    jpeg_encode,
    parse_countermeasures,
    sanitise,
)
from unlearn_cli.verify.files import read_manifest
from unlearn_cli.verify.learnability import (
    LearnabilitySettings,
    _sanitised_references,
    _verdict,
    measure_learnability,
)

from .conftest import pattern_image

runner = CliRunner()


@pytest.fixture
def photo() -> np.ndarray:
    return np.asarray(pattern_image(7, (51, 37)))


def test_jpeg_is_a_real_re_encode_whose_size_and_loss_follow_the_quality(
    photo: np.ndarray,
) -> None:
    sizes = [len(jpeg_encode(photo, quality)) for quality in (50, 75, 90)]
    assert sizes[0] < sizes[1] < sizes[2]
    errors = []
    for countermeasure, quality in (("jpeg50", 50), ("jpeg75", 75), ("jpeg90", 90)):
        out = sanitise(photo, Countermeasure(countermeasure))
        assert out.shape == photo.shape and out.dtype == np.uint8
        decoded = np.asarray(Image.open(io.BytesIO(jpeg_encode(photo, quality))).convert("RGB"))
        assert np.array_equal(out, decoded)
        errors.append(np.abs(out.astype(int) - photo.astype(int)).mean())
    assert errors[0] > errors[1] > errors[2] > 0


def test_grayscale_has_equal_channels_and_downscale_halves_the_photo(photo: np.ndarray) -> None:
    grey = sanitise(photo, Countermeasure.grayscale)
    assert grey.shape == photo.shape
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert not np.array_equal(grey, photo)
    small = sanitise(photo, Countermeasure.downscale2x)
    assert small.shape == (18, 25, 3) and small.dtype == np.uint8


@pytest.mark.parametrize("name", ["plain", "strong-augment", "adversarial-training"])
def test_training_time_countermeasures_leave_photos_alone(photo: np.ndarray, name: str) -> None:
    assert sanitise(photo, Countermeasure(name)) is photo
    assert not Countermeasure(name).changes_photos


def test_attack_settings_for_training_time_countermeasures() -> None:
    base = AttackSettings(architecture="resnet18_imagenet", epochs=7)
    strong = attack_settings_for(Countermeasure.strong_augment, base)
    assert strong.mixup_alpha == 1.0 and strong.augment is not None
    assert (strong.augment.max_shift, strong.augment.min_scale, strong.augment.max_scale) == (
        0.2,
        0.7,
        1.3,
    )
    adversarial = attack_settings_for(Countermeasure.adversarial_training, base)
    assert adversarial.adversarial_eps == pytest.approx(8 / 255)
    assert adversarial.adversarial_steps == 3 and adversarial.mixup_alpha == 0
    assert attack_settings_for(Countermeasure.jpeg75, base) == base
    assert strong.epochs == adversarial.epochs == 7


def test_parse_countermeasures() -> None:
    assert parse_countermeasures("jpeg75, grayscale,jpeg75") == (
        Countermeasure.jpeg75,
        Countermeasure.grayscale,
    )
    every = parse_countermeasures("all")
    assert Countermeasure.plain not in every and len(every) == len(Countermeasure) - 1
    with pytest.raises(SetupError, match="unknown countermeasure 'jpeg33'"):
        parse_countermeasures("jpeg75,jpeg33")


def test_beta_draws_have_the_right_mean_and_variance() -> None:
    generator = torch.Generator().manual_seed(0)
    for alpha in (0.2, 1.0, 4.0):
        draws = np.array([sample_beta(alpha, generator) for _ in range(3000)])
        assert ((draws >= 0) & (draws <= 1)).all()
        assert draws.mean() == pytest.approx(0.5, abs=0.03)
        assert draws.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.15)


def test_mixup_blends_pairs_of_the_batch() -> None:
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.rand(6, 3, 4, 4), torch.arange(6)
    mixed, partner_labels, weight = mixup(images, labels, 1.0, generator)
    assert 0 < weight < 1
    assert torch.allclose(mixed, weight * images + (1 - weight) * images[partner_labels])


def test_adversarial_examples_stay_in_the_ball_raise_the_loss_and_spare_batch_norm() -> None:
    model = create_model("vgg_small", 3, seed=0)
    model.train()
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8) % 3
    statistics = model.backbone[1].running_mean.clone()
    eps = 8 / 255
    adversarial = adversarial_examples(
        model, images, labels, eps, 3, torch.Generator().manual_seed(0)
    )
    assert (adversarial - images).abs().max() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert model.training and torch.equal(model.backbone[1].running_mean, statistics)
    model.eval()
    with torch.no_grad():
        clean_loss = torch.nn.functional.cross_entropy(model(images), labels)
        attacked_loss = torch.nn.functional.cross_entropy(model(adversarial), labels)
    assert attacked_loss > clean_loss


def _trained_weights(settings: TrainSettings) -> tuple[torch.Tensor, list[float]]:
    model = create_model("vgg_small", 3, seed=0)
    data = torch.Generator().manual_seed(5)
    images, labels = torch.rand(16, 3, 16, 16, generator=data), torch.arange(16) % 3
    losses = train(model, images, labels, settings, torch.Generator().manual_seed(0))
    return model.head.weight.detach().clone(), losses


def test_mixup_and_adversarial_training_change_the_training() -> None:
    plain = TrainSettings(epochs=2, batch_size=8)
    reference, plain_losses = _trained_weights(plain)
    again, again_losses = _trained_weights(plain)
    assert torch.equal(reference, again) and plain_losses == again_losses
    for variant in (replace(plain, mixup_alpha=1.0), replace(plain, adversarial_eps=8 / 255)):
        weights, losses = _trained_weights(variant)
        assert not torch.equal(weights, reference) and losses != plain_losses


def _one_hot_images(classes: list[int], extra: int | None = None, noise: float = 0.05):
    """Images whose pixels are a one-hot class code (plus an optional second code at half
    strength), so that the identity is a perfect embedding."""
    generator = torch.Generator().manual_seed(len(classes))
    codes = torch.eye(3)[classes]
    if extra is not None:
        codes = codes + 0.5 * torch.eye(3)[extra]
    return codes + noise * torch.rand(len(classes), 3, generator=generator)


def test_probe_recognises_a_separable_user_and_not_one_enrolled_with_another_face() -> None:
    def identity(images: torch.Tensor) -> torch.Tensor:
        return images

    labels = torch.tensor([1] * 5 + [2] * 5 + [0] * 5)
    test_labels = torch.zeros(4, dtype=torch.long)
    honest = _one_hot_images([1] * 5 + [2] * 5 + [0] * 5)
    new_photos = _one_hot_images([0] * 4)
    rates = probe_recognition(identity, honest, labels, new_photos, test_labels)
    assert rates == {"nearest-centroid": {0: 1.0}, "linear-probe": {0: 1.0}}
    # the user's enrolled photos look like person 1; their new photos lean towards person 2
    misleading = _one_hot_images([1] * 5 + [2] * 5 + [1] * 5)
    new_photos = _one_hot_images([0] * 4, extra=2)
    rates = probe_recognition(identity, misleading, labels, new_photos, test_labels)
    assert rates == {"nearest-centroid": {0: 0.0}, "linear-probe": {0: 0.0}}


def test_uncached_reference_path_matches_the_cached_one(tiny_surrogate: Path) -> None:
    references = load_surrogate(tiny_surrogate, None, set(), set())
    cached_images, cached_labels = surrogate_images(references, 16, 5)
    images, labels = _sanitised_references(references, 16, 5, Countermeasure.plain)
    assert torch.equal(images, cached_images) and torch.equal(labels, cached_labels)
    jpeg_images, _ = _sanitised_references(references, 16, 5, Countermeasure.jpeg50)
    assert not torch.equal(jpeg_images, cached_images)


def test_verdict_names_every_failing_and_inconclusive_attack() -> None:
    row = {"architecture": "vgg_small", "countermeasure": "plain", "class": "me"}
    rows = [
        {**row, "passed": True, "inconclusive": False},
        {**row, "countermeasure": "jpeg75", "passed": False, "inconclusive": False},
        {**row, "architecture": "adaptive-linear-probe", "passed": True, "inconclusive": True},
    ]
    passed, reason = _verdict(rows)
    assert not passed
    assert "me (vgg_small, jpeg75)" in reason and "not below" in reason
    assert "chance for me (adaptive-linear-probe)" in reason
    assert _verdict(rows[:1]) == (True, None)


def test_learnability_rows_for_a_countermeasure_and_the_adaptive_attacker(
    protected: Path, tiny_surrogate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(learnability, "dlib_available", lambda: False)  # without the extra
    settings = LearnabilitySettings(
        architectures=("vgg_small",),
        epochs=1,
        resolution=16,
        countermeasures=("jpeg75",),
        adaptive=True,
    )
    assert settings.countermeasures == (Countermeasure.jpeg75,)
    trainings: list[str] = []
    result = measure_learnability(
        protected,
        read_manifest(protected),
        None,
        tiny_surrogate,
        settings,
        on_training=trainings.append,
    )
    attacks = [(r["architecture"], r["countermeasure"]) for r in result["results"]]
    assert attacks == [
        ("vgg_small", "plain"),
        ("vgg_small", "jpeg75"),
        ("adaptive-nearest-centroid", "plain"),
        ("adaptive-linear-probe", "plain"),
    ]
    for row in result["results"]:
        assert set(row) == {
            "architecture",
            "countermeasure",
            "class",
            "clean",
            "protected",
            "passed",
            "inconclusive",
        }
        assert row["class"] == "me" and 0 <= row["clean"] <= 1 and 0 <= row["protected"] <= 1
        assert row["inconclusive"] == (row["clean"] <= result["chance"])
    assert set(result["curves"]) == {"vgg_small"}
    assert len(result["countermeasure_curves"]["jpeg75"]["vgg_small"]["protected"]) == 1
    assert result["settings"]["countermeasures"] == ["jpeg75"]
    assert result["passed"] == all(r["passed"] and not r["inconclusive"] for r in result["results"])
    assert len(trainings) == 5 and "jpeg75" in trainings[2]
    assert result["recognition_attacker"] == "not installed: pip install 'unlearn-cli[recognition]'"
    console = Console(record=True, width=160)
    report = {"eps": 8, "photos": [], "unknown_files": [], "passed": False}
    print_verify(console, report | {"checks": {"learnability": result}})
    assert "pretrained face recogniser (dlib rows): not installed" in console.export_text()


@pytest.mark.usefixtures("face_weights_cached")
def test_cached_face_weights_add_the_pretrained_adaptive_attacker(
    protected: Path, tiny_surrogate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(learnability, "dlib_available", lambda: False)
    settings = LearnabilitySettings(
        architectures=("vgg_small",), epochs=1, resolution=16, adaptive=True
    )
    result = measure_learnability(
        protected, read_manifest(protected), None, tiny_surrogate, settings
    )
    assert [r["architecture"] for r in result["results"]] == [
        "vgg_small",
        "adaptive-nearest-centroid",
        "adaptive-linear-probe",
        "adaptive-facenet-nearest-centroid",
        "adaptive-facenet-linear-probe",
    ]
    assert "InceptionResnetV1" in result["adaptive_extractor"]


@pytest.mark.usefixtures("dlib_installed")
def test_verify_cli_runs_countermeasures_and_the_adaptive_attacker(
    protected: Path, tiny_surrogate: Path
) -> None:
    options = ["--reference", str(tiny_surrogate), "--architecture", "vgg_small", "--epochs", "1"]
    result = runner.invoke(
        app,
        [
            "verify",
            str(protected),
            "--learnability",
            *options,
            "--countermeasures",
            "jpeg75,grayscale",
            "--adaptive",
            "--json",
            "--quiet",
        ],
    )
    report = json.loads(result.stdout)
    learnability = report["checks"]["learnability"]
    assert result.exit_code == (0 if report["passed"] else 1), result.output
    assert [(r["architecture"], r["countermeasure"]) for r in learnability["results"]] == [
        ("vgg_small", "plain"),
        ("vgg_small", "jpeg75"),
        ("vgg_small", "grayscale"),
        ("adaptive-nearest-centroid", "plain"),
        ("adaptive-linear-probe", "plain"),
        ("dlib-nearest-centroid", "plain"),
        ("dlib-linear-probe", "plain"),
    ]
    assert learnability["settings"]["adaptive"] is True
    assert learnability["recognition_attacker"].startswith("dlib face recognition ResNet")
    console = Console(record=True, width=160)
    print_verify(console, report)
    table = console.export_text()
    assert "countermeasure" in table and "grayscale" in table
    assert "adaptive-linear-probe" in table


def test_unknown_countermeasure_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["verify", str(tmp_path), "--learnability", "--countermeasures", "jpeg33"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown countermeasure 'jpeg33'; choose from")
    assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["verify", str(tmp_path), "--adaptive"])
    assert result.exit_code == 2 and "need --learnability" in result.stderr


def test_verify_help_names_every_countermeasure_and_the_cost() -> None:
    text = " ".join(runner.invoke(app, ["verify", "--help"]).stdout.replace("│", " ").split())
    for countermeasure in Countermeasure:
        if countermeasure is not Countermeasure.plain:
            assert countermeasure.value in text
    assert "2 trainings per architecture" in text and "4x" in text and "--adaptive" in text
