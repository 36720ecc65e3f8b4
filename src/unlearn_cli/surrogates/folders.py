"""Surrogate folders: the ``<class>/<image>`` classes that the user's photos must be told
apart from, minus the protected ones, loaded at model resolution (cached)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from unlearn_cli.errors import ImageError, SetupError
from unlearn_cli.faces.regions import Protection, RegionFinder
from unlearn_cli.io.images import Photo, find_images, load_photo, resize_for_model, sha256_file
from unlearn_cli.runtime.cache import cache_dir, cache_key, cached, file_fingerprint
from unlearn_cli.runtime.devices import compute_signature
from unlearn_cli.surrogates.named import NamedSurrogate


@dataclass(frozen=True)
class SurrogateClass:
    name: str
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class Surrogate:
    """A surrogate dataset after exclusion of the protected classes."""

    source: str  # the name of a named surrogate, or "folder"
    root: Path
    kind: str
    classes: tuple[SurrogateClass, ...]
    excluded: tuple[tuple[str, str], ...] = ()  # (class name, reason)
    crop: tuple[int, int, int, int] | None = None


def load_surrogate(
    root: Path,
    spec: NamedSurrogate | None,
    protected_names: set[str],
    protected_hashes: set[str],
    exclude: set[str] = frozenset(),
) -> Surrogate:
    """List the classes of a ``<class>/<image>`` folder, leaving out every class that shares a
    name (case-insensitive) or a file (by sha256) with a protected class, or that is named in
    ``exclude``."""
    lowered = {name.lower() for name in protected_names}
    excluded_by_flag = {name.lower() for name in exclude}
    min_per_class = spec.min_per_class if spec else 1
    classes, excluded = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        paths = tuple(find_images(folder))
        if len(paths) < min_per_class:
            continue
        if folder.name.lower() in lowered:
            excluded.append((folder.name, "same name as a protected class"))
        elif folder.name.lower() in excluded_by_flag:
            excluded.append((folder.name, "excluded by --exclude-class"))
        elif protected_hashes and any(sha256_file(p) in protected_hashes for p in paths):
            excluded.append((folder.name, "shares files with a protected class"))
        else:
            classes.append(SurrogateClass(folder.name, paths))
    if not classes:
        raise SetupError(f"surrogate {root} has no usable <class>/<image> folders")
    return Surrogate(
        source=spec.name if spec else "folder",
        root=root,
        kind=spec.kind if spec else "unknown",
        classes=tuple(classes),
        excluded=tuple(excluded),
        crop=spec.crop if spec else None,
    )


def _load_crop(
    path: Path,
    crop: tuple[int, int, int, int] | None,
    resolution: int,
    finder: RegionFinder | None,
) -> torch.Tensor:
    """A surrogate image at model resolution: its largest face aligned when ``finder`` finds
    one (or the whole image when it already is an aligned crop), else its fixed crop or all."""
    photo = load_photo(path)
    if finder is not None:
        regions = finder.find(photo)
        if regions.faces:
            return regions.keeping(0).crops(photo, resolution)[0]
        if regions.protection is Protection.ALIGNED_CROP:
            return resize_for_model(photo, resolution)
    if crop is not None:
        left, top, right, bottom = crop
        photo = Photo(photo.rgb[top:bottom, left:right].copy())
    return resize_for_model(photo, resolution)


def surrogate_images(
    surrogate: Surrogate, resolution: int, max_per_class: int, finder: RegionFinder | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All surrogate images at model resolution (uint8) and their class indices, cached. Face
    surrogates go through ``finder`` (detection and alignment, as the protected photos do)."""
    if surrogate.kind == "general":
        finder = None
    paths = [
        (index, path)
        for index, cls in enumerate(surrogate.classes)
        for path in cls.paths[:max_per_class]
    ]
    key = cache_key(
        "surrogate-images",
        file_fingerprint([p for _, p in paths]),
        resolution,
        surrogate.crop,
        finder
        and (
            str(finder.mode),
            finder.min_face_size,
            finder.min_confidence,
            compute_signature(finder.device or torch.device("cpu")),
        ),
    )

    def load() -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for index, path in paths:
            try:
                images.append(_load_crop(path, surrogate.crop, resolution, finder))
                labels.append(index)
            except ImageError:
                continue  # an unreadable surrogate image is simply not used
        return torch.stack(images), torch.tensor(labels)

    return cached(cache_dir() / "tensors", key, load)
