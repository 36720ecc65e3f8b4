"""The protect pipeline: photos in, protected copies and a manifest out.

It glues the modules together (inputs, images, surrogates, engine, report) and reports its
progress as events, so that the CLI (or any caller) decides how to show it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import torch

from . import __version__, surrogates
from .cache import cache_key, cached, file_fingerprint
from .config import Embedder, ProtectConfig
from .engine import (
    AugmentSettings,
    ErrorMinimizingNoise,
    MinMinSettings,
    RoundReport,
    TrainSettings,
    class_centroids,
    create_model,
    embed,
    match_classes,
    train,
)
from .errors import ImageError, SetupError
from .faces import FACENET_INPUT, FaceEmbedder, facenet_available
from .images import apply_noise, load_photo, resize_for_model, sha256_file, write_png_atomic
from .inputs import InputPhoto, InputSet
from .report import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    budget_dict,
    measure_budget,
    totals,
    write_json_atomic,
)
from .surrogates import Surrogate, cache_dir, load_surrogate, resolve_surrogate


@dataclass(frozen=True)
class PhaseStarted:
    name: str
    total: int | None = None


@dataclass(frozen=True)
class PhaseAdvanced:
    steps: int = 1


@dataclass(frozen=True)
class RoundFinished:
    report: RoundReport
    max_rounds: int


@dataclass(frozen=True)
class PhotoFailed:
    source: str
    error: str


@dataclass(frozen=True)
class Notice:
    message: str


Event = PhaseStarted | PhaseAdvanced | RoundFinished | PhotoFailed | Notice


@dataclass
class ProtectResult:
    manifest: dict
    manifest_path: Path
    failures: list[dict] = field(default_factory=list)


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise SetupError(
            "--device cuda was asked for but no CUDA GPU is available; use --device cpu"
        )
    return torch.device(choice)


@dataclass(frozen=True)
class _Prepared:
    """A protected photo decoded once at model resolution; the full size is decoded again later."""

    photo: InputPhoto
    sha256: str
    small: torch.Tensor
    label: int


def protect(
    input_set: InputSet,
    config: ProtectConfig,
    surrogate: str | None = None,
    exclude_classes: frozenset[str] = frozenset(),
    on_event: Callable[[Event], None] | None = None,
) -> ProtectResult:
    """Protect every photo of ``input_set``; see the module and README for what is written."""
    emit = on_event or (lambda _event: None)
    device = resolve_device(config.device)
    started = time.perf_counter()
    surrogate_root, spec = resolve_surrogate(surrogate)
    class_names = input_set.class_names
    failures: list[dict] = []

    prepared = _prepare_photos(input_set, class_names, config.resolution, failures, emit)
    if not prepared:
        return _finish(input_set, config, None, None, [], failures, device, started, class_names)
    chosen_surrogate = load_surrogate(
        surrogate_root,
        spec,
        protected_names=set(class_names),
        protected_hashes={item.sha256 for item in prepared},
        exclude=set(exclude_classes),
    )
    for name, reason in chosen_surrogate.excluded:
        emit(Notice(f"surrogate class {name} left out: {reason}"))

    emit(PhaseStarted("loading surrogate images"))
    surrogate_pixels, surrogate_labels = surrogates.surrogate_images(
        chosen_surrogate, config.resolution, config.max_per_class
    )
    matching = _match(
        prepared,
        class_names,
        chosen_surrogate,
        surrogate_pixels,
        surrogate_labels,
        config,
        device,
        emit,
    )

    selected = matching.pop("selected_indices")
    remap = {old: len(class_names) + new for new, old in enumerate(selected)}
    keep = torch.tensor([int(label) in remap for label in surrogate_labels], dtype=torch.bool)
    other_images = surrogate_pixels[keep]
    other_labels = torch.tensor([remap[int(label)] for label in surrogate_labels[keep]])

    emit(PhaseStarted("optimising noise", config.rounds))
    generator = torch.Generator().manual_seed(config.seed)
    model = create_model(config.surrogate_model, len(class_names) + len(selected), seed=config.seed)
    settings = MinMinSettings(
        eps=config.eps / 255,
        step_size=config.effective_step_size / 255,
        steps=config.steps,
        train_steps=config.train_steps,
        max_rounds=config.rounds,
        min_rounds=config.effective_min_rounds,
        stop_accuracy=config.stop_accuracy,
        form=config.mode,
        augment=AugmentSettings() if config.augment else None,
    )
    labels = torch.tensor([item.label for item in prepared])
    result = ErrorMinimizingNoise(model.to(device), settings).generate(
        torch.stack([item.small for item in prepared]),
        labels,
        other_images,
        other_labels,
        generator,
        on_round=lambda report: emit(RoundFinished(report, config.rounds)),
    )
    noise = result.per_image(labels.to(result.noise.device)).cpu()

    emit(PhaseStarted("writing protected photos", len(prepared)))
    written: list[dict] = []
    optimisation = {
        "device": str(device),
        "surrogate_model": config.surrogate_model,
        "converged": result.converged,
        "rounds": [
            {
                "round": r.round,
                "train_loss": round(r.train_loss, 5),
                "protected_loss": round(r.protected_loss, 5),
                "protected_accuracy": round(r.protected_accuracy, 4),
                "seconds": round(r.seconds, 3),
            }
            for r in result.rounds
        ],
    }
    finish = partial(
        _finish,
        input_set,
        config,
        chosen_surrogate,
        matching,
        written,
        failures,
        device,
        started,
        class_names,
        optimisation,
    )
    try:
        for item, photo_noise in zip(prepared, noise, strict=True):
            try:
                written.append(_write_one(item, photo_noise, input_set.output_root, config.eps))
            except (ImageError, OSError, ValueError) as error:
                message = error.reason if isinstance(error, ImageError) else str(error)
                failures.append({"source": item.photo.relative.as_posix(), "error": message})
                emit(PhotoFailed(str(item.photo.path), message))
            emit(PhaseAdvanced())
    except KeyboardInterrupt:
        finish(interrupted=True)  # what is written stays listed in the manifest
        raise
    return finish()


def _prepare_photos(
    input_set: InputSet,
    class_names: list[str],
    resolution: int,
    failures: list[dict],
    emit: Callable[[Event], None],
) -> list[_Prepared]:
    emit(PhaseStarted("reading photos", len(input_set.photos)))
    prepared = []
    for photo in input_set.photos:
        try:
            sha = sha256_file(photo.path)
            small = resize_for_model(load_photo(photo.path), resolution)
            prepared.append(_Prepared(photo, sha, small, class_names.index(photo.class_name)))
        except (ImageError, OSError) as error:
            message = error.reason if isinstance(error, ImageError) else str(error)
            failures.append({"source": photo.relative.as_posix(), "error": message})
            emit(PhotoFailed(str(photo.path), message))
        emit(PhaseAdvanced())
    return prepared


def _match(
    prepared: list[_Prepared],
    class_names: list[str],
    surrogate: Surrogate,
    surrogate_pixels: torch.Tensor,
    surrogate_labels: torch.Tensor,
    config: ProtectConfig,
    device: torch.device,
    emit: Callable[[Event], None],
) -> dict:
    """Rank surrogate classes by similarity to each protected class and choose who takes part."""
    use_face = config.embedder is Embedder.FACE or (
        config.embedder is Embedder.AUTO and surrogate.kind != "general" and facenet_available()
    )
    own_labels = torch.tensor([item.label for item in prepared])
    if use_face:
        emit(PhaseStarted("embedding with the face model"))
        embedder = FaceEmbedder(device)
        source = embedder.source
        face_images = torch.stack(
            [resize_for_model(load_photo(item.photo.path), FACENET_INPUT) for item in prepared]
        )
        own_features = embedder.embed(face_images)
        surrogate_features = embedder.embed(
            surrogates.surrogate_images(surrogate, FACENET_INPUT, config.max_per_class)[0]
        )
    else:
        emit(PhaseStarted("warming up the surrogate model", config.warmup_epochs))
        model = _warm_model(surrogate, surrogate_pixels, surrogate_labels, config, device, emit)
        source = (
            f"{config.surrogate_model} warmed up on the surrogate ({config.warmup_epochs} epochs)"
        )
        own_features = embed(model, torch.stack([item.small for item in prepared]))
        surrogate_features = embed(model, surrogate_pixels)
    generator = torch.Generator().manual_seed(config.seed)
    match = match_classes(
        class_centroids(own_features, own_labels, len(class_names)),
        class_centroids(surrogate_features, surrogate_labels, len(surrogate.classes)),
        k=config.match_k,
        extra_random=config.match_random,
        generator=generator,
    )
    names = [cls.name for cls in surrogate.classes]
    ranking = {
        protected: [
            {"class": names[index], "similarity": round(float(match.similarity[row, index]), 4)}
            for index in match.similarity[row].argsort(descending=True).tolist()
        ]
        for row, protected in enumerate(class_names)
    }
    return {
        "embedding_source": source,
        "k": config.match_k,
        "ranking": ranking,
        "selected": [names[i] for i in match.selected],
        "random_extra": [names[i] for i in match.random_extra],
        "selected_indices": match.selected,
    }


def _warm_model(
    surrogate: Surrogate,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: ProtectConfig,
    device: torch.device,
    emit: Callable[[Event], None],
):
    """The surrogate architecture trained on the surrogate classes (cached across runs)."""
    model = create_model(config.surrogate_model, len(surrogate.classes), seed=config.seed)
    key = cache_key(
        "warmup",
        config.surrogate_model,
        config.warmup_epochs,
        config.seed,
        config.resolution,
        [c.name for c in surrogate.classes],
        file_fingerprint([p for c in surrogate.classes for p in c.paths[: config.max_per_class]]),
    )

    def warm() -> dict:
        model.to(device)
        train(
            model,
            images,
            labels,
            TrainSettings(epochs=config.warmup_epochs),
            torch.Generator().manual_seed(config.seed),
            on_epoch=lambda _epoch, _loss: emit(PhaseAdvanced()),
        )
        return {name: value.cpu() for name, value in model.state_dict().items()}

    model.load_state_dict(cached(cache_dir() / "models", key, warm))
    return model.to(device)


def _write_one(item: _Prepared, noise: torch.Tensor, output_root: Path, eps: int) -> dict:
    """Decode the full-size original again, add the noise, write, and measure the written file."""
    original = load_photo(item.photo.path)
    protected_rgb = apply_noise(original, noise, eps)
    target = output_root / item.photo.output
    write_png_atomic(
        target, protected_rgb, original.alpha, original.icc_profile, original.grayscale
    )
    written = load_photo(target)
    budget = measure_budget(original.rgb, written.rgb)
    if budget.linf > eps:  # the guarantee is by construction; never ship a file that breaks it
        target.unlink(missing_ok=True)
        raise ValueError(f"written file exceeds the budget (L-inf {budget.linf} > {eps})")
    if original.alpha is not None and (
        written.alpha is None or (written.alpha != original.alpha).any()
    ):
        target.unlink(missing_ok=True)
        raise ValueError("alpha channel changed while writing")
    return {
        "source": item.photo.relative.as_posix(),
        "output": item.photo.output.as_posix(),
        "class": item.photo.class_name,
        "source_sha256": item.sha256,
        "output_sha256": sha256_file(target),
        "width": original.size[0],
        "height": original.size[1],
        "has_alpha": original.alpha is not None,
        "budget": budget_dict(budget),
    }


def _finish(
    input_set: InputSet,
    config: ProtectConfig,
    surrogate: Surrogate | None,
    matching: dict | None,
    photos: list[dict],
    failures: list[dict],
    device: torch.device,
    started: float,
    class_names: list[str],
    optimisation: dict | None = None,
    interrupted: bool = False,
) -> ProtectResult:
    import torchvision

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "tool": {
            "name": "unlearn",
            "version": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "interrupted": interrupted,
        "settings": config.as_dict(),
        "input_root": str(input_set.root),
        "classes": class_names,
        "surrogate": None,
        "optimisation": {
            **(optimisation or {}),
            "device": str(device),
            "seconds": round(time.perf_counter() - started, 2),
        },
        "photos": photos,
        "failures": failures,
        "totals": totals(photos, failures),
    }
    if surrogate is not None:
        manifest["surrogate"] = {
            "source": surrogate.source,
            "root": str(surrogate.root),
            "kind": surrogate.kind,
            "classes_available": len(surrogate.classes),
            "excluded": [{"class": name, "reason": reason} for name, reason in surrogate.excluded],
            **(matching or {}),
        }
    path = input_set.output_root / MANIFEST_NAME
    write_json_atomic(path, manifest)
    return ProtectResult(manifest=manifest, manifest_path=path, failures=failures)
