"""``nnopt bound``: the Bayes-optimal limit of instances, as a table or JSON."""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated

import typer
from rich.table import Table

from nnopt.bound import BoundResult, bayes_bound
from nnopt.cli_common import OverrideOpt, ProfileOpt, app, build_profile, console, fail
from nnopt.data import generate_instance
from nnopt.seeds import derive_seeds

__all__ = ["bound"]


def _seed_list(seed: str | None, count: int | None, base: str) -> list[str]:
    if count is not None:
        if seed is not None:
            raise fail("give either --seed or --seeds, not both")
        try:
            return derive_seeds(base, count)
        except ValueError as exc:
            raise fail(f"--seeds: {exc}") from None
    seeds = [part.strip() for part in (seed or "0").split(",")]
    if not all(seeds):
        raise fail(f"--seed {seed!r} has an empty entry; use e.g. --seed 0,1,2")
    return seeds


def _accuracy_text(max_accuracy_factor: float) -> str:
    """The largest passing integer factor, or why there is none."""
    if max_accuracy_factor < 0:
        return "fails at 0"
    return str(math.floor(max_accuracy_factor))


def _mean_row(results: list[BoundResult]) -> list[str]:
    def mean(field: str) -> float:
        return sum(getattr(r, field) for r in results) / len(results)

    return [
        f"mean of {len(results)}",
        f"{mean('test_loss'):.5f}",
        f"{mean('noise_floor'):.5f}",
        f"{mean('quality'):.4f}",
        _accuracy_text(mean("max_accuracy_factor")),
    ]


@app.command()
def bound(
    seed: Annotated[
        str | None,
        typer.Option(
            "--seed",
            help="a seed (64 hex digits or any text) or a comma list; default 0",
        ),
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(
            "--seeds", help="derive this many seeds from --seed-base instead", min=1
        ),
    ] = None,
    seed_base: Annotated[
        str, typer.Option("--seed-base", help="base for --seeds: BASE-0, BASE-1, ...")
    ] = "seed",
    profile: ProfileOpt = "tig",
    overrides: OverrideOpt = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="print one JSON object per seed, no table")
    ] = False,
) -> None:
    """Best expected test loss: GP regression with the generating kernel."""
    seed_texts = _seed_list(seed, seeds, seed_base)
    data_profile = build_profile(profile, overrides)

    results: list[BoundResult] = []
    for text in seed_texts:
        try:
            result = bayes_bound(generate_instance(text, data_profile))
        except (ValueError, ArithmeticError) as exc:
            raise fail(f"seed {text!r}: {exc}") from None
        if json_output:
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        results.append(result)
    if json_output:
        return

    first = results[0]
    table = Table(
        title=(
            f"Bayes-optimal limit, profile {data_profile.name}: RBF lengthscale "
            f"{first.kernel_lengthscale:.4g}, variance {first.kernel_variance:.4g}, "
            f"noise variance {first.noise_variance:.4g}, {first.n_train} train points"
        )
    )
    for name in ("seed", "test loss", "noise floor", "quality ceiling", "max acc. f."):
        table.add_column(name, justify="left" if name == "seed" else "right")
    for r in results:
        table.add_row(
            r.seed,
            f"{r.test_loss:.5f}",
            f"{r.noise_floor:.5f}",
            f"{r.quality:.4f}",
            _accuracy_text(r.max_accuracy_factor),
        )
    if len(results) > 1:
        table.add_section()
        table.add_row(*_mean_row(results))
    console.print(table)
