"""A bench report, rebuilt from the bench folder's files alone.

:func:`load_report` reads ``bench.json``, ``results.jsonl`` and
``bound.jsonl`` and computes the statistics (:mod:`nnopt.bench.stats`);
the rest renders them: :func:`text_tables` (cells for a terminal or Markdown
table), :func:`to_markdown`, :func:`to_csv` and :func:`to_json`.
:func:`write_report` writes ``report.md``, ``summary.csv`` and the plots into
the folder. Nothing here prints.

Only rows of the bench's own jobs count: a job's key must be one the current
``bench.json`` plans (so a folder reused with other settings reports only
what matches them), and per job the ``ok`` row wins over failed attempts.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnopt.bench.config import BenchConfig
from nnopt.bench.run import bound_key
from nnopt.bench.stats import (
    Comparison,
    GroupStats,
    compare,
    group_stats,
    head_to_head,
    summarize,
)
from nnopt.bench.store import BenchDir

__all__ = [
    "CEILING_LABEL",
    "LIMIT_LABEL",
    "BenchReport",
    "TextTable",
    "describe",
    "load_report",
    "text_tables",
    "to_csv",
    "to_json",
    "to_markdown",
    "write_report",
]

LIMIT_LABEL = "Bayes limit"
# The Bayes predictor with its mean over the inputs removed. In training mode
# the challenge's MLP outputs batch mean exactly 0 (its readout bias and last
# BatchNorm beta are frozen at 0); only the gap between batch and running
# BatchNorm statistics, picked up by best-by-validation saving, moves the mean
# of its eval-mode output (docs/bound.md).
CEILING_LABEL = "zero-mean reference"
REPORT_MD = "report.md"
SUMMARY_CSV = "summary.csv"
MAX_ERRORS_SHOWN = 10


@dataclass
class BenchReport:
    """Everything a report shows, computed from a bench folder."""

    path: Path
    config: BenchConfig
    environment: dict[str, Any]
    baseline: str
    accuracy_factors: tuple[int, ...]
    rows: list[dict[str, Any]]  # one per finished job of this bench
    bound_rows: list[dict[str, Any]]  # one per seed with a Bayes limit
    bound_note: str | None  # why there is no (complete) Bayes limit
    summary: list[GroupStats]  # per track: each optimizer, then the limit
    gaps: dict[tuple[str, int], Comparison]  # Bayes limit minus optimizer
    comparisons: list[Comparison]  # each optimizer minus the baseline
    n_missing: dict[tuple[str, int], int]  # jobs not run yet
    errors: list[dict[str, Any]] = field(default_factory=list)  # error rows

    @property
    def has_limit(self) -> bool:
        return bool(self.bound_rows)

    def stats(self, optimizer: str, n_hidden: int) -> GroupStats | None:
        for s in self.summary:
            if s.optimizer == optimizer and s.n_hidden == n_hidden:
                return s
        return None


def _limit_rows(config: BenchConfig, bench_dir: BenchDir) -> list[dict[str, Any]]:
    bounds = bench_dir.bounds()
    rows = []
    for seed in config.seeds:
        row = bounds.get(bound_key(seed, config))
        if row is not None and row.get("status") == "ok":
            rows.append(row)
    return rows


def load_report(
    path: Path,
    *,
    baseline: str | None = None,
    accuracy_factors: tuple[int, ...] | None = None,
) -> BenchReport:
    """Compute a report from a bench folder; settings default to bench.json's."""
    bench_dir = BenchDir(path)
    config = bench_dir.read_config()
    baseline = config.find_label(baseline) if baseline else config.baseline_label
    factors = tuple(accuracy_factors or config.accuracy_factors)
    environment = {}
    if bench_dir.environment_path.is_file():
        environment = json.loads(bench_dir.environment_path.read_text())

    results = bench_dir.results()
    rows, n_missing = [], Counter()
    for job in config.jobs():
        row = results.get(job.key)
        if row is None:
            n_missing[(job.optimizer.label, job.n_hidden)] += 1
        else:
            rows.append(row)
    errors = [r for r in rows if r.get("status") != "ok"]

    bound_rows = _limit_rows(config, bench_dir) if config.bound else []
    bound_note = None
    if not config.bound:
        bound_note = "not computed (--no-bound)"
    elif len(bound_rows) < len(config.seeds):
        bound_note = (
            f"computed for {len(bound_rows)} of {len(config.seeds)} seeds; "
            "rerun nnopt report to complete it"
        )

    per_optimizer = summarize(
        rows, factors, optimizers=config.labels, tracks=config.tracks
    )
    comparisons = head_to_head(
        rows, baseline, optimizers=config.labels, tracks=config.tracks
    )
    summary: list[GroupStats] = []
    gaps: dict[tuple[str, int], Comparison] = {}
    ceiling_rows = [
        {**r, "test_loss": r["zero_mean_test_loss"], "quality": r["zero_mean_quality"]}
        for r in bound_rows
        if "zero_mean_quality" in r
    ]
    for track in config.tracks:
        summary += [s for s in per_optimizer if s.n_hidden == track]
        if not bound_rows:
            continue
        summary.append(group_stats(bound_rows, LIMIT_LABEL, track, factors))
        if ceiling_rows:
            summary.append(group_stats(ceiling_rows, CEILING_LABEL, track, factors))
        for label in config.labels:
            group = [
                r for r in rows if (r["optimizer"], r["n_hidden"]) == (label, track)
            ]
            gaps[(label, track)] = compare(
                bound_rows, group, optimizer=LIMIT_LABEL, baseline=label, n_hidden=track
            )

    return BenchReport(
        path=Path(path),
        config=config,
        environment=environment,
        baseline=baseline,
        accuracy_factors=factors,
        rows=rows,
        bound_rows=bound_rows,
        bound_note=bound_note,
        summary=summary,
        gaps=gaps,
        comparisons=comparisons,
        n_missing=dict(n_missing),
        errors=errors,
    )


# --- formatting -------------------------------------------------------------


def _num(value: float, digits: int = 4) -> str:
    return "—" if not math.isfinite(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:.0f}%"


def _count(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:g}"


@dataclass(frozen=True)
class TextTable:
    """A table as text cells, for a terminal or Markdown."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    sections: list[int] = field(default_factory=list)  # rows that start a track


def _sections(keys: list[int]) -> list[int]:
    """Indices where a new track starts."""
    return [i for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]


def _n_cell(report: BenchReport, s: GroupStats) -> str:
    """Finished runs, with failed runs and runs still to do if any."""
    missing = report.n_missing.get((s.optimizer, s.n_hidden), 0)
    notes = [f"{s.n_errors} failed"] if s.n_errors else []
    notes += [f"{missing} to run"] if missing else []
    return f"{s.n}" + (f" ({', '.join(notes)})" if notes else "")


def _limit_caption(report: BenchReport) -> str:
    if not report.has_limit:
        return f"{LIMIT_LABEL}: {report.bound_note}."
    text = (
        f"{LIMIT_LABEL}: the Gaussian-process posterior mean with the kernel the "
        "data was drawn from (nnopt.bound), on the same seeds; "
        f"{CEILING_LABEL}: the same predictor with its mean over the inputs "
        "removed; this MLP's training-mode output has batch mean exactly 0 (its "
        "readout bias and last BatchNorm beta are frozen at 0), so runs above "
        "this line got their mean through the batch/running BatchNorm gap"
    )
    return text + (f"; {report.bound_note}." if report.bound_note else ".")


def _quality_table(report: BenchReport) -> TextTable:
    columns = ["track", "optimizer", "n", "quality", "± 95%", "p10", "gap"]
    columns += ["epochs", "to best", "s/run"]
    rows = []
    for s in report.summary:
        is_limit = s.optimizer in (LIMIT_LABEL, CEILING_LABEL)
        row = [str(s.n_hidden), s.optimizer, _n_cell(report, s)]
        row += [
            _num(s.quality.mean),
            _num(s.quality.half_width),
            _num(s.p10_quality),
        ]
        if is_limit:
            row += ["", "", "", ""]
        else:
            gap = report.gaps.get((s.optimizer, s.n_hidden))
            row += [
                _num(gap.difference.mean) if gap else "—",
                _count(s.median_epochs_run),
                _count(s.median_epochs_used),
                _num(s.mean_wall_time_s, 2),
            ]
        rows.append(row)
    caption = (
        "n: runs finished (failed runs are in no statistic); "
        "quality: TIG's score (higher is better), mean over seeds; ± 95%: "
        "half-width of its t-interval; p10: its 10th percentile; gap: the "
        f"{LIMIT_LABEL}'s quality minus the optimizer's, paired by seed; epochs: "
        "median epochs run; to best: median epochs to the best validation loss; "
        "s/run: mean training time per run. " + _limit_caption(report)
    )
    sections = _sections([s.n_hidden for s in report.summary])
    return TextTable("Quality", columns, rows, caption, sections)


def _pass_table(report: BenchReport) -> TextTable:
    columns = ["track", "optimizer", "n"]
    columns += [f"pass@{af}" for af in report.accuracy_factors]
    rows = [
        [str(s.n_hidden), s.optimizer, _n_cell(report, s)]
        + [_pct(s.pass_rate[af]) for af in report.accuracy_factors]
        for s in report.summary
    ]
    caption = (
        "pass@af: share of runs whose test loss is at most (4 - af/1000) times "
        "the instance's noise level, TIG's threshold at accuracy factor af."
    )
    sections = _sections([s.n_hidden for s in report.summary])
    return TextTable("Pass rate by accuracy factor", columns, rows, caption, sections)


def _comparison_table(report: BenchReport) -> TextTable:
    columns = ["track", "optimizer", "pairs", "Δ quality", "± 95%", "win rate"]
    if report.has_limit:
        columns.append("gap closed")
    rows = []
    for c in report.comparisons:
        row = [
            str(c.n_hidden),
            c.optimizer,
            str(c.difference.n),
            _num(c.difference.mean),
            _num(c.difference.half_width),
            _pct(c.win_rate),
        ]
        if report.has_limit:
            gap = report.gaps.get((c.baseline, c.n_hidden))
            base_gap = gap.difference.mean if gap else math.nan
            share = c.difference.mean / base_gap if base_gap > 0 else math.nan
            row.append(_pct(share))
        rows.append(row)
    caption = (
        f"Δ quality: each optimizer's quality minus {report.baseline}'s, mean "
        "over the seeds both finished (paired); ± 95%: half-width of its "
        "t-interval; win rate: share of those seeds where the optimizer is "
        "better, ties counting one half."
    )
    if report.has_limit:
        caption += (
            f" Gap closed: the difference as a share of {report.baseline}'s gap to "
            f"the {LIMIT_LABEL}."
        )
    sections = _sections([c.n_hidden for c in report.comparisons])
    return TextTable(
        f"Head to head against {report.baseline}", columns, rows, caption, sections
    )


def _errors_table(report: BenchReport) -> TextTable:
    counts = Counter(
        (r["optimizer"], r["n_hidden"], r.get("error", "?")) for r in report.errors
    )
    rows = [
        [str(track), label, str(n), error]
        for (label, track, error), n in sorted(counts.items(), key=lambda kv: -kv[1])
    ]
    caption = ""
    if len(rows) > MAX_ERRORS_SHOWN:
        caption = f"{len(rows) - MAX_ERRORS_SHOWN} more kinds of error in results.jsonl"
        rows = rows[:MAX_ERRORS_SHOWN]
    return TextTable(
        f"Failed jobs ({len(report.errors)}, left out of every statistic)",
        ["track", "optimizer", "jobs", "error"],
        rows,
        caption,
    )


def text_tables(report: BenchReport) -> list[TextTable]:
    """The report's tables, as text cells."""
    tables = [_quality_table(report), _pass_table(report)]
    if report.comparisons:
        tables.append(_comparison_table(report))
    if report.errors:
        tables.append(_errors_table(report))
    return tables


def describe(report: BenchReport) -> str:
    """One paragraph on what was run."""
    c = report.config
    seeds = c.seeds
    seed_text = ", ".join(seeds) if len(seeds) <= 4 else f"{seeds[0]} … {seeds[-1]}"
    n_missing = sum(report.n_missing.values())
    text = (
        f"{len(c.optimizers)} optimizer(s) × {len(c.tracks)} track(s) "
        f"(n_hidden {', '.join(map(str, c.tracks))}) × {len(seeds)} seed(s) "
        f"({seed_text}); profile {c.profile.name}, at most {c.loop.max_epochs} "
        f"epochs, patience {c.loop.patience}; {len(report.rows)} of "
        f"{len(c.jobs())} jobs finished"
    )
    if n_missing:
        text += f", {n_missing} still to run (rerun the same nnopt bench to finish)"
    return text + "."


# --- outputs ----------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: TextTable) -> str:
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "|" + "|".join("---" for _ in table.columns) + "|",
    ]
    lines += [
        "| " + " | ".join(_md_escape(c) for c in row) + " |" for row in table.rows
    ]
    return "\n".join(lines)


def to_markdown(report: BenchReport, plots: list[tuple[str, str, str]] = ()) -> str:
    """``report.md``; ``plots`` are (file name, title, caption) to link."""
    c = report.config
    parts = [
        f"# Bench report: {', '.join(c.labels)}",
        describe(report),
    ]
    for table in text_tables(report):
        parts.append(f"## {table.title}")
        parts.append(_md_table(table))
        if table.caption:
            parts.append(table.caption)
    if plots:
        parts.append("## Plots")
        for name, title, caption in plots:
            parts.append(f"### {title}\n\n![{title}]({name})\n\n{caption}")
    env = report.environment
    if env:
        facts = ", ".join(
            f"{k} {env[k]}"
            for k in ("nnopt", "torch", "python", "device", "gpu", "git_commit")
            if env.get(k)
        )
        parts.append(f"## Environment\n\n{facts}; platform {env.get('platform')}.")
    parts.append(
        f"Rebuild this report from the folder alone with `nnopt report {report.path}`."
    )
    return "\n\n".join(parts) + "\n"


def _csv_records(report: BenchReport) -> list[dict[str, Any]]:
    by_pair = {(x.optimizer, x.n_hidden): x for x in report.comparisons}
    records = []
    for s in report.summary:
        record = s.to_dict()
        record["n_missing"] = report.n_missing.get((s.optimizer, s.n_hidden), 0)
        gap = report.gaps.get((s.optimizer, s.n_hidden))
        record["gap_to_limit"] = gap.difference.mean if gap else math.nan
        versus = by_pair.get((s.optimizer, s.n_hidden))
        record["baseline"] = report.baseline
        record["diff_vs_baseline"] = versus.difference.mean if versus else math.nan
        record["diff_ci_low"] = versus.difference.low if versus else math.nan
        record["diff_ci_high"] = versus.difference.high if versus else math.nan
        record["win_rate_vs_baseline"] = versus.win_rate if versus else math.nan
        records.append(record)
    return records


def to_csv(report: BenchReport) -> str:
    """``summary.csv``: one row per optimizer and track (and the limit)."""
    records = _csv_records(report)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else [])
    writer.writeheader()
    for record in records:
        writer.writerow(
            {
                k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in record.items()
            }
        )
    return out.getvalue()


def _finite(value: Any) -> Any:
    """NaN and infinities become null: strict JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(report: BenchReport) -> dict[str, Any]:
    """The report as plain, strict JSON data."""
    c = report.config
    data = {
        "bench": str(report.path),
        "optimizers": c.labels,
        "tracks": list(c.tracks),
        "n_seeds": len(c.seeds),
        "profile": c.profile.name,
        "max_epochs": c.loop.max_epochs,
        "baseline": report.baseline,
        "accuracy_factors": list(report.accuracy_factors),
        "jobs": {
            "total": len(c.jobs()),
            "finished": len(report.rows),
            "failed": len(report.errors),
            "missing": sum(report.n_missing.values()),
        },
        "bayes_limit": report.bound_note or "ok",
        "summary": _csv_records(report),
        "head_to_head": [x.to_dict() for x in report.comparisons],
        "errors": [
            {k: r.get(k) for k in ("optimizer", "n_hidden", "seed", "error")}
            for r in report.errors
        ],
    }
    return _finite(data)


def write_report(report: BenchReport, *, plots: bool = True) -> list[Path]:
    """Write report.md, summary.csv and (if asked) the plots; return the paths."""
    written = []
    plot_links: list[tuple[str, str, str]] = []
    if plots:
        from nnopt.bench.plots import write_plots

        for plot in write_plots(report, report.path):
            written.append(plot.path)
            plot_links.append((plot.path.name, plot.title, plot.caption))
    md = report.path / REPORT_MD
    md.write_text(to_markdown(report, plot_links))
    summary = report.path / SUMMARY_CSV
    summary.write_text(to_csv(report))
    return [md, summary, *written]
