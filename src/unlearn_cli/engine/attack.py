"""The attacker: a fresh model trained from scratch on scraped photos, tested on clean ones.

Protection is measured the honest way: an architecture that is not the surrogate's is trained
with ordinary augmentation on reference identities plus the (protected or clean) photos of the
user, and we count how many of the user's held-out clean photos it recognises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .augment import AugmentSettings
from .models import create_model
from .training import TrainSettings, predict, train


@dataclass(frozen=True)
class AttackSettings:
    """An ordinary training recipe: SGD, cosine schedule, random crop-like shifts and flips."""

    architecture: str = "vgg_small"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    augment: AugmentSettings | None = AugmentSettings()


@dataclass(frozen=True)
class AttackResult:
    """Share of each target class's held-out clean photos recognised, after every epoch."""

    architecture: str
    recognised: dict[int, float]
    curve: list[dict[int, float]] = field(default_factory=list)


def recognition_rates(
    predictions: torch.Tensor, labels: torch.Tensor, targets: list[int]
) -> dict[int, float]:
    """For every target class, the share of its test images predicted as that class."""
    rates = {}
    for target in targets:
        mask = labels == target
        rates[target] = float((predictions[mask] == target).float().mean()) if mask.any() else 0.0
    return rates


def run_attack(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    settings: AttackSettings,
    seed: int,
    device: torch.device | str = "cpu",
) -> AttackResult:
    """Train ``settings.architecture`` from scratch and measure recognition of the test classes."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    targets = sorted(set(test_labels.tolist()))
    model = create_model(settings.architecture, num_classes, seed=seed).to(device)
    generator = torch.Generator().manual_seed(seed)
    curve: list[dict[int, float]] = []

    def after_epoch(_epoch: int, _loss: float) -> None:
        curve.append(recognition_rates(predict(model, test_images), test_labels, targets))

    train(
        model,
        train_images,
        train_labels,
        TrainSettings(
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=settings.lr,
            augment=settings.augment,
        ),
        generator,
        on_epoch=after_epoch,
    )
    return AttackResult(settings.architecture, curve[-1], curve)
