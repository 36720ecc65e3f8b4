"""Named surrogates: downloads from their mirrors, checked against a published checksum,
unpacked into the cache once and marked complete."""

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
from PIL import Image

from unlearn_cli.errors import SetupError, SurrogateUnavailableError
from unlearn_cli.runtime.cache import cache_dir

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
