"""``nnopt bench``: argument parsing, durable results, resume, failures.

Every bench here trains for two or three epochs on n_hidden 2 or 3, so a
job takes a fraction of a second; the tests that start worker processes or
a subprocess pay a few seconds for importing torch there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nnopt.bench.backends import make_backend
from nnopt.bench.config import (
    BenchConfig,
    parse_optimizers,
    parse_seeds,
    parse_tracks,
    split_optimizer_list,
)
from nnopt.bench.jobs import Job
from nnopt.bench.local import LocalBackend
from nnopt.bench.run import plan_bench
from nnopt.bench.store import BenchDir, append_row, latest_rows, read_rows
from nnopt.cli import app
from nnopt.data import get_profile
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import OptimizerSpec, parse_spec
from nnopt.seeds import derive_seeds

runner = CliRunner()


def bench_cli(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr, with rich's line wrapping undone."""
    result = runner.invoke(app, ["bench", *args])
    unwrap = " ".join
    return (
        result.exit_code,
        unwrap(result.stdout.split()),
        unwrap(result.stderr.split()),
    )


# --- parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("adam", ["adam"]),
        ("adam,adamw", ["adam", "adamw"]),
        (
            "adam:lr=1e-3,weight_decay=0.01,adamw",
            ["adam:lr=1e-3,weight_decay=0.01", "adamw"],
        ),
        (
            "sgd, adamw:lr=3e-3,beta1=0.8, pkg.mod:Opt",
            ["sgd", "adamw:lr=3e-3,beta1=0.8", "pkg.mod:Opt"],
        ),
        ("my_opt.py:lr=0.1,momentum=0.5", ["my_opt.py:lr=0.1,momentum=0.5"]),
    ],
)
def test_split_optimizer_list(text: str, expected: list[str]) -> None:
    assert split_optimizer_list(text) == expected


def test_split_optimizer_list_errors() -> None:
    with pytest.raises(ValueError, match="no optimizer before it"):
        split_optimizer_list("lr=1,adam")
    with pytest.raises(ValueError, match="no optimizers"):
        split_optimizer_list(" , ")


def test_parse_optimizers_with_hparams_and_json_file(tmp_path: Path) -> None:
    specs = parse_optimizers("adam:lr=3e-3,weight_decay=0.01,sgd")
    assert specs == [
        OptimizerSpec("adam", {"lr": 3e-3, "weight_decay": 0.01}),
        OptimizerSpec("sgd", {}),
    ]
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(["adam:lr=0.01", {"ref": "sgd", "hparams": {}}]))
    as_map = tmp_path / "map.json"
    as_map.write_text(json.dumps({"adamw": {"lr": 0.002}}))
    specs = parse_optimizers(f"@{as_list},{as_map},adam")
    assert [s.label for s in specs] == ["adam:lr=0.01", "sgd", "adamw:lr=0.002", "adam"]
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    with pytest.raises(ValueError, match="cannot read optimizer"):
        parse_optimizers(str(bad))


def test_parse_seeds_count_list_and_file(tmp_path: Path) -> None:
    assert parse_seeds("3", "base") == ["base-0", "base-1", "base-2"]
    assert parse_seeds("3") == derive_seeds("bench", 3)
    assert parse_seeds("a, b,c") == ["a", "b", "c"]
    assert parse_seeds("7,") == ["7"]  # a single number as a seed, not a count
    hex_seed = "ab" * 32
    seed_file = tmp_path / "seeds.txt"
    seed_file.write_text(f"# TIG seeds\n{hex_seed}\n\n  second  \n")
    assert parse_seeds(f"@{seed_file}") == [hex_seed, "second"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "at least 1"),
        ("a,b,a", "more than once"),
        ("@/no/such/file", "does not exist"),
        (",", "no seeds"),
    ],
)
def test_parse_seeds_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_parse_tracks() -> None:
    assert parse_tracks("4, 7,10") == [4, 7, 10]
    with pytest.raises(ValueError, match="not an integer"):
        parse_tracks("4,x")
    with pytest.raises(ValueError, match="n_hidden must be between"):
        parse_tracks("1")


def _config(**overrides) -> BenchConfig:
    fields = {
        "optimizers": (parse_spec("adam"), parse_spec("sgd:lr=1e-4")),
        "tracks": (2, 3),
        "seeds": ("s0", "s1"),
        "loop": LoopSettings(max_epochs=2),
        "bound": False,
    }
    return BenchConfig(**{**fields, **overrides})


def test_config_pairs_seeds_and_round_trips() -> None:
    config = _config()
    jobs = config.jobs()
    assert len(jobs) == 8
    for label in config.labels:  # every optimizer gets the same seeds
        seeds = [j.seed for j in jobs if j.optimizer.label == label]
        assert sorted(set(seeds)) == ["s0", "s1"]
    assert [j.seed for j in jobs[:4]] == ["s0"] * 4  # seed-major order
    again = BenchConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert [j.key for j in again.jobs()] == [j.key for j in jobs]
    assert again.default_dir_name() == config.default_dir_name()
    assert config.find_label("sgd:lr=0.0001") == "sgd:lr=0.0001"
    assert config.find_label("adam") == "adam"
    with pytest.raises(ValueError, match="not one of"):
        config.find_label("adamw")
    with pytest.raises(ValueError, match="more than once"):
        _config(optimizers=(parse_spec("adam"), parse_spec("adam")))


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match="unknown backend .nope.; choose one of batched, local, ray"
    ):
        make_backend("nope")
    code, _, err = bench_cli("--backend", "nope", "--seeds", "1", "--tracks", "2")
    assert code == 2 and "unknown backend" in err


def test_unknown_optimizer_fails_before_running(tmp_path: Path) -> None:
    code, _, err = bench_cli("--optimizers", "adma", "--out", str(tmp_path / "b"))
    assert code == 2 and "unknown optimizer 'adma'" in err
    assert not (tmp_path / "b").exists()


# --- the results file -------------------------------------------------------


def test_append_is_one_whole_line_and_a_truncated_tail_is_tolerated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    append_row(path, {"key": "a", "status": "ok"})
    append_row(path, {"key": "b", "status": "error"})
    with open(path, "a") as fh:
        fh.write('{"key": "c", "status": "o')  # a write cut short by a kill
    assert [r["key"] for r in read_rows(path)] == ["a", "b"]

    bench_dir = BenchDir(tmp_path)
    bench_dir.repair()
    assert path.read_text().endswith('"error"}\n')
    bench_dir.append_result({"key": "c", "status": "ok"})
    assert [r["key"] for r in read_rows(path)] == ["a", "b", "c"]


def test_latest_rows_prefers_the_ok_attempt() -> None:
    rows = [
        {"key": "a", "status": "error", "n": 1},
        {"key": "a", "status": "ok", "n": 2},
        {"key": "a", "status": "error", "n": 3},
        {"key": "b", "status": "error", "n": 4},
        {"key": "b", "status": "error", "n": 5},
    ]
    chosen = latest_rows(rows)
    assert chosen["a"]["n"] == 2 and chosen["b"]["n"] == 5


def _fake_ok_row(job: Job) -> dict:
    return {
        "key": job.key,
        "optimizer": job.optimizer.label,
        "n_hidden": job.n_hidden,
        "seed": job.seed,
        "profile": job.profile.name,
        "status": "ok",
        "test_loss": 0.5,
        "quality": 0.25,
        "threshold_unit": 0.1,
        "epochs_used": 1,
        "epochs_run": 2,
        "wall_time_s": 0.1,
        "val_curve": [1.0, 0.9],
        "marker": "written before the kill",
    }


def test_resume_after_a_kill_skips_finished_jobs(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["--optimizers", "adam", "--tracks", "2", "--seeds", "3"]
    args += ["--max-epochs", "2", "--workers", "1", "--no-bound", "--no-plots"]
    config = BenchConfig(
        optimizers=(parse_spec("adam"),),
        tracks=(2,),
        seeds=tuple(derive_seeds("bench", 3)),
        profile=get_profile("tig"),
        loop=LoopSettings(max_epochs=2),
    )
    jobs = config.jobs()
    out.mkdir()
    results = out / "results.jsonl"
    for job in jobs[:2]:
        append_row(results, _fake_ok_row(job))
    with open(results, "a") as fh:  # the third job was being written
        fh.write(json.dumps(_fake_ok_row(jobs[2]))[:40])

    code, stdout, _ = bench_cli(*args, "--out", str(out))
    assert code == 0, stdout
    assert "resuming: 2 jobs already done" in stdout
    lines = results.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line whole again
    assert Counter(r["key"] for r in rows) == {j.key: 1 for j in jobs}
    assert [r.get("marker") for r in rows[:2]] == ["written before the kill"] * 2
    assert rows[2]["status"] == "ok" and "marker" not in rows[2]

    code, stdout, _ = bench_cli(*args, "--out", str(out))  # nothing left to do
    assert code == 0 and "resuming: 3 jobs already done" in stdout
    assert len(results.read_text().splitlines()) == 3
    assert json.loads((out / "bench.json").read_text())["n_jobs"] == 3
    assert json.loads((out / "environment.json").read_text())["torch"]


def test_failed_jobs_are_recorded_and_retried_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["--optimizers", "adam,adam:lr=-1", "--tracks", "2", "--seeds", "2"]
    args += ["--max-epochs", "2", "--workers", "1", "--no-bound", "--no-plots"]
    code, stdout, stderr = bench_cli(*args, "--out", str(out))
    assert code == 1  # the bench finished, but with failed jobs
    assert "cannot be built" in stderr and "2 job(s) failed" in stderr
    rows = read_rows(out / "results.jsonl")
    status = Counter((r["optimizer"], r["status"]) for r in rows)
    assert status == {("adam", "ok"): 2, ("adam:lr=-1", "error"): 2}
    errors = [r for r in rows if r["status"] == "error"]
    assert all("Invalid learning rate" in r["error"] for r in errors)
    assert "Failed jobs (2" in stdout

    plan = plan_bench(BenchDir(out).read_config(), BenchDir(out))
    assert (plan.n_done, len(plan.pending), plan.n_retried) == (2, 2, 2)
    code, stdout, _ = bench_cli(*args, "--out", str(out))
    assert code == 1 and "retrying 2 that failed" in stdout
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == 6  # the two ok jobs were not run again


def test_local_backend_worker_pool_records_a_failure_and_runs_the_rest() -> None:
    config = _config(
        optimizers=(parse_spec("adam:lr=-1"), parse_spec("adam")),
        tracks=(2,),
        seeds=("s0", "s1"),
    )
    rows: list[dict] = []
    LocalBackend(workers=2).run(config.jobs(), rows.append)
    status = Counter((r["optimizer"], r["status"]) for r in rows)
    assert status == {("adam:lr=-1", "error"): 2, ("adam", "ok"): 2}


def test_local_backend_in_process_reports_every_row() -> None:
    jobs = _config(tracks=(2,), seeds=("s0",)).jobs()
    rows: list[dict] = []
    LocalBackend(workers=1).run(jobs, rows.append)
    assert sorted(r["key"] for r in rows) == sorted(j.key for j in jobs)
    assert all(r["status"] == "ok" for r in rows)


def test_a_second_bench_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    bench_dir = BenchDir(tmp_path / "b")
    with bench_dir.lock():
        code, _, err = bench_cli(
            "--seeds", "1", "--tracks", "2", "--out", str(bench_dir.path)
        )
    assert code == 2 and "another nnopt bench" in err


def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    """Kill a real bench process with SIGKILL; the rerun finishes the rest."""
    out = tmp_path / "bench"
    args = ["--optimizers", "adam", "--tracks", "2", "--seeds", "6"]
    args += ["--max-epochs", "25", "--workers", "1", "--no-bound", "--no-plots"]
    results = out / "results.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "nnopt", "bench", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, killed below
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if results.is_file() and results.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    done_before = {r["key"] for r in read_rows(results)}
    assert 1 <= len(done_before) < 6, "the bench finished before it was killed"

    code, stdout, _ = bench_cli(*args, "--out", str(out))
    assert code == 0
    assert f"resuming: {len(done_before)} jobs already done" in stdout
    rows = read_rows(results)
    assert len(rows) == 6 and len({r["key"] for r in rows}) == 6
