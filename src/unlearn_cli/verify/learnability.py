"""The honest test of protection: can a fresh model still learn the user from protected photos?

Some of each protected class's originals are held out as clean "future photos". Fresh models
(architectures other than the surrogate's, trained from scratch with ordinary augmentation) learn
reference identities plus the *protected* versions of the other photos; we count how many of the
held-out clean photos they recognise, and compare with the same training on the clean originals.

Countermeasures (JPEG, grayscale, downscaling, strong augmentation, adversarial training) are
applied to everything the attacker trains on, references and the clean baseline included; the
held-out photos stay clean originals, as the new photos an attacker meets would be. The adaptive
attackers enrol the photos in the embedding of a model that never saw the user: one trained here
on the references alone, and dlib's pretrained face recogniser when the recognition extra is
installed (the attack met in practice; it never generates noise).

Photos protected in their faces are learned and tested as a face-recognition pipeline sees
them: the aligned crop of the main face, not the whole photo squeezed (where the face would be
a few pixels and the noise, which is only on the face, would barely matter).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from unlearn_cli.engine.attack import (
    AttackSettings,
    run_attack,
)
from unlearn_cli.errors import ImageError, SetupError
from unlearn_cli.faces.detection import DetectedFace, aligned_crop, alignment_matrix
from unlearn_cli.faces.embedder import FaceEmbedder, facenet_available
from unlearn_cli.faces.recognition import RECOGNITION_EXTRA, DlibRecognizer, dlib_available
from unlearn_cli.faces.regions import Protection
from unlearn_cli.io.images import Photo, load_photo, resize_for_model
from unlearn_cli.runtime.devices import device_problem, resolve_device
from unlearn_cli.surrogates import NAMED_SURROGATES, Surrogate, load_surrogate, surrogate_images
from unlearn_cli.verify.adaptive import (
    ADAPTIVE_EXTRACTOR,
    DLIB_RESOLUTION,
    adaptive_rates,
    rates_by_method,
)
from unlearn_cli.verify.countermeasures import Countermeasure, attack_settings_for, sanitise
from unlearn_cli.verify.files import original_path


@dataclass(frozen=True)
class LearnabilitySettings:
    """Sized for minutes on a laptop CPU: two architectures, 30 epochs at 64 px, up to
    8 reference identities of 100 photos each (4 trainings of one to two minutes each).
    MobileNet is not a default: from scratch on a few hundred faces it stayed at chance even
    on clean photos, which says nothing about protection. Each countermeasure adds two
    trainings per architecture; ``adaptive`` adds one training of the feature extractor."""

    architectures: tuple[str, ...] = ("vgg_small", "resnet18_imagenet")
    epochs: int = 30
    resolution: int = 64
    holdout: float = 0.34
    max_reference_classes: int = 8
    max_per_class: int = 100
    max_ratio: float = 0.5
    seed: int = 0
    countermeasures: tuple[Countermeasure, ...] = ()
    adaptive: bool = False
    device: str = "auto"  # where the attackers train: auto is the GPU when there is one

    def __post_init__(self) -> None:
        if not 0 < self.holdout < 1:
            raise SetupError(f"--holdout must be between 0 and 1, got {self.holdout}")
        if not 0 < self.max_ratio <= 1:
            raise SetupError(f"--max-ratio must be in (0, 1], got {self.max_ratio}")
        if self.epochs < 1 or not self.architectures:
            raise SetupError("--epochs must be >= 1 and at least one architecture is needed")
        if problem := device_problem(self.device):
            raise SetupError(problem)
        try:
            chosen = tuple(Countermeasure(c) for c in self.countermeasures)
        except ValueError as error:
            raise SetupError(f"unknown countermeasure: {error}") from None
        object.__setattr__(self, "countermeasures", chosen)

    @property
    def attacks(self) -> tuple[Countermeasure, ...]:
        """Plain first, then the requested countermeasures, each once."""
        return tuple(dict.fromkeys((Countermeasure.plain, *self.countermeasures)))


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


def learned_face(photo: dict) -> DetectedFace | None:
    """What an attacker's face pipeline cuts out of a photo protected in its faces: the largest
    protected face (the user's, in a photo of several people). None for a photo protected
    whole (an aligned crop, no face, --faces off), which is learned whole."""
    if photo.get("protected_as") != Protection.FACES:
        return None
    faces = [DetectedFace.from_dict(face) for face in photo["faces"] if face["protected"]]
    return max(faces, key=lambda face: face.area, default=None)


def model_input(
    path: Path, face: DetectedFace | None, resolution: int, countermeasure: Countermeasure
) -> torch.Tensor:
    """The photo after the countermeasure, as the attacker's model sees it: the aligned crop of
    ``face`` (moved with the pixels if the countermeasure resized the photo), or squeezed whole."""
    rgb = load_photo(path).rgb
    seen = sanitise(rgb, countermeasure)
    if face is None:
        return resize_for_model(Photo(seen), resolution)
    if seen.shape != rgb.shape:
        face = face.resized(seen.shape[1] / rgb.shape[1], seen.shape[0] / rgb.shape[0])
    return aligned_crop(seen, alignment_matrix(face, resolution), resolution)


def _decode(
    sources: list[tuple[Path, DetectedFace | None]],
    resolution: int,
    countermeasure: Countermeasure,
) -> torch.Tensor:
    try:
        return torch.stack(
            [model_input(path, face, resolution, countermeasure) for path, face in sources]
        )
    except ImageError as error:
        raise SetupError(f"learnability cannot read {error}") from error


def _sanitised_references(
    references: Surrogate, resolution: int, max_per_class: int, countermeasure: Countermeasure
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference images as ``surrogate_images`` gives them, but sanitised at full size
    first (as a scraper would) and not cached: the cache keeps only what protect also uses."""
    images, labels = [], []
    for index, cls in enumerate(references.classes):
        for path in cls.paths[:max_per_class]:
            try:
                rgb = load_photo(path).rgb
            except ImageError:
                continue  # as in surrogate_images: an unreadable reference is not used
            if references.crop is not None:
                left, top, right, bottom = references.crop
                rgb = rgb[top:bottom, left:right]
            images.append(resize_for_model(Photo(sanitise(rgb, countermeasure)), resolution))
            labels.append(index)
    return torch.stack(images), torch.tensor(labels)


def _attack_name(row: dict) -> str:
    if row["countermeasure"] == Countermeasure.plain:
        return f"{row['class']} ({row['architecture']})"
    return f"{row['class']} ({row['architecture']}, {row['countermeasure']})"


def _verdict(results: list[dict]) -> tuple[bool, str | None]:
    """Every requested attack must fail to learn the user, each against its own clean
    baseline; a baseline at chance proves nothing either way."""
    weak = [r for r in results if r["inconclusive"]]
    failed = [r for r in results if not r["passed"]]
    problems = []
    if weak:
        problems.append(
            "the clean baseline recognised no more than chance for "
            + ", ".join(map(_attack_name, weak))
            + ": too few photos to judge"
        )
    if failed:
        problems.append(
            "protected accuracy is not below max_ratio x the clean baseline for "
            + ", ".join(map(_attack_name, failed))
        )
    return not problems, "; ".join(problems) or None


def measure_learnability(
    folder: Path,
    manifest: dict,
    originals: Path | None,
    reference: Path | None,
    settings: LearnabilitySettings,
    on_training: Callable[[str], None] | None = None,
) -> dict:
    """Train attackers on protected and on clean photos, under each countermeasure, and probe
    with the adaptive attacker if asked; report recognition of held-out clean photos."""
    started = time.perf_counter()
    device = resolve_device(settings.device)
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

    def reference_set(
        countermeasure: Countermeasure, resolution: int = settings.resolution
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if countermeasure.changes_photos:
            return _sanitised_references(
                references, resolution, settings.max_per_class, countermeasure
            )
        return surrogate_images(references, resolution, settings.max_per_class)

    def images_of(
        part: str,
        protected: bool,
        countermeasure: Countermeasure = Countermeasure.plain,
        resolution: int = settings.resolution,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sources, labels = [], []
        for index, name in enumerate(class_names):
            for photo in getattr(splits[name], part):
                use_output = protected and part == "train"
                path = (
                    folder / photo["output"]
                    if use_output
                    else original_path(manifest, photo, originals)
                )
                sources.append((path, learned_face(photo)))
                labels.append(index)
        return _decode(sources, resolution, countermeasure), torch.tensor(labels)

    def training_sets(
        countermeasure: Countermeasure, resolution: int = settings.resolution
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """References plus the user's clean or protected photos, after a photo-level
        countermeasure; the user's classes are labelled first, the references after them."""
        photo_level = countermeasure if countermeasure.changes_photos else Countermeasure.plain
        reference_images, reference_labels = reference_set(photo_level, resolution)
        sets = {}
        for condition in ("clean", "protected"):
            own_images, own_labels = images_of(
                "train", condition == "protected", photo_level, resolution
            )
            sets[condition] = (
                torch.cat([reference_images, own_images]),
                torch.cat([reference_labels + len(class_names), own_labels]),
            )
        return sets

    def row(architecture: str, countermeasure: Countermeasure, index: int, rates: dict) -> dict:
        clean, protected = rates["clean"][index], rates["protected"][index]
        return {
            "architecture": architecture,
            "countermeasure": str(countermeasure),
            "class": class_names[index],
            "clean": round(clean, 4),
            "protected": round(protected, 4),
            "passed": protected <= settings.max_ratio * clean,
            "inconclusive": clean <= chance,
        }

    chance = 1 / (len(class_names) + len(references.classes))
    test_images, test_labels = images_of("test", protected=False)
    results: list[dict] = []
    curves: dict = {}
    countermeasure_curves: dict = {}
    plain_sets = training_sets(Countermeasure.plain)
    for countermeasure in settings.attacks:
        train_sets = training_sets(countermeasure) if countermeasure.changes_photos else plain_sets
        for architecture in settings.architectures:
            attack = attack_settings_for(
                countermeasure, AttackSettings(architecture=architecture, epochs=settings.epochs)
            )
            outcome = {}
            for condition, (images, labels) in train_sets.items():
                if on_training is not None:
                    after = "" if countermeasure is Countermeasure.plain else f", {countermeasure}"
                    on_training(f"{architecture} on {condition} photos{after}")
                outcome[condition] = run_attack(
                    images, labels, test_images, test_labels, attack, settings.seed, device
                )
            by_epoch = {
                condition: [
                    {class_names[k]: round(v, 4) for k, v in epoch.items()}
                    for epoch in result.curve
                ]
                for condition, result in outcome.items()
            }
            if countermeasure is Countermeasure.plain:
                curves[architecture] = by_epoch
            else:
                countermeasure_curves.setdefault(str(countermeasure), {})[architecture] = by_epoch
            rates = {condition: result.recognised for condition, result in outcome.items()}
            results += [
                row(architecture, countermeasure, i, rates) for i in range(len(class_names))
            ]
    if settings.adaptive:
        if on_training is not None:
            on_training(f"{ADAPTIVE_EXTRACTOR} feature extractor on the reference identities")
        by_attacker = adaptive_rates(
            reference_set(Countermeasure.plain),
            plain_sets,
            test_images,
            test_labels,
            settings,
            device,
        )
        if dlib_available():
            if on_training is not None:
                on_training("dlib's pretrained face recogniser enrolling the photos")
            dlib_test, _ = images_of("test", False, resolution=DLIB_RESOLUTION)
            by_attacker |= rates_by_method(
                "dlib",
                DlibRecognizer().embed,
                training_sets(Countermeasure.plain, DLIB_RESOLUTION),
                dlib_test,
                test_labels,
            )
        for attacker, rates in by_attacker.items():
            results += [
                row(attacker, Countermeasure.plain, i, rates) for i in range(len(class_names))
            ]
    passed, reason = _verdict(results)
    return {
        "passed": passed,
        "reason": reason,
        "optimistic": optimistic,
        "reference": str(reference),
        "reference_classes": [c.name for c in references.classes],
        "chance": round(chance, 4),
        "held_out": {name: len(splits[name].test) for name in class_names},
        "trained_on": {name: len(splits[name].train) for name in class_names},
        "settings": {
            **asdict(settings),
            "architectures": list(settings.architectures),
            "countermeasures": [str(c) for c in settings.countermeasures],
            "device": str(device),
        },
        "adaptive_extractor": (
            f"{ADAPTIVE_EXTRACTOR} trained from scratch on the reference identities"
            + (f"; and {FaceEmbedder.source}" if facenet_available() else "")
            if settings.adaptive
            else None
        ),
        "recognition_attacker": (
            (DlibRecognizer.source if dlib_available() else f"not installed: {RECOGNITION_EXTRA}")
            if settings.adaptive
            else None
        ),
        "results": results,
        "curves": curves,
        "countermeasure_curves": countermeasure_curves,
        "seconds": round(time.perf_counter() - started, 1),
    }
