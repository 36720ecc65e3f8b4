"""The unlearn command through Typer's CliRunner: help, JSON, exit codes, written files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.io.images import load_photo, sha256_file

from .conftest import FAST_OPTIONS, pattern_image

runner = CliRunner()


def run(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin)


def test_help_lists_commands_options_and_exit_codes() -> None:
    assert "protect" in run("--help").stdout
    text = run("protect", "--help").stdout
    for expected in [
        "--eps",
        "--mode",
        "--surrogate",
        "--out",
        "--json",
        "--resolution",
        "Exit codes",
        "130 interrupted",
    ]:
        assert expected in text
    assert run("--version").stdout.startswith("unlearn ")


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from unlearn_cli.cli import app; "
        "CliRunner().invoke(app, ['protect', '--help']); print('torch' in sys.modules)"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def _assert_within_budget(manifest: dict, input_root: Path, output_root: Path, eps: int) -> None:
    """Every written file, decoded, is within eps levels of its decoded original."""
    for photo in manifest["photos"]:
        original = load_photo(input_root / photo["source"])
        written = load_photo(output_root / photo["output"])
        assert written.rgb.shape == original.rgb.shape
        difference = np.abs(written.rgb.astype(int) - original.rgb.astype(int))
        assert difference.max() <= eps
        assert photo["budget"]["linf"] == difference.max()
        assert photo["output_sha256"] == sha256_file(output_root / photo["output"])


def test_protect_json_on_stdout_and_budget_holds(photo_folder: Path, tiny_surrogate: Path) -> None:
    before = {p.name: sha256_file(p) for p in photo_folder.iterdir()}
    result = run(
        "protect",
        str(photo_folder),
        "--surrogate",
        str(tiny_surrogate),
        "--json",
        "--eps",
        "6",
        *FAST_OPTIONS,
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    output_root = photo_folder.with_name("me-protected")
    assert manifest == json.loads((output_root / "unlearn-manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["settings"]["eps"] == 6
    assert manifest["input_root"] == str(photo_folder.resolve())
    assert sorted(p["output"] for p in manifest["photos"]) == [f"img{i}.png" for i in range(4)]
    assert manifest["totals"] == {**manifest["totals"], "protected": 4, "failed": 0}
    assert manifest["surrogate"]["selected"] == ["alpha", "beta", "gamma"]
    assert manifest["surrogate"]["ranking"]["me"][0]["class"] in {"alpha", "beta", "gamma"}
    assert len(manifest["optimisation"]["rounds"]) == 2
    _assert_within_budget(manifest, photo_folder, output_root, eps=6)
    assert {p.name: sha256_file(p) for p in photo_folder.iterdir()} == before  # originals intact


def test_rem_protection_is_recorded_and_keeps_the_budget(
    photo_folder: Path, tiny_surrogate: Path
) -> None:
    args = ["protect", str(photo_folder), "--surrogate", str(tiny_surrogate), *FAST_OPTIONS]
    refused = run(*args, "--rem", "9")
    assert refused.exit_code == 2 and "--rem must be between 0 and eps (8), got 9" in refused.output
    result = run(*args, "--rem", "4", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["settings"]["rem_radius"] == 4
    _assert_within_budget(manifest, photo_folder, photo_folder.with_name("me-protected"), eps=8)


def test_consensus_is_recorded_and_out_of_range_is_refused(
    photo_folder: Path, tiny_surrogate: Path
) -> None:
    args = ["protect", str(photo_folder), "--surrogate", str(tiny_surrogate), *FAST_OPTIONS]
    refused = run(*args, "--consensus", "1.5")
    assert refused.exit_code == 2 and "--consensus" in refused.output
    default = json.loads(run(*args, "--json").stdout)
    assert default["settings"]["consensus"] == 0.5
    off = run(*args, "--consensus", "0", "--json")
    assert off.exit_code == 0, off.output
    manifest = json.loads(off.stdout)
    assert "consensus" not in manifest["settings"]
    assert manifest["totals"]["protected"] == len(default["photos"])  # other noise, protected anew
    _assert_within_budget(manifest, photo_folder, photo_folder.with_name("me-protected"), eps=8)


def test_gray_noise_changes_brightness_alone_within_the_budget(
    photo_folder: Path, tiny_surrogate: Path
) -> None:
    args = ["protect", str(photo_folder), "--surrogate", str(tiny_surrogate), *FAST_OPTIONS]
    result = run(*args, "--gray-noise", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["settings"]["gray"] is True
    output_root = photo_folder.with_name("me-protected")
    _assert_within_budget(manifest, photo_folder, output_root, eps=8)
    for photo in manifest["photos"]:
        original = load_photo(photo_folder / photo["source"]).rgb.astype(int)
        difference = load_photo(output_root / photo["output"]).rgb.astype(int) - original
        inside = ((original >= 8) & (original <= 255 - 8)).all(axis=2)  # no channel clipped
        assert np.abs(difference[inside]).max() > 0
        assert (difference[inside] == difference[inside][:, :1]).all()


def test_robust_protection_is_the_default_and_keeps_the_budget(
    photo_folder: Path, tiny_surrogate: Path
) -> None:
    args = ["protect", str(photo_folder), "--surrogate", str(tiny_surrogate), *FAST_OPTIONS]
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["settings"]["robust"] is True
    output_root = photo_folder.with_name("me-protected")
    _assert_within_budget(manifest, photo_folder, output_root, eps=8)
    plan = run(*args, "--no-robust", "--json", "--dry-run")  # other settings: redo them all
    assert plan.exit_code == 0, plan.output
    assert {(p["action"], p["reason"]) for p in json.loads(plan.stdout)["photos"]} == {
        ("redo", "the settings changed")
    }


def test_human_report_is_a_table(photo_folder: Path, tiny_surrogate: Path) -> None:
    result = run(
        "protect",
        str(photo_folder),
        "--surrogate",
        str(tiny_surrogate),
        *[o for o in FAST_OPTIONS if o != "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "Budget report" in result.stdout and "img0.png" in result.stdout
    assert "manifest:" in result.stdout


def test_sample_mode_and_subfolder_classes(tmp_path: Path, tiny_surrogate: Path) -> None:
    for person in ("ann", "ben"):
        (tmp_path / "in" / person).mkdir(parents=True)
        for index in range(2):
            pattern_image(hash(person) % 1000 + index).save(
                tmp_path / "in" / person / f"{index}.png"
            )
    result = run(
        "protect",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--mode",
        "sample",
        "--surrogate",
        str(tiny_surrogate),
        "--json",
        *FAST_OPTIONS,
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["classes"] == ["ann", "ben"] and manifest["settings"]["mode"] == "sample"
    assert sorted(p["output"] for p in manifest["photos"]) == [
        "ann/0.png",
        "ann/1.png",
        "ben/0.png",
        "ben/1.png",
    ]
    _assert_within_budget(manifest, tmp_path / "in", tmp_path / "out", eps=8)


def test_a_broken_photo_fails_alone_with_exit_code_1(
    photo_folder: Path, tiny_surrogate: Path
) -> None:
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = run(
        "protect", str(photo_folder), "--surrogate", str(tiny_surrogate), "--json", *FAST_OPTIONS
    )
    assert result.exit_code == 1
    manifest = json.loads(result.stdout)
    assert (
        manifest["totals"]["protected"] == 4 and manifest["failures"][0]["source"] == "broken.jpg"
    )
    assert "broken.jpg: cannot decode image" in result.stderr


def test_stdin_paths_with_out(photo_folder: Path, tiny_surrogate: Path, tmp_path: Path) -> None:
    paths = "\n".join(str(p) for p in sorted(photo_folder.iterdir())[:2]) + "\n"
    result = run(
        "protect",
        "-",
        "--out",
        str(tmp_path / "o"),
        "--surrogate",
        str(tiny_surrogate),
        "--json",
        *FAST_OPTIONS,
        stdin=paths,
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["photos"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eps", "0"], "--eps must be between 1 and 255"),
        (["--device", "tpu"], "--device must be auto, cpu or cuda"),
        (["--surrogate", "/nonexistent/surrogate"], "neither a folder nor a known name"),
    ],
)
def test_setup_errors_exit_2_before_any_photo(
    photo_folder: Path, tiny_surrogate: Path, args: list[str], message: str
) -> None:
    options = ["--surrogate", str(tiny_surrogate), *FAST_OPTIONS, *args]
    result = run("protect", str(photo_folder), *options)
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""
    assert not photo_folder.with_name("me-protected").exists()


def test_no_images_and_bad_options_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("protect", str(tmp_path / "empty"))
    assert result.exit_code == 2 and "no images found" in result.stderr
    assert run("protect", str(tmp_path), "--mode", "pixel").exit_code == 2
    assert run("protect").exit_code == 2


def test_offline_default_surrogate_error_names_the_flag(photo_folder: Path, monkeypatch) -> None:
    from dataclasses import replace

    from unlearn_cli import surrogates

    offline = replace(surrogates.NAMED_SURROGATES["lfw"], urls=("http://127.0.0.1:9/lfw.tgz",))
    monkeypatch.setitem(surrogates.NAMED_SURROGATES, "lfw", offline)
    result = run("protect", str(photo_folder), *FAST_OPTIONS)
    assert result.exit_code == 2
    assert "--surrogate DIR" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sigterm_stops_cleanly_with_exit_code_130(photo_folder: Path, tiny_surrogate: Path) -> None:
    import signal
    import time

    unlearn = Path(sys.executable).parent / "unlearn"
    before = {p.name: sha256_file(p) for p in photo_folder.iterdir()}
    process = subprocess.Popen(
        [
            str(unlearn),
            "protect",
            str(photo_folder),
            "--surrogate",
            str(tiny_surrogate),
            "--rounds",
            "1000",
            "--min-rounds",
            "1000",
            "--resolution",
            "16",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(8)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert {p.name: sha256_file(p) for p in photo_folder.iterdir()} == before


def test_progress_needs_a_terminal_and_no_color_is_respected(
    photo_folder: Path, tiny_surrogate: Path
) -> None:
    (photo_folder / "broken.jpg").write_bytes(b"not a jpeg")
    options = [option for option in FAST_OPTIONS if option != "--quiet"]
    common = ["protect", str(photo_folder), "--surrogate", str(tiny_surrogate), *options]
    piped = run(*common)  # CliRunner's stderr is not a terminal: no bars, no round lines
    assert piped.exit_code == 1
    assert "round 1/" not in piped.stderr and "━" not in piped.stderr
    assert "broken.jpg: cannot decode image" in piped.stderr
    red = "\x1b[31m"
    coloured = runner.invoke(app, [*common, "--overwrite"], env={"FORCE_COLOR": "1"})
    assert red in coloured.stderr  # a terminal gets colour...
    plain = runner.invoke(app, [*common, "--overwrite"], env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert red not in plain.stderr and "broken.jpg: cannot decode image" in plain.stderr
