"""Speed and memory of protection: the hot loop side by side, and `unlearn protect` at scale.

    python benchmarks/speed.py --part loop      # min-min round: memory layout x chunk x threads,
                                                # and the cost of the --robust degradations
    python benchmarks/speed.py --part scaling   # unlearn protect on 10, 50, 200 face crops and
                                                # full-size photos: wall, CPU, peak RSS, photos/min
    python benchmarks/speed.py --part many      # 1,000 full-size photos: peak memory
    python benchmarks/speed.py --part gpu       # min-min round on a GPU: float32 vs bf16 x chunk
                                                # (--resolutions 32,128: at each surrogate size)
    python benchmarks/speed.py --part detect --device cuda   # finding faces: CPU vs a GPU
    python benchmarks/speed.py --part threads   # 1 vs 2 threads, OpenMP waiting actively or
                                                # passively, idle and beside two busy processes

Every `protect` row runs the real command in a child process (so its peak RSS is its own) with
the default settings against a surrogate folder of seven face identities. Rows are cached in
benchmarks/results/cache/speed/, so an interrupted run resumes; results go to
benchmarks/results/speed.json and speed.md.
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
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
from PIL import Image

from unlearn_cli.config import ProtectConfig
from unlearn_cli.engine import ErrorMinimizingNoise, MinMinSettings, create_model
from unlearn_cli.engine.augment import AugmentSettings
from unlearn_cli.io.images import load_photo
from unlearn_cli.runtime.devices import resolve_device

ROOT = Path(__file__).resolve().parent
# ../shared/data beside the checkout; elsewhere (a GPU machine) a copy named by UNLEARN_BENCH_DATA
SHARED = Path(os.environ.get("UNLEARN_BENCH_DATA", ROOT.parent.parent / "shared" / "data"))
FACES = SHARED / "faces"
PORTRAITS = SHARED / "photos" / "portraits"
RESULTS = ROOT / "results"
CACHE = RESULTS / "cache" / "speed"
SURROGATE_IDENTITIES = 7
DEFAULTS_KEY = ProtectConfig().output_key[:8]  # rows are measured again when the defaults change


def machine() -> str:
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.machine()}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def cached_row(key: str, compute) -> dict:
    path = CACHE / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    row = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row))
    return row


# --- the hot loop -----------------------------------------------------------------------------


def round_inputs(
    images: int, size: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random stand-ins of ``size`` px: ``images`` protected in 2 classes, 8 clean classes of
    100."""
    generator = torch.Generator().manual_seed(0)
    protected = torch.rand(images, 3, size, size, generator=generator)
    labels = torch.randint(0, 2, (images,), generator=generator)
    others = torch.rand(8 * 100, 3, size, size, generator=generator)
    return protected, labels, others, torch.arange(2, 10).repeat_interleave(100)


def loop_rows(images: int, repeats: int) -> list[dict]:
    """Seconds per min-min round (defaults: 10 surrogate batches, 20 PGD steps) on ``images``
    protected 32-px images, for each memory layout, chunk size and thread count with the
    attacker's flips, shifts and zooms, and with the ``--robust`` degradations on top (the
    default since 2026-12-01), measured interleaved so that every variant sees the same load."""
    protected, labels, others, other_labels = round_inputs(images)
    augments = {
        "flips-shifts-zooms": AugmentSettings(),
        "robust": ProtectConfig().augment_settings(),
    }
    variants = [
        (layout, chunk, threads, augment)
        for threads in (1, 2)
        for layout, chunk, augment in (
            ("nchw", 256, "flips-shifts-zooms"),
            ("channels_last", 128, "flips-shifts-zooms"),
            ("channels_last", 128, "robust"),
        )
    ]
    seconds: dict[tuple, list[float]] = {variant: [] for variant in variants}
    for _ in range(repeats):
        for layout, chunk, threads, augment in variants:
            torch.set_num_threads(threads)
            settings = MinMinSettings(
                max_rounds=1,
                min_rounds=1,
                augment=augments[augment],
                chunk=chunk,
                channels_last=layout == "channels_last",
            )
            model = create_model("resnet_small", 10, seed=0)
            started = time.perf_counter()
            ErrorMinimizingNoise(model, settings).generate(
                protected, labels, others, other_labels, torch.Generator().manual_seed(0)
            )
            seconds[(layout, chunk, threads, augment)].append(time.perf_counter() - started)
    medians = {variant: statistics.median(values) for variant, values in seconds.items()}
    return [
        {
            "layout": layout,
            "chunk": chunk,
            "threads": threads,
            "augment": augment,
            "images": images,
            "round_seconds_median": round(median, 3),
            "speedup_vs_nchw256_same_threads": round(
                medians[("nchw", 256, threads, "flips-shifts-zooms")] / median, 2
            ),
            "load_average": round(os.getloadavg()[0], 2),
        }
        for (layout, chunk, threads, augment), median in medians.items()
    ]


def gpu_rows(images: int, resolutions: list[int], repeats: int, device: torch.device) -> list[dict]:
    """Seconds per min-min round on ``device`` in float32 and in bf16 mixed precision, at the
    CPU's chunk (128) and the GPU's (1,024), interleaved, for each surrogate resolution; and
    what it means for photos a minute at the default 20 rounds."""
    rounds = ProtectConfig().rounds
    variants = [
        (resolution, precision, chunk)
        for resolution in resolutions
        for precision in ("float32", "bf16")
        for chunk in (128, 1024)
    ]
    inputs = {resolution: round_inputs(images, resolution) for resolution in resolutions}
    seconds: dict[tuple, list[float]] = {variant: [] for variant in variants}
    for repeat in range(repeats + 1):  # the first pass warms up kernels and is not counted
        for resolution, precision, chunk in variants:
            settings = MinMinSettings(
                max_rounds=1,
                min_rounds=1,
                augment=ProtectConfig().augment_settings(),
                chunk=chunk,
                mixed_precision=precision == "bf16",
            )
            model = create_model("resnet_small", 10, seed=0).to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            ErrorMinimizingNoise(model, settings).generate(
                *inputs[resolution], torch.Generator().manual_seed(0)
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if repeat:
                seconds[(resolution, precision, chunk)].append(time.perf_counter() - started)
    medians = {variant: statistics.median(values) for variant, values in seconds.items()}
    return [
        {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "resolution": resolution,
            "precision": precision,
            "chunk": chunk,
            "images": images,
            "round_seconds_median": round(median, 3),
            "speedup_vs_float32_128": round(medians[(resolution, "float32", 128)] / median, 2),
            "optimisation_photos_per_minute": round(images * 60 / (rounds * median)),
        }
        for (resolution, precision, chunk), median in medians.items()
    ]


def detect_rows(device: torch.device, photos: int, megapixels: float, repeats: int) -> list[dict]:
    """Seconds per full-size photo to find its faces (MTCNN on the copy downscaled to 1,024 px
    that `protect` searches), on the CPU and on ``device``, interleaved after a warm-up."""
    from unlearn_cli.faces.detection import FaceDetector

    with tempfile.TemporaryDirectory() as temporary:
        folder = full_size_inputs(Path(temporary), photos, megapixels)
        images = [load_photo(path).rgb for path in sorted(folder.iterdir())]
    detectors = {"cpu": FaceDetector(device=torch.device("cpu"))}
    if device.type != "cpu":
        detectors[str(device)] = FaceDetector(device=device)
    seconds: dict[str, list[float]] = {name: [] for name in detectors}
    faces: dict[str, int] = {}
    for repeat in range(repeats + 1):  # the first pass warms up and is not counted
        for name, detector in detectors.items():
            started = time.perf_counter()
            faces[name] = sum(len(detector.detect(rgb)) for rgb in images)
            if repeat:
                seconds[name].append((time.perf_counter() - started) / len(images))
    cpu = statistics.median(seconds["cpu"])
    return [
        {
            "detector_device": name,
            "photos": len(images),
            "megapixels": megapixels,
            "faces_found": faces[name],
            "seconds_per_photo_median": round(statistics.median(values), 4),
            "speedup_vs_cpu": round(cpu / statistics.median(values), 2),
            "threads": torch.get_num_threads(),
        }
        for name, values in seconds.items()
    ]


# --- unlearn protect at scale -------------------------------------------------------------------


def surrogate_folder(work: Path) -> Path:
    names = sorted(p.name for p in FACES.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 100)
    folder = work / "surrogate"
    folder.mkdir(exist_ok=True)
    for name in names[0::2][:SURROGATE_IDENTITIES]:
        if not (folder / name).exists():
            (folder / name).symlink_to(FACES / name)
    return folder


def crop_inputs(work: Path, count: int) -> Path:
    """``count`` aligned face crops of attacker-half identities, as one person's folder."""
    names = sorted(p.name for p in FACES.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 100)
    paths = [p for name in names[1::2] for p in sorted((FACES / name).iterdir())][:count]
    folder = work / f"crops{count}"
    folder.mkdir()
    for index, path in enumerate(paths):
        shutil.copy(path, folder / f"{index:04d}.png")
    return folder


def full_size_inputs(work: Path, count: int, megapixels: float) -> Path:
    """``count`` full-size JPEGs: the portraits of ../shared/data/photos, cycled and rescaled to
    about ``megapixels`` (each copy slightly different in size so no two are identical)."""
    sources = sorted(PORTRAITS.rglob("*.jpg"))
    folder = work / f"photos{count}"
    folder.mkdir()
    for index in range(count):
        with Image.open(sources[index % len(sources)]) as image:
            image = image.convert("RGB")
            scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5 * (1 + index * 1e-4)
            size = (round(image.width * scale), round(image.height * scale))
            image.resize(size, Image.Resampling.BICUBIC).save(
                folder / f"{index:04d}.jpg", quality=90
            )
    return folder


def run_protect(
    folder: Path,
    surrogate: Path,
    cache: Path,
    threads: int | None,
    device: str,
    source: Path | None = None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> dict:
    """`unlearn protect` in a child process: wall and CPU seconds, its peak RSS, one digest of
    every written file. ``source``: a checkout whose src/ is run instead of this one's;
    ``extra``: more protect options; ``env``: more environment variables."""
    command = [
        sys.executable,
        "-m",
        "unlearn_cli",
        "protect",
        str(folder),
        "--surrogate",
        str(surrogate),
        "--json",
        "--quiet",
        "--device",
        device,
    ]
    if threads is not None:
        command += ["--threads", str(threads)]
    command += extra
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(
            command,
            stdout=stdout,
            stderr=stderr,
            env={
                **os.environ,
                "UNLEARN_CACHE_DIR": str(cache),
                **({"PYTHONPATH": str(source / "src")} if source else {}),
                **(env or {}),
            },
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own CPU time and peak RSS
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        if child.returncode != 0:
            error = stderr.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"protect failed ({child.returncode}): {error}")
        manifest = json.loads(stdout.read())
    return {
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # Linux reports KiB
        "photos": manifest["totals"]["protected"],
        "faces": sum(
            sum(face["protected"] for face in photo.get("faces", []))
            for photo in manifest["photos"]
        ),
        "optimisation_seconds": sum(r["seconds"] for r in manifest["optimisation"]["rounds"]),
        "photos_per_minute": round(manifest["totals"]["protected"] / wall * 60, 1),
        "outputs_sha256": hashlib.sha256(
            "".join(sorted(photo["output_sha256"] for photo in manifest["photos"])).encode()
        ).hexdigest(),
    }


THREAD_RUN_OPTIONS = ("--rounds", "3", "--min-rounds", "3")  # rounds cost alike: 3 suffice


def thread_rows(count: int, repeats: int) -> list[dict]:
    """`unlearn protect` on ``count`` face crops with 1 and 2 threads and OpenMP's threads
    waiting actively or passively, on the machine as it is and beside one busy process per
    core; the variants alternated, medians, and whether the runs that share a thread count
    wrote the same bytes whatever the load."""
    cores = os.cpu_count() or 1
    variants = [(threads, policy) for threads in (1, cores) for policy in ("ACTIVE", "PASSIVE")]
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        surrogate = surrogate_folder(work)
        cache = work / "cache"
        folder = crop_inputs(work, count)
        output = folder.with_name(folder.name + "-protected")
        run_protect(folder, surrogate, cache, 1, "cpu", extra=THREAD_RUN_OPTIONS)  # fills cache
        shutil.rmtree(output)
        for load in ("idle", "busy"):
            hogs = [
                subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(cores if load == "busy" else 0)
            ]
            try:
                runs: dict[tuple[int, str], list[dict]] = {variant: [] for variant in variants}
                for _ in range(repeats):
                    for threads, policy in variants:
                        runs[(threads, policy)].append(
                            run_protect(
                                folder,
                                surrogate,
                                cache,
                                threads,
                                "cpu",
                                extra=THREAD_RUN_OPTIONS,
                                env={"OMP_WAIT_POLICY": policy},
                            )
                        )
                        shutil.rmtree(output)
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
            for (threads, policy), variant_runs in runs.items():
                row = {
                    "load": load,
                    "threads": threads,
                    "omp_wait_policy": policy,
                    "photos": variant_runs[0]["photos"],
                    "wall_seconds_median": statistics.median(
                        r["wall_seconds"] for r in variant_runs
                    ),
                    "outputs_sha256": sorted({r["outputs_sha256"] for r in variant_runs}),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    for row in rows:
        same_threads = {
            digest
            for other in rows
            if other["threads"] == row["threads"]
            for digest in other["outputs_sha256"]
        }
        row["same_bytes_as_every_run_with_its_thread_count"] = len(same_threads) == 1
    return rows


def scaling_rows(
    counts: dict[str, list[int]],
    megapixels: float,
    threads: int | None,
    device: str,
    on_row: Callable[[list[dict]], None],
    warm_too: bool = True,
) -> list[dict]:
    """`unlearn protect` on ``counts[kind]`` photos of each kind ("crops", "photos"), cold and
    (with ``warm_too``) again warm; ``on_row`` gets the rows so far after each one, so that an
    interrupted run keeps what it measured."""
    rows: list[dict] = []
    on_gpu = "" if resolve_device(device).type == "cpu" else f"-{resolve_device(device).type}"
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        surrogate = surrogate_folder(work)
        cache = work / "cache"
        for kind, kind_counts in counts.items():
            for count in kind_counts:

                def compute(kind: str = kind, count: int = count) -> dict:
                    folder = (
                        crop_inputs(work, count)
                        if kind == "crops"
                        else full_size_inputs(work, count, megapixels)
                    )
                    runs = {"cold": run_protect(folder, surrogate, cache, threads, device)}
                    if warm_too:  # again, with the surrogate's tensors and warm-up cached
                        shutil.rmtree(folder.with_name(folder.name + "-protected"))
                        runs["warm"] = run_protect(folder, surrogate, cache, threads, device)
                    shutil.rmtree(folder.with_name(folder.name + "-protected"))
                    shutil.rmtree(folder)
                    return runs

                key = f"{kind}-{count}-{megapixels}-{threads}-{DEFAULTS_KEY}{on_gpu}"
                row = {"kind": kind, "count": count, **cached_row(key, compute)}
                print(json.dumps(row), flush=True)
                rows.append(row)
                on_row(rows)
                shutil.rmtree(cache, ignore_errors=True)  # every row starts cold
    return rows


def current_revision() -> str:
    """This checkout's commit, marked when its working tree has changes."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(ROOT.parent), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + (" with changes" if changed else "")


def side_by_side_rows(baseline: str, counts: dict[str, list[int]], repeats: int) -> list[dict]:
    """Warm `unlearn protect` runs of the ``baseline`` revision and of this checkout on the same
    photos, alternated so that both see the same machine; medians and the ratio."""
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        checkout = work / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT.parent), "worktree", "add", "--detach", str(checkout), baseline],
            check=True,
            capture_output=True,
        )
        try:
            surrogate = surrogate_folder(work)
            cache = work / "cache"
            for kind, kind_counts in counts.items():
                for count in kind_counts:
                    folder = (
                        crop_inputs(work, count)
                        if kind == "crops"
                        else full_size_inputs(work, count, 3.0)
                    )
                    output = folder.with_name(folder.name + "-protected")
                    run_protect(folder, surrogate, cache, None, "auto")  # fills the cache
                    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
                    for _ in range(repeats):
                        for name, source in (("baseline", checkout), ("current", None)):
                            shutil.rmtree(output)
                            runs[name].append(
                                run_protect(folder, surrogate, cache, None, "auto", source)
                            )
                    shutil.rmtree(output)
                    shutil.rmtree(folder)

                    medians = {
                        name: {
                            field: statistics.median(run[field] for run in name_runs)
                            for field in ("wall_seconds", "optimisation_seconds")
                        }
                        for name, name_runs in runs.items()
                    }
                    row = {
                        "kind": kind,
                        "photos": runs["current"][0]["photos"],
                        "baseline": baseline,
                        "current": current_revision(),
                        **{
                            f"{name}_{field}": value
                            for name, figures in medians.items()
                            for field, value in figures.items()
                        },
                        "speedup": round(
                            medians["baseline"]["wall_seconds"]
                            / medians["current"]["wall_seconds"],
                            2,
                        ),
                        "runs": runs,
                    }
                    print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
                    rows.append(row)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT.parent), "worktree", "remove", "--force", str(checkout)],
                check=False,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=["loop", "scaling", "many", "gpu", "detect", "side-by-side", "threads"],
        required=True,
    )
    parser.add_argument(
        "--baseline", default="HEAD", help="--part side-by-side: the revision to compare with"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="gpu, detect: the device to measure (default cuda); scaling, many: protect --device "
        "(default auto); rows measured on a GPU go to sections of their own",
    )
    parser.add_argument("--images", type=int, default=1000, help="--part gpu: protected images")
    parser.add_argument(
        "--resolutions", default="32", help="--part gpu: surrogate resolutions, comma-separated"
    )
    parser.add_argument("--threads", type=int, default=None, help="protect --threads")
    parser.add_argument("--megapixels", type=float, default=3.0, help="full-size photo size")
    parser.add_argument(
        "--crop-counts", default="10,50,200", help="--part scaling: face crops per row"
    )
    parser.add_argument(
        "--photo-counts", default="10,50,200", help="--part scaling: full-size photos per row"
    )
    args = parser.parse_args()
    results_path = RESULTS / "speed.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    stamp = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python " + " ".join(sys.argv),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    defaults = {"protect_defaults_key": DEFAULTS_KEY, "protect_defaults": ProtectConfig().as_dict()}
    if args.part == "loop":
        rows = loop_rows(images=1000, repeats=3)
        results["loop"] = {**stamp, "rows": rows}
    elif args.part == "gpu":
        resolutions = as_counts(args.resolutions)
        rows = gpu_rows(args.images, resolutions, 3, torch.device(args.device or "cuda"))
        results["gpu"] = {**stamp, "rows": rows}
    elif args.part == "detect":
        device = torch.device(args.device or "cuda")
        rows = detect_rows(device, photos=20, megapixels=args.megapixels, repeats=3)
        results["detect"] = {**stamp, "rows": rows}
    elif args.part == "threads":
        rows = thread_rows(count=20, repeats=2)
        results["threads"] = {**stamp, **defaults, "rows": rows}
    elif args.part == "side-by-side":
        counts = {"crops": as_counts(args.crop_counts), "photos": as_counts(args.photo_counts)}
        rows = side_by_side_rows(args.baseline, counts, repeats=2)
        results["side-by-side"] = {**stamp, **defaults, "rows": rows}
    else:
        protect_device = args.device or "auto"
        section = args.part + ("" if resolve_device(protect_device).type == "cpu" else "-gpu")
        counts = (
            {"crops": as_counts(args.crop_counts), "photos": as_counts(args.photo_counts)}
            if args.part == "scaling"
            else {"crops": [1000], "photos": [1000]}
        )

        def save(rows_so_far: list[dict]) -> None:
            results[section] = {
                **stamp,
                **defaults,
                "megapixels": args.megapixels,
                "rows": rows_so_far,
            }
            save_results(results, results_path)

        rows = scaling_rows(
            counts, args.megapixels, args.threads, protect_device, save, args.part == "scaling"
        )
    if args.part in ("loop", "gpu", "detect"):  # the others print each row as it comes
        for row in rows:
            print(json.dumps(row))
    save_results(results, results_path)
    print(f"wrote {results_path} and speed.md")


def as_counts(text: str) -> list[int]:
    return [int(count) for count in text.split(",") if count]


def save_results(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=2))
    write_markdown(results, path.with_name("speed.md"))


def section(title: str, caption: str, columns: list[str], rows: list[list]) -> list[str]:
    """A markdown section: its title, a caption, and a table."""
    return [
        f"## {title}",
        "",
        caption,
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
        *("| " + " | ".join(str(value) for value in row) + " |" for row in rows),
        "",
    ]


def write_markdown(results: dict, path: Path) -> None:
    lines = ["# Speed and memory", ""]
    if "loop" in results:
        loop = results["loop"]
        lines += section(
            f"Min-min round, {loop['rows'][0]['images']} images at 32 px",
            f"{loop['date']}, {loop['machine']}, load average {loop['load_average_at_start']}; "
            f"`{loop['command']}`; medians of interleaved repeats.",
            ["layout", "chunk", "threads", "optimised through", "s / round"]
            + ["speed-up vs NCHW-256"],
            [
                [r["layout"], r["chunk"], r["threads"], r.get("augment", "flips-shifts-zooms")]
                + [r["round_seconds_median"], r["speedup_vs_nchw256_same_threads"]]
                for r in loop["rows"]
            ],
        )
    if "gpu" in results:
        gpu = results["gpu"]
        lines += section(
            f"Min-min round on {gpu['rows'][0]['device']}, {gpu['rows'][0]['images']} images",
            f"{gpu['date']}, {gpu['machine']}; `{gpu['command']}`; medians of interleaved"
            " repeats after one warm-up pass; photos a minute of the optimisation alone at the"
            " default 20 rounds.",
            ["px", "precision", "chunk", "s / round", "speed-up vs float32-128", "photos/min"],
            [
                [r.get("resolution", 32), r["precision"], r["chunk"], r["round_seconds_median"]]
                + [r["speedup_vs_float32_128"], r["optimisation_photos_per_minute"]]
                for r in gpu["rows"]
            ],
        )
    if "detect" in results:
        detect = results["detect"]
        lines += section(
            "Finding faces in full-size photos",
            f"{detect['date']}, {detect['machine']}; `{detect['command']}`; MTCNN on the copy"
            " downscaled to 1,024 px that `protect` searches; medians of interleaved repeats.",
            ["detector on", "photos", "MP", "faces found", "s / photo", "speed-up vs CPU"]
            + ["threads"],
            [
                [r["detector_device"], r["photos"], r["megapixels"], r["faces_found"]]
                + [r["seconds_per_photo_median"], r["speedup_vs_cpu"], r["threads"]]
                for r in detect["rows"]
            ],
        )
    if "side-by-side" in results:
        block = results["side-by-side"]
        lines += section(
            "`unlearn protect` against an earlier revision, side by side",
            f"{block['date']}, {block['machine']}, load average {block['load_average_at_start']};"
            f" `{block['command']}`; warm runs (the surrogate cached), the two revisions"
            " alternated, medians.",
            ["input", "photos", "revision", "wall s", "optimisation s", "speed-up"],
            [
                row
                for r in block["rows"]
                for row in (
                    [r["kind"], r["photos"], r["baseline"], r["baseline_wall_seconds"]]
                    + [f"{r['baseline_optimisation_seconds']:.1f}", 1.0],
                    [r["kind"], r["photos"], r.get("current", "this checkout")]
                    + [r["current_wall_seconds"], f"{r['current_optimisation_seconds']:.1f}"]
                    + [r["speedup"]],
                )
            ],
        )
    if "threads" in results:
        block = results["threads"]
        lines += section(
            "Thread count, OpenMP wait policy and load",
            f"{block['date']}, {block['machine']}, load average {block['load_average_at_start']};"
            f" `{block['command']}`; `unlearn protect` on {block['rows'][0]['photos']} face"
            f" crops, {' '.join(THREAD_RUN_OPTIONS)}, alone (idle) and beside one busy process"
            " per core (busy); the variants alternated, medians.",
            ["load", "threads", "OMP_WAIT_POLICY", "wall s", "same bytes as its thread count"],
            [
                [r["load"], r["threads"], r["omp_wait_policy"], r["wall_seconds_median"]]
                + ["yes" if r["same_bytes_as_every_run_with_its_thread_count"] else "no"]
                for r in block["rows"]
            ],
        )
    for part in ("scaling", "many", "scaling-gpu", "many-gpu"):
        if part not in results:
            continue
        block = results[part]
        lines += section(
            f"`unlearn protect`, {part}",
            f"{block['date']}, {block['machine']}, load average {block['load_average_at_start']};"
            f" `{block['command']}`; full-size photos of about {block['megapixels']} MP; protect"
            f" defaults {block.get('protect_defaults_key', 'before --robust (not recorded)')}.",
            ["input", "photos", "faces", "run", "wall s", "CPU s", "optimisation s"]
            + ["peak RSS MB", "photos/min"],
            [
                [row["kind"], r["photos"], r["faces"], run, r["wall_seconds"], r["cpu_seconds"]]
                + [f"{r['optimisation_seconds']:.1f}", r["peak_rss_mb"], r["photos_per_minute"]]
                for row in block["rows"]
                for run, r in ((run, row[run]) for run in ("cold", "warm") if run in row)
            ],
        )
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
