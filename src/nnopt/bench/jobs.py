"""Benchmark jobs: one (optimizer, track, seed) run, and how backends run them.

A job is plain data, so it can cross process and machine boundaries (local
worker processes, Ray tasks). :func:`run_job` is what every backend executes:
it never raises; a job that fails comes back as a row with its error.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from nnopt.data import Profile, get_profile
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import OptimizerSpec
from nnopt.runner import RunConfig, RunResult, run_challenge

__all__ = ["Backend", "Job", "ResultCallback", "error_row", "result_row", "run_job"]


@dataclass(frozen=True)
class Job:
    """One run of a benchmark."""

    optimizer: OptimizerSpec
    n_hidden: int
    seed: str
    profile: Profile = field(default_factory=lambda: get_profile("tig"))
    device: str = "cpu"
    loop: LoopSettings = field(default_factory=LoopSettings)

    @property
    def key(self) -> str:
        """A stable identity: the same job in a rerun has the same key."""
        ident = {
            "optimizer": self.optimizer.to_dict(),
            "n_hidden": self.n_hidden,
            "seed": self.seed,
            "profile": self.profile.to_dict(),
            "loop": asdict(self.loop),
        }
        text = json.dumps(ident, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def config(self) -> RunConfig:
        return RunConfig(
            seed=self.seed,
            n_hidden=self.n_hidden,
            optimizer=self.optimizer,
            profile=self.profile,
            device=self.device,
            loop=self.loop,
        )


ResultCallback = Callable[[dict[str, Any]], None]


class Backend(Protocol):
    """Runs jobs and reports each finished row, in the calling process."""

    def run(self, jobs: Sequence[Job], on_result: ResultCallback) -> None: ...


def _job_row(job: Job) -> dict[str, Any]:
    """The fields every row of ``job`` starts with."""
    return {
        "key": job.key,
        "optimizer": job.optimizer.label,
        "n_hidden": job.n_hidden,
        "seed": job.seed,
        "profile": job.profile.name,
    }


def error_row(
    job: Job, error: str, *, traceback_text: str = "", wall_time_s: float = 0.0
) -> dict[str, Any]:
    """The row of a job that failed.

    :func:`run_job` makes these itself; backends use this for a job lost
    outside it (a worker process that died, a lost remote task).
    """
    return {
        **_job_row(job),
        "status": "error",
        "error": error,
        "traceback": traceback_text,
        "wall_time_s": wall_time_s,
    }


def run_job(job: Job) -> dict[str, Any]:
    """Run one job and return its result row (an ``error`` row if it failed)."""
    start = time.perf_counter()
    try:
        result = run_challenge(job.config())
    except Exception as exc:  # a failed job must not stop the others
        return error_row(
            job,
            f"{type(exc).__name__}: {exc}",
            traceback_text=traceback.format_exc(limit=8),
            wall_time_s=time.perf_counter() - start,
        )
    return result_row(job, result)


def result_row(
    job: Job, result: RunResult, *, wall_time_s: float | None = None
) -> dict[str, Any]:
    """The row of a job that finished; ``wall_time_s`` overrides the run's own.

    :func:`run_job` makes these itself; the batched backend builds
    ``result`` from a batched run and passes each run's share of its time.
    """
    row = _job_row(job)
    summary = result.summary()
    row.update(
        status="ok",
        test_loss=summary["test_loss"],
        quality=summary["quality"],
        # eps*^2 at alpha = 1; the threshold at any accuracy factor is
        # (4 - af/1000) times this, so pass rates need no rerun.
        threshold_unit=result.score.threshold / result.config.difficulty.alpha,
        best_val_loss=summary["best_val_loss"],
        epochs_used=summary["epochs_used"],
        epochs_run=summary["epochs_run"],
        diverged=summary["diverged"],
        stop_reason=summary["stop_reason"],
        wall_time_s=summary["wall_time_s"] if wall_time_s is None else wall_time_s,
        val_curve=[r.val_loss for r in result.training.history],
        train_curve=[r.train_loss for r in result.training.history],
    )
    return row
