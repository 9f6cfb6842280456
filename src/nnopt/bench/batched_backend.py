"""Running bench jobs through the batched engine (:mod:`nnopt.batched`).

Jobs that differ only in their seed (same optimizer and hyperparameters,
track, data profile, device and loop settings) form a group; each group is
trained in chunks of up to ``batch_size`` instances, each chunk one
:func:`nnopt.batched.train_batched` call. Every job still gets its own row,
in exactly the format of :func:`nnopt.bench.jobs.run_job`, with one
difference in meaning: ``wall_time_s`` is the run's share of its chunk's
training time (chunk time / instances), so times add up to the compute used.

On CPU, chunks run in ``workers`` worker processes (spawned, one torch thread
each), split so that every worker has one; on a GPU they run one after the
other in the calling process. A group whose optimizer does not support
batched mode runs one job at a time through ``run_job``, with a warning, and
its rows are the same as without this backend.

Caveats: a chunk costs as much as its longest run, since stopped instances
are still computed (see :mod:`nnopt.batched`); and a worker that dies takes
its whole chunk with it (every job of the chunk gets an ``error`` row, and a
rerun of the bench retries them).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from typing import Any

import torch

from nnopt.api import HookError
from nnopt.batched import check_batched_optimizer, train_batched
from nnopt.bench.jobs import Job, ResultCallback, error_row, result_row, run_job
from nnopt.bench.local import default_workers
from nnopt.data import generate_instance
from nnopt.optimizers.registry import load_optimizer
from nnopt.runner import RunResult, score_solution

__all__ = ["DEFAULT_BATCH_SIZE", "BatchedBackend", "group_jobs", "run_chunk"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32  # instances trained at once


def _group_key(job: Job) -> str:
    """Jobs with the same key can share one batched run."""
    return json.dumps(
        {
            "optimizer": job.optimizer.to_dict(),
            "n_hidden": job.n_hidden,
            "profile": job.profile.to_dict(),
            "device": job.device,
            "loop": asdict(job.loop),
        },
        sort_keys=True,
        default=str,
    )


def group_jobs(jobs: Sequence[Job]) -> list[list[Job]]:
    """Jobs grouped by everything but the seed, in order of first appearance."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(_group_key(job), []).append(job)
    return list(groups.values())


def _chunks(group: list[Job], batch_size: int, workers: int) -> list[list[Job]]:
    """Even chunks of at most ``batch_size``, at least one per worker."""
    n_chunks = max(math.ceil(len(group) / batch_size), min(workers, len(group)))
    size = math.ceil(len(group) / n_chunks)
    return [group[i : i + size] for i in range(0, len(group), size)]


def _failed(job: Job, exc: BaseException, start: float) -> dict[str, Any]:
    return error_row(
        job,
        f"{type(exc).__name__}: {exc}",
        traceback_text="".join(traceback.format_exception(exc, limit=8)),
        wall_time_s=time.perf_counter() - start,
    )


def run_chunk(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Train ``jobs`` (one group) in one batched run; one row per job.

    Never raises: a job whose instance cannot be made, or a run that fails,
    gives ``error`` rows, as :func:`run_job` does.
    """
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    ready = []
    for job in jobs:
        try:
            ready.append((job, generate_instance(job.seed, job.profile)))
        except Exception as exc:  # a bad seed must not stop the others
            rows.append(_failed(job, exc, start))
    if not ready:
        return rows
    first = ready[0][0]
    try:
        optimizer = load_optimizer(first.optimizer)
        train_start = time.perf_counter()
        results = train_batched(
            [inst for _, inst in ready],
            first.n_hidden,
            optimizer,
            device=first.device,
            settings=first.loop,
            name=f"optimizer {first.optimizer.ref!r}",
        )
        share = (time.perf_counter() - train_start) / len(ready)
    except Exception as exc:
        return rows + [_failed(job, exc, start) for job, _ in ready]
    for (job, inst), training in zip(ready, results):
        config = job.config()
        try:
            score = score_solution(
                inst,
                job.n_hidden,
                training.solution,
                config.difficulty,
                device=job.device,
            )
        except Exception as exc:
            rows.append(_failed(job, exc, start))
            continue
        rows.append(
            result_row(job, RunResult(config, training, score), wall_time_s=share)
        )
    return rows


def _supports_batched(job: Job) -> bool:
    """Whether the job's optimizer opts in; loading errors are left to the run."""
    try:
        optimizer = load_optimizer(job.optimizer)
        check_batched_optimizer(optimizer, f"optimizer {job.optimizer.ref!r}")
    except HookError as exc:
        log.warning("%s; running its jobs one at a time", exc)
        return False
    except Exception:  # reported by the run itself, as an error row
        return True
    return True


def _run_task(batched: bool, chunk: list[Job]) -> list[dict[str, Any]]:
    """One unit of work: a batched chunk, or a single job run alone."""
    return run_chunk(chunk) if batched else [run_job(chunk[0])]


def _init_worker() -> None:
    torch.set_num_threads(1)


Task = tuple[bool, list[Job]]  # (batched, jobs)


class BatchedBackend:
    """A :class:`~nnopt.bench.jobs.Backend` that trains seeds in batches.

    ``workers`` (default: all cores) is the number of CPU worker processes;
    ``batch_size`` the most instances one batched run trains.
    """

    def __init__(
        self, workers: int | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.workers = workers or default_workers()
        self.batch_size = batch_size

    @property
    def parallelism(self) -> int:
        """Jobs in flight at once (the bench's progress line shows it)."""
        return self.workers * self.batch_size

    def run(self, jobs: Sequence[Job], on_result: ResultCallback) -> None:
        """Run ``jobs``, calling ``on_result`` with every row as chunks finish."""
        cpu_tasks: list[Task] = []
        gpu_tasks: list[Task] = []
        for group in group_jobs(jobs):
            on_gpu = torch.device(group[0].device).type != "cpu"
            tasks = gpu_tasks if on_gpu else cpu_tasks
            if not _supports_batched(group[0]):
                tasks.extend((False, [job]) for job in group)
                continue
            workers = 1 if on_gpu else self.workers
            for chunk in _chunks(group, self.batch_size, workers):
                log.info(
                    "batched chunk: %d seed(s) of %s on n_hidden %d",
                    len(chunk),
                    chunk[0].optimizer.label,
                    chunk[0].n_hidden,
                )
                tasks.append((True, chunk))
        if self.workers == 1 or len(cpu_tasks) <= 1:
            _run_inline(cpu_tasks, on_result)
        else:
            self._run_pool(cpu_tasks, on_result)
        # A GPU is shared by every chunk on it: one chunk at a time, here.
        _run_inline(gpu_tasks, on_result)

    def _run_pool(self, tasks: list[Task], on_result: ResultCallback) -> None:
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(tasks)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )
        futures = {pool.submit(_run_task, *task): task[1] for task in tasks}
        try:
            for future in as_completed(futures):
                for row in _rows_of(future, futures[future]):
                    on_result(row)
        except BaseException:
            _stop_now(pool)  # Ctrl-C or a failing callback: no waiting
            raise
        pool.shutdown(wait=True)


def _run_inline(tasks: list[Task], on_result: ResultCallback) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as in a worker
    try:
        for task in tasks:
            for row in _run_task(*task):
                on_result(row)
    finally:
        torch.set_num_threads(threads)


def _rows_of(future: Future, chunk: list[Job]) -> list[dict[str, Any]]:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        return [
            error_row(
                job,
                f"worker process died before this chunk finished ({exc}); it may "
                "have been killed or run out of memory. Rerun the bench to retry",
            )
            for job in chunk
        ]
    except Exception as exc:  # e.g. a job that cannot be pickled
        return [error_row(job, f"{type(exc).__name__}: {exc}") for job in chunk]


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Cancel queued chunks and end the running ones."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
