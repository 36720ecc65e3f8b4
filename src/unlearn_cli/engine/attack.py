"""The attacker: a fresh model trained from scratch on scraped photos, tested on clean ones.

Protection is measured the honest way: an architecture that is not the surrogate's is trained
with ordinary augmentation on reference identities plus the (protected or clean) photos of the
user, and we count how many of the user's held-out clean photos it recognises.

The adaptive attacker skips training on the user altogether: a feature extractor learnt on other
identities embeds the scraped photos (the gallery), and new photos are matched to them. Noise
that only poisons training gives no shortcut here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentSettings
from .models import Classifier, create_model
from .training import TrainSettings, predict, train


@dataclass(frozen=True)
class AttackSettings:
    """An ordinary training recipe: SGD, cosine schedule, random crop-like shifts and flips.
    ``mixup_alpha`` and ``adversarial_eps`` turn on the training-time countermeasures."""

    architecture: str = "vgg_small"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    augment: AugmentSettings | None = AugmentSettings()
    mixup_alpha: float = 0.0
    adversarial_eps: float = 0.0
    adversarial_steps: int = 3

    def train_settings(self) -> TrainSettings:
        return TrainSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            augment=self.augment,
            mixup_alpha=self.mixup_alpha,
            adversarial_eps=self.adversarial_eps,
            adversarial_steps=self.adversarial_steps,
        )


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
        settings.train_settings(),
        generator,
        on_epoch=after_epoch,
    )
    return AttackResult(settings.architecture, curve[-1], curve)


def train_feature_extractor(
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: AttackSettings,
    seed: int,
    device: torch.device | str = "cpu",
) -> Classifier:
    """A classifier trained from scratch on identities that are not the user's; its
    ``features`` are the embedding (a stand-in for a pretrained face recogniser)."""
    model = create_model(settings.architecture, int(labels.max()) + 1, seed=seed).to(device)
    generator = torch.Generator().manual_seed(seed)
    train(model, images, labels, settings.train_settings(), generator)
    return model


def probe_recognition(
    embed: Callable[[torch.Tensor], torch.Tensor],
    gallery_images: torch.Tensor,
    gallery_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
) -> dict[str, dict[int, float]]:
    """Per matching method, the share of each test class's images matched to that class.

    The gallery (every class's enrolled photos) and the test photos are embedded by ``embed``
    and L2-normalised. "nearest-centroid": the class whose normalised mean embedding is most
    cosine-similar. "linear-probe": a class-balanced logistic regression on the frozen gallery
    embeddings. Both are deterministic."""
    gallery = F.normalize(embed(gallery_images).float(), dim=1)
    test = F.normalize(embed(test_images).float(), dim=1)
    classes, gallery_index = torch.unique(gallery_labels, sorted=True, return_inverse=True)
    targets = sorted(set(test_labels.tolist()))
    centroids = torch.zeros(len(classes), gallery.shape[1]).index_add_(0, gallery_index, gallery)
    centroids = F.normalize(centroids, dim=1)
    by_centroid = classes[(test @ centroids.T).argmax(1)]
    head = _logistic_regression(gallery, gallery_index, len(classes))
    by_probe = classes[head(test).argmax(1)]
    return {
        "nearest-centroid": recognition_rates(by_centroid, test_labels, targets),
        "linear-probe": recognition_rates(by_probe, test_labels, targets),
    }


def _logistic_regression(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float = 1e-4
) -> nn.Linear:
    """A linear head fitted by full-batch L-BFGS from zeros, each class weighted by the inverse
    of its size so that a user with few photos is not outvoted by larger reference classes."""
    head = nn.Linear(features.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    class_weights = len(labels) / (num_classes * torch.bincount(labels, minlength=num_classes))
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(features), labels, weight=class_weights.float())
        loss = loss + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    head.requires_grad_(False)
    return head
