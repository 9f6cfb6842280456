"""``nnopt bench`` and ``nnopt report``: run a benchmark, report on it.

Registered on the shared app by importing this module (see ``nnopt.cli``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from nnopt.api import HookError
from nnopt.bench.backends import BACKENDS, make_backend
from nnopt.bench.config import (
    DEFAULT_ACCURACY_FACTORS,
    BenchConfig,
    parse_accuracy_factors,
    parse_optimizers,
    parse_seeds,
    parse_tracks,
)
from nnopt.bench.jobs import Backend
from nnopt.bench.report import (
    BenchReport,
    TextTable,
    describe,
    load_report,
    text_tables,
    to_json,
    write_report,
)
from nnopt.bench.run import (
    BenchPlan,
    BoundUnavailableError,
    compute_bounds,
    missing_bounds,
    plan_bench,
    run_bench,
)
from nnopt.bench.store import BenchDir, BenchLockedError
from nnopt.cli_common import (
    DeviceOpt,
    OverrideOpt,
    ProfileOpt,
    app,
    build_profile,
    check_device,
    console,
    err_console,
    fail,
)
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import OptimizerSpec, list_optimizers, load_optimizer
from nnopt.scoring import TRACKS

EXIT_INTERRUPTED = 130

BaselineOpt = Annotated[
    str | None,
    typer.Option(
        "--baseline",
        help="optimizer to compare the others against (default: the bench's "
        "baseline, else its first optimizer)",
    ),
]
FactorsOpt = Annotated[
    str | None,
    typer.Option(
        "--accuracy-factors",
        help="accuracy factors for pass rates, e.g. 0,1000,2000 (default: the "
        f"bench's, else {','.join(map(str, DEFAULT_ACCURACY_FACTORS))})",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the report as JSON on stdout")
]
PlotsOpt = Annotated[
    bool, typer.Option("--plots/--no-plots", help="draw the report's PNG figures")
]


def _check_optimizers(specs: list[OptimizerSpec]) -> list[str]:
    """Fail on names that cannot mean anything; warn on specs that do not build.

    A typo (``adma``) stops the bench before it starts. An optimizer that is
    found but cannot be built (``adam:lr=-1``) still runs: each of its jobs
    fails and is recorded, and the report shows why.
    """
    known = {entry.name for entry in list_optimizers()}
    warnings = []
    for spec in specs:
        is_path = ":" in spec.ref or spec.ref.endswith(".py")
        try:
            load_optimizer(spec)
        except (ValueError, HookError, TypeError) as exc:
            if spec.ref not in known and not is_path:
                raise fail(str(exc)) from None
            warnings.append(
                f"optimizer {spec.label} cannot be built ({exc}); its jobs will be "
                "recorded as failed"
            )
    return warnings


def _rich_table(table: TextTable) -> Table:
    out = Table(
        title=table.title,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, column in enumerate(table.columns):
        if column in ("optimizer", "error"):
            longest = max((len(row[i]) for row in table.rows), default=0)
            out.add_column(column, min_width=min(longest, 10), overflow="fold")
        else:
            out.add_column(column, justify="right")
    for i, row in enumerate(table.rows):
        if i in table.sections and i > 0:
            out.add_section()
        out.add_row(*row)
    return out


def _print_report(report: BenchReport, written: list[Path], target: Console) -> None:
    target.print(describe(report))
    for table in text_tables(report):
        target.print(_rich_table(table))
        if table.caption:  # printed apart: a table's caption is cut to its width
            target.print(table.caption, style="dim", markup=False, highlight=False)
    if written:
        names = ", ".join(p.name for p in written)
        target.print(f"report: {report.path / 'report.md'} ({names})")


def _finish_bounds(config: BenchConfig, bench_dir: BenchDir, target: Console) -> None:
    """Compute missing Bayes limits, with a progress bar; warn if impossible."""
    if not config.bound:
        return
    with Progress(
        TextColumn("Bayes limit"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=target,
        transient=True,
    ) as progress:
        task = progress.add_task("bound", total=len(config.seeds))
        done = len(config.seeds) - len(missing_bounds(config, bench_dir))
        progress.update(task, completed=done)
        try:
            compute_bounds(config, bench_dir, on_row=lambda _: progress.advance(task))
        except BoundUnavailableError as exc:
            err_console.print(f"[yellow]warning:[/] {exc}")


def _write_and_show_report(
    bench_dir: BenchDir,
    *,
    baseline: str | None,
    factors: str | None,
    json_output: bool,
    plots: bool,
) -> BenchReport:
    try:
        accuracy_factors = tuple(parse_accuracy_factors(factors)) if factors else None
        report = load_report(
            bench_dir.path, baseline=baseline, accuracy_factors=accuracy_factors
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    written = write_report(report, plots=plots)
    if json_output:
        sys.stdout.write(json.dumps(to_json(report)) + "\n")
    else:
        _print_report(report, written, console)
    return report


@app.command()
def bench(
    optimizers: Annotated[
        str,
        typer.Option(
            "--optimizers",
            help="comma list of optimizer specs (adam,adamw:lr=3e-3,weight_decay=0.1) "
            "or a JSON file of them",
        ),
    ] = "adam",
    tracks: Annotated[
        str, typer.Option("--tracks", help="comma list of n_hidden values")
    ] = ",".join(map(str, TRACKS)),
    seeds: Annotated[
        str,
        typer.Option(
            "--seeds",
            help="a count (seeds derived from --seed-base), a comma list, or @FILE "
            "with one seed per line",
        ),
    ] = "32",
    seed_base: Annotated[
        str, typer.Option("--seed-base", help="text the counted seeds derive from")
    ] = "bench",
    profile: ProfileOpt = "tig",
    device: DeviceOpt = "cpu",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="bench folder (default: benches/<name>-<hash>, the same for the "
            "same command, so a rerun resumes)",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="jobs run at once (default: all cores)", min=1),
    ] = None,
    backend_name: Annotated[
        str, typer.Option("--backend", help=f"where jobs run: {', '.join(BACKENDS)}")
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="--backend ray: the cluster to join (auto, HOST:6379, "
            "ray://HOST:10001); default: start Ray on this machine",
        ),
    ] = None,
    ray_cpus_per_job: Annotated[
        float,
        typer.Option("--ray-cpus-per-job", help="--backend ray: CPUs per job"),
    ] = 1.0,
    ray_gpus_per_job: Annotated[
        float,
        typer.Option(
            "--ray-gpus-per-job",
            help="--backend ray: GPUs per job, with --device cuda (0.25: four per GPU)",
        ),
    ] = 0.0,
    batched: Annotated[
        bool,
        typer.Option(
            "--batched",
            help="train many seeds of a track at once (same as --backend batched); "
            "for optimizers that support batched mode",
        ),
    ] = False,
    batch_instances: Annotated[
        int,
        typer.Option(
            "--batch-instances", help="--batched: instances trained together", min=1
        ),
    ] = 32,
    max_epochs: Annotated[
        int, typer.Option("--max-epochs", help="experiments only: TIG uses 1000")
    ] = 1000,
    bound: Annotated[
        bool,
        typer.Option("--bound/--no-bound", help="compute the Bayes limit per seed"),
    ] = True,
    baseline: BaselineOpt = None,
    factors: FactorsOpt = None,
    json_output: JsonOpt = False,
    plots: PlotsOpt = True,
    overrides: OverrideOpt = None,
) -> None:
    """Run every optimizer on every track and seed, then report.

    Results are saved as each job finishes; rerunning the same command skips
    finished jobs and retries failed ones.
    """
    device = check_device(device)
    data_profile = build_profile(profile, overrides)
    try:
        config = BenchConfig(
            optimizers=tuple(parse_optimizers(optimizers)),
            tracks=tuple(parse_tracks(tracks)),
            seeds=tuple(parse_seeds(seeds, seed_base)),
            profile=data_profile,
            loop=LoopSettings(max_epochs=max_epochs),
            device=device,
            bound=bound,
            accuracy_factors=tuple(
                parse_accuracy_factors(factors) if factors else DEFAULT_ACCURACY_FACTORS
            ),
        )
        if baseline:
            config = dataclasses.replace(config, baseline=config.find_label(baseline))
        ray_options = {
            "address": ray_address,
            "cpus_per_job": ray_cpus_per_job,
            "gpus_per_job": ray_gpus_per_job,
        }
        if backend_name != "ray" and (
            ray_address or ray_cpus_per_job != 1.0 or ray_gpus_per_job
        ):
            raise ValueError("the --ray-* options need --backend ray")
        options = ray_options if backend_name == "ray" else {}
        if batched:
            if backend_name not in ("local", "batched"):
                raise ValueError("--batched runs on this machine; drop --backend")
            backend_name = "batched"
        if backend_name == "batched":
            options = {"batch_size": batch_instances}
        backend = make_backend(backend_name, workers=workers, **options)
    except (ValueError, TypeError) as exc:
        raise fail(str(exc)) from None
    show = err_console if json_output else console
    for warning in _check_optimizers(list(config.optimizers)):
        err_console.print(f"[yellow]warning:[/] {warning}")
    bench_dir = BenchDir(out or Path("benches") / config.default_dir_name())

    try:
        with bench_dir.lock():
            plan = plan_bench(config, bench_dir)
            _announce(plan, config, bench_dir, show)
            _finish_bounds(config, bench_dir, show)
            _run_with_progress(plan, bench_dir, backend, show)
    except (BenchLockedError, ValueError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        err_console.print(
            f"\n[yellow]interrupted:[/] finished jobs are saved in {bench_dir.path}; "
            "rerun the same command to resume"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None

    report = _write_and_show_report(
        bench_dir,
        baseline=None,
        factors=None,
        json_output=json_output,
        plots=plots,
    )
    if report.errors:
        err_console.print(
            f"[yellow]{len(report.errors)} job(s) failed[/] (listed above); "
            "rerun the same command to retry them"
        )
        raise typer.Exit(1)


def _announce(
    plan: BenchPlan, config: BenchConfig, bench_dir: BenchDir, show: Console
) -> None:
    shape = (
        f"{len(config.optimizers)} optimizer(s) × {len(config.tracks)} track(s) × "
        f"{len(config.seeds)} seed(s)"
    )
    show.print(f"bench: {plan.n_total} jobs ({shape}) in {bench_dir.path}")
    if plan.n_done:
        retry = f", retrying {plan.n_retried} that failed" if plan.n_retried else ""
        show.print(f"resuming: {plan.n_done} jobs already done{retry}")


def _run_with_progress(
    plan: BenchPlan, bench_dir: BenchDir, backend: Backend, show: Console
) -> None:
    parallelism = getattr(backend, "parallelism", 1)
    with Progress(
        TextColumn("jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("running {task.fields[running]}  failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=show,
    ) as progress:
        pending = len(plan.pending)
        task = progress.add_task(
            "jobs",
            total=plan.n_total,
            completed=plan.n_done,
            running=min(parallelism, pending),
            failed=0,
        )
        state = {"left": pending, "failed": 0}

        def on_result(row: dict) -> None:
            state["left"] -= 1
            state["failed"] += row.get("status") != "ok"
            progress.update(
                task,
                advance=1,
                running=min(parallelism, state["left"]),
                failed=state["failed"],
            )

        run_bench(plan, bench_dir, backend, on_result=on_result)


@app.command()
def report(
    bench_dir: Annotated[Path, typer.Argument(help="a folder written by nnopt bench")],
    baseline: BaselineOpt = None,
    factors: FactorsOpt = None,
    json_output: JsonOpt = False,
    plots: PlotsOpt = True,
    bound: Annotated[
        bool,
        typer.Option(
            "--bound/--no-bound",
            help="compute Bayes limits the folder lacks (if the bench asked for them)",
        ),
    ] = True,
) -> None:
    """Rebuild the report of a bench folder from its files alone."""
    folder = BenchDir(bench_dir)
    try:
        config = folder.read_config()
    except ValueError as exc:
        raise fail(str(exc)) from None
    if bound:
        _finish_bounds(config, folder, err_console if json_output else console)
    _write_and_show_report(
        folder, baseline=baseline, factors=factors, json_output=json_output, plots=plots
    )
