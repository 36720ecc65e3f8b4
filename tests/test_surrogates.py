"""Surrogate datasets: local folders, exclusion, and the real download path on loopback."""

from __future__ import annotations

import hashlib
import http.server
import pickle
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from unlearn_cli.errors import SetupError, SurrogateUnavailableError
from unlearn_cli.io.images import sha256_file
from unlearn_cli.runtime.cache import cache_dir
from unlearn_cli.surrogates import (
    NAMED_SURROGATES,
    ensure_downloaded,
    load_surrogate,
    resolve_surrogate,
)

from .conftest import write_class_folder


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving ``folder``; yields its base URL."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _lfw_like_archive(tmp_path: Path) -> tuple[Path, str]:
    """A small archive in LFW's layout, lfw_funneled/<Person>/<Person>_0001.jpg, served under
    figshare's name for it; and its SHA-256."""
    tree = tmp_path / "tree"
    root = write_class_folder(
        tree / "lfw_funneled",
        {"Ada_Lovelace": 3, "Alan_Turing": 2, "Grace_Hopper": 3},
        size=(250, 250),
    )
    archive = tmp_path / "served" / "files" / "5976015"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="lfw_funneled")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_lfw_comes_from_the_mirror_that_scikit_learn_maintains() -> None:
    lfw = pytest.importorskip("sklearn.datasets._lfw", reason="scikit-learn is a test extra")
    spec = NAMED_SURROGATES["lfw"]
    assert spec.urls[0] == lfw.FUNNELED_ARCHIVE.url
    assert (spec.algorithm, spec.checksum) == ("sha256", lfw.FUNNELED_ARCHIVE.checksum)
    assert spec.filename == lfw.FUNNELED_ARCHIVE.filename
    assert all("umass.edu" not in url for url in spec.urls)  # no longer serves LFW


def test_named_surrogate_downloads_once_then_works_offline(tmp_path: Path) -> None:
    archive, sha256 = _lfw_like_archive(tmp_path)
    cache = tmp_path / "cache"
    with serve(tmp_path / "served") as base:
        dead = f"{base}/missing/5976015"  # the first mirror answers 404: the second serves it
        spec = replace(
            NAMED_SURROGATES["lfw"],
            urls=(dead, f"{base}/files/5976015"),
            checksum=sha256,
            min_per_class=3,
        )
        folder = ensure_downloaded(spec, cache)
    assert sorted(p.name for p in folder.iterdir()) == [
        "Ada_Lovelace",
        "Alan_Turing",
        "Grace_Hopper",
    ]
    assert not (folder.parent / spec.filename).exists()  # the archive is not kept
    # the server is gone: the cached copy is used, and people with too few photos are left out
    assert ensure_downloaded(spec, cache) == folder
    surrogate = load_surrogate(folder, spec, set(), set())
    assert [c.name for c in surrogate.classes] == ["Ada_Lovelace", "Grace_Hopper"]
    assert surrogate.source == "lfw" and surrogate.crop == spec.crop


def test_corrupt_download_fails_its_integrity_check(tmp_path: Path) -> None:
    _lfw_like_archive(tmp_path)
    with serve(tmp_path / "served") as base:
        url = f"{base}/files/5976015"
        spec = replace(NAMED_SURROGATES["lfw"], urls=(url,), checksum="0" * 64)
        with pytest.raises(SurrogateUnavailableError, match="integrity"):
            ensure_downloaded(spec, tmp_path / "cache")
    assert not (tmp_path / "cache" / "surrogates" / "lfw" / "complete.json").exists()


def test_no_network_and_no_cache_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    with serve(tmp_path) as base:
        dead = base  # the server stops when the block ends: nothing listens there any more
    spec = replace(NAMED_SURROGATES["lfw"], urls=(f"{dead}/a", f"{dead}/b"))
    with pytest.raises(SurrogateUnavailableError) as failure:
        ensure_downloaded(spec, tmp_path / "cache")
    message = str(failure.value)
    assert "--surrogate DIR" in message and "\n" not in message


def test_cifar_archive_is_unpacked_into_class_folders(tmp_path: Path) -> None:
    batches = tmp_path / "tree" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(batches / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"cat", b"dog"]}, handle)
    with open(batches / "data_batch_1", "wb") as handle:
        pickle.dump(
            {
                b"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8),
                b"labels": [0, 1, 0, 1, 0, 1],
            },
            handle,
        )
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with serve(archive.parent) as base:
        url = f"{base}/{archive.name}"
        spec = replace(NAMED_SURROGATES["cifar10"], urls=(url,), checksum=md5)
        folder = ensure_downloaded(spec, tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == ["cat", "dog"]
    assert len(list((folder / "cat").iterdir())) == 3


def test_protected_classes_are_left_out_by_name_and_by_file(tmp_path: Path) -> None:
    root = write_class_folder(tmp_path / "s", {"Ada": 2, "bob": 2, "carol": 2, "dave": 2})
    carol_hash = sha256_file(root / "carol" / "0.png")
    surrogate = load_surrogate(
        root, None, protected_names={"ADA"}, protected_hashes={carol_hash}, exclude={"Dave"}
    )
    assert [c.name for c in surrogate.classes] == ["bob"]
    assert dict(surrogate.excluded) == {
        "Ada": "same name as a protected class",
        "carol": "shares files with a protected class",
        "dave": "excluded by --exclude-class",
    }


def test_surrogate_choice_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_class_folder(tmp_path / "s", {"a": 1})
    assert resolve_surrogate(str(folder)) == (folder, None)
    monkeypatch.setenv("UNLEARN_SURROGATE", str(folder))
    assert resolve_surrogate(None) == (folder, None)
    with pytest.raises(SetupError, match="neither a folder nor a known name"):
        resolve_surrogate(str(tmp_path / "nope"))
    with pytest.raises(SetupError, match="no usable"):
        load_surrogate(tmp_path / "s" / "a", None, set(), set())


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("UNLEARN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "unlearn"
