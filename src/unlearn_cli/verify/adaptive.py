"""Attackers that never train on the user: they enrol the photos in the embedding of a model
trained on other people (a stand-in trained here, facenet when its weights are cached,
dlib's pretrained recogniser with the recognition extra) and match new photos to them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch

from unlearn_cli.engine.attack import (
    AttackSettings,
    probe_recognition,
    train_feature_extractor,
)
from unlearn_cli.engine.training import embed
from unlearn_cli.faces.embedder import FaceEmbedder, facenet_available

if TYPE_CHECKING:
    from unlearn_cli.verify.learnability import LearnabilitySettings

ADAPTIVE_EXTRACTOR = "resnet18_imagenet"
DLIB_RESOLUTION = 150  # the face crops dlib enrols: its own aligned chip is 150 px


def adaptive_rates(
    references: tuple[torch.Tensor, torch.Tensor],
    galleries: dict[str, tuple[torch.Tensor, torch.Tensor]],
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    settings: LearnabilitySettings,
    device: torch.device,
) -> dict[str, dict[str, dict[int, float]]]:
    """Per attacker (embedding and matching method) and gallery (clean or protected
    enrolment), the share of each class's held-out photos matched to it, in the embedding of a
    model that never saw the user: the proxy trained here on the references, and the pretrained
    face model too when its weights are cached (as a real attacker would download them)."""
    reference_images, reference_labels = references
    extractor = train_feature_extractor(
        reference_images,
        reference_labels,
        AttackSettings(architecture=ADAPTIVE_EXTRACTOR, epochs=settings.epochs),
        seed=settings.seed,
        device=device,
    )
    embedders: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "adaptive": partial(embed, extractor)
    }
    if facenet_available():
        embedders["adaptive-facenet"] = FaceEmbedder(device).embed
    rates: dict[str, dict[str, dict[int, float]]] = {}
    for prefix, embedder in embedders.items():
        rates |= rates_by_method(prefix, embedder, galleries, test_images, test_labels)
    return rates


def rates_by_method(
    prefix: str,
    embedder: Callable[[torch.Tensor], torch.Tensor],
    galleries: dict[str, tuple[torch.Tensor, torch.Tensor]],
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
) -> dict[str, dict[str, dict[int, float]]]:
    """``{prefix}-{matching method}`` -> gallery condition -> each class's share matched."""
    rates: dict[str, dict[str, dict[int, float]]] = {}
    for condition, (images, labels) in galleries.items():
        by_method = probe_recognition(embedder, images, labels, test_images, test_labels)
        for method, by_class in by_method.items():
            rates.setdefault(f"{prefix}-{method}", {})[condition] = by_class
    return rates
