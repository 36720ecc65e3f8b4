"""Many people, one job each: --per-class, --workers and Ray give each person the bytes of a
separate run, one person's failure stops no one else, and a run killed outright resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearn_cli.cli import app
from unlearn_cli.config import ClassLayout, ProtectConfig
from unlearn_cli.errors import OutputError
from unlearn_cli.io.images import sha256_file
from unlearn_cli.io.inputs import collect_inputs
from unlearn_cli.pipeline import run as pipeline_run
from unlearn_cli.pipeline.checkpoint import CHECKPOINT_NAME, WORK_FOLDER
from unlearn_cli.pipeline.fanout import protect_people
from unlearn_cli.pipeline.people import split_people
from unlearn_cli.pipeline.run import protect
from unlearn_cli.verify.files import verify_files

from .conftest import FAST_OPTIONS, pattern_image, write_class_folder

# one thread per job: what --workers 2 and Ray tasks use on this machine, so that the separate
# runs they are compared with compute the same floats
CONFIG = ProtectConfig(resolution=16, rounds=3, min_rounds=3, steps=2, train_steps=2, threads=1)
PEOPLE = {"ann": 3, "bob": 4, "cem": 3}
runner = CliRunner()


def _batch(root: Path) -> Path:
    return write_class_folder(root, PEOPLE, size=(30, 26))


def _outputs(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (temporary and work files included) with its hash."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and (path.suffix == ".png" or path.name.endswith(".tmp"))
    }


def _separate_runs(batch: Path, out: Path, surrogate: Path, config=CONFIG) -> dict[str, str]:
    """Each person protected by a run of their own folder alone, as a user would run it."""
    for person in sorted(p.name for p in batch.iterdir()):
        inputs = collect_inputs([str(batch / person)], out / person, ClassLayout.AUTO)
        protect(inputs, config, surrogate=str(surrogate))
    return _outputs(out)


def test_split_people_roots_each_class_at_its_own_folder(tmp_path: Path) -> None:
    batch = _batch(tmp_path / "in")
    pattern_image(9).save(tmp_path / "in" / "loose.png")  # a photo of the folder itself
    inputs = collect_inputs([str(batch)], tmp_path / "out", ClassLayout.AUTO)
    people = {name: person for name, person, _ in split_people(inputs)}
    assert sorted(people) == ["ann", "bob", "cem", "in"]
    bob = people["bob"]
    assert bob.root == batch / "bob" and bob.output_root == tmp_path.resolve() / "out" / "bob"
    assert [p.relative.as_posix() for p in bob.photos] == ["0.png", "1.png", "2.png", "3.png"]
    assert [p.output.as_posix() for p in bob.photos] == ["0.png", "1.png", "2.png", "3.png"]
    assert [p.output.as_posix() for p in people["in"].photos] == ["loose.png"]
    assert people["in"].output_root == tmp_path.resolve() / "out" / "in"


def test_each_person_gets_the_bytes_of_a_separate_run(tmp_path: Path, tiny_surrogate: Path) -> None:
    batch = _batch(tmp_path / "in")
    separate = _separate_runs(batch, tmp_path / "separate", tiny_surrogate)
    inputs = collect_inputs([str(batch)], tmp_path / "out", ClassLayout.AUTO)
    result = protect_people(inputs, CONFIG, surrogate=str(tiny_surrogate))
    assert _outputs(tmp_path / "out") == separate and len(separate) == sum(PEOPLE.values())
    manifest = result.manifest
    assert manifest["complete"] and manifest["runner"] == "sequential"
    assert [person["class"] for person in manifest["people"]] == sorted(PEOPLE)
    assert sorted(entry["output"] for entry in manifest["photos"]) == sorted(separate)
    assert {entry["source"] for entry in manifest["photos"]} == set(separate)  # batch paths
    for person in PEOPLE:  # each person's folder is complete on its own
        own = json.loads((tmp_path / "out" / person / "unlearn-manifest.json").read_text())
        assert own["complete"] and own["classes"] == [person]
    report = verify_files(tmp_path / "out", manifest)
    assert not report["unknown_files"] and len(report["photos"]) == len(separate)
    assert report["checks"]["budget"]["passed"] and report["checks"]["integrity"]["passed"]
    # a rerun keeps everything, and a joint run's folder is not mixed with per-class output
    again = protect_people(inputs, CONFIG, surrogate=str(tiny_surrogate))
    assert again.manifest["complete"] and _outputs(tmp_path / "out") == separate


def test_local_workers_give_the_same_bytes(tmp_path: Path, tiny_surrogate: Path) -> None:
    batch = _batch(tmp_path / "in")
    separate = _separate_runs(batch, tmp_path / "separate", tiny_surrogate)
    result = runner.invoke(
        app,
        ["protect", str(batch), "-o", str(tmp_path / "out"), "--workers", "2"]
        + ["--surrogate", str(tiny_surrogate), *FAST_OPTIONS, "--rounds", "3", "--min-rounds"]
        + ["3", "--json"],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["runner"] == "2 local workers" and manifest["settings"]["threads"] == 1
    assert _outputs(tmp_path / "out") == separate


def test_one_persons_failed_job_stops_no_one_else(
    tmp_path: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    batch = _batch(tmp_path / "in")
    real_protect = pipeline_run.protect

    def crash_for_bob(input_set, *args, **kwargs):
        if input_set.class_names == ["bob"]:
            raise RuntimeError("simulated crash")
        return real_protect(input_set, *args, **kwargs)

    monkeypatch.setattr(pipeline_run, "protect", crash_for_bob)
    result = runner.invoke(
        app,
        ["protect", str(batch), "-o", str(tmp_path / "out"), "--per-class"]
        + ["--surrogate", str(tiny_surrogate), *FAST_OPTIONS, "--json"],
    )
    assert result.exit_code == 1
    manifest = json.loads(result.stdout)
    assert not manifest["complete"]
    bob = next(person for person in manifest["people"] if person["class"] == "bob")
    assert "simulated crash" in bob["error"]
    assert sorted(f["source"] for f in manifest["failures"]) == [f"bob/{i}.png" for i in range(4)]
    assert len(manifest["photos"]) == PEOPLE["ann"] + PEOPLE["cem"]
    assert not (tmp_path / "out" / "bob").exists()
    assert "bob/0.png" in result.stderr and "simulated crash" in result.stderr


def test_a_job_failing_after_writing_keeps_its_photos_listed(
    tmp_path: Path, tiny_surrogate: Path, monkeypatch
) -> None:
    batch = _batch(tmp_path / "in")
    real_protect = pipeline_run.protect

    def fail_after_writing(input_set, *args, **kwargs):
        result = real_protect(input_set, *args, **kwargs)
        if input_set.class_names == ["bob"]:
            raise OutputError("cannot write to the disk: simulated")
        return result

    monkeypatch.setattr(pipeline_run, "protect", fail_after_writing)
    inputs = collect_inputs([str(batch)], tmp_path / "out", ClassLayout.AUTO)
    manifest = protect_people(inputs, CONFIG, surrogate=str(tiny_surrogate)).manifest
    bob = next(person for person in manifest["people"] if person["class"] == "bob")
    assert "simulated" in bob["error"] and not bob["complete"] and not manifest["complete"]
    assert not manifest["failures"]  # every photo of bob's was written before the failure
    assert len(manifest["photos"]) == sum(PEOPLE.values())


def test_per_class_setup_errors_are_one_line(tmp_path: Path, tiny_surrogate: Path) -> None:
    batch = _batch(tmp_path / "in")
    common = ["protect", str(batch), "--surrogate", str(tiny_surrogate), *FAST_OPTIONS]
    result = runner.invoke(app, [*common, "--workers", "0"])
    assert result.exit_code == 2 and "--workers must be at least 1" in result.stderr
    result = runner.invoke(app, [*common, "--workers", "2", "--ray", "auto"])
    assert result.exit_code == 2 and "contradict" in result.stderr
    joint = runner.invoke(app, [*common, "-o", str(tmp_path / "joint")])
    assert joint.exit_code == 0
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "joint"), "--per-class"])
    assert result.exit_code == 2 and "without --per-class" in result.stderr


def test_ray_missing_is_a_setup_error(tmp_path: Path, tiny_surrogate: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    result = runner.invoke(
        app,
        ["protect", str(_batch(tmp_path / "in")), "--ray", "auto"]
        + ["--surrogate", str(tiny_surrogate), *FAST_OPTIONS],
    )
    assert result.exit_code == 2 and "pip install 'unlearn-cli[ray]'" in result.stderr


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from unlearn_cli.config import ClassLayout, ProtectConfig
from unlearn_cli.errors import OutputError
from unlearn_cli.io.inputs import collect_inputs
from unlearn_cli.pipeline import write
from unlearn_cli.pipeline.run import protect

renamed = []
real_write_png = write.write_png_atomic

def write_then_die(*args, **kwargs):
    real_write_png(*args, **kwargs)
    renamed.append(args[0])
    if len(renamed) == 2:  # killed right after the rename: the manifest does not list it yet
        os.kill(os.getpid(), signal.SIGKILL)

write.write_png_atomic = write_then_die
config = ProtectConfig(resolution=16, rounds=3, min_rounds=3, steps=2, train_steps=2, threads=1)
inputs = collect_inputs([sys.argv[1]], Path(sys.argv[2]), ClassLayout.AUTO)
protect(inputs, config, surrogate=sys.argv[3])
"""


def test_a_run_killed_outright_adopts_what_it_wrote(tmp_path: Path, tiny_surrogate: Path) -> None:
    folder = _batch(tmp_path / "in") / "bob"
    straight_inputs = collect_inputs([str(folder)], tmp_path / "straight", ClassLayout.AUTO)
    protect(straight_inputs, CONFIG, surrogate=str(tiny_surrogate))
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(folder), str(out)]
        + [str(tiny_surrogate)],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    listed = json.loads((out / "unlearn-manifest.json").read_text())["photos"]
    assert len(listed) < len(list(out.glob("*.png"))) == 2  # one file on disk, not listed
    inputs = collect_inputs([str(folder)], out, ClassLayout.AUTO)
    result = protect(inputs, CONFIG, surrogate=str(tiny_surrogate))
    assert not result.failures and result.manifest["complete"]  # nothing refused as foreign
    assert len(result.manifest["photos"]) == PEOPLE["bob"]
    assert _outputs(out) == _outputs(tmp_path / "straight")
    assert not (out / WORK_FOLDER).exists()


def test_sigterm_stops_local_workers_at_once_and_the_rerun_goes_on(
    tmp_path: Path, tiny_surrogate: Path
) -> None:
    batch = _batch(tmp_path / "in")
    out = tmp_path / "out"
    slow = ["--rounds", "15", "--min-rounds", "15", "--threads", "1"]
    command = [sys.executable, "-m", "unlearn_cli", "protect", str(batch), "-o", str(out)]
    command += ["--workers", "2", "--surrogate", str(tiny_surrogate), *FAST_OPTIONS, *slow]
    running = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(f"*/{WORK_FOLDER}/{CHECKPOINT_NAME}")):
        assert running.poll() is None and time.monotonic() < deadline, running.stderr.read()
        time.sleep(0.05)
    running.terminate()
    stopped = time.monotonic()
    assert running.wait(timeout=60) == 130
    assert time.monotonic() - stopped < 20  # not after every running person was finished
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    straight = [part if part != str(out) else str(tmp_path / "straight") for part in command]
    assert subprocess.run(straight, capture_output=True).returncode == 0
    assert _outputs(out) == _outputs(tmp_path / "straight")  # as if never stopped


def _ray_workers_running(task_name: str) -> list[int]:
    """Pids of Ray worker processes executing ``task_name`` (Ray names them ray::<task>)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if command.startswith(f"ray::{task_name}".encode()):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def local_ray():
    """A local Ray cluster of two CPUs (the test extra installs Ray; a failure under CI)."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is missing: the test extra installs it")
        pytest.skip("Ray is not installed: pip install -e '.[ray]'")
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("finding Ray's worker processes needs /proc")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.mark.integration
def test_ray_recovers_a_killed_worker_without_losing_or_doubling_a_photo(
    tmp_path: Path, shared_data: Path, local_ray
) -> None:
    batch, surrogate = tmp_path / "people", tmp_path / "surrogate"
    people = {"Tina_Fey": 4, "Tom_Hanks": 4, "Simon_Cowell": 4}
    others = {"Barack_Obama": 8, "James_Spader": 8, "Kate_Winslet": 8, "Miley_Cyrus": 8}
    for folder, chosen in ((batch, people), (surrogate, others)):
        for person, count in chosen.items():
            (folder / person).mkdir(parents=True)
            for source in sorted((shared_data / "faces" / person).iterdir())[:count]:
                (folder / person / source.name).symlink_to(source)
    config = replace(CONFIG, rounds=6, min_rounds=6, match_k=2)
    separate = _separate_runs(batch, tmp_path / "separate", surrogate, config)
    out = tmp_path / "out"
    inputs = collect_inputs([str(batch)], out, ClassLayout.AUTO)
    outcome: dict = {}
    driver = threading.Thread(
        target=lambda: outcome.update(
            result=protect_people(inputs, config, surrogate=str(surrogate), ray_address="auto")
        )
    )
    driver.start()
    killed: list[int] = []
    deadline = time.monotonic() + 120
    while not killed and driver.is_alive() and time.monotonic() < deadline:
        if list(out.glob(f"*/{WORK_FOLDER}/{CHECKPOINT_NAME}")):  # a person is mid-optimisation
            for pid in _ray_workers_running("run_person"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.02)
    driver.join(timeout=300)
    assert killed, "no Ray worker was caught mid-job"
    manifest = outcome["result"].manifest
    assert manifest["complete"] and not manifest["failures"], manifest["people"]
    assert _outputs(out) == separate  # every photo once, the bytes of a run never killed
    assert not list(out.glob(f"*/{WORK_FOLDER}"))  # no checkpoint, journal or temporary left
    assert sorted(entry["output"] for entry in manifest["photos"]) == sorted(separate)
