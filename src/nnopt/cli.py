"""The ``nnopt`` command line. The only module that prints."""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nnopt.api import HookError
from nnopt.cli_common import (
    AccuracyOpt,
    DeviceOpt,
    HiddenOpt,
    OverrideOpt,
    ProfileOpt,
    SeedOpt,
    app,
    build_profile,
    check_device,
    console,
    err_console,
    fail,
)
from nnopt.data import generate_instance
from nnopt.loop import EpochRecord, LoopSettings
from nnopt.optimizers.registry import list_optimizers, load_optimizer, parse_spec
from nnopt.runner import RunConfig, run_challenge


def _epoch_line(record: EpochRecord) -> str:
    return (
        f"train {record.train_loss:.4f}  val {record.val_loss:.4f}  "
        f"best {record.best_val_loss:.4f}  patience {record.patience_left}"
    )


@app.command()
def run(
    seed: SeedOpt = "0",
    n_hidden: HiddenOpt = 4,
    accuracy_factor: AccuracyOpt = 0,
    optimizer: Annotated[
        str, typer.Option("--optimizer", help="name[:k=v,...], module:attr or file.py")
    ] = "adam",
    profile: ProfileOpt = "tig",
    device: DeviceOpt = "cpu",
    out: Annotated[
        Path | None, typer.Option("--out", help="run folder (default: runs/<time>-...)")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="print one JSON object, no table")
    ] = False,
    max_epochs: Annotated[
        int, typer.Option(help="experiments only: TIG uses 1000")
    ] = 1000,
    overrides: OverrideOpt = None,
) -> None:
    """Train on one instance and score the result."""
    device = check_device(device)
    data_profile = build_profile(profile, overrides)
    try:
        spec = parse_spec(optimizer)
        load_optimizer(spec)
        config = RunConfig(
            seed=seed,
            n_hidden=n_hidden,
            accuracy_factor=accuracy_factor,
            optimizer=spec,
            profile=data_profile,
            device=device,
            loop=LoopSettings(max_epochs=max_epochs),
        )
    except (ValueError, HookError, TypeError) as exc:
        raise fail(str(exc)) from None
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.ref)[:40]
        out = Path("runs") / f"{stamp}-{safe}-h{n_hidden}"

    progress_console = err_console if json_output else console
    with Progress(
        TextColumn("epoch {task.completed:>4}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[line]}"),
        TimeElapsedColumn(),
        console=progress_console,
        transient=json_output,
    ) as progress:
        task = progress.add_task("train", total=max_epochs, line="")

        def on_epoch(record: EpochRecord) -> None:
            progress.update(task, completed=record.epoch + 1, line=_epoch_line(record))

        try:
            result = run_challenge(config, out_dir=out, on_epoch=on_epoch)
        except HookError as exc:
            raise fail(f"optimizer hook failed: {exc}") from None

    summary = result.summary()
    if json_output:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    table = Table(title=f"nnopt run: {spec.label} on seed {seed!r}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "test_loss",
        "threshold",
        "passed",
        "quality",
        "best_val_loss",
        "epochs_used",
        "epochs_run",
        "diverged",
        "stop_reason",
        "wall_time_s",
    ):
        value = summary[key]
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        table.add_row(key, text)
    console.print(table)
    console.print(f"artifacts: {out}")


@app.command()
def data(
    out: Annotated[Path, typer.Option("--out", help="CSV file to write")],
    seed: SeedOpt = "0",
    profile: ProfileOpt = "tig",
    overrides: OverrideOpt = None,
) -> None:
    """Write an instance's data as CSV, one row per sample in generation order."""
    data_profile = build_profile(profile, overrides)
    try:
        instance = generate_instance(seed, data_profile)
    except ValueError as exc:
        raise fail(str(exc)) from None
    p = instance.profile
    header = (
        ["split"]
        + [f"x{i}" for i in range(p.n_inputs)]
        + [f"f{i}" for i in range(p.n_outputs)]
        + [f"y{i}" for i in range(p.n_outputs)]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for split in ("train", "val", "test"):
            x, f, y = instance.split(split)
            for row in range(x.shape[0]):
                writer.writerow(
                    [split]
                    + [f"{v:.9g}" for v in x[row]]
                    + [f"{v:.9g}" for v in f[row]]
                    + [f"{v:.9g}" for v in y[row]]
                )
    console.print(f"wrote {p.n_samples} samples to {out}")


@app.command()
def verify(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written by nnopt run")],
    device: DeviceOpt = "cpu",
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recompute a run's score from its config and weights. Exit 0 pass, 1 fail."""
    from nnopt.artifacts import VerifyError, verify_run_dir

    device = check_device(device)
    try:
        report = verify_run_dir(run_dir, device=device)
    except VerifyError as exc:
        raise fail(str(exc)) from None
    s = report.score
    if json_output:
        out = {**s.to_dict(), "matches_claim": report.matches_claim}
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        verdict = "[green]PASS[/]" if s.passed else "[red]FAIL[/]"
        console.print(
            f"{verdict}  test loss {s.test_loss:.6g}  threshold {s.threshold:.6g}  "
            f"quality {s.quality:.4f}"
        )
        if report.matches_claim is False:
            console.print(
                "[yellow]warning:[/] result.json claims test loss "
                f"{report.claimed['test_loss']!r}, recomputed {s.test_loss!r}"
            )
    raise typer.Exit(0 if s.passed else 1)


@app.command()
def optimizers() -> None:
    """List the registered optimizers."""
    table = Table(title="registered optimizers")
    table.add_column("name")
    table.add_column("description")
    table.add_column("needs")
    for entry in list_optimizers():
        table.add_row(
            escape(entry.name), escape(entry.description), escape(entry.requires or "")
        )
    console.print(table)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="log details")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# --- commands from other modules: each registers itself on import ---
# (add one import per module here, e.g. ``import nnopt.bench.commands``)
import nnopt.bench.commands  # noqa: E402, F401
import nnopt.bound_cli  # noqa: E402, F401
import nnopt.tune_cli  # noqa: E402, F401
