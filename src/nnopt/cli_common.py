"""Pieces every ``nnopt`` command shares: the app, consoles, options, errors."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from nnopt.data import PROFILES, Profile, get_profile

app = typer.Typer(
    help="A lab for TIG's neural-network optimizer challenge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_INVALID = 2


def fail(message: str) -> typer.Exit:
    """Print an error for the user and give the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(EXIT_INVALID)


# Options shared by every command that builds an instance.
SeedOpt = Annotated[
    str, typer.Option("--seed", help="64 hex digits (raw bytes) or any text (hashed)")
]
HiddenOpt = Annotated[
    int, typer.Option("--n-hidden", help="hidden layers (the track): 4, 7, 10, 14, 18")
]
AccuracyOpt = Annotated[
    int, typer.Option("--accuracy-factor", help="tightens the threshold, 0..3999")
]
ProfileOpt = Annotated[
    str, typer.Option("--profile", help=f"data shape: {', '.join(PROFILES)}")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N")]
OverrideOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="override a data constant, e.g. --set noise_std=0.1 "
        "(n_inputs, n_outputs, n_features, lengthscale, noise_std, amplitude, "
        "n_train, n_val, n_test, frequency_scale); repeatable",
    ),
]


def build_profile(name: str, overrides: list[str] | None) -> Profile:
    values: dict[str, Any] = {}
    for item in overrides or []:
        key, eq, text = item.partition("=")
        if not eq:
            raise fail(f"--set expects key=value, got {item!r}")
        try:
            number = float(text)
        except ValueError:
            raise fail(f"--set {key}: {text!r} is not a number") from None
        values[key.strip()] = (
            int(number)
            if number.is_integer() and key.strip().startswith("n_")
            else number
        )
    try:
        return get_profile(name, **values)
    except (ValueError, TypeError) as exc:
        raise fail(str(exc)) from None


def check_device(device: str) -> str:
    import torch

    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise fail(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise fail(f"--device {device}: no CUDA device is available; use --device cpu")
    return device
