"""Never lose work: resuming, checkpoints, --overwrite, --dry-run, refusals and full disks."""

from __future__ import annotations

import errno
import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.config import ClassLayout, ProtectConfig
from unlearn_cli.io.images import sha256_file
from unlearn_cli.io.inputs import collect_inputs
from unlearn_cli.pipeline import checkpoint, write
from unlearn_cli.pipeline import plan as planning
from unlearn_cli.pipeline.events import Notice, PhotoFailed, RoundFinished
from unlearn_cli.pipeline.run import protect
from unlearn_cli.runtime.devices import compute_signature

from .conftest import FAST_OPTIONS, pattern_image

runner = CliRunner()
# two threads, not the default (every core): the write test needs two writers, and a run must
# be compared with runs of the same thread count (see the thread-count test)
CONFIG = ProtectConfig(resolution=16, rounds=3, min_rounds=3, steps=2, train_steps=2, threads=2)


def _photos(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pattern_image(index, (28 + index, 24)).save(folder / f"{index}.png")
    return folder


def _outputs(folder: Path) -> dict[str, str]:
    return {path.name: sha256_file(path) for path in sorted(folder.glob("*.png"))}


def _run(folder: Path, out: Path, surrogate: Path, on_event=None, config=CONFIG):
    inputs = collect_inputs([str(folder)], out, ClassLayout.AUTO)
    return protect(inputs, config, surrogate=str(surrogate), on_event=on_event)


class _StopAt:
    """An event handler that interrupts the run once, like Ctrl-C at a chosen moment."""

    def __init__(self, round_number: int) -> None:
        self.round_number = round_number
        self.events: list = []

    def __call__(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, RoundFinished) and event.report.round == self.round_number:
            self.round_number = -1
            raise KeyboardInterrupt


def test_an_interrupted_optimisation_resumes_from_its_last_round(
    tmp_path: Path, tiny_surrogate: Path
) -> None:
    folder = _photos(tmp_path / "in")
    _run(folder, tmp_path / "straight", tiny_surrogate)
    out = tmp_path / "out"
    stop = _StopAt(2)
    with pytest.raises(KeyboardInterrupt):
        _run(folder, out, tiny_surrogate, on_event=stop)
    assert (out / checkpoint.WORK_FOLDER / checkpoint.CHECKPOINT_NAME).is_file()
    assert not list(out.glob("*.png"))
    events: list = []
    result = _run(folder, out, tiny_surrogate, on_event=events.append)
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert "resuming the optimisation after round 2 (checkpoint)" in notices
    assert [e.report.round for e in events if isinstance(e, RoundFinished)] == [3]
    assert [r["round"] for r in result.manifest["optimisation"]["rounds"]] == [1, 2, 3]
    assert _outputs(out) == _outputs(tmp_path / "straight")  # as if never interrupted
    assert not (out / checkpoint.WORK_FOLDER).exists()  # removed once the run completed


def test_an_interrupted_write_keeps_what_is_written_and_resumes(
    tmp_path: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    folder = _photos(tmp_path / "in")
    _run(folder, tmp_path / "straight", tiny_surrogate)
    out = tmp_path / "out"
    real_write = write.write_one
    calls = []
    fourth_written = threading.Event()

    def write_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # stopped while the 4th photo is being written beside it
            fourth_written.wait(timeout=30)
            raise KeyboardInterrupt
        entry = real_write(*args, **kwargs)
        if len(calls) == 4:
            fourth_written.set()
        return entry

    monkeypatch.setattr(write, "write_one", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(folder, out, tiny_surrogate)
    assert fourth_written.is_set()
    manifest = json.loads((out / "unlearn-manifest.json").read_text())
    # the write that finished beside the interrupted one is listed too: a file on disk but not
    # in the manifest would be refused by the rerun as foreign output
    listed = {entry["output"] for entry in manifest["photos"]}
    assert manifest["interrupted"] and len(listed) == 3
    assert {path.name for path in out.glob("*.png")} == listed
    monkeypatch.setattr(write, "write_one", real_write)
    events: list = []
    result = _run(folder, out, tiny_surrogate, on_event=events.append)
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert f"{len(listed)} photo(s) already protected with these settings: kept" in notices
    assert not [event for event in events if isinstance(event, PhotoFailed)]
    assert not [e for e in events if isinstance(e, RoundFinished)]  # noise from the checkpoint
    assert result.manifest["complete"] and len(result.manifest["photos"]) == 4
    assert _outputs(out) == _outputs(tmp_path / "straight")


def test_another_thread_count_protects_again_instead_of_resuming(
    tmp_path: Path, tiny_surrogate: Path
) -> None:
    folder = _photos(tmp_path / "in")
    _run(folder, tmp_path / "one", tiny_surrogate, config=replace(CONFIG, threads=1))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _run(folder, out, tiny_surrogate, on_event=_StopAt(2))
    events: list = []
    result = _run(
        folder, out, tiny_surrogate, on_event=events.append, config=replace(CONFIG, threads=1)
    )
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert not [notice for notice in notices if notice.startswith("resuming")]
    assert [e.report.round for e in events if isinstance(e, RoundFinished)] == [1, 2, 3]
    cpu = f"cpu {torch.backends.cpu.get_cpu_capability()}"
    assert result.manifest["compute"] == f"{cpu}, 1 thread(s)"
    assert _outputs(out) == _outputs(tmp_path / "one")  # as a 1-thread run, not a mixture
    inputs = collect_inputs([str(folder)], out, ClassLayout.AUTO)
    plan = protect(inputs, CONFIG, surrogate=str(tiny_surrogate), dry_run=True)  # 2 threads
    reason = (
        f"made with {cpu}, 1 thread(s), this run uses {cpu}, 2 thread(s) (the noise depends on it)"
    )
    assert {(p["action"], p["reason"]) for p in plan.manifest["photos"]} == {("redo", reason)}


def test_outputs_made_on_another_kind_of_cpu_are_protected_again(
    tmp_path: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    """The same run limited to AVX2 on an AVX-512 machine writes other bytes, so a folder
    protected on one CPU is not taken as done, or resumed, on a CPU with other vector units."""
    folder = _photos(tmp_path / "in")
    out = tmp_path / "out"
    _run(folder, out, tiny_surrogate)
    here = torch.backends.cpu.get_cpu_capability()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "OTHER")
    inputs = collect_inputs([str(folder)], out, ClassLayout.AUTO)
    plan = protect(inputs, CONFIG, surrogate=str(tiny_surrogate), dry_run=True)
    reason = (
        f"made with cpu {here}, 2 thread(s), this run uses cpu OTHER, 2 thread(s) "
        "(the noise depends on it)"
    )
    assert {(p["action"], p["reason"]) for p in plan.manifest["photos"]} == {("redo", reason)}


def test_the_compute_of_a_gpu_run_names_the_gpu_model(monkeypatch) -> None:
    """GPU kernels pick their own summation orders, so outputs made on one GPU model are not
    taken as made on another."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "GPU MODEL A")
    assert compute_signature(torch.device("cuda:0")) == "cuda GPU MODEL A"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "GPU MODEL B")
    assert compute_signature(torch.device("cuda:0")) == "cuda GPU MODEL B"


def test_a_cache_filled_with_another_thread_count_changes_no_byte(
    tmp_path: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    folder = _photos(tmp_path / "in")
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "cold"))
    _run(folder, tmp_path / "cold-cache", tiny_surrogate)
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "shared"))
    _run(folder, tmp_path / "one", tiny_surrogate, config=replace(CONFIG, threads=1))
    _run(folder, tmp_path / "after-one", tiny_surrogate)  # 2 threads, beside 1-thread results
    assert _outputs(tmp_path / "after-one") == _outputs(tmp_path / "cold-cache")
    # the warmed-up surrogate differs in its last bits between thread counts: each count has its own
    assert len(list((tmp_path / "shared" / "models").glob("*.pt"))) == 2


def _cli(*args: str):
    return runner.invoke(app, ["protect", *args, *FAST_OPTIONS, "--json"])


def test_rerun_skips_done_photos_and_redoes_changed_ones(
    tmp_path: Path, tiny_surrogate: Path
) -> None:
    folder = _photos(tmp_path / "in")
    out = tmp_path / "in-protected"
    common = [str(folder), "--surrogate", str(tiny_surrogate)]
    assert _cli(*common).exit_code == 0
    first = _outputs(out)
    plan = json.loads(_cli(*common, "--dry-run").stdout)
    assert {p["action"] for p in plan["photos"]} == {"skip"}
    again = _cli(*common)
    assert again.exit_code == 0 and _outputs(out) == first
    assert len(json.loads(again.stdout)["photos"]) == 4

    pattern_image(99, (30, 24)).save(folder / "1.png")  # the user edits one original
    plan = json.loads(_cli(*common, "--dry-run").stdout)
    actions = {p["source"]: (p["action"], p["reason"]) for p in plan["photos"]}
    assert actions["1.png"] == ("redo", "the original changed")
    assert [a for a, _ in actions.values()].count("skip") == 3
    assert _cli(*common).exit_code == 0
    changed = _outputs(out)
    assert changed["1.png"] != first["1.png"]
    assert {k: v for k, v in changed.items() if k != "1.png"} == {
        k: v for k, v in first.items() if k != "1.png"
    }

    plan = json.loads(_cli(*common, "--eps", "4", "--dry-run").stdout)
    assert {(p["action"], p["reason"]) for p in plan["photos"]} == {
        ("redo", "the settings changed")
    }
    plan = json.loads(_cli(*common, "--overwrite", "--dry-run").stdout)
    assert {p["action"] for p in plan["photos"]} == {"protect"}


def test_dry_run_writes_nothing(tmp_path: Path, tiny_surrogate: Path) -> None:
    folder = _photos(tmp_path / "in", 2)
    result = _cli(str(folder), "--surrogate", str(tiny_surrogate), "--dry-run")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] and plan["totals"]["protect"] == 2
    assert not (tmp_path / "in-protected").exists()
    human = runner.invoke(
        app, ["protect", str(folder), "--surrogate", str(tiny_surrogate), "--dry-run"]
    )
    assert "Dry run" in human.stdout and "2 protect" in human.stdout


def test_a_foreign_file_under_an_output_name_is_refused_until_overwrite(
    tmp_path: Path, tiny_surrogate: Path
) -> None:
    folder = _photos(tmp_path / "in", 2)
    out = tmp_path / "in-protected"
    out.mkdir()
    (out / "0.png").write_bytes(b"the user's own file")
    common = [str(folder), "--surrogate", str(tiny_surrogate)]
    result = _cli(*common)
    assert result.exit_code == 1
    assert "exists and was not written by unlearn for this photo" in result.stderr
    assert (out / "0.png").read_bytes() == b"the user's own file"
    assert (out / "1.png").is_file()
    assert _cli(*common, "--overwrite").exit_code == 0
    assert (out / "0.png").read_bytes() != b"the user's own file"


def test_a_full_disk_stops_the_run_keeps_what_is_written_and_resumes(
    tmp_path: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    folder = _photos(tmp_path / "in", 3)
    out = tmp_path / "in-protected"
    real_write = write.write_png_atomic
    calls = []

    def disk_fills_up(path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(write, "write_png_atomic", disk_fills_up)
    common = [str(folder), "--surrogate", str(tiny_surrogate)]
    result = _cli(*common)
    assert result.exit_code == 1
    assert "No space left on device; 1 photo(s) are protected there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    manifest = json.loads((out / "unlearn-manifest.json").read_text())
    # the first write to reach the disk succeeded (parallel writers: not always photo 0's)
    listed = [p["output"] for p in manifest["photos"]]
    assert len(listed) == 1 and [path.name for path in out.glob("*.png")] == listed
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    monkeypatch.setattr(write, "write_png_atomic", real_write)
    assert _cli(*common).exit_code == 0
    assert sorted(_outputs(out)) == ["0.png", "1.png", "2.png"]


def test_an_unwritable_output_folder_is_a_setup_error(
    tmp_path: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    folder = _photos(tmp_path / "in", 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _cli(str(folder), "--out", str(blocker / "out"), "--surrogate", str(tiny_surrogate))
    assert result.exit_code == 2
    assert f"cannot write to {blocker / 'out'}" in result.stderr

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(planning.tempfile, "TemporaryFile", read_only)
    result = _cli(str(folder), "--surrogate", str(tiny_surrogate))
    assert result.exit_code == 2 and "Read-only file system" in result.stderr
