"""End to end on the real face crops in ../shared/data/faces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.io.images import load_photo, sha256_file

pytestmark = pytest.mark.integration


def test_protect_one_identity_against_the_face_surrogate(shared_data: Path, tmp_path: Path) -> None:
    """A few rounds on Lindsay_Lohan (22 photos): the identity leaves the surrogate by itself,
    every photo is written within budget and the manifest records the match."""
    faces = shared_data / "faces"
    user = tmp_path / "Lindsay_Lohan"
    shutil.copytree(faces / "Lindsay_Lohan", user)
    result = CliRunner().invoke(
        app,
        [
            "protect",
            str(user),
            "--surrogate",
            str(faces),
            "--json",
            "--quiet",
            "--rounds",
            "2",
            "--min-rounds",
            "1",
            "--steps",
            "5",
            "--match-k",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    surrogate = manifest["surrogate"]
    assert {"class": "Lindsay_Lohan", "reason": "same name as a protected class"} in surrogate[
        "excluded"
    ]
    assert "Lindsay_Lohan" not in surrogate["selected"]
    assert len(surrogate["selected"]) == 4 + 2  # k nearest plus two at random
    ranked = [entry["class"] for entry in surrogate["ranking"]["Lindsay_Lohan"]]
    assert set(surrogate["selected"]) >= set(ranked[:4])
    assert manifest["totals"]["protected"] == 22 and manifest["totals"]["max_linf"] <= 8
    output_root = tmp_path / "Lindsay_Lohan-protected"
    for photo in manifest["photos"]:
        original = load_photo(user / photo["source"]).rgb.astype(int)
        written = load_photo(output_root / photo["output"]).rgb.astype(int)
        assert written.shape == original.shape == (112, 112, 3)
        assert np.abs(written - original).max() <= 8
        assert sha256_file(user / photo["source"]) == photo["source_sha256"]


def test_a_renamed_copy_in_the_surrogate_is_left_out_by_hash(
    shared_data: Path, tmp_path: Path
) -> None:
    surrogate = tmp_path / "surrogate"
    for name in ("Tina_Fey", "Tom_Hanks", "Simon_Cowell"):
        shutil.copytree(shared_data / "faces" / name, surrogate / name)
    user = tmp_path / "me"
    user.mkdir()
    for source in sorted((surrogate / "Tina_Fey").iterdir())[:6]:
        shutil.copy(source, user / source.name)
    result = CliRunner().invoke(
        app,
        [
            "protect",
            str(user),
            "--surrogate",
            str(surrogate),
            "--json",
            "--quiet",
            "--rounds",
            "1",
            "--min-rounds",
            "1",
            "--steps",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    excluded = json.loads(result.stdout)["surrogate"]["excluded"]
    assert excluded == [{"class": "Tina_Fey", "reason": "shares files with a protected class"}]
