"""Bad and unusual inputs through the real command: each gets a clear outcome, the batch goes on,
originals are never touched."""

from __future__ import annotations

import json
import os
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.errors import ImageError
from unlearn_cli.io.images import apply_noise, load_photo, sha256_file
from unlearn_cli.report.budget import measure_budget

from .badinputs import Expect, make_bad_inputs
from .conftest import FAST_OPTIONS, pattern_image

runner = CliRunner()


def _hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``folder`` (links to nowhere are left out)."""
    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def test_every_bad_input_gets_its_outcome_and_the_batch_goes_on(
    tmp_path: Path, tiny_surrogate: Path
) -> None:
    folder = tmp_path / "in"
    cases = make_bad_inputs(folder)
    before = _hashes(folder)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["protect", str(folder), "--out", str(out), "--surrogate", str(tiny_surrogate)]
        + FAST_OPTIONS
        + ["--json"],
    )
    assert result.exit_code == 1, result.stderr
    manifest = json.loads(result.stdout)
    protected = {photo["source"]: photo for photo in manifest["photos"]}
    failed = {failure["source"]: failure["error"] for failure in manifest["failures"]}
    error_lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    for name, case in cases.items():
        if case.expect is Expect.IGNORED:
            assert name not in protected and name not in failed
            assert not any(name in line for line in error_lines), name
        elif case.expect is Expect.FAILED:
            assert name in failed and case.reason in failed[name], (name, failed.get(name))
            lines = [line for line in error_lines if f"{name}:" in line]
            assert len(lines) == 1 and case.reason in lines[0], (name, lines)
        else:
            assert name in protected, (name, failed.get(name))
            entry = protected[name]
            original = load_photo(folder / name)
            written = load_photo(out / entry["output"])
            assert written.rgb.shape == original.rgb.shape
            assert measure_budget(original.rgb, written.rgb).linf <= 8
            assert written.grayscale == case.grey, name
            if case.alpha:
                assert np.array_equal(written.alpha, original.alpha), name
            if case.reason:
                assert any(case.reason in note for note in entry["notes"]), (name, entry)
    assert f"{len(failed)} photo(s) could not be protected" in result.stderr
    assert _hashes(folder) == before  # originals untouched
    assert not list(out.rglob("*.tmp"))


def test_the_pixel_limit_is_settable(tmp_path: Path, tiny_surrogate: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pattern_image(0, (30, 20)).save(folder / "a.png")
    pattern_image(1, (10, 10)).save(folder / "b.png")
    result = runner.invoke(
        app,
        ["protect", str(folder), "--surrogate", str(tiny_surrogate), "--max-pixels", "200"]
        + FAST_OPTIONS,
    )
    assert result.exit_code == 1
    assert "a.png: 30x20 is 0 megapixels, above the limit of 0.0002" in result.stderr
    assert (tmp_path / "in-protected" / "b.png").is_file()


def test_heif_without_its_extra_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "phone.heic"
    path.write_bytes(b"\0\0\0\x18ftypheic")
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails as if not installed
    with pytest.raises(ImageError, match=r"pip install 'unlearn-cli\[heif\]'"):
        load_photo(path)


@pytest.mark.integration
def test_real_heic_photos_decode_upright(shared_data: Path) -> None:
    pytest.importorskip("pillow_heif", reason="the heif extra is not installed")
    from PIL import Image

    folder = shared_data / "photos" / "camera" / "heic"
    for path in sorted(folder.iterdir()):
        photo = load_photo(path)
        with Image.open(path) as image:  # libheif applies the rotation; it must not happen twice
            assert photo.size == image.size, path.name
        assert photo.exif is None or photo.exif.get(0x0112, 1) == 1, path.name
        assert photo.rgb.std() > 5, path.name  # a real picture, not a blank decode


def test_unreadable_and_looping_files_fail_alone(
    tmp_path: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        pattern_image(index, (20, 20)).save(folder / f"{index}.png")
    secret = folder / "1.png"
    if os.geteuid() != 0:  # root reads anything: simulate the refusal instead
        secret.chmod(0)
    else:
        from unlearn_cli.pipeline import plan

        real = plan.sha256_file

        def refuse(path: Path) -> str:
            if Path(path) == secret:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(plan, "sha256_file", refuse)
    result = runner.invoke(
        app, ["protect", str(folder), "--surrogate", str(tiny_surrogate)] + FAST_OPTIONS
    )
    assert result.exit_code == 1
    assert f"{secret}: Permission denied" in result.stderr
    written = sorted(p.name for p in (tmp_path / "in-protected").glob("*.png"))
    assert written == ["0.png", "2.png"]


def test_the_same_photo_given_twice_is_protected_once(tmp_path: Path, tiny_surrogate: Path) -> None:
    photo = tmp_path / "a.jpg"
    pattern_image(0, (20, 20)).save(photo)
    (tmp_path / "link.jpg").symlink_to(photo)
    result = runner.invoke(
        app,
        ["protect", str(photo), str(tmp_path / "." / "a.jpg"), "-o", str(tmp_path / "out")]
        + ["--surrogate", str(tiny_surrogate), "--json"]
        + FAST_OPTIONS,
    )
    assert result.exit_code == 0, result.stderr
    assert [p["source"] for p in json.loads(result.stdout)["photos"]] == ["a.jpg"]


def test_earlier_outputs_inside_the_input_are_never_reprocessed(
    tmp_path: Path, tiny_surrogate: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(2):
        pattern_image(index, (20, 20)).save(folder / f"{index}.png")
    common = ["--surrogate", str(tiny_surrogate), "--json"] + FAST_OPTIONS
    first = runner.invoke(app, ["protect", str(folder), "-o", str(folder / "old")] + common)
    assert first.exit_code == 0, first.stderr
    second = runner.invoke(app, ["protect", str(folder), "-o", str(folder / "new")] + common)
    assert second.exit_code == 0, second.stderr
    assert sorted(p["source"] for p in json.loads(second.stdout)["photos"]) == ["0.png", "1.png"]


def test_a_file_name_with_a_newline_survives_a_nul_separated_pipe(
    tmp_path: Path, tiny_surrogate: Path
) -> None:
    odd = tmp_path / "new\nline.png"
    plain = tmp_path / "-dash.png"
    pattern_image(0, (20, 20)).save(odd)
    pattern_image(1, (20, 20)).save(plain)
    result = runner.invoke(
        app,
        ["protect", "-", "-0", "-o", str(tmp_path / "out"), "--surrogate", str(tiny_surrogate)]
        + ["--json"]
        + FAST_OPTIONS,
        input=os.fsencode(odd) + b"\0" + os.fsencode(plain) + b"\0",
    )
    assert result.exit_code == 0, result.stderr
    assert sorted(p["source"] for p in json.loads(result.stdout)["photos"]) == [
        "-dash.png",
        "new\nline.png",
    ]


def test_full_size_work_needs_no_full_size_float_copies() -> None:
    """apply_noise and measure_budget work in strips: on a 12-megapixel photo their peak
    allocation (the protected uint8 copy included) stays below one float32 copy of the photo."""
    rgb = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    from unlearn_cli.io.images import Photo

    noise = (torch.rand(3, 32, 32) - 0.5) * (16 / 255)
    tracemalloc.start()
    protected = apply_noise(Photo(rgb), noise, 8)
    measure_budget(rgb, protected)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * rgb.nbytes, f"peak {peak / 1e6:.0f} MB for a {rgb.nbytes / 1e6:.0f} MB photo"
