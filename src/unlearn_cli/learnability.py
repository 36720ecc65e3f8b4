"""The honest test of protection: can a fresh model still learn the user from protected photos?

Some of each protected class's originals are held out as clean "future photos". Fresh models
(architectures other than the surrogate's, trained from scratch with ordinary augmentation) learn
reference identities plus the *protected* versions of the other photos; we count how many of the
held-out clean photos they recognise, and compare with the same training on the clean originals.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .engine.attack import AttackSettings, run_attack
from .errors import ImageError, SetupError
from .images import load_photo, resize_for_model
from .surrogates import NAMED_SURROGATES, load_surrogate, surrogate_images
from .verify import original_path


@dataclass(frozen=True)
class LearnabilitySettings:
    """Sized for minutes on a laptop CPU: two architectures, 30 epochs at 64 px, up to
    8 reference identities of 100 photos each (4 trainings of one to two minutes each).
    MobileNet is not a default: from scratch on a few hundred faces it stayed at chance even
    on clean photos, which says nothing about protection."""

    architectures: tuple[str, ...] = ("vgg_small", "resnet18_imagenet")
    epochs: int = 30
    resolution: int = 64
    holdout: float = 0.34
    max_reference_classes: int = 8
    max_per_class: int = 100
    max_ratio: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.holdout < 1:
            raise SetupError(f"--holdout must be between 0 and 1, got {self.holdout}")
        if not 0 < self.max_ratio <= 1:
            raise SetupError(f"--max-ratio must be in (0, 1], got {self.max_ratio}")
        if self.epochs < 1 or not self.architectures:
            raise SetupError("--epochs must be >= 1 and at least one architecture is needed")


@dataclass(frozen=True)
class _Split:
    train: list[dict]
    test: list[dict]


def split_photos(photos: list[dict], holdout: float, seed: int) -> dict[str, _Split]:
    """Per class, a seeded share of the photos held out as clean test photos."""
    by_class: dict[str, list[dict]] = {}
    for photo in photos:
        by_class.setdefault(photo["class"], []).append(photo)
    splits = {}
    for name, members in sorted(by_class.items()):
        if len(members) < 2:
            raise SetupError(
                f"class {name} has {len(members)} photo; learnability needs at least 2"
            )
        order = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed)).tolist()
        held = max(1, min(len(members) - 1, math.ceil(len(members) * holdout)))
        shuffled = [members[i] for i in order]
        splits[name] = _Split(train=shuffled[held:], test=shuffled[:held])
    return splits


def _decode(paths: list[Path], resolution: int) -> torch.Tensor:
    try:
        return torch.stack([resize_for_model(load_photo(path), resolution) for path in paths])
    except ImageError as error:
        raise SetupError(f"learnability cannot read {error}") from error


def measure_learnability(
    folder: Path,
    manifest: dict,
    originals: Path | None,
    reference: Path | None,
    settings: LearnabilitySettings,
    on_training: Callable[[str], None] | None = None,
) -> dict:
    """Train attackers on protected and on clean photos; report recognition of held-out photos."""
    started = time.perf_counter()
    photos = [p for p in manifest["photos"] if (folder / p["output"]).is_file()]
    splits = split_photos(photos, settings.holdout, settings.seed)
    class_names = sorted(splits)
    optimistic = reference is None
    spec = None
    if reference is None:
        recorded = manifest.get("surrogate") or {}
        if not recorded.get("root") or not Path(recorded["root"]).is_dir():
            raise SetupError(
                "no reference identities: the surrogate of the manifest is not here; "
                "pass --reference DIR with a <class>/<image> folder"
            )
        reference = Path(recorded["root"])
        spec = NAMED_SURROGATES.get(recorded.get("source", ""))
    references = load_surrogate(
        reference,
        spec,
        protected_names=set(class_names),
        protected_hashes={p["source_sha256"] for p in photos},
    )
    references = replace(references, classes=references.classes[: settings.max_reference_classes])
    reference_images, reference_labels = surrogate_images(
        references, settings.resolution, settings.max_per_class
    )
    reference_labels = reference_labels + len(class_names)

    def images_of(part: str, protected: bool) -> tuple[torch.Tensor, torch.Tensor]:
        paths, labels = [], []
        for index, name in enumerate(class_names):
            for photo in getattr(splits[name], part):
                use_output = protected and part == "train"
                paths.append(
                    folder / photo["output"]
                    if use_output
                    else original_path(manifest, photo, originals)
                )
                labels.append(index)
        return _decode(paths, settings.resolution), torch.tensor(labels)

    test_images, test_labels = images_of("test", protected=False)
    train_sets = {
        "clean": images_of("train", protected=False),
        "protected": images_of("train", protected=True),
    }
    results, curves = [], {}
    for architecture in settings.architectures:
        attack = AttackSettings(architecture=architecture, epochs=settings.epochs)
        outcome = {}
        for condition, (own_images, own_labels) in train_sets.items():
            if on_training is not None:
                on_training(f"{architecture} on {condition} photos")
            outcome[condition] = run_attack(
                torch.cat([reference_images, own_images]),
                torch.cat([reference_labels, own_labels]),
                test_images,
                test_labels,
                attack,
                seed=settings.seed,
            )
        curves[architecture] = {
            condition: [
                {class_names[k]: round(v, 4) for k, v in epoch.items()} for epoch in result.curve
            ]
            for condition, result in outcome.items()
        }
        for index, name in enumerate(class_names):
            clean = outcome["clean"].recognised[index]
            protected = outcome["protected"].recognised[index]
            results.append(
                {
                    "architecture": architecture,
                    "class": name,
                    "clean": round(clean, 4),
                    "protected": round(protected, 4),
                    "passed": protected <= settings.max_ratio * clean,
                }
            )
    chance = 1 / (len(class_names) + len(references.classes))
    weak = [r for r in results if r["clean"] <= chance]
    passed = all(r["passed"] for r in results) and not weak
    reason = None
    if weak:
        reason = (
            "the clean baseline recognised no more than chance for "
            + ", ".join(f"{r['class']} ({r['architecture']})" for r in weak)
            + ": too few photos to judge"
        )
    elif not passed:
        reason = "protected accuracy is not below max_ratio x the clean baseline for " + ", ".join(
            f"{r['class']} ({r['architecture']})" for r in results if not r["passed"]
        )
    return {
        "passed": passed,
        "reason": reason,
        "optimistic": optimistic,
        "reference": str(reference),
        "reference_classes": [c.name for c in references.classes],
        "chance": round(chance, 4),
        "held_out": {name: len(splits[name].test) for name in class_names},
        "trained_on": {name: len(splits[name].train) for name in class_names},
        "settings": {**asdict(settings), "architectures": list(settings.architectures)},
        "results": results,
        "curves": curves,
        "seconds": round(time.perf_counter() - started, 1),
    }
