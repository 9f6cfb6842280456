"""Running bench jobs in worker processes on this machine.

Workers are started with the ``spawn`` method (safe with torch and CUDA) and
use one torch thread each, so ``workers`` jobs share the cores without
oversubscribing them. Rows come back to the calling process, which alone
writes results, in the order jobs finish.

Caveats: a worker that dies (killed, out of memory) breaks the whole pool;
every job not finished by then comes back as an ``error`` row naming the
cause, and a rerun retries them. With ``workers=1`` jobs run in the calling
process, which is faster to start but has no such isolation.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import torch

from nnopt.bench.jobs import Job, ResultCallback, error_row, run_job

__all__ = ["LocalBackend", "default_workers"]

log = logging.getLogger(__name__)

_PARENT_CHECK_S = 1.0  # how often a worker checks that the bench still runs


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _exit_with_parent(parent_pid: int) -> None:
    while True:
        time.sleep(_PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            os._exit(1)


def _init_worker(parent_pid: int, log_level: int) -> None:
    """Set up a worker: one thread, quiet logs, Ctrl-C left to the parent,
    and an exit as soon as the parent is gone (even if it was SIGKILLed)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=log_level,
        format="%(levelname)s %(name)s [worker %(process)d]: %(message)s",
    )
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _worker_log_level() -> int:
    """Workers log warnings only when asked (-v): rows record divergence
    anyway, and stray lines would break the parent's progress bar."""
    level = logging.getLogger().getEffectiveLevel()
    return level if level <= logging.INFO else logging.ERROR


class LocalBackend:
    """A :class:`~nnopt.bench.jobs.Backend` of local worker processes."""

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers or default_workers()

    @property
    def parallelism(self) -> int:
        """Jobs run at once."""
        return self.workers

    def run(self, jobs: Sequence[Job], on_result: ResultCallback) -> None:
        """Run ``jobs``, calling ``on_result`` with each row as it finishes."""
        jobs = list(jobs)
        workers = min(self.workers, len(jobs))
        if workers == 0:
            return
        if workers == 1:
            self._run_inline(jobs, on_result)
        else:
            self._run_pool(jobs, on_result, workers)

    @staticmethod
    def _run_inline(jobs: list[Job], on_result: ResultCallback) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same arithmetic as in a worker
        try:
            for job in jobs:
                on_result(run_job(job))
        finally:
            torch.set_num_threads(threads)

    @staticmethod
    def _run_pool(jobs: list[Job], on_result: ResultCallback, workers: int) -> None:
        log.info("starting %d worker processes", workers)
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(os.getpid(), _worker_log_level()),
        )
        futures: dict[Future, Job] = {pool.submit(run_job, job): job for job in jobs}
        try:
            for future in as_completed(futures):
                on_result(_row_of(future, futures[future]))
        except BaseException:
            _stop_now(pool)  # Ctrl-C or a failing callback: no waiting
            raise
        pool.shutdown(wait=True)


def _row_of(future: Future, job: Job) -> dict:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        return error_row(
            job,
            f"worker process died before this job finished ({exc}); it may have "
            "been killed or run out of memory. Rerun the bench to retry",
        )
    except Exception as exc:  # e.g. a job that cannot be pickled
        return error_row(job, f"{type(exc).__name__}: {exc}")


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Cancel queued jobs and end the running ones."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    # Before 3.14 the pool has no public way to stop running workers, and
    # shutdown() drops its list of them, so take the list first.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
