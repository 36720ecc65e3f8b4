"""The pretrained face embedder is used for matching only when its weights are cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.faces.embedder import FaceEmbedder, facenet_available

from .conftest import FAST_OPTIONS


def test_surrogate_features_are_used_when_face_weights_are_absent(
    photo_folder: Path, tiny_surrogate: Path
) -> None:
    assert not facenet_available()
    result = CliRunner().invoke(
        app,
        ["protect", str(photo_folder), "--surrogate", str(tiny_surrogate), "--json", *FAST_OPTIONS],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["surrogate"]["embedding_source"].startswith("resnet_small")


@pytest.mark.usefixtures("face_weights_cached")
def test_cached_face_weights_are_used_for_matching(
    photo_folder: Path, tiny_surrogate: Path
) -> None:
    assert facenet_available()
    embeddings = FaceEmbedder(torch.device("cpu")).embed(
        torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    )
    assert embeddings.shape == (2, 512)
    result = CliRunner().invoke(
        app,
        ["protect", str(photo_folder), "--surrogate", str(tiny_surrogate), "--json", *FAST_OPTIONS],
    )
    assert result.exit_code == 0, result.output
    assert "InceptionResnetV1" in json.loads(result.stdout)["surrogate"]["embedding_source"]


@pytest.mark.usefixtures("face_weights_cached")
def test_surrogate_face_embeddings_are_cached_across_runs(
    photo_folder: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    embedded: list[int] = []
    real_embed = FaceEmbedder.embed

    def counting(self, images, batch_size=64):
        embedded.append(len(images))
        return real_embed(self, images, batch_size)

    monkeypatch.setattr(FaceEmbedder, "embed", counting)
    command = ["protect", str(photo_folder), "--surrogate", str(tiny_surrogate), *FAST_OPTIONS]
    assert CliRunner().invoke(app, command).exit_code == 0
    assert sorted(embedded) == [4, 24]  # the user's 4 photos, the surrogate's 24 images
    embedded.clear()
    assert CliRunner().invoke(app, [*command, "--overwrite"]).exit_code == 0
    assert embedded == [4]  # the surrogate's embeddings came from the cache
