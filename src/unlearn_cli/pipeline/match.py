"""Which surrogate classes the user's photos are told apart from: the most similar ones, in
the face model's embedding or in the warmed-up surrogate's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from unlearn_cli import surrogates
from unlearn_cli.config import Embedder, ProtectConfig
from unlearn_cli.engine import (
    TrainSettings,
    class_centroids,
    create_model,
    embed,
    match_classes,
    train,
)
from unlearn_cli.faces.embedder import FACENET_INPUT, FaceEmbedder, facenet_available
from unlearn_cli.faces.regions import FaceMode, RegionFinder
from unlearn_cli.pipeline.events import (
    Event,
    PhaseAdvanced,
    PhaseStarted,
)
from unlearn_cli.pipeline.prepare import (
    PreparedPhoto,
    crop_labels,
)
from unlearn_cli.runtime.cache import cache_dir, cache_key, cached, file_fingerprint
from unlearn_cli.runtime.devices import compute_signature
from unlearn_cli.surrogates import Surrogate


def choose_surrogate_classes(
    prepared: list[PreparedPhoto],
    class_names: list[str],
    surrogate: Surrogate,
    surrogate_pixels: torch.Tensor,
    surrogate_labels: torch.Tensor,
    config: ProtectConfig,
    device: torch.device,
    emit: Callable[[Event], None],
) -> tuple[dict, list[PreparedPhoto]]:
    """Rank surrogate classes by similarity to each protected class and choose who takes part.
    With ``main_face_only``, also keep in each photo only the face nearest its class's main
    identity (the prepared photos are returned with that choice made)."""
    use_face = config.embedder is Embedder.FACE or (
        config.embedder is Embedder.AUTO and surrogate.kind != "general" and facenet_available()
    )
    if use_face:
        emit(PhaseStarted("embedding with the face model"))
        embedder = FaceEmbedder(device)
        source = embedder.source
        own_features = embedder.embed(torch.cat([item.face_model_crops for item in prepared]))
        finder = surrogate_finder(config, device)
        key = cache_key(
            "face-embeddings",
            compute_signature(device),
            source,
            surrogate_fingerprint(surrogate, config),
            finder and (config.min_face_size, config.face_confidence),
        )

        def embed_surrogate() -> torch.Tensor:
            images, _ = surrogates.surrogate_images(
                surrogate, FACENET_INPUT, config.max_per_class, finder
            )
            return embedder.embed(images)

        # a second run on the same surrogate embeds nothing again
        surrogate_features = cached(cache_dir() / "embeddings", key, embed_surrogate)
    else:
        emit(PhaseStarted("warming up the surrogate model", config.warmup_epochs))
        model = warm_model(surrogate, surrogate_pixels, surrogate_labels, config, device, emit)
        source = (
            f"{config.surrogate_model} warmed up on the surrogate ({config.warmup_epochs} epochs)"
        )
        own_features = embed(model, torch.cat([item.crops for item in prepared]))
        surrogate_features = embed(model, surrogate_pixels)
    if config.main_face_only:
        prepared, own_features = keep_main_faces(prepared, own_features, len(class_names))
    own_labels = crop_labels(prepared)
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
    }, prepared


def keep_main_faces(
    prepared: list[PreparedPhoto], features: torch.Tensor, class_count: int
) -> tuple[list[PreparedPhoto], torch.Tensor]:
    """In photos with several faces keep the one most like its class's main identity: the
    centroid of every photo's best-matching face, starting from the centroid of all faces."""
    normalised = torch.nn.functional.normalize(features, dim=1)
    per_photo = list(normalised.split([len(item.crops) for item in prepared]))
    labels = torch.tensor([item.label for item in prepared])
    centroids = class_centroids(normalised, crop_labels(prepared), class_count)
    for _ in range(3):  # a few refinements: group photos pull the first centroid off
        best = [
            int((faces @ centroids[label]).argmax())
            for faces, label in zip(per_photo, labels, strict=True)
        ]
        chosen = torch.stack([faces[index] for faces, index in zip(per_photo, best, strict=True)])
        centroids = class_centroids(chosen, labels, class_count)
    kept = [
        replace(item, regions=item.regions.keeping(index), crops=item.crops[index : index + 1])
        if item.regions.faces
        else item
        for item, index in zip(prepared, best, strict=True)
    ]
    return kept, torch.stack([faces[index] for faces, index in zip(per_photo, best, strict=True)])


def surrogate_fingerprint(surrogate: Surrogate, config: ProtectConfig) -> str:
    """Identity of the surrogate images a run uses (names, sizes and times of the files)."""
    return file_fingerprint(
        [path for cls in surrogate.classes for path in cls.paths[: config.max_per_class]]
    )


def surrogate_finder(config: ProtectConfig, device: torch.device) -> RegionFinder | None:
    """Face surrogates go through the same detection and alignment as the user's photos."""
    if config.faces is FaceMode.OFF:
        return None
    return RegionFinder(FaceMode.AUTO, config.min_face_size, config.face_confidence, device)


def warm_model(
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
        compute_signature(device),
        config.surrogate_model,
        config.warmup_epochs,
        config.seed,
        config.resolution,
        surrogate_finder(config, device) and (config.min_face_size, config.face_confidence),
        [c.name for c in surrogate.classes],
        surrogate_fingerprint(surrogate, config),
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
