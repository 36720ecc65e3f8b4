"""The protect pipeline: photos in, protected copies and a manifest out.

It glues the modules together (inputs, images, surrogates, engine, report) and reports its
progress as events, so that the CLI (or any caller) decides how to show it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import torch

from unlearn_cli import __version__, surrogates
from unlearn_cli.config import Embedder, ProtectConfig
from unlearn_cli.engine import (
    ErrorMinimizingNoise,
    MinMinResult,
    RoundReport,
    TrainSettings,
    class_centroids,
    create_model,
    embed,
    match_classes,
    train,
)
from unlearn_cli.engine.minmin import MinMinCheckpoint
from unlearn_cli.errors import ImageError, OutputError, SetupError
from unlearn_cli.faces.embedder import FACENET_INPUT, FaceEmbedder, facenet_available
from unlearn_cli.faces.regions import FaceMode, Protection, RegionFinder, Regions
from unlearn_cli.io.images import load_photo, sha256_file, write_png_atomic
from unlearn_cli.io.inputs import InputPhoto, InputSet
from unlearn_cli.io.metadata import clean_metadata
from unlearn_cli.report.budget import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    budget_dict,
    measure_budget,
    totals,
    write_json_atomic,
)
from unlearn_cli.runtime.cache import cache_dir, cache_key, cached, file_fingerprint
from unlearn_cli.runtime.devices import compute_signature, resolve_device
from unlearn_cli.runtime.threads import torch_threads
from unlearn_cli.surrogates import Surrogate, load_surrogate, resolve_surrogate


@dataclass(frozen=True)
class PhaseStarted:
    name: str
    total: int | None = None


@dataclass(frozen=True)
class PhaseAdvanced:
    steps: int = 1


@dataclass(frozen=True)
class RoundFinished:
    report: RoundReport
    max_rounds: int


@dataclass(frozen=True)
class PhotoFailed:
    source: str
    error: str


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class PhotoNote:
    """A photo was protected, with something the user should know (e.g. 16-bit written as 8)."""

    source: str
    message: str


Event = PhaseStarted | PhaseAdvanced | RoundFinished | PhotoFailed | PhotoNote | Notice

WORK_FOLDER = ".unlearn-work"  # hidden: never taken for input; removed when a run completes
CHECKPOINT_NAME = "checkpoint.pt"
FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
MANIFEST_INTERVAL = 2.0  # seconds between manifest updates while photos are written
# photos written at once, at most one per torch thread: decoding, PNG encoding and measuring
# release the GIL, and each full-size photo in flight holds a few copies of itself
WRITE_WORKERS = 4


class Action(StrEnum):
    """What a run does with one photo (``--dry-run`` lists these)."""

    PROTECT = "protect"
    REDO = "redo"  # an earlier protected copy is out of date
    SKIP = "skip"  # already protected from this original with these settings
    REFUSE = "refuse"  # the output name is taken by a file unlearn did not write


@dataclass(frozen=True)
class PlannedPhoto:
    photo: InputPhoto
    sha256: str
    action: Action
    reason: str
    previous: dict | None = None

    def as_dict(self) -> dict:
        return {
            "source": self.photo.relative.as_posix(),
            "output": self.photo.output.as_posix(),
            "class": self.photo.class_name,
            "action": str(self.action),
            "reason": self.reason,
        }


@dataclass
class ProtectResult:
    manifest: dict
    manifest_path: Path | None
    failures: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class _Prepared:
    """A photo to protect, decoded once: what of it is protected (its faces or the whole image)
    and those regions at model resolution. The full size is decoded again when writing."""

    photo: InputPhoto
    sha256: str
    label: int
    regions: Regions
    crops: torch.Tensor  # N x 3 x r x r uint8, one per protected face (or the whole image)
    write: bool = True
    face_model_crops: torch.Tensor | None = None  # the same at the face model's input size


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
    """Protect every photo of ``input_set``; see the module and README for what is written.

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
    previous = _previous_manifest(output_root, emit)
    changed = _settings_changed(previous or {}, config, compute)
    plan = _plan(input_set, previous, run_key, changed, overwrite, failures, emit, debug)
    if dry_run:
        return _dry_run_result(input_set, config, plan, failures)
    todo = [item for item in plan if item.action in (Action.PROTECT, Action.REDO)]
    surrogate_root, spec = resolve_surrogate(surrogate) if todo else (None, None)
    _check_writable(output_root)
    done = [item.previous for item in plan if item.action is Action.SKIP]
    for item in plan:
        if item.action is Action.REFUSE:
            _record_failure(failures, emit, item.photo, item.reason)
    manifest = _ManifestWriter(input_set, config, run_key, device, compute, started, done, failures)
    if previous is not None and previous.get("run_key") == run_key:
        manifest.carry_over(previous)
    if done:
        emit(Notice(f"{len(done)} photo(s) already protected with these settings: kept"))
    if not todo:
        return manifest.save(final=True)
    checkpoint = _Checkpoint(output_root / WORK_FOLDER / CHECKPOINT_NAME)
    optimised = checkpoint.photos_to_optimise(plan, todo)
    class_names = sorted({item.photo.class_name for item in optimised})
    prepared = _prepare_photos(optimised, class_names, config, device, failures, emit, debug)
    if not any(item.write for item in prepared):
        return manifest.save(final=True)

    prepared, noise_per_photo = _optimise(
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
    _write_photos(prepared, noise_per_photo, output_root, manifest, config, failures, emit, debug)
    checkpoint.remove()
    return manifest.save(final=True)


def _optimise(
    prepared: list[_Prepared],
    class_names: list[str],
    surrogate_root: Path,
    spec: surrogates.NamedSurrogate | None,
    input_set: InputSet,
    exclude_classes: frozenset[str],
    checkpoint: _Checkpoint,
    run_key: str,
    manifest: _ManifestWriter,
    config: ProtectConfig,
    device: torch.device,
    emit: Callable[[Event], None],
) -> tuple[list[_Prepared], tuple[torch.Tensor, ...]]:
    """Choose the surrogate classes and run the min-min loop over every crop of the photos;
    returns the photos (with main faces chosen, if asked) and each photo's noise."""
    chosen_surrogate = load_surrogate(
        surrogate_root,
        spec,
        protected_names=set(input_set.class_names),
        protected_hashes={item.sha256 for item in prepared},
        exclude=set(exclude_classes),
    )
    for name, reason in chosen_surrogate.excluded:
        emit(Notice(f"surrogate class {name} left out: {reason}"))
    emit(PhaseStarted("loading surrogate images"))
    surrogate_pixels, surrogate_labels = surrogates.surrogate_images(
        chosen_surrogate, config.resolution, config.max_per_class, _surrogate_finder(config, device)
    )
    matching, prepared = _match(
        prepared,
        class_names,
        chosen_surrogate,
        surrogate_pixels,
        surrogate_labels,
        config,
        device,
        emit,
    )
    manifest.describe_surrogate(chosen_surrogate, matching, class_names)
    selected = matching.pop("selected_indices")
    remap = {old: len(class_names) + new for new, old in enumerate(selected)}
    keep = torch.tensor([int(label) in remap for label in surrogate_labels], dtype=torch.bool)
    other_images = surrogate_pixels[keep]
    other_labels = torch.tensor([remap[int(label)] for label in surrogate_labels[keep]])

    resume = checkpoint.load(run_key, prepared)
    if resume is not None:
        emit(Notice(f"resuming the optimisation after round {len(resume.rounds)} (checkpoint)"))
    emit(PhaseStarted("optimising noise", config.rounds))
    if resume is not None:
        emit(PhaseAdvanced(len(resume.rounds)))
    model = create_model(config.surrogate_model, len(class_names) + len(selected), seed=config.seed)
    labels = _crop_labels(prepared)
    settings = config.minmin_settings().for_device(device)
    result = ErrorMinimizingNoise(model.to(device), settings).generate(
        torch.cat([item.crops for item in prepared]),
        labels,
        other_images,
        other_labels,
        torch.Generator().manual_seed(config.seed),
        on_round=lambda report: emit(RoundFinished(report, config.rounds)),
        on_checkpoint=checkpoint.save,
        resume=resume,
    )
    manifest.describe_optimisation(config, result)
    noise = result.per_image(labels.to(result.noise.device)).cpu()
    noise_per_photo = noise.split([len(item.crops) for item in prepared])

    return prepared, noise_per_photo


def _write_photos(
    prepared: list[_Prepared],
    noise_per_photo: tuple[torch.Tensor, ...],
    output_root: Path,
    manifest: _ManifestWriter,
    config: ProtectConfig,
    failures: list[dict],
    emit: Callable[[Event], None],
    debug: bool,
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
    in_flight: deque[tuple[_Prepared, Future[dict]]] = deque()  # submitted, not yet recorded

    def record(item: _Prepared, entry: dict) -> None:
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
                pool, workers, todo, output_root, config, in_flight
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
                    _record_failure(failures, emit, item.photo, _describe(error))
                except Exception as error:  # one photo failing never stops the batch
                    if debug and not isinstance(error, ImageError | ValueError):
                        stop_writing()
                        raise
                    _record_failure(failures, emit, item.photo, _describe(error))
                in_flight.popleft()
                emit(PhaseAdvanced())
        except KeyboardInterrupt:
            stop_writing()
            manifest.save(interrupted=True)  # what is written stays listed in the manifest
            raise


def _submitted_in_order(
    pool: ThreadPoolExecutor,
    ahead: int,
    todo: list[tuple[_Prepared, torch.Tensor]],
    output_root: Path,
    config: ProtectConfig,
    in_flight: deque[tuple[_Prepared, Future[dict]]],
) -> Iterator[tuple[_Prepared, Future[dict]]]:
    """Each photo with its pending write, in order, submitted at most ``ahead`` photos before
    the one being recorded: full-size photos in flight stay few, whatever the batch. Submitted
    writes are appended to ``in_flight``; the caller removes each one yielded (from the left)
    once it is dealt with, so the writes still there when it stops are known."""
    for item, photo_noise in todo:
        in_flight.append((item, pool.submit(_write_one, item, photo_noise, output_root, config)))
        if len(in_flight) > ahead:
            yield in_flight[0]
    while in_flight:
        yield in_flight[0]


def _describe(error: BaseException) -> str:
    """The one-line reason shown for a photo that could not be protected."""
    if isinstance(error, ImageError):
        return error.reason
    if isinstance(error, OSError):
        return error.strerror or str(error)
    if isinstance(error, ValueError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error} (--debug shows the traceback)"


def _record_failure(
    failures: list[dict], emit: Callable[[Event], None], photo: InputPhoto, reason: str
) -> None:
    failures.append({"source": photo.relative.as_posix(), "error": reason})
    emit(PhotoFailed(str(photo.path), reason))


def _previous_manifest(output_root: Path, emit: Callable[[Event], None]) -> dict | None:
    """The manifest of an earlier run into the same folder, if there is a readable one."""
    path = output_root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("schema_version") == SCHEMA_VERSION and "run_key" in manifest:
            return manifest
    except (OSError, ValueError):
        pass
    emit(Notice(f"{path} is from another version or unreadable: every photo is protected anew"))
    return None


def _settings_changed(previous: dict, config: ProtectConfig, compute: str) -> str:
    """Why an earlier run's photos are redone: its compute, when only that changed."""
    ignored = ("device", "threads")
    earlier = {k: v for k, v in previous.get("settings", {}).items() if k not in ignored}
    now = {k: v for k, v in config.as_dict().items() if k not in ignored}
    made_with = previous.get("compute")
    if earlier == now and made_with and made_with != compute:
        return f"made with {made_with}, this run uses {compute} (the noise depends on it)"
    return "the settings changed"


def _plan(
    input_set: InputSet,
    previous: dict | None,
    run_key: str,
    changed: str,
    overwrite: bool,
    failures: list[dict],
    emit: Callable[[Event], None],
    debug: bool,
) -> list[PlannedPhoto]:
    """Decide per photo: protect, redo (``changed`` says why, when the settings or compute
    changed), skip (already done) or refuse (foreign output)."""
    earlier = {entry["source"]: entry for entry in (previous or {}).get("photos", [])}
    same_settings = previous is not None and previous.get("run_key") == run_key
    emit(PhaseStarted("checking photos", len(input_set.photos)))
    plan = []
    for photo in input_set.photos:
        try:
            sha = sha256_file(photo.path)
        except Exception as error:
            if debug and not isinstance(error, OSError):
                raise
            _record_failure(failures, emit, photo, _describe(error))
            emit(PhaseAdvanced())
            continue
        target = input_set.output_root / photo.output
        entry = earlier.get(photo.relative.as_posix())
        ours = entry is not None and entry.get("output") == photo.output.as_posix()
        if overwrite:
            action, reason = Action.PROTECT, "--overwrite"
        elif not target.exists():
            action, reason = Action.PROTECT, "not protected yet"
        elif not ours:
            action = Action.REFUSE
            reason = (
                f"{target} exists and was not written by unlearn for this photo; "
                "move it away or use --overwrite"
            )
        elif entry["source_sha256"] != sha:
            action, reason = Action.REDO, "the original changed"
        elif not same_settings:
            action, reason = Action.REDO, changed
        elif sha256_file(target) != entry.get("output_sha256"):
            action, reason = Action.REDO, "the protected copy was modified"
        else:
            action, reason = Action.SKIP, "already protected with these settings"
        plan.append(PlannedPhoto(photo, sha, action, reason, entry))
        emit(PhaseAdvanced())
    return plan


def _dry_run_result(
    input_set: InputSet, config: ProtectConfig, plan: list[PlannedPhoto], failures: list[dict]
) -> ProtectResult:
    counts = {str(action): 0 for action in Action}
    for item in plan:
        counts[str(item.action)] += 1
    report = {
        "schema_version": SCHEMA_VERSION,
        "dry_run": True,
        "settings": config.as_dict(),
        "input_root": str(input_set.root),
        "output_root": str(input_set.output_root),
        "photos": [item.as_dict() for item in plan],
        "failures": failures,
        "totals": {"photos": len(plan) + len(failures), **counts, "failed": len(failures)},
    }
    return ProtectResult(manifest=report, manifest_path=None, failures=failures)


def _check_writable(output_root: Path) -> None:
    """Fail before any work when the output folder cannot be created or written."""
    try:
        output_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_root):
            pass
    except OSError as error:
        raise SetupError(
            f"cannot write to {output_root}: {error.strerror or error}; choose another --out"
        ) from error


class _Checkpoint:
    """The optimisation's state after each round, in the output folder, for resuming. It names
    the run's settings and the photos it optimises jointly, so it is used only for those."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key: str | None = None
        self.photos: list[list[str]] = []
        self.saved: dict | None = None
        if path.is_file():
            try:
                self.saved = torch.load(path, weights_only=True)
            except Exception:  # a torn or foreign file: start again rather than fail
                self.saved = None

    def photos_to_optimise(
        self, plan: list[PlannedPhoto], todo: list[PlannedPhoto]
    ) -> list[PlannedPhoto]:
        """The photos to optimise: those to do, or, when an interrupted run optimised a set
        that holds them all, that same set (done ones are optimised along, not rewritten)."""
        if self.saved is None:
            return todo
        saved = {tuple(photo) for photo in self.saved["photos"]}
        if not all(_identity(item) in saved for item in todo):
            return todo
        return [
            item for item in plan if _identity(item) in saved and item.action is not Action.REFUSE
        ]

    def load(self, run_key: str, prepared: list[_Prepared]) -> MinMinCheckpoint | None:
        """The saved state if it belongs to these settings and exactly these photos."""
        photos = [[p.photo.relative.as_posix(), p.sha256, p.photo.class_name] for p in prepared]
        self.key = cache_key(run_key, photos)
        self.photos = photos
        if self.saved is None or self.saved.get("key") != self.key:
            return None
        state = dict(self.saved["state"])
        state["rounds"] = [RoundReport(**report) for report in state["rounds"]]
        return MinMinCheckpoint(**state)

    def save(self, checkpoint: MinMinCheckpoint) -> None:
        state = {**vars(checkpoint), "rounds": [asdict(r) for r in checkpoint.rounds]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        os.close(handle)
        try:
            torch.save({"key": self.key, "photos": self.photos, "state": state}, temporary)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


def _identity(item: PlannedPhoto) -> tuple[str, str, str]:
    return (item.photo.relative.as_posix(), item.sha256, item.photo.class_name)


def _prepare_photos(
    todo: list[PlannedPhoto],
    class_names: list[str],
    config: ProtectConfig,
    device: torch.device,
    failures: list[dict],
    emit: Callable[[Event], None],
    debug: bool,
) -> list[_Prepared]:
    """Decode each photo and cut its crops; faces are found on ``device`` (MTCNN runs on GPUs
    too)."""
    emit(
        PhaseStarted(
            "reading photos" if config.faces is FaceMode.OFF else "finding faces", len(todo)
        )
    )
    finder = RegionFinder(config.faces, config.min_face_size, config.face_confidence, device)
    face_model = config.embedder is Embedder.FACE or (
        config.embedder is Embedder.AUTO and facenet_available()
    )  # then matching may embed with the face model: cut its crops now, not decode again
    prepared = []
    for item in todo:
        try:
            photo = load_photo(item.photo.path, config.max_pixels)
            regions = finder.find(photo)
            if config.require_faces and regions.protection is Protection.NO_FACE:
                raise ImageError(item.photo.path, "no face found (--require-faces)")
            prepared.append(
                _Prepared(
                    item.photo,
                    item.sha256,
                    class_names.index(item.photo.class_name),
                    regions,
                    regions.crops(photo, config.resolution),
                    item.action is not Action.SKIP,
                    regions.crops(photo, FACENET_INPUT) if face_model else None,
                )
            )
        except Exception as error:  # one photo failing never stops the batch
            if debug and not isinstance(error, ImageError | OSError):
                raise
            _record_failure(failures, emit, item.photo, _describe(error))
        emit(PhaseAdvanced())
    _summarise_regions(prepared, emit)
    return prepared


def _summarise_regions(prepared: list[_Prepared], emit: Callable[[Event], None]) -> None:
    """One line on how the photos are protected: no photo is protected whole silently."""
    counts = Counter(item.regions.protection for item in prepared)
    if counts[Protection.FACES]:
        faces = sum(len(item.crops) for item in prepared if item.regions.faces)
        emit(Notice(f"{faces} face(s) in {counts[Protection.FACES]} photo(s) protected"))
    if counts[Protection.ALIGNED_CROP]:
        emit(Notice(f"{counts[Protection.ALIGNED_CROP]} aligned face crop(s) protected whole"))
    if counts[Protection.NO_FACE]:
        emit(
            Notice(
                f"{counts[Protection.NO_FACE]} photo(s) without a face protected as whole images "
                "(listed in the manifest; --require-faces makes this an error)"
            )
        )


def _crop_labels(prepared: list[_Prepared]) -> torch.Tensor:
    """The class of every crop, in the order of ``torch.cat([item.crops ...])``."""
    return torch.tensor([item.label for item in prepared for _ in range(len(item.crops))])


def _match(
    prepared: list[_Prepared],
    class_names: list[str],
    surrogate: Surrogate,
    surrogate_pixels: torch.Tensor,
    surrogate_labels: torch.Tensor,
    config: ProtectConfig,
    device: torch.device,
    emit: Callable[[Event], None],
) -> tuple[dict, list[_Prepared]]:
    """Rank surrogate classes by similarity to each protected class and choose who takes part.
    With ``main_face_only``, also keep in each photo only the face nearest its class's main
    identity (the prepared photos are returned with that choice made)."""
    use_face = config.embedder is Embedder.FACE or (
        config.embedder is Embedder.AUTO and surrogate.kind != "general" and facenet_available()
    )
    if use_face:
        emit(PhaseStarted("embedding with the face model"))
        embedder = FaceEmbedder(device)
        source = embedder.source
        own_features = embedder.embed(torch.cat([item.face_model_crops for item in prepared]))
        finder = _surrogate_finder(config, device)
        key = cache_key(
            "face-embeddings",
            compute_signature(device),
            source,
            _surrogate_fingerprint(surrogate, config),
            finder and (config.min_face_size, config.face_confidence),
        )

        def embed_surrogate() -> torch.Tensor:
            images, _ = surrogates.surrogate_images(
                surrogate, FACENET_INPUT, config.max_per_class, finder
            )
            return embedder.embed(images)

        # a second run on the same surrogate embeds nothing again
        surrogate_features = cached(cache_dir() / "embeddings", key, embed_surrogate)
    else:
        emit(PhaseStarted("warming up the surrogate model", config.warmup_epochs))
        model = _warm_model(surrogate, surrogate_pixels, surrogate_labels, config, device, emit)
        source = (
            f"{config.surrogate_model} warmed up on the surrogate ({config.warmup_epochs} epochs)"
        )
        own_features = embed(model, torch.cat([item.crops for item in prepared]))
        surrogate_features = embed(model, surrogate_pixels)
    if config.main_face_only:
        prepared, own_features = _keep_main_faces(prepared, own_features, len(class_names))
    own_labels = _crop_labels(prepared)
    generator = torch.Generator().manual_seed(config.seed)
    match = match_classes(
        class_centroids(own_features, own_labels, len(class_names)),
        class_centroids(surrogate_features, surrogate_labels, len(surrogate.classes)),
        k=config.match_k,
        extra_random=config.match_random,
        generator=generator,
    )
    names = [cls.name for cls in surrogate.classes]
    ranking = {
        protected: [
            {"class": names[index], "similarity": round(float(match.similarity[row, index]), 4)}
            for index in match.similarity[row].argsort(descending=True).tolist()
        ]
        for row, protected in enumerate(class_names)
    }
    return {
        "embedding_source": source,
        "k": config.match_k,
        "ranking": ranking,
        "selected": [names[i] for i in match.selected],
        "random_extra": [names[i] for i in match.random_extra],
        "selected_indices": match.selected,
    }, prepared


def _keep_main_faces(
    prepared: list[_Prepared], features: torch.Tensor, class_count: int
) -> tuple[list[_Prepared], torch.Tensor]:
    """In photos with several faces keep the one most like its class's main identity: the
    centroid of every photo's best-matching face, starting from the centroid of all faces."""
    normalised = torch.nn.functional.normalize(features, dim=1)
    per_photo = list(normalised.split([len(item.crops) for item in prepared]))
    labels = torch.tensor([item.label for item in prepared])
    centroids = class_centroids(normalised, _crop_labels(prepared), class_count)
    for _ in range(3):  # a few refinements: group photos pull the first centroid off
        best = [
            int((faces @ centroids[label]).argmax())
            for faces, label in zip(per_photo, labels, strict=True)
        ]
        chosen = torch.stack([faces[index] for faces, index in zip(per_photo, best, strict=True)])
        centroids = class_centroids(chosen, labels, class_count)
    kept = [
        replace(item, regions=item.regions.keeping(index), crops=item.crops[index : index + 1])
        if item.regions.faces
        else item
        for item, index in zip(prepared, best, strict=True)
    ]
    return kept, torch.stack([faces[index] for faces, index in zip(per_photo, best, strict=True)])


def _surrogate_fingerprint(surrogate: Surrogate, config: ProtectConfig) -> str:
    """Identity of the surrogate images a run uses (names, sizes and times of the files)."""
    return file_fingerprint(
        [path for cls in surrogate.classes for path in cls.paths[: config.max_per_class]]
    )


def _surrogate_finder(config: ProtectConfig, device: torch.device) -> RegionFinder | None:
    """Face surrogates go through the same detection and alignment as the user's photos."""
    if config.faces is FaceMode.OFF:
        return None
    return RegionFinder(FaceMode.AUTO, config.min_face_size, config.face_confidence, device)


def _warm_model(
    surrogate: Surrogate,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: ProtectConfig,
    device: torch.device,
    emit: Callable[[Event], None],
):
    """The surrogate architecture trained on the surrogate classes (cached across runs)."""
    model = create_model(config.surrogate_model, len(surrogate.classes), seed=config.seed)
    key = cache_key(
        "warmup",
        compute_signature(device),
        config.surrogate_model,
        config.warmup_epochs,
        config.seed,
        config.resolution,
        _surrogate_finder(config, device) and (config.min_face_size, config.face_confidence),
        [c.name for c in surrogate.classes],
        _surrogate_fingerprint(surrogate, config),
    )

    def warm() -> dict:
        model.to(device)
        train(
            model,
            images,
            labels,
            TrainSettings(epochs=config.warmup_epochs),
            torch.Generator().manual_seed(config.seed),
            on_epoch=lambda _epoch, _loss: emit(PhaseAdvanced()),
        )
        return {name: value.cpu() for name, value in model.state_dict().items()}

    model.load_state_dict(cached(cache_dir() / "models", key, warm))
    return model.to(device)


def _write_one(
    item: _Prepared, noise: torch.Tensor, output_root: Path, config: ProtectConfig
) -> dict:
    """Decode the full-size original again, add the noise, write, and measure the written file."""
    original = load_photo(item.photo.path, config.max_pixels)
    protected_rgb = item.regions.apply(original, noise, config.eps)
    metadata = clean_metadata(original.exif, original.xmp, config.metadata)
    target = output_root / item.photo.output
    write_png_atomic(
        target,
        protected_rgb,
        original.alpha,
        original.icc_profile,
        original.grayscale,
        exif=metadata.exif,
        xmp=metadata.xmp,
    )
    del protected_rgb  # bounded memory: at most two full-size copies at once
    written = load_photo(target, None)
    budget = measure_budget(original.rgb, written.rgb)
    if (
        budget.linf > config.eps
    ):  # the guarantee is by construction; never ship a file that breaks it
        target.unlink(missing_ok=True)
        raise ValueError(f"written file exceeds the budget (L-inf {budget.linf} > {config.eps})")
    if original.alpha is not None and (
        written.alpha is None or (written.alpha != original.alpha).any()
    ):
        target.unlink(missing_ok=True)
        raise ValueError("alpha channel changed while writing")
    return {
        "source": item.photo.relative.as_posix(),
        "output": item.photo.output.as_posix(),
        "class": item.photo.class_name,
        "source_sha256": item.sha256,
        "output_sha256": sha256_file(target),
        "width": original.size[0],
        "height": original.size[1],
        "has_alpha": original.alpha is not None,
        "budget": budget_dict(budget),
        **item.regions.as_dict(),
        "metadata_removed": metadata.removed,
        "notes": list(original.notes),
    }


class _ManifestWriter:
    """The run's manifest, rewritten atomically as photos complete (at most every
    MANIFEST_INTERVAL seconds, and at the end), so a crash never loses the record of what is
    written."""

    def __init__(
        self,
        input_set: InputSet,
        config: ProtectConfig,
        run_key: str,
        device: torch.device,
        compute: str,
        started: float,
        photos: list[dict],
        failures: list[dict],
    ) -> None:
        import torchvision

        self.path = input_set.output_root / MANIFEST_NAME
        self.started = started
        self.photos = photos
        self.failures = failures
        self.saved_at = 0.0
        self.content: dict = {
            "schema_version": SCHEMA_VERSION,
            "tool": {
                "name": "unlearn",
                "version": __version__,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "interrupted": False,
            "run_key": run_key,
            "compute": compute,
            "settings": config.as_dict(),
            "input_root": str(input_set.root),
            "classes": input_set.class_names,
            "surrogate": None,
            "optimisation": {"device": str(device)},
        }

    def carry_over(self, previous: dict) -> None:
        """Keep an earlier run's account of the surrogate and optimisation (same settings)."""
        self.content["surrogate"] = previous.get("surrogate")
        self.content["optimisation"] = {
            key: value
            for key, value in previous.get("optimisation", {}).items()
            if key != "seconds"
        }

    def describe_surrogate(
        self, surrogate: Surrogate, matching: dict, protected: list[str]
    ) -> None:
        self.content["surrogate"] = {
            "source": surrogate.source,
            "root": str(surrogate.root),
            "kind": surrogate.kind,
            "classes_available": len(surrogate.classes),
            "excluded": [{"class": name, "reason": reason} for name, reason in surrogate.excluded],
            "protected_classes_matched": protected,
            **{key: value for key, value in matching.items() if key != "selected_indices"},
        }

    def describe_optimisation(self, config: ProtectConfig, result: MinMinResult) -> None:
        self.content["optimisation"].update(
            {
                "surrogate_model": config.surrogate_model,
                "converged": result.converged,
                "rounds": [
                    {
                        "round": r.round,
                        "train_loss": round(r.train_loss, 5),
                        "protected_loss": round(r.protected_loss, 5),
                        "protected_accuracy": round(r.protected_accuracy, 4),
                        "seconds": round(r.seconds, 3),
                    }
                    for r in result.rounds
                ],
            }
        )

    def add(self, entry: dict) -> None:
        self.photos.append(entry)
        if time.perf_counter() - self.saved_at >= MANIFEST_INTERVAL:
            self.save()

    def save(
        self, interrupted: bool = False, final: bool = False, best_effort: bool = False
    ) -> ProtectResult:
        manifest = {
            **self.content,
            "interrupted": interrupted,
            "complete": final,
            "optimisation": {
                **self.content["optimisation"],
                "seconds": round(time.perf_counter() - self.started, 2),
            },
            "photos": self.photos,
            "failures": self.failures,
            "totals": totals(self.photos, self.failures),
        }
        try:
            write_json_atomic(self.path, manifest)
        except OSError:
            if not best_effort:
                raise
        self.saved_at = time.perf_counter()
        return ProtectResult(manifest=manifest, manifest_path=self.path, failures=self.failures)
