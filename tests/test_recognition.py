"""dlib's pretrained face recogniser as an evaluation attacker: it recognises real faces, and
verify --learnability --adaptive reports its rows on real crops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.engine.attack import probe_recognition
from unlearn_cli.io.images import load_photo, resize_for_model

from .conftest import FAST_OPTIONS

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("dlib_installed")]
runner = CliRunner()
PEOPLE = ["Barack_Obama", "Kate_Winslet", "Tom_Hanks"]


def _crops(shared_data: Path, name: str, count: int, start: int = 0) -> list[Path]:
    return sorted((shared_data / "faces" / name).iterdir())[start : start + count]


def test_dlib_recognises_people_it_enrolled_from_a_few_real_crops(shared_data: Path) -> None:
    from unlearn_cli.faces.recognition import DlibRecognizer

    recogniser = DlibRecognizer()

    def images(paths: list[Path]) -> torch.Tensor:
        return torch.stack([resize_for_model(load_photo(path), 150) for path in paths])

    enrolled = torch.cat([images(_crops(shared_data, name, 8)) for name in PEOPLE])
    new = torch.cat([images(_crops(shared_data, name, 5, start=8)) for name in PEOPLE])
    labels = torch.arange(len(PEOPLE)).repeat_interleave(8)
    new_labels = torch.arange(len(PEOPLE)).repeat_interleave(5)
    embeddings = recogniser.embed(new)
    assert embeddings.shape == (len(new), 128)
    assert torch.equal(embeddings, recogniser.embed(new))  # deterministic
    assert torch.allclose(embeddings[:2], recogniser.embed(new[:2].float() / 255))
    rates = probe_recognition(recogniser.embed, enrolled, labels, new, new_labels)
    for by_class in rates.values():
        assert min(by_class.values()) >= 0.8, rates  # a random 128-D embedding gets ~1/3


def test_verify_adaptive_reports_dlib_enrolment_of_real_crops(
    shared_data: Path, tmp_path: Path
) -> None:
    user = tmp_path / "me"
    user.mkdir()
    for path in _crops(shared_data, "Tina_Fey", 12):
        shutil.copy(path, user / path.name)
    references = tmp_path / "references"
    for name in PEOPLE:
        (references / name).mkdir(parents=True)
        for path in _crops(shared_data, name, 12):
            shutil.copy(path, references / name / path.name)
    protect = ["protect", str(user), "--surrogate", str(references), *FAST_OPTIONS]
    assert runner.invoke(app, protect).exit_code == 0
    verify = ["verify", str(tmp_path / "me-protected"), "--learnability", "--adaptive"]
    options = ["--reference", str(references), "--architecture", "vgg_small", "--epochs", "1"]
    result = runner.invoke(app, [*verify, *options, "--json", "--quiet"])
    assert result.exit_code in (0, 1), result.output
    rows = {
        row["architecture"]: row
        for row in json.loads(result.stdout)["checks"]["learnability"]["results"]
    }
    # enrolled from 8 clean photos, dlib knows Tina_Fey in her 4 held-out ones
    assert rows["dlib-nearest-centroid"]["clean"] >= 0.75
    assert 0 <= rows["dlib-linear-probe"]["protected"] <= 1
    human = runner.invoke(app, [*verify, *options])
    assert "dlib-nearest-centroid" in human.stdout
    assert "pretrained face recogniser (dlib rows): dlib face recognition" in human.stdout
