"""Running bench jobs as Ray tasks, on a local Ray instance or a cluster.

Each job is one Ray task running :func:`nnopt.bench.jobs.run_job`, with
``cpus_per_job`` CPUs (and as many torch threads) and ``gpus_per_job``
GPUs reserved for it. Rows come back to the calling process, the driver,
as tasks finish (a ``ray.wait`` loop), so the bench's results file, resume
and retry rules are those of the local backend: only the driver writes.

Without an address the backend starts a Ray instance on this machine and
stops it when the jobs are done; with one (``"auto"``, ``"ray://host:10001"``
or ``"host:6379"``) it joins that cluster. If Ray is already initialised in
this process, it uses that connection and leaves it open.

Caveats: every node needs the same nnopt (and any optimizer file a spec
names, at the same path); a task is not retried, so a worker or node that
dies turns its job into an ``error`` row, which a rerun of the bench retries.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any

from nnopt.bench.jobs import Job, ResultCallback, error_row, run_job
from nnopt.bench.local import default_workers

__all__ = ["RayBackend"]

log = logging.getLogger(__name__)

_CAPACITY_REFRESH_S = 10.0  # how often to re-read the cluster's size


def _run_job_task(job: Job, threads: int) -> dict[str, Any]:
    """What a Ray worker runs: one job, with as many threads as CPUs reserved."""
    import torch

    torch.set_num_threads(threads)
    return run_job(job)


class RayBackend:
    """A :class:`~nnopt.bench.jobs.Backend` of Ray tasks."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        cpus_per_job: float = 1.0,
        gpus_per_job: float = 0.0,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if cpus_per_job <= 0:
            raise ValueError(f"cpus_per_job must be positive, got {cpus_per_job}")
        if gpus_per_job < 0:
            raise ValueError(f"gpus_per_job must be >= 0, got {gpus_per_job}")
        self.workers = workers  # most jobs at once; None: what the cluster fits
        self.address = address
        self.cpus_per_job = cpus_per_job
        self.gpus_per_job = gpus_per_job
        self._capacity = (0, -_CAPACITY_REFRESH_S)  # (jobs, time read)
        self._started = False  # this backend started Ray, so it stops it

    @property
    def parallelism(self) -> int:
        """Jobs run at once. Connects to Ray (or starts it) if not yet done;
        :meth:`run` then stops what was started here."""
        self._connect()
        return self._jobs_at_once()

    def run(self, jobs: Sequence[Job], on_result: ResultCallback) -> None:
        """Run ``jobs``, calling ``on_result`` with each row as it finishes."""
        jobs = list(jobs)
        if not jobs:
            return
        self._check_devices(jobs)
        self._connect()
        try:
            self._run(jobs, on_result)
        finally:
            if self._started:
                import ray

                ray.shutdown()
                self._started = False

    def _check_devices(self, jobs: list[Job]) -> None:
        devices = {job.device for job in jobs}
        if any(d.startswith("cuda") for d in devices) and self.gpus_per_job <= 0:
            raise ValueError(
                "jobs on cuda need a GPU reserved per task; set gpus_per_job "
                "(--ray-gpus-per-job), e.g. 1 or 0.5"
            )
        if any(re.fullmatch(r"cuda:[1-9]\d*", d) for d in devices):
            raise ValueError(
                "under Ray use device cuda (not cuda:N): Ray gives each task "
                "its GPU and shows it to the task as cuda:0"
            )

    def _connect(self) -> None:
        """Connect to Ray (or start it) unless this process already is."""
        import ray

        if ray.is_initialized():
            return
        quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
        options: dict[str, Any] = {
            "log_to_driver": not quiet,  # worker lines would break progress bars
            "logging_level": logging.WARNING if quiet else logging.INFO,
        }
        if self.address:
            log.info("connecting to the Ray cluster at %s", self.address)
            ray.init(address=self.address, **options)
        else:
            cpus = (self.workers or default_workers()) * self.cpus_per_job
            log.info("starting a local Ray instance with %g CPUs", cpus)
            ray.init(
                address="local",  # a new instance, even if a cluster runs here
                num_cpus=max(1, round(cpus)),
                include_dashboard=False,
                **options,
            )
        self._started = True

    def _jobs_at_once(self) -> int:
        """How many jobs the cluster fits now (at least one), capped by
        ``workers``; re-read every few seconds, as clusters can grow."""
        import ray

        fits, read_at = self._capacity
        now = time.monotonic()
        if now - read_at >= _CAPACITY_REFRESH_S:
            resources = ray.cluster_resources()
            fits = int(resources.get("CPU", 0) // self.cpus_per_job)
            if self.gpus_per_job > 0:
                fits = min(fits, int(resources.get("GPU", 0) // self.gpus_per_job))
            self._capacity = (fits, now)
        fits = max(1, fits)
        return min(fits, self.workers) if self.workers else fits

    def _run(self, jobs: list[Job], on_result: ResultCallback) -> None:
        import ray

        task = ray.remote(_run_job_task)
        options = {
            "num_cpus": self.cpus_per_job,
            "num_gpus": self.gpus_per_job,
            "max_retries": 0,
        }
        threads = max(1, int(self.cpus_per_job))
        queue = list(reversed(jobs))  # pop() takes them in order
        running: dict[Any, tuple[Job, float]] = {}
        try:
            while queue or running:
                # Keep a few jobs queued beyond what runs, so a freed
                # worker never waits for the driver; with workers set, no more.
                limit = self._jobs_at_once()
                limit = limit if self.workers else 2 * limit
                while queue and len(running) < limit:
                    job = queue.pop()
                    ref = task.options(name=_task_name(job), **options).remote(
                        job, threads
                    )
                    running[ref] = (job, time.perf_counter())
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    job, started = running.pop(ref)
                    on_result(_row_of(ref, job, time.perf_counter() - started))
        except BaseException:
            for ref in running:  # Ctrl-C or a failing callback: stop the rest
                ray.cancel(ref, force=True)
            raise


def _task_name(job: Job) -> str:
    return f"nnopt {job.optimizer.label[:60]} h{job.n_hidden} {job.seed}"


def _row_of(ref: Any, job: Job, wall_time_s: float) -> dict[str, Any]:
    """The task's row, or an error row if the task or its worker failed."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # raised inside the task
        cause = exc.cause if exc.cause is not None else exc
        return error_row(
            job,
            f"{type(cause).__name__}: {cause}",
            traceback_text=str(exc),
            wall_time_s=wall_time_s,
        )
    except Exception as exc:  # the worker or its node died, the task was lost
        return error_row(
            job,
            f"Ray task lost ({type(exc).__name__}): {str(exc).rstrip('. ')}. "
            "Rerun the bench to retry it",
            wall_time_s=wall_time_s,
        )
