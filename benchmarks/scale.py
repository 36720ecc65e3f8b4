"""Many people at once: photos a minute of per-person protection, one after another, in local
worker processes and as Ray tasks, side by side in one run on this machine.

    python benchmarks/scale.py                   # 1, 2, 4, 8 people x 20 face photos
    python benchmarks/scale.py --people 1,2 --photos 5   # a quick look

Each person is one identity of ../shared/data/faces (the first eight by name); the surrogate is
the other seven. Every row runs the real `unlearn protect` command in a child process with the
default settings, so process start, planning, matching and writing are counted, and Ray's local
start too (a platform keeps its cluster running; that cost is reported separately). The
surrogate's face crops are computed once before the rows (the warm-up a platform pays once).

Rows:
- separate runs, 2 threads: `unlearn protect <person> --out <out>/<person>`, one person after
  another (what a script around today's command does); the row for n people is the sum of the
  first n runs of the 8-person pass.
- separate runs, 1 thread: the same with --threads 1, the reference the parallel rows must match
  byte for byte (a CPU result depends on the thread count; parallel jobs get one thread each).
- --workers 2 and --ray auto (a local Ray of 2 CPUs): `unlearn protect <batch> --per-class`.

Rows are cached in benchmarks/results/cache/scale/ (an interrupted run resumes); results go to
benchmarks/results/scale.json and scale.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from unlearn_cli.config import ProtectConfig

ROOT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("UNLEARN_BENCH_DATA", ROOT.parent.parent / "shared" / "data"))
FACES = SHARED / "faces"
RESULTS = ROOT / "results"
WORK = RESULTS / "cache" / "scale"
DEFAULTS_KEY = ProtectConfig().output_key[:8]
USERS = 8
MODES = ("separate, 2 threads", "separate, 1 thread", "--workers 2", "--ray auto")


def unlearn(*args: str) -> float:
    """Run the real command in a child process; its wall seconds."""
    environment = {**os.environ, "UNLEARN_CACHE_DIR": str(WORK / "unlearn-cache")}
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "unlearn_cli", "protect", *args, "--quiet"],
        env=environment,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"unlearn protect {' '.join(args)} failed:\n{completed.stderr}")
    return seconds


def prepare(photos: int) -> tuple[list[str], Path, Path]:
    """Symlinked folders: a batch of USERS people, and the surrogate of everyone else."""
    identities = sorted(path.name for path in FACES.iterdir() if path.is_dir())
    users, others = identities[:USERS], identities[USERS:]
    batch, surrogate = WORK / f"batch-{photos}", WORK / "surrogate"
    for folder, names, count in ((batch, users, photos), (surrogate, others, None)):
        for name in names:
            target = folder / name
            if target.is_dir():
                continue
            target.mkdir(parents=True)
            for source in sorted((FACES / name).iterdir())[:count]:
                (target / source.name).symlink_to(source)
    return users, batch, surrogate


def cached_row(key: str, compute) -> dict:
    path = WORK / "rows" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    row = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row))
    return row


def outputs(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*.png"))
    }


def subset(batch: Path, users: list[str], count: int) -> Path:
    """A batch folder of the first ``count`` people (their photos symlinked)."""
    folder = batch.with_name(f"{batch.name}-first{count}")
    for name in users[:count]:
        if not (folder / name).is_dir():
            (folder / name).mkdir(parents=True)
            for photo in sorted((batch / name).iterdir()):
                (folder / name / photo.name).symlink_to(photo.resolve())
    return folder


def measure(people_counts: list[int], photos: int) -> dict:
    users, batch, surrogate = prepare(photos)
    common = ["--surrogate", str(surrogate)]
    warm = [  # the surrogate's crops and warmed-up model, once for each thread count
        cached_row(
            f"warmup-{DEFAULTS_KEY}-{threads}",
            lambda threads=threads: {
                "seconds": unlearn(
                    str(batch / users[0]),
                    "--out",
                    str(WORK / f"warm-{threads}"),
                    "--threads",
                    str(threads),
                    *common,
                )
            },
        )["seconds"]
        for threads in (2, 1)
    ]
    rows, per_person = [], {}
    for mode, threads in (("separate, 2 threads", 2), ("separate, 1 thread", 1)):
        times = []
        for name in users[: max(people_counts)]:
            out = WORK / f"out-{photos}-separate-{threads}" / name
            row = cached_row(
                f"{DEFAULTS_KEY}-{photos}-separate-{threads}-{name}",
                lambda out=out, name=name, threads=threads: {
                    "seconds": unlearn(
                        str(batch / name), "--out", str(out), "--threads", str(threads), *common
                    )
                },
            )
            times.append(row["seconds"])
        per_person[mode] = times
        for count in people_counts:
            rows.append(row_of(mode, count, photos, sum(times[:count])))
    for mode, option in (("--workers 2", ["--workers", "2"]), ("--ray auto", ["--ray", "auto"])):
        for count in people_counts:
            tag = mode.strip("-").replace(" ", "")
            out = WORK / f"out-{photos}-{tag}-{count}"
            row = cached_row(
                f"{DEFAULTS_KEY}-{photos}-{tag}-{count}",
                lambda out=out, count=count, option=option: {
                    "seconds": unlearn(
                        str(subset(batch, users, count)), "--out", str(out), *option, *common
                    )
                },
            )
            rows.append(row_of(mode, count, photos, row["seconds"]))
    largest = max(people_counts)
    reference = outputs(WORK / f"out-{photos}-separate-1")
    identical = {
        mode: outputs(WORK / f"out-{photos}-{tag}-{largest}") == reference
        for mode, tag in (("--workers 2", "workers2"), ("--ray auto", "rayauto"))
    }
    identical["separate, 2 threads"] = outputs(WORK / f"out-{photos}-separate-2") == reference
    return {
        "rows": rows,
        "warmup_seconds": [round(seconds, 1) for seconds in warm],
        "ray_start_seconds": ray_start_seconds(),
        "identical_to_separate_1_thread": identical,
        "photos_compared": len(reference),
        "per_person_seconds": {k: [round(t, 1) for t in v] for k, v in per_person.items()},
    }


def row_of(mode: str, people: int, photos: int, seconds: float) -> dict:
    return {
        "mode": mode,
        "people": people,
        "photos": people * photos,
        "wall_s": round(seconds, 1),
        "photos_per_min": round(people * photos * 60 / seconds, 1),
    }


def ray_start_seconds() -> float:
    """Seconds to start and stop a local Ray of 2 CPUs (paid by every --ray auto row here)."""
    code = (
        "import time, ray; t = time.perf_counter(); ray.init(num_cpus=2, include_dashboard=False,"
        " logging_level='ERROR'); ray.shutdown(); print(time.perf_counter() - t)"
    )
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(3)
    ]
    return round(statistics.median(runs), 1)


def write_results(result: dict, people_counts: list[int], photos: int) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    header = (
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load:.2f} at the end; "
        f"`python benchmarks/scale.py --people {','.join(map(str, people_counts))} "
        f"--photos {photos}`; protect defaults {DEFAULTS_KEY}; face crops of 112 px."
    )
    baseline = {r["people"]: r["wall_s"] for r in result["rows"] if r["mode"] == MODES[0]}
    lines = [
        "## Many people: sequential, --workers, Ray",
        "",
        header,
        "",
        "| mode | people | photos | wall s | photos/min | speed-up vs separate, 2 threads |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(result["rows"], key=lambda r: (r["people"], MODES.index(r["mode"]))):
        speedup = baseline[row["people"]] / row["wall_s"]
        lines.append(
            f"| {row['mode']} | {row['people']} | {row['photos']} | {row['wall_s']} | "
            f"{row['photos_per_min']} | {speedup:.2f} |"
        )
    same = ", ".join(
        f"{mode}: {'identical' if ok else 'different'}"
        for mode, ok in result["identical_to_separate_1_thread"].items()
    )
    lines += [
        "",
        f"Bytes of the {result['photos_compared']} protected files against separate runs with "
        f"--threads 1: {same}. Surrogate warm-up before the rows (once per thread count, "
        f"2 and 1, a first person's run included): {result['warmup_seconds']} s; starting "
        f"and stopping a local Ray: {result['ray_start_seconds']} s (median of 3).",
        "",
    ]
    (RESULTS / "scale.md").write_text("\n".join(lines))
    (RESULTS / "scale.json").write_text(json.dumps({"header": header, **result}, indent=2) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", default="1,2,4,8", help="people counts, at most 8")
    parser.add_argument("--photos", type=int, default=20, help="photos per person")
    parser.add_argument("--fresh", action="store_true", help="forget cached rows and outputs")
    args = parser.parse_args()
    people_counts = sorted(int(count) for count in args.people.split(","))
    if max(people_counts) > USERS:
        raise SystemExit(f"--people: at most {USERS}")
    if not FACES.is_dir():
        raise SystemExit(f"face identities not found at {FACES}")
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    write_results(measure(people_counts, args.photos), people_counts, args.photos)


if __name__ == "__main__":
    main()
