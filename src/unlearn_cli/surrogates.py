"""Surrogate datasets: local class folders, named downloads with an integrity-checked cache.

A surrogate supplies the classes that the user's photos must be told apart from. Every surrogate
ends up as a folder laid out as ``<class>/<image>``; named ones are downloaded once (from the
first of their mirrors that answers), checked against a published checksum, unpacked into the
cache and marked complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cache import cache_key, cached, file_fingerprint
from .devices import compute_signature
from .errors import ImageError, SetupError, SurrogateUnavailableError
from .images import Photo, find_images, load_photo, resize_for_model, sha256_file
from .regions import Protection, RegionFinder

DEFAULT_SURROGATE = "lfw"


@dataclass(frozen=True)
class NamedSurrogate:
    """A downloadable dataset: where it lives, how to check it, how to lay it out as folders."""

    name: str
    description: str
    urls: tuple[str, ...]  # mirrors of one archive, tried in order
    filename: str
    algorithm: str  # of the published checksum: "sha256" or "md5"
    checksum: str
    layout: str  # "folders": the archive holds <root>/<class>/<image>; "cifar": python pickles
    archive_root: str
    min_per_class: int = 1
    crop: tuple[int, int, int, int] | None = None  # (left, top, right, bottom) applied on load
    kind: str = "faces"


NAMED_SURROGATES: dict[str, NamedSurrogate] = {
    spec.name: spec
    for spec in (
        NamedSurrogate(  # the archive and checksum scikit-learn's fetch_lfw_people uses, since
            # vis-www.cs.umass.edu stopped serving LFW; figshare under both its download hosts
            name="lfw",
            description="Labeled Faces in the Wild (funneled), people with 20+ photos",
            urls=(
                "https://ndownloader.figshare.com/files/5976015",
                "https://figshare.com/ndownloader/files/5976015",
            ),
            filename="lfw-funneled.tgz",
            algorithm="sha256",
            checksum="b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a",
            layout="folders",
            archive_root="lfw_funneled",
            min_per_class=20,
            crop=(61, 61, 189, 189),
        ),
        NamedSurrogate(
            name="cifar10",
            description="CIFAR-10 training set (general images, 10 classes)",
            urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            filename="cifar-10-python.tar.gz",
            algorithm="md5",
            checksum="c58f30108f718f92721af3b95e74349a",
            layout="cifar",
            archive_root="cifar-10-batches-py",
            kind="general",
        ),
    )
}


def cache_dir() -> Path:
    """``$UNLEARN_CACHE_DIR``, else ``$XDG_CACHE_HOME/unlearn``, else ``~/.cache/unlearn``."""
    if explicit := os.environ.get("UNLEARN_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "unlearn"


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


def surrogate_choice(choice: str | None) -> str:
    """``--surrogate`` with its default applied: a known name, or an absolute folder path.
    Checks it without downloading anything."""
    choice = choice or os.environ.get("UNLEARN_SURROGATE") or DEFAULT_SURROGATE
    if choice in NAMED_SURROGATES:
        return choice
    folder = Path(choice).expanduser()
    if not folder.is_dir():
        raise SetupError(
            f"surrogate {choice!r} is neither a folder nor a known name "
            f"({', '.join(NAMED_SURROGATES)}); pass --surrogate DIR with a <class>/<image> folder"
        )
    return str(folder.resolve())


def resolve_surrogate(
    choice: str | None, cache: Path | None = None
) -> tuple[Path, NamedSurrogate | None]:
    """Turn ``--surrogate`` (a name or a folder; default ``$UNLEARN_SURROGATE`` or lfw) into a
    local folder of class subfolders, downloading a named surrogate on first use."""
    choice = surrogate_choice(choice)
    if choice in NAMED_SURROGATES:
        spec = NAMED_SURROGATES[choice]
        return ensure_downloaded(spec, cache or cache_dir()), spec
    return Path(choice), None


def ensure_downloaded(spec: NamedSurrogate, cache: Path) -> Path:
    """The unpacked class folder of ``spec``, downloading and checking it if not cached yet."""
    from torchvision.datasets.utils import extract_archive

    home = cache / "surrogates" / spec.name
    classes_root = home / "classes"
    marker = home / "complete.json"
    if marker.exists() and json.loads(marker.read_text()).get("checksum") == spec.checksum:
        return classes_root
    home.mkdir(parents=True, exist_ok=True)
    archive = _download(spec, home)
    extract_archive(str(archive), str(home / "unpacked"))
    shutil.rmtree(classes_root, ignore_errors=True)
    if spec.layout == "cifar":
        _unpack_cifar(home / "unpacked" / spec.archive_root, classes_root)
    else:
        (home / "unpacked" / spec.archive_root).rename(classes_root)
    shutil.rmtree(home / "unpacked", ignore_errors=True)
    archive.unlink(missing_ok=True)
    marker.write_text(json.dumps({"checksum": spec.checksum, "url": archive.name}))
    return classes_root


def _download(spec: NamedSurrogate, home: Path) -> Path:
    """The archive of ``spec`` in ``home``, from the first mirror that serves it intact."""
    from torchvision.datasets.utils import download_url

    archive = home / spec.filename
    problems = []
    for url in spec.urls:
        archive.unlink(missing_ok=True)  # a partial file of an interrupted download
        try:
            download_url(url, str(home), spec.filename)
        except (urllib.error.URLError, OSError, RuntimeError) as error:
            problems.append(f"{url}: {' '.join(str(error).split())}")
            continue
        if _digest(archive, spec.algorithm) == spec.checksum:
            return archive
        archive.unlink(missing_ok=True)
        problems.append(f"{url}: failed its integrity check ({spec.algorithm})")
    raise SurrogateUnavailableError(
        f"cannot download surrogate {spec.name!r} and it is not cached in {home} "
        f"({'; '.join(problems)}); offline, pass --surrogate DIR with a local "
        "<class>/<image> folder"
    )


def _digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def _unpack_cifar(batches: Path, classes_root: Path, per_class: int = 1000) -> None:
    """Write the first ``per_class`` training images of each CIFAR class as PNG folders."""
    with open(batches / "batches.meta", "rb") as handle:
        names = [n.decode() for n in pickle.load(handle, encoding="bytes")[b"label_names"]]
    counts = dict.fromkeys(range(len(names)), 0)
    for batch in sorted(batches.glob("data_batch_*")):
        with open(batch, "rb") as handle:
            content = pickle.load(handle, encoding="bytes")
        pixels = np.asarray(content[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        for index, (image, label) in enumerate(zip(pixels, content[b"labels"], strict=True)):
            if counts[label] >= per_class:
                continue
            counts[label] += 1
            target = classes_root / names[label] / f"{batch.name}_{index:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(target)


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
