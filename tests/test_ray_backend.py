"""The Ray backend gives the rows run_job gives, and failures as error rows.

One local Ray instance on 2 CPUs serves the whole module: starting Ray takes
several seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nnopt.bench.jobs import Job, error_row, run_job
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import parse_spec

ray = pytest.importorskip("ray")
from nnopt.bench.ray_backend import RayBackend  # noqa: E402

# Keep this module on one xdist worker (with --dist loadgroup), so the suite
# starts Ray once.
pytestmark = pytest.mark.xdist_group("ray")
TINY = LoopSettings(max_epochs=3)
CRASHING_OPTIMIZER = """\
import os


def optimizer(**hparams):
    os._exit(3)  # the worker process dies mid-task
"""


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance on 2 CPUs, started the way the backend starts one;
    backends made later find it running and leave it be."""
    assert RayBackend(workers=2).parallelism == 2  # starts Ray
    assert ray.cluster_resources()["CPU"] == 2
    yield
    ray.shutdown()


def _jobs() -> list[Job]:
    return [
        Job(parse_spec("adam"), 2, "ray-0", loop=TINY),
        Job(parse_spec("sgd:lr=1e-4"), 3, "ray-1", loop=TINY),
        Job(parse_spec("template"), 2, "ray-1", loop=TINY),
    ]


def test_rows_match_running_the_jobs_directly(local_ray) -> None:
    jobs = _jobs()
    rows = []
    RayBackend().run(jobs, rows.append)

    assert sorted(r["key"] for r in rows) == sorted(j.key for j in jobs)
    by_key = {r["key"]: r for r in rows}
    for job in jobs:
        direct, remote = run_job(job), by_key[job.key]
        assert remote["status"] == direct["status"] == "ok"
        for name in ("optimizer", "n_hidden", "seed", "epochs_used", "epochs_run"):
            assert remote[name] == direct[name], name
        for name in ("quality", "test_loss", "best_val_loss"):
            assert remote[name] == pytest.approx(direct[name], rel=1e-6), name
        assert remote["val_curve"] == pytest.approx(direct["val_curve"], rel=1e-6)


def test_a_failing_job_and_a_dead_worker_become_error_rows(
    local_ray, tmp_path: Path
) -> None:
    crash = tmp_path / "crash.py"
    crash.write_text(CRASHING_OPTIMIZER)
    good = Job(parse_spec("adam"), 2, "ray-0", loop=TINY)
    unknown = Job(parse_spec("no-such-optimizer"), 2, "ray-0", loop=TINY)
    dies = Job(parse_spec(str(crash)), 2, "ray-0", loop=TINY)
    rows = []
    RayBackend(workers=2).run([unknown, dies, good], rows.append)

    by_key = {r["key"]: r for r in rows}
    assert len(rows) == 3
    assert by_key[good.key]["status"] == "ok"
    for job, message in [
        (unknown, "ValueError: unknown optimizer 'no-such-optimizer'"),
        (dies, "WorkerCrashedError"),
    ]:
        row = by_key[job.key]
        assert row["status"] == "error"
        assert message in row["error"]
        assert set(row) == set(error_row(job, "x"))  # the shape the store expects


def test_parallelism_is_what_the_cluster_fits(local_ray) -> None:
    assert RayBackend().parallelism == 2
    assert RayBackend(cpus_per_job=2).parallelism == 1
    assert RayBackend(workers=1).parallelism == 1


def test_cuda_jobs_need_a_gpu_per_task() -> None:
    job = Job(parse_spec("adam"), 2, "ray-0", device="cuda", loop=TINY)
    with pytest.raises(ValueError, match="gpus_per_job"):
        RayBackend().run([job], lambda row: None)
    with pytest.raises(ValueError, match="not cuda:N"):
        RayBackend(gpus_per_job=1).run(
            [Job(parse_spec("adam"), 2, "ray-0", device="cuda:1", loop=TINY)],
            lambda row: None,
        )


def test_bad_resources_are_refused() -> None:
    with pytest.raises(ValueError, match="cpus_per_job"):
        RayBackend(cpus_per_job=0)
    with pytest.raises(ValueError, match="workers"):
        RayBackend(workers=0)
