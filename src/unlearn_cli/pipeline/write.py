"""Protected copies written: noise carried back to full size, every file measured, atomic
writes in a few threads, a full disk stopping the run without losing what is written.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from unlearn_cli.config import ProtectConfig
from unlearn_cli.errors import ImageError, OutputError
from unlearn_cli.io.images import load_photo, sha256_file, write_png_atomic
from unlearn_cli.io.metadata import clean_metadata
from unlearn_cli.pipeline.events import (
    Event,
    PhaseAdvanced,
    PhaseStarted,
    PhotoNote,
    describe_error,
    record_failure,
)
from unlearn_cli.pipeline.journal import WriteJournal
from unlearn_cli.pipeline.manifest import ManifestWriter
from unlearn_cli.pipeline.prepare import (
    PreparedPhoto,
)
from unlearn_cli.report.budget import (
    budget_dict,
    measure_budget,
)

FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
# photos written at once, at most one per torch thread: decoding, PNG encoding and measuring
# release the GIL, and each full-size photo in flight holds a few copies of itself
WRITE_WORKERS = 4


def write_photos(
    prepared: list[PreparedPhoto],
    noise_per_photo: tuple[torch.Tensor, ...],
    output_root: Path,
    manifest: ManifestWriter,
    config: ProtectConfig,
    failures: list[dict],
    emit: Callable[[Event], None],
    debug: bool,
    journal: WriteJournal,
    run_key: str,
) -> None:
    """Write every photo still to do, several at once (see WRITE_WORKERS) but recorded in order;
    a full disk stops the run, any other error one photo."""
    todo = [
        (item, photo_noise)
        for item, photo_noise in zip(prepared, noise_per_photo, strict=True)
        if item.write  # not the photos protected earlier, only part of a resumed optimisation
    ]
    emit(PhaseStarted("writing protected photos", len(todo)))
    workers = max(1, min(WRITE_WORKERS, torch.get_num_threads()))
    in_flight: deque[tuple[PreparedPhoto, Future[dict]]] = deque()  # submitted, not yet recorded

    def record(item: PreparedPhoto, entry: dict) -> None:
        manifest.add(entry)
        for note in entry["notes"]:
            emit(PhotoNote(str(item.photo.path), note))

    def stop_writing() -> None:
        """Cancel the writes not started, let the running ones finish and record those that
        succeeded: a protected file on disk but not in the manifest would be refused as foreign
        output by the next run, which then could not complete the batch."""
        pool.shutdown(wait=True, cancel_futures=True)
        recorded = {entry["source"] for entry in manifest.photos}
        for item, outcome in in_flight:
            if outcome.cancelled() or outcome.exception() is not None:
                continue
            if (entry := outcome.result())["source"] not in recorded:
                record(item, entry)

    with ThreadPoolExecutor(workers, thread_name_prefix="unlearn-write") as pool:
        try:
            for item, outcome in _submitted_in_order(
                pool, workers, todo, (output_root, config, journal, run_key), in_flight
            ):
                try:
                    record(item, outcome.result())
                except OSError as error:
                    if error.errno in FATAL_WRITE_ERRORS:
                        stop_writing()
                        manifest.save(interrupted=True, best_effort=True)
                        raise OutputError(
                            f"cannot write to {output_root}: {error.strerror}; "
                            f"{len(manifest.photos)} photo(s) are protected there: run the same "
                            "command again to go on"
                        ) from error
                    record_failure(failures, emit, item.photo, describe_error(error))
                except Exception as error:  # one photo failing never stops the batch
                    if debug and not isinstance(error, ImageError | ValueError):
                        stop_writing()
                        raise
                    record_failure(failures, emit, item.photo, describe_error(error))
                in_flight.popleft()
                emit(PhaseAdvanced())
        except KeyboardInterrupt:
            stop_writing()
            manifest.save(interrupted=True)  # what is written stays listed in the manifest
            raise


def _submitted_in_order(
    pool: ThreadPoolExecutor,
    ahead: int,
    todo: list[tuple[PreparedPhoto, torch.Tensor]],
    destination: tuple[Path, ProtectConfig, WriteJournal, str],
    in_flight: deque[tuple[PreparedPhoto, Future[dict]]],
) -> Iterator[tuple[PreparedPhoto, Future[dict]]]:
    """Each photo with its pending write, in order, submitted at most ``ahead`` photos before
    the one being recorded: full-size photos in flight stay few, whatever the batch. Submitted
    writes are appended to ``in_flight``; the caller removes each one yielded (from the left)
    once it is dealt with, so the writes still there when it stops are known."""
    for item, photo_noise in todo:
        in_flight.append((item, pool.submit(write_one, item, photo_noise, *destination)))
        if len(in_flight) > ahead:
            yield in_flight[0]
    while in_flight:
        yield in_flight[0]


def write_one(
    item: PreparedPhoto,
    noise: torch.Tensor,
    output_root: Path,
    config: ProtectConfig,
    journal: WriteJournal,
    run_key: str,
) -> dict:
    """Decode the full-size original again, add the noise, and write; the file is measured and
    recorded in the journal before it takes its name, so a file that breaks the budget is never
    seen, and one on disk is always known to be ours."""
    original = load_photo(item.photo.path, config.max_pixels)
    protected_rgb = item.regions.apply(original, noise, config.eps)
    metadata = clean_metadata(original.exif, original.xmp, config.metadata)
    entry: dict = {}

    def measure_and_record(written_path: Path) -> None:
        written = load_photo(written_path, None)
        budget = measure_budget(original.rgb, written.rgb)
        if budget.linf > config.eps:  # the guarantee is by construction; never ship a breach
            raise ValueError(
                f"written file exceeds the budget (L-inf {budget.linf} > {config.eps})"
            )
        if original.alpha is not None and (
            written.alpha is None or (written.alpha != original.alpha).any()
        ):
            raise ValueError("alpha channel changed while writing")
        entry.update(
            {
                "source": item.photo.relative.as_posix(),
                "output": item.photo.output.as_posix(),
                "class": item.photo.class_name,
                "source_sha256": item.sha256,
                "output_sha256": sha256_file(written_path),
                "width": original.size[0],
                "height": original.size[1],
                "has_alpha": original.alpha is not None,
                "budget": budget_dict(budget),
                **item.regions.as_dict(),
                "metadata_removed": metadata.removed,
                "notes": list(original.notes),
            }
        )
        journal.record(run_key, entry)

    write_png_atomic(
        output_root / item.photo.output,
        protected_rgb,
        original.alpha,
        original.icc_profile,
        original.grayscale,
        exif=metadata.exif,
        xmp=metadata.xmp,
        before_replace=measure_and_record,
    )
    return entry
