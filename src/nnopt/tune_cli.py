"""``nnopt tune``: search an optimizer's hyperparameters with Optuna."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nnopt.artifacts import environment, write_json
from nnopt.bench.config import parse_seeds, parse_tracks
from nnopt.bench.local import LocalBackend
from nnopt.bench.store import BenchLockedError
from nnopt.cli_common import (
    DeviceOpt,
    OverrideOpt,
    ProfileOpt,
    app,
    build_profile,
    check_device,
    console,
    fail,
)
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import parse_spec

if TYPE_CHECKING:
    from nnopt.tune import TuneSettings

__all__ = ["tune"]

EXIT_INTERRUPTED = 130


def _masked(url: str) -> str:
    """A storage URL without its password, fit to print and to save."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _settings(
    optimizer: str,
    space: Path,
    tracks: str,
    seeds: str,
    eval_seeds: str,
    tune_seed_base: str,
    eval_seed_base: str,
    **rest: Any,
) -> TuneSettings:
    from nnopt.tune import SearchSpace, TuneSettings

    try:
        return TuneSettings(
            optimizer=parse_spec(optimizer),
            space=SearchSpace.from_file(space),
            tracks=tuple(parse_tracks(tracks)),
            tune_seeds=tuple(parse_seeds(seeds, base=tune_seed_base)),
            eval_seeds=tuple(parse_seeds(eval_seeds, base=eval_seed_base)),
            **rest,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None


def _print_evaluation(summary: dict[str, Any], tuned_label: str) -> None:
    table = Table(title="held-out seeds: mean quality (95% interval)")
    table.add_column("track", justify="right")
    table.add_column("optimizer")
    table.add_column("n", justify="right")
    table.add_column("quality", justify="right")
    table.add_column("errors", justify="right")
    for group in summary["per_track"]:
        mean, low, high = group["mean_quality"], group["ci_low"], group["ci_high"]
        text = "-" if mean is None else f"{mean:.4f}"
        if low is not None:
            text += f" [{low:.4f}, {high:.4f}]"
        table.add_row(
            str(group["n_hidden"]),
            "tuned" if group["optimizer"] == tuned_label else group["optimizer"],
            str(group["n"]),
            text,
            str(group["n_errors"]),
        )
    console.print(table)
    for c in summary["tuned_vs_default"]:
        if c["mean_difference"] is None:
            continue
        interval = (
            "" if c["ci_low"] is None else f" [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
        )
        console.print(
            f"track {c['n_hidden']}: tuned - default = {c['mean_difference']:+.4f}"
            f"{interval} over {c['n_pairs']} seeds, wins {c['win_rate']:.0%}"
        )


@app.command()
def tune(
    optimizer: Annotated[
        str,
        typer.Argument(
            help="optimizer spec; hyperparameters given here stay fixed "
            "(adam, adamw:weight_decay=0, my_opt.py)"
        ),
    ],
    space: Annotated[
        Path,
        typer.Option(
            "--space",
            help='JSON ranges, e.g. {"lr": {"type": "float", "low": 1e-4, '
            '"high": 1e-2, "log": true}}; types float, int, categorical',
        ),
    ],
    trials: Annotated[
        int,
        typer.Option(
            help="trials the study should hold, finished or pruned, counting "
            "those of earlier and concurrent runs"
        ),
    ] = 50,
    tracks: Annotated[str, typer.Option(help="n_hidden values, e.g. 4,7")] = "4",
    seeds: Annotated[
        str,
        typer.Option(
            help="tuning seeds: a count (from --tune-seed-base), a list, @file"
        ),
    ] = "8",
    eval_seeds: Annotated[
        str,
        typer.Option(
            help="held-out seeds: a count (from --eval-seed-base), a list, @file"
        ),
    ] = "8",
    tune_seed_base: Annotated[
        str, typer.Option(help="base of derived tuning seeds")
    ] = ("tune"),
    eval_seed_base: Annotated[
        str, typer.Option(help="base of derived held-out seeds; must differ")
    ] = "eval",
    study_name: Annotated[
        str | None,
        typer.Option(help="default: from the optimizer, tracks, seeds and a hash"),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL, e.g. postgresql://user:pw@host/db "
            "(default: SQLite study.db in --out)"
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder (default: runs/tune-<study>)")
    ] = None,
    max_epochs: Annotated[int, typer.Option(help="experiments only: TIG uses 1000")] = (
        1000
    ),
    profile: ProfileOpt = "tig",
    overrides: OverrideOpt = None,
    device: DeviceOpt = "cpu",
    report_every: Annotated[
        int, typer.Option(help="epochs between reports to the pruner")
    ] = 20,
    prune: Annotated[
        bool, typer.Option(help="stop hopeless trials early (median pruner)")
    ] = True,
    sampler_seed: Annotated[
        int | None,
        typer.Option(help="seed the sampler (give each cooperating process its own)"),
    ] = None,
    evaluate_best: Annotated[
        bool,
        typer.Option(
            "--eval/--no-eval",
            help="after the trials, evaluate the best on the held-out seeds and "
            "write best.json, plots and trials.jsonl; --no-eval only runs trials",
        ),
    ] = True,
    workers: Annotated[
        int, typer.Option(help="worker processes for the held-out evaluation")
    ] = 1,
    threads: Annotated[
        int,
        typer.Option(
            help="torch threads for the trials; for more speed start more "
            "processes on the same study instead"
        ),
    ] = 1,
) -> None:
    """Tune an optimizer's hyperparameters; judge the best on held-out seeds."""
    import torch

    device = check_device(device)
    if threads < 1 or workers < 1:
        raise fail("--threads and --workers must be at least 1")
    torch.set_num_threads(threads)
    try:
        import optuna

        from nnopt import tune as tuning
    except ImportError as exc:
        raise fail(
            f"nnopt tune needs Optuna ({exc}); install it: pip install 'nnopt[tune]'"
        ) from None
    try:
        loop = LoopSettings(max_epochs=max_epochs)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if trials < 0:
        raise fail(f"--trials must be >= 0, got {trials}")
    settings = _settings(
        optimizer,
        space,
        tracks,
        seeds,
        eval_seeds,
        tune_seed_base,
        eval_seed_base,
        profile=build_profile(profile, overrides),
        device=device,
        loop=loop,
        report_every=report_every,
    )
    name = study_name or settings.default_name()
    out = out or Path("runs") / f"tune-{name}"
    out.mkdir(parents=True, exist_ok=True)
    url = storage or tuning.sqlite_url(out / "study.db")
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    from sqlalchemy.exc import SQLAlchemyError

    try:
        study = tuning.open_study(
            settings,
            storage=url,
            study_name=name,
            sampler_seed=sampler_seed,
            pruner=None if prune else optuna.pruners.NopPruner(),
        )
    except (ValueError, ImportError, SQLAlchemyError) as exc:
        raise fail(f"cannot open study {name!r} in {_masked(url)}: {exc}") from None
    done = tuning.count_trials(study)
    console.print(
        f"study [bold]{name}[/] in {_masked(url)}: {done} of {trials} trials done; "
        f"{len(settings.runs())} runs per trial"
    )

    with Progress(
        TextColumn("trials {task.completed:>4}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[line]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("tune", total=trials, completed=done, line="")
        best = {"text": ""}

        def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            try:
                best["text"] = f"best {study.best_value:.4f}"
            except ValueError:  # no finished trial yet
                best["text"] = ""
            progress.update(
                task, completed=tuning.count_trials(study), line=best["text"]
            )

        def on_run(number: int, runs_done: int, runs: int) -> None:
            line = f"{best['text']}  trial {number}: run {runs_done}/{runs}"
            progress.update(task, line=line.strip())

        try:
            ran = tuning.run_trials(
                study, settings, n_trials=trials, on_trial=on_trial, on_run=on_run
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            progress.stop()
            console.print(
                f"interrupted; the study keeps its finished trials. Rerun the same "
                f"command to resume (study {name!r} in {_masked(url)})."
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None

    complete = study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
    )
    console.print(
        f"ran {ran} trials here; the study holds {tuning.count_trials(study)} "
        f"({len(complete)} finished, the rest pruned)"
    )
    if not complete:
        if not evaluate_best:
            return
        raise fail("no trial has finished yet, so there is no best to evaluate")
    tuned = tuning.best_spec(study, settings)
    console.print(
        f"best: trial {study.best_trial.number}, mean tuning quality "
        f"{study.best_value:.4f}: {tuned.label}"
    )
    if not evaluate_best:
        return

    jobs_total = 2 * len(settings.tracks) * len(settings.eval_seeds)
    with Progress(
        TextColumn("held-out runs {task.completed:>4}/{task.total}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("eval", total=jobs_total)
        try:
            rows = tuning.evaluate(
                settings,
                tuned,
                out / "eval",
                LocalBackend(workers),
                on_result=lambda row: progress.advance(task),
            )
        except BenchLockedError:
            progress.stop()
            console.print(
                "another process is evaluating this study now; it writes the "
                "results, so this one stops here"
            )
            return
    summary = tuning.evaluation_summary(rows, settings, tuned)
    tuning.write_best(out / "best.json", study, settings, summary)
    tuning.write_trials(study, out / "trials.jsonl")
    plots = tuning.save_plots(study, out)
    write_json(
        out / "tune.json",
        {
            **settings.to_dict(),
            "study": name,
            "storage": _masked(url),
            "trials": trials,
            "environment": environment(device),
        },
    )
    _print_evaluation(summary, tuned.label)
    console.print(
        f"wrote {out / 'best.json'}, {out / 'trials.jsonl'}, "
        f"{', '.join(str(p) for p in plots)}; held-out bench in {out / 'eval'}"
    )
    console.print(f"try: nnopt run --optimizer @{out / 'best.json'}")
