"""The protect pipeline: photos in, protected copies and a manifest out.

It drives the steps (plan, prepare, match, optimise, write, manifest) and reports its
progress as events, so that the CLI (or any caller) decides how to show it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from unlearn_cli import surrogates
from unlearn_cli.config import ProtectConfig
from unlearn_cli.io.inputs import InputSet
from unlearn_cli.pipeline.checkpoint import CHECKPOINT_NAME, WORK_FOLDER, Checkpoint
from unlearn_cli.pipeline.events import (
    Event,
    Notice,
    ProtectResult,
    record_failure,
)
from unlearn_cli.pipeline.journal import JOURNAL_NAME, WriteJournal
from unlearn_cli.pipeline.manifest import ManifestWriter
from unlearn_cli.pipeline.optimise import optimise_noise
from unlearn_cli.pipeline.plan import (
    Action,
    check_writable,
    dry_run_result,
    plan_photos,
    previous_manifest,
    settings_changed,
)
from unlearn_cli.pipeline.prepare import (
    prepare_photos,
)
from unlearn_cli.pipeline.write import write_photos
from unlearn_cli.runtime.cache import cache_key
from unlearn_cli.runtime.devices import compute_signature, resolve_device
from unlearn_cli.runtime.threads import torch_threads
from unlearn_cli.surrogates import resolve_surrogate


def protect(
    input_set: InputSet,
    config: ProtectConfig,
    surrogate: str | None = None,
    exclude_classes: frozenset[str] = frozenset(),
    on_event: Callable[[Event], None] | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    debug: bool = False,
) -> ProtectResult:
    """Protect every photo of ``input_set``; see docs/reference.md for what is written.

    A photo already protected from the same original with the same settings (as recorded in
    the output folder's manifest) is kept, unless ``overwrite``; an interrupted optimisation
    resumes from its last round. ``dry_run`` only plans: nothing is decoded or written.
    ``debug`` lets unexpected errors of single photos raise instead of being recorded."""
    with torch_threads(config.threads):
        return _protect(
            input_set, config, surrogate, exclude_classes, on_event, overwrite, dry_run, debug
        )


def _protect(
    input_set: InputSet,
    config: ProtectConfig,
    surrogate: str | None,
    exclude_classes: frozenset[str],
    on_event: Callable[[Event], None] | None,
    overwrite: bool,
    dry_run: bool,
    debug: bool,
) -> ProtectResult:
    emit = on_event or (lambda _event: None)
    started = time.perf_counter()
    output_root = input_set.output_root
    device = resolve_device(config.device)
    compute = compute_signature(device)
    run_key = cache_key(
        config.output_key, surrogates.surrogate_choice(surrogate), sorted(exclude_classes), compute
    )
    failures: list[dict] = []
    for folder in input_set.skipped_folders:
        emit(Notice(f"{folder} holds protected output of an earlier run: not taken as input"))
    previous = previous_manifest(output_root, emit)
    changed = settings_changed(previous or {}, config, compute)
    journal = WriteJournal(output_root / WORK_FOLDER / JOURNAL_NAME)
    journaled = journal.entries(run_key)
    plan = plan_photos(
        input_set, previous, run_key, journaled, changed, overwrite, failures, emit, debug
    )
    if dry_run:
        return dry_run_result(input_set, config, plan, failures)
    todo = [item for item in plan if item.action in (Action.PROTECT, Action.REDO)]
    surrogate_root, spec = resolve_surrogate(surrogate) if todo else (None, None)
    check_writable(output_root)
    done = [item.previous for item in plan if item.action is Action.SKIP]
    for item in plan:
        if item.action is Action.REFUSE:
            record_failure(failures, emit, item.photo, item.reason)
    manifest = ManifestWriter(input_set, config, run_key, device, compute, started, done, failures)
    if previous is not None and previous.get("run_key") == run_key:
        manifest.carry_over(previous)
    if done:
        emit(Notice(f"{len(done)} photo(s) already protected with these settings: kept"))
    if not todo:
        return _finish(manifest, journal)
    checkpoint = Checkpoint(output_root / WORK_FOLDER / CHECKPOINT_NAME)
    optimised = checkpoint.photos_to_optimise(plan, todo)
    class_names = sorted({item.photo.class_name for item in optimised})
    prepared = prepare_photos(optimised, class_names, config, device, failures, emit, debug)
    if not any(item.write for item in prepared):
        return _finish(manifest, journal)

    prepared, noise_per_photo = optimise_noise(
        prepared,
        class_names,
        surrogate_root,
        spec,
        input_set,
        exclude_classes,
        checkpoint,
        run_key,
        manifest,
        config,
        device,
        emit,
    )
    write_photos(
        prepared,
        noise_per_photo,
        output_root,
        manifest,
        config,
        failures,
        emit,
        debug,
        journal,
        run_key,
    )
    result = _finish(manifest, journal)
    checkpoint.remove()
    return result


def _finish(manifest: ManifestWriter, journal: WriteJournal) -> ProtectResult:
    """The complete manifest written; only then is the journal of written photos dropped."""
    result = manifest.save(final=True)
    journal.remove()
    return result
