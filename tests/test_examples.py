"""The shell examples run for real: find -print0 | unlearn protect - -0 --json | jq."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import pattern_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_find_pipeline_example(tmp_path: Path, tiny_surrogate: Path) -> None:
    source = tmp_path / "camera roll"
    (source / "2024").mkdir(parents=True)
    for index in range(3):
        pattern_image(index, (20, 16)).save(source / "2024" / f"IMG {index}.jpg", quality=95)
    (source / "notes.txt").write_text("not a photo")
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    completed = subprocess.run(
        [
            "bash",
            str(EXAMPLES / "pipeline_find.sh"),
            str(source),
            str(tmp_path / "out"),
            str(tiny_surrogate),
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 3 and all("L-inf" in line for line in lines)
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == [
        "IMG 0.png",
        "IMG 1.png",
        "IMG 2.png",
    ]
    check = subprocess.run(
        ["bash", str(EXAMPLES / "check_manifest.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert '"protected": 3' in check.stdout
