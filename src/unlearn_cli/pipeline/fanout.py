"""Per-person jobs run one after another, in local worker processes (``--workers``), or as Ray
tasks (``--ray``) on this machine or a cluster; the driver merges their manifests as they end.

Each job reads its own inputs and writes its own outputs and manifest atomically (see
pipeline.people), so a job can be retried anywhere: a killed Ray worker's task is run again by
Ray and resumes from the person's checkpoint and write journal, losing and duplicating nothing.
A CPU result depends on the thread count, so every job gets a fixed one, recorded in its
manifest: ``--threads``, else the cores divided among the local workers, else one per Ray task.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace

from unlearn_cli import surrogates
from unlearn_cli.config import ProtectConfig
from unlearn_cli.errors import SetupError
from unlearn_cli.io.inputs import InputSet
from unlearn_cli.pipeline.events import Event, Notice, PhotoFailed, ProtectResult
from unlearn_cli.pipeline.people import (
    BatchManifest,
    PersonJob,
    PersonOutcome,
    person_jobs,
    run_person,
)
from unlearn_cli.runtime.threads import usable_cores

RAY_EXTRA = "pip install 'unlearn-cli[ray]'"
RAY_RETRIES = 3  # reruns of a task whose worker process or node died


def protect_people(
    input_set: InputSet,
    config: ProtectConfig,
    surrogate: str | None = None,
    exclude_classes: frozenset[str] = frozenset(),
    on_event: Callable[[Event], None] | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    debug: bool = False,
    workers: int = 1,
    ray_address: str | None = None,
) -> ProtectResult:
    """Protect each class of ``input_set`` in its own job (see pipeline.people); ``workers``
    local processes, or Ray tasks when ``ray_address`` is given ("auto": the running cluster,
    else a local one; or a cluster's address)."""
    emit = on_event or (lambda _event: None)
    if workers < 1:
        raise SetupError(f"--workers must be at least 1, got {workers}")
    if ray_address is not None and workers > 1:
        raise SetupError("--workers and --ray contradict each other: Ray places the jobs")
    if not dry_run:
        surrogates.resolve_surrogate(surrogate)  # downloaded once here, not in every job
    if ray_address is not None:
        runner, threads = f"ray ({ray_address})", config.threads or 1
    elif workers > 1:
        runner, threads = f"{workers} local workers", config.threads or _share(workers)
    else:
        runner, threads = "sequential", config.threads
    jobs = person_jobs(
        input_set,
        replace(config, threads=threads),
        surrogate,
        exclude_classes,
        overwrite,
        dry_run,
        debug,
    )
    batch = BatchManifest(input_set, replace(config, threads=threads), runner, dry_run)
    emit(Notice(f"{len(jobs)} person(s), each protected in its own job: {runner}"))
    if dry_run or (ray_address is None and workers == 1):
        outcomes = (run_person(job, emit) for job in jobs)
    elif ray_address is not None:
        outcomes = _on_ray(jobs, ray_address, threads or 1, config.device)
    else:
        outcomes = _in_processes(jobs, workers)
    for outcome in outcomes:
        for photo, reason in batch.add(outcome):
            emit(PhotoFailed(str(photo.path), reason))
        emit(Notice(_summary(outcome, dry_run)))
        batch.save()
    return batch.save()


def _share(workers: int) -> int:
    return max(1, usable_cores() // workers)


def _summary(outcome: PersonOutcome, dry_run: bool) -> str:
    if outcome.manifest is None:
        return f"{outcome.name}: the job failed: {outcome.error}"
    totals = outcome.manifest["totals"]
    if dry_run:
        return f"{outcome.name}: {totals['photos']} photo(s) planned"
    return (
        f"{outcome.name}: {totals['protected']} of {totals['photos']} photo(s) protected "
        f"({outcome.seconds:.0f} s)"
    )


def _in_processes(jobs: list[PersonJob], workers: int) -> Iterator[PersonOutcome]:
    """The jobs in ``workers`` fresh processes (spawned: torch's threads do not survive a
    fork), yielded as they finish."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending = {pool.submit(run_person, job): job for job in jobs}
        try:
            for future in as_completed(pending):
                job = pending[future]
                try:
                    yield future.result()
                except Exception as error:  # the worker process died (killed, out of memory)
                    yield PersonOutcome(job.name, None, f"worker process failed: {error}")
        except BaseException:  # Ctrl-C or SIGTERM: stop the workers now, not after their person
            for worker in multiprocessing.active_children():
                worker.terminate()  # safe: the checkpoint and write journal keep their work
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _on_ray(
    jobs: list[PersonJob], address: str, threads: int, device: str
) -> Iterator[PersonOutcome]:
    """The jobs as Ray tasks of ``threads`` CPUs each (and a GPU each where the cluster has
    them), yielded as they finish; a task whose worker dies is retried by Ray."""
    try:
        import ray
    except ImportError as error:
        raise SetupError(f"--ray needs Ray: {RAY_EXTRA}") from error
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, address)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        use_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
        task = ray.remote(run_person).options(
            num_cpus=threads, num_gpus=1 if use_gpu else 0, max_retries=RAY_RETRIES
        )
        pending = {task.remote(job): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayError as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                yield PersonOutcome(
                    job.name, None, f"Ray task failed: {type(error).__name__}: {first_line}"
                )
    finally:
        if started_here:
            ray.shutdown()


def _connect(ray, address: str) -> None:
    """``auto``: the cluster this machine belongs to, else a new local one; else ``address``."""
    options = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address != "auto":
        ray.init(address=address, **options)
        return
    try:
        ray.init(address="auto", **options)
    except ConnectionError:
        ray.init(**options)
