"""Bench reports: built from a folder's files alone, the same every time."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nnopt.bench.config import BenchConfig
from nnopt.bench.jobs import Job
from nnopt.bench.report import (
    LIMIT_LABEL,
    load_report,
    text_tables,
    to_csv,
    to_json,
    to_markdown,
    write_report,
)
from nnopt.bench.run import bound_key
from nnopt.bench.store import BenchDir
from nnopt.cli import app
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import parse_spec

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNIT = 0.1  # threshold_unit of every synthetic instance

# quality by (optimizer, track) for seeds s0..s3; test_loss follows from it
# as (1 - quality) * 4 * UNIT, TIG's definition at alpha = 4.
QUALITY = {
    ("adam", 2): [0.50, 0.60, 0.70, 0.80],
    ("sgd", 2): [0.55, 0.55, 0.75, 0.85],
    ("adam", 3): [0.40, 0.50, 0.60, -10.0],  # the last one diverged
    ("sgd", 3): [0.45, 0.50, 0.65, 0.70],
}
LIMIT = [0.86, 0.87, 0.87, 0.88]


def _row(job: Job, i: int) -> dict:
    quality = QUALITY[(job.optimizer.label, job.n_hidden)][i]
    diverged = quality == -10.0
    curve = [1.0 / (e + 1) for e in range(5 + 3 * i)]  # lengths differ
    return {
        "key": job.key,
        "optimizer": job.optimizer.label,
        "n_hidden": job.n_hidden,
        "seed": job.seed,
        "profile": job.profile.name,
        "status": "ok",
        "test_loss": math.nan if diverged else (1 - quality) * 4 * UNIT,
        "quality": quality,
        "threshold_unit": UNIT,
        "epochs_used": 3 + i,
        "epochs_run": 5 + 3 * i,
        "diverged": diverged,
        "wall_time_s": 0.5,
        "val_curve": curve + ([math.nan] if diverged else []),
    }


@pytest.fixture
def bench_path(tmp_path: Path) -> Path:
    """A finished bench folder written by hand: no training needed."""
    config = BenchConfig(
        optimizers=(parse_spec("adam"), parse_spec("sgd")),
        tracks=(2, 3),
        seeds=("s0", "s1", "s2", "s3"),
        loop=LoopSettings(max_epochs=20),
    )
    bench_dir = BenchDir(tmp_path / "bench")
    bench_dir.write_config(config)
    for job in config.jobs():
        bench_dir.append_result(_row(job, config.seeds.index(job.seed)))
    for seed, quality in zip(config.seeds, LIMIT):
        bench_dir.append_bound(
            {
                "key": bound_key(seed, config),
                "seed": seed,
                "status": "ok",
                "quality": quality,
                "test_loss": (1 - quality) * 4 * UNIT,
                "threshold_unit": UNIT,
                "max_accuracy_factor": 1000 * (4 - (1 - quality) * 4),
            }
        )
    return bench_dir.path


def test_statistics_per_optimizer_track_and_limit(bench_path: Path) -> None:
    report = load_report(bench_path)
    order = [(s.optimizer, s.n_hidden) for s in report.summary]
    assert order == [
        ("adam", 2),
        ("sgd", 2),
        (LIMIT_LABEL, 2),
        ("adam", 3),
        ("sgd", 3),
        (LIMIT_LABEL, 3),
    ]
    adam2 = report.stats("adam", 2)
    assert adam2.n == 4 and adam2.quality.mean == pytest.approx(0.65)
    # test loss (1 - q) * 0.4 passes at af iff q >= af / 4000.
    assert adam2.pass_rate[2500] == pytest.approx(0.5)  # q = 0.7, 0.8 >= 0.625
    assert report.stats(LIMIT_LABEL, 3).quality.mean == pytest.approx(0.87)
    # gap = limit - optimizer, paired: mean of (0.36, 0.27, 0.17, 0.08).
    assert report.gaps[("adam", 2)].difference.mean == pytest.approx(0.22)
    (sgd2, sgd3) = report.comparisons
    assert sgd2.difference.mean == pytest.approx(0.025)  # .05, -.05, .05, .05
    assert sgd2.win_rate == pytest.approx(0.75)
    assert sgd3.difference.mean == pytest.approx((0.05 + 0 + 0.05 + 10.7) / 4)
    assert report.errors == [] and report.n_missing == {}


def test_baseline_and_factors_can_be_overridden(bench_path: Path) -> None:
    report = load_report(bench_path, baseline="sgd", accuracy_factors=(0, 3000))
    assert {c.optimizer for c in report.comparisons} == {"adam"}
    assert report.comparisons[0].difference.mean == pytest.approx(-0.025)
    assert set(report.stats("adam", 2).pass_rate) == {0, 3000}
    with pytest.raises(ValueError, match="not one of"):
        load_report(bench_path, baseline="lion")


def test_missing_and_failed_jobs_are_reported_apart(bench_path: Path) -> None:
    results = bench_path / "results.jsonl"
    lines = results.read_text().splitlines()
    failed = json.loads(lines[0])  # adam, track 2, seed s0
    failed.update(status="error", error="RuntimeError: boom")
    for drop in ("quality", "test_loss"):
        failed.pop(drop)
    results.write_text("\n".join([json.dumps(failed), *lines[1:-1]]) + "\n")

    report = load_report(bench_path)
    adam2 = report.stats("adam", 2)
    assert (adam2.n, adam2.n_errors) == (3, 1)
    assert adam2.quality.mean == pytest.approx(0.7)  # the failed run is not in it
    assert report.n_missing == {("sgd", 3): 1}
    assert [r["error"] for r in report.errors] == ["RuntimeError: boom"]
    quality = text_tables(report)[0]
    assert quality.rows[0][:3] == ["2", "adam", "3 (1 failed)"]
    assert any("1 to run" in cell for row in quality.rows for cell in row)
    assert "Failed jobs (1" in text_tables(report)[-1].title


def test_outputs_are_strict_and_complete(bench_path: Path) -> None:
    report = load_report(bench_path)
    data = to_json(report)
    json.dumps(data, allow_nan=False)  # strict JSON: NaN became null
    assert data["jobs"] == {"total": 16, "finished": 16, "failed": 0, "missing": 0}
    records = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert len(records) == 6
    sgd2 = next(r for r in records if r["optimizer"] == "sgd" and r["n_hidden"] == "2")
    assert float(sgd2["diff_vs_baseline"]) == pytest.approx(0.025)
    assert float(sgd2["gap_to_limit"]) == pytest.approx(0.22 - 0.025)
    markdown = to_markdown(report, [("x.png", "X", "caption")])
    assert "## Quality" in markdown and "## Head to head against adam" in markdown
    assert "| 2 | Bayes limit |" in markdown and "![X](x.png)" in markdown


def test_write_report_writes_every_file(bench_path: Path) -> None:
    written = write_report(load_report(bench_path))
    names = {p.name for p in written}
    assert {"report.md", "summary.csv", "quality_by_track.png"} <= names
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 4
    for png in pngs:
        assert png.read_bytes().startswith(PNG_MAGIC)
        assert f"]({png.name})" in (bench_path / "report.md").read_text()


def test_report_without_a_limit_says_why(bench_path: Path) -> None:
    (bench_path / "bound.jsonl").unlink()
    report = load_report(bench_path)
    assert not report.has_limit and report.gaps == {}
    assert "computed for 0 of 4 seeds" in report.bound_note
    assert LIMIT_LABEL not in {s.optimizer for s in report.summary}
    write_report(report)  # plots cope without a limit


def test_report_of_a_folder_that_is_not_a_bench(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "has no bench.json" in " ".join(result.stderr.split())


def test_report_rebuilt_from_files_equals_the_bench_report(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["bench", "--optimizers", "adam,sgd", "--tracks", "2", "--seeds", "2"]
    args += ["--max-epochs", "3", "--workers", "1", "--out", str(out), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    markdown = (out / "report.md").read_text()
    assert (out / "bound.jsonl").is_file()  # the limit is stored, not recomputed
    for name in ("quality_by_track", "pass_rate", "val_curves", "quality_vs_epochs"):
        assert (out / f"{name}.png").read_bytes().startswith(PNG_MAGIC)

    again = runner.invoke(app, ["report", str(out), "--json"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)
    assert (out / "report.md").read_text() == markdown
    assert json.loads(first.stdout)["bayes_limit"] == "ok"
