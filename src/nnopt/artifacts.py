"""Run folders: what a run leaves behind, and how to verify it.

A run folder holds::

    config.json           everything needed to reproduce the run
    environment.json      versions, device, host, git commit
    metrics.csv           one row per epoch, appended as training goes
    solution.safetensors  the best model (the solution), every tensor by name
    result.json           the run's summary, written last

:func:`verify_run_dir` trusts only ``config.json`` (to know which instance to
rebuild) and the weights: it regenerates the data, loads the solution and
recomputes the test loss, threshold, pass and quality itself.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nnopt.data import generate_instance
from nnopt.loop import EpochRecord
from nnopt.runner import RunConfig, RunResult, score_solution
from nnopt.scoring import Score

__all__ = [
    "VerifyError",
    "VerifyReport",
    "environment",
    "finish_run_dir",
    "start_run_dir",
    "verify_run_dir",
    "write_json",
]

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
METRICS = "metrics.csv"
SOLUTION = "solution.safetensors"
RESULT = "result.json"
METRIC_FIELDS = [f.name for f in dataclasses.fields(EpochRecord)]


class VerifyError(ValueError):
    """A run folder cannot be verified: files missing, corrupt or inconsistent."""


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str = "cpu") -> dict[str, Any]:
    """Versions and machine facts worth keeping with a result."""
    from nnopt import __version__

    env: dict[str, Any] = {
        "nnopt": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "git_commit": _git_commit(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def start_run_dir(out_dir: Path, config: RunConfig) -> None:
    """Create the folder and write the config and environment."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / CONFIG, config.to_dict())
    write_json(out_dir / ENVIRONMENT, environment(config.device))
    with open(out_dir / METRICS, "w", newline="") as fh:
        csv.writer(fh).writerow(METRIC_FIELDS)


def append_metrics(out_dir: Path, record: EpochRecord) -> None:
    """Append one epoch to ``metrics.csv`` (flushed, so a crash keeps it)."""
    with open(Path(out_dir) / METRICS, "a", newline="") as fh:
        csv.writer(fh).writerow([getattr(record, f) for f in METRIC_FIELDS])


def finish_run_dir(out_dir: Path, result: RunResult) -> None:
    """Write the solution and the summary."""
    out_dir = Path(out_dir)
    tensors = {
        k: v.detach().cpu().contiguous() for k, v in result.training.solution.items()
    }
    save_file(
        tensors,
        str(out_dir / SOLUTION),
        metadata={
            "epochs_used": str(result.training.epochs_used),
        },
    )
    write_json(out_dir / RESULT, result.summary())


@dataclass(frozen=True)
class VerifyReport:
    """A recomputed score, and how it compares with what the folder claims."""

    score: Score
    claimed: dict[str, Any] | None  # result.json, if present and readable
    config: RunConfig

    @property
    def matches_claim(self) -> bool | None:
        if not self.claimed or "test_loss" not in self.claimed:
            return None
        claimed = float(self.claimed["test_loss"])
        return abs(claimed - self.score.test_loss) <= 1e-6 * max(1.0, abs(claimed))


def verify_run_dir(run_dir: Path, *, device: str = "cpu") -> VerifyReport:
    """Recompute a run's score from its config and weights alone."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VerifyError(f"{run_dir} is not a folder; pass a run folder")
    config_path, solution_path = run_dir / CONFIG, run_dir / SOLUTION
    for path in (config_path, solution_path):
        if not path.is_file():
            raise VerifyError(
                f"{path.name} is missing from {run_dir}; a finished run folder "
                f"has {CONFIG} and {SOLUTION}"
            )
    try:
        config = RunConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise VerifyError(f"{config_path} is not a valid run config: {exc}") from exc
    try:
        solution = load_file(str(solution_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise VerifyError(
            f"{solution_path} is not readable safetensors: {exc}"
        ) from exc
    instance = generate_instance(config.seed, config.profile)
    try:
        recomputed = score_solution(
            instance, config.n_hidden, solution, config.difficulty, device=device
        )
    except ValueError as exc:
        raise VerifyError(f"solution does not fit the model: {exc}") from exc
    claimed = None
    result_path = run_dir / RESULT
    if result_path.is_file():
        try:
            claimed = json.loads(result_path.read_text())
        except json.JSONDecodeError:
            claimed = None
    return VerifyReport(recomputed, claimed, config)
