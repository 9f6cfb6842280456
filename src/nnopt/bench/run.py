"""Running a bench into its folder: plan, resume, run, and the Bayes limit.

:func:`plan_bench` writes the config and says which jobs are still to run:
a job with an ``ok`` row in ``results.jsonl`` is done; a job whose rows are
all errors is run again (a failure may be transient, and a fixed optimizer
should not need a new folder). :func:`run_bench` hands the rest to a backend
and appends every row the moment it arrives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nnopt.bench.config import BenchConfig
from nnopt.bench.jobs import Backend, Job, ResultCallback
from nnopt.bench.store import BenchDir
from nnopt.data import generate_instance
from nnopt.scoring import threshold

__all__ = [
    "BenchPlan",
    "BoundUnavailableError",
    "bound_key",
    "compute_bounds",
    "missing_bounds",
    "plan_bench",
    "run_bench",
]

log = logging.getLogger(__name__)


class BoundUnavailableError(RuntimeError):
    """``nnopt.bound`` cannot be imported, so no Bayes limit can be computed."""


@dataclass(frozen=True)
class BenchPlan:
    """What a (re)run of a bench has left to do."""

    jobs: list[Job]  # every job of the bench
    pending: list[Job]  # jobs to run now, in the bench's order
    n_done: int  # jobs with an ok row already
    n_retried: int  # pending jobs that failed before

    @property
    def n_total(self) -> int:
        return len(self.jobs)


def plan_bench(config: BenchConfig, bench_dir: BenchDir) -> BenchPlan:
    """Write ``bench.json`` and ``environment.json`` and find unfinished jobs."""
    bench_dir.repair()
    if bench_dir.exists():
        try:
            same = bench_dir.read_config().fingerprint() == config.fingerprint()
        except ValueError:
            same = False
        if not same:
            log.info(
                "%s held a different bench; its bench.json is replaced, and the "
                "finished jobs this bench shares with it are kept",
                bench_dir.path,
            )
    bench_dir.write_config(config)
    rows = bench_dir.results()
    jobs = config.jobs()
    pending = [j for j in jobs if rows.get(j.key, {}).get("status") != "ok"]
    retried = sum(1 for j in pending if j.key in rows)
    return BenchPlan(jobs, pending, len(jobs) - len(pending), retried)


def run_bench(
    plan: BenchPlan,
    bench_dir: BenchDir,
    backend: Backend,
    *,
    on_result: ResultCallback | None = None,
) -> None:
    """Run the plan's pending jobs; each row is on disk before ``on_result``."""

    def record(row: dict[str, Any]) -> None:
        bench_dir.append_result(row)
        if row.get("status") != "ok":
            log.info(
                "job %s h%s seed %s failed: %s",
                row.get("optimizer"),
                row.get("n_hidden"),
                row.get("seed"),
                row.get("error"),
            )
        if on_result is not None:
            on_result(row)

    backend.run(plan.pending, record)


def bound_key(seed: str, config: BenchConfig) -> str:
    """The identity of a Bayes-limit row: its instance (seed and profile)."""
    text = json.dumps(
        {"seed": seed, "profile": config.profile.to_dict()}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _bound_row(seed: str, config: BenchConfig, bayes_bound: Callable) -> dict:
    row: dict[str, Any] = {
        "key": bound_key(seed, config),
        "seed": seed,
        "profile": config.profile.name,
    }
    try:
        instance = generate_instance(seed, config.profile)
        result = bayes_bound(instance)
        row.update(
            status="ok",
            test_loss=float(result.test_loss),
            quality=float(result.quality),
            max_accuracy_factor=float(result.max_accuracy_factor),
            threshold_unit=threshold(instance, 1.0),
            zero_mean_test_loss=float(result.zero_mean_test_loss),
            zero_mean_quality=float(result.zero_mean_quality),
        )
    except Exception as exc:  # one bad instance must not stop the bench
        row.update(
            status="error",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=8),
        )
    return row


def missing_bounds(config: BenchConfig, bench_dir: BenchDir) -> list[str]:
    """The bench's seeds without a Bayes limit in ``bound.jsonl``."""
    have = bench_dir.bounds()
    return [
        seed
        for seed in config.seeds
        if have.get(bound_key(seed, config), {}).get("status") != "ok"
    ]


def compute_bounds(
    config: BenchConfig,
    bench_dir: BenchDir,
    *,
    on_row: ResultCallback | None = None,
) -> int:
    """Append the Bayes limit of every seed that lacks one; return how many.

    Raises :class:`BoundUnavailableError` if ``nnopt.bound`` is missing.
    """
    todo = missing_bounds(config, bench_dir)
    if not todo:
        return 0
    try:
        from nnopt.bound import bayes_bound
    except ImportError as exc:
        raise BoundUnavailableError(
            f"the Bayes limit needs nnopt.bound, which cannot be imported ({exc}); "
            "update nnopt, or pass --no-bound"
        ) from exc
    for seed in todo:
        row = _bound_row(seed, config, bayes_bound)
        bench_dir.append_bound(row)
        if row["status"] != "ok":
            log.warning("Bayes limit failed for seed %s: %s", seed, row["error"])
        if on_row is not None:
            on_row(row)
    return len(todo)
