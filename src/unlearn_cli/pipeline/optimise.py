"""The min-min optimisation of a run: surrogate model, batches, checkpoints, events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from unlearn_cli import surrogates
from unlearn_cli.config import ProtectConfig
from unlearn_cli.engine import (
    ErrorMinimizingNoise,
    create_model,
)
from unlearn_cli.io.inputs import InputSet
from unlearn_cli.pipeline.checkpoint import Checkpoint
from unlearn_cli.pipeline.events import (
    Event,
    Notice,
    PhaseAdvanced,
    PhaseStarted,
    RoundFinished,
)
from unlearn_cli.pipeline.manifest import ManifestWriter
from unlearn_cli.pipeline.match import (
    choose_surrogate_classes,
    surrogate_finder,
)
from unlearn_cli.pipeline.prepare import (
    PreparedPhoto,
    crop_labels,
)
from unlearn_cli.surrogates import load_surrogate


def optimise_noise(
    prepared: list[PreparedPhoto],
    class_names: list[str],
    surrogate_root: Path,
    spec: surrogates.NamedSurrogate | None,
    input_set: InputSet,
    exclude_classes: frozenset[str],
    checkpoint: Checkpoint,
    run_key: str,
    manifest: ManifestWriter,
    config: ProtectConfig,
    device: torch.device,
    emit: Callable[[Event], None],
) -> tuple[list[PreparedPhoto], tuple[torch.Tensor, ...]]:
    """Choose the surrogate classes and run the min-min loop over every crop of the photos;
    returns the photos (with main faces chosen, if asked) and each photo's noise."""
    chosen_surrogate = load_surrogate(
        surrogate_root,
        spec,
        protected_names=set(input_set.class_names),
        protected_hashes={item.sha256 for item in prepared},
        exclude=set(exclude_classes),
    )
    for name, reason in chosen_surrogate.excluded:
        emit(Notice(f"surrogate class {name} left out: {reason}"))
    emit(PhaseStarted("loading surrogate images"))
    surrogate_pixels, surrogate_labels = surrogates.surrogate_images(
        chosen_surrogate, config.resolution, config.max_per_class, surrogate_finder(config, device)
    )
    matching, prepared = choose_surrogate_classes(
        prepared,
        class_names,
        chosen_surrogate,
        surrogate_pixels,
        surrogate_labels,
        config,
        device,
        emit,
    )
    manifest.describe_surrogate(chosen_surrogate, matching, class_names)
    selected = matching.pop("selected_indices")
    remap = {old: len(class_names) + new for new, old in enumerate(selected)}
    keep = torch.tensor([int(label) in remap for label in surrogate_labels], dtype=torch.bool)
    other_images = surrogate_pixels[keep]
    other_labels = torch.tensor([remap[int(label)] for label in surrogate_labels[keep]])

    resume = checkpoint.load(run_key, prepared)
    if resume is not None:
        emit(Notice(f"resuming the optimisation after round {len(resume.rounds)} (checkpoint)"))
    emit(PhaseStarted("optimising noise", config.rounds))
    if resume is not None:
        emit(PhaseAdvanced(len(resume.rounds)))
    model = create_model(config.surrogate_model, len(class_names) + len(selected), seed=config.seed)
    labels = crop_labels(prepared)
    settings = config.minmin_settings().for_device(device)
    result = ErrorMinimizingNoise(model.to(device), settings).generate(
        torch.cat([item.crops for item in prepared]),
        labels,
        other_images,
        other_labels,
        torch.Generator().manual_seed(config.seed),
        on_round=lambda report: emit(RoundFinished(report, config.rounds)),
        on_checkpoint=checkpoint.save,
        resume=resume,
    )
    manifest.describe_optimisation(config, result)
    noise = result.per_image(labels.to(result.noise.device)).cpu()
    noise_per_photo = noise.split([len(item.crops) for item in prepared])

    return prepared, noise_per_photo
