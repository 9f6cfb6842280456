"""Runs per hour: the batched engine against the one-at-a-time harness.

Both train the same instances (seeds ``bench-0`` ...) of one track for a fixed
number of epochs (early stopping off), on the same device and torch threads,
in one process. Each repeat times both, in alternating order, so drifting
load on a shared machine hits both alike; the report gives the medians over
repeats and the median of the per-repeat ratios. Only training is timed:
instances are generated beforehand and one untimed warm-up epoch runs first.
Besides wall time it records this process's CPU time, which other programs
on a shared machine disturb less (on CPU with one thread the two agree when
the machine is otherwise idle).

    python benchmarks/batched_throughput.py                  # CPU, 1 thread
    python benchmarks/batched_throughput.py --device cuda    # GPU, if present

Results go to ``benchmarks/results/batched_<device>.json`` and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nnopt.batched import train_batched
from nnopt.data import generate_instance
from nnopt.loop import LoopSettings, train
from nnopt.optimizers.registry import load_optimizer

RESULTS = Path(__file__).parent / "results"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_one_at_a_time(instances, args, settings) -> tuple[float, float]:
    """Wall and CPU seconds to train ``instances`` one after the other."""
    _sync(args.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for inst in instances:
        train(
            inst,
            args.n_hidden,
            load_optimizer(args.optimizer),
            device=args.device,
            settings=settings,
        )
    _sync(args.device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def time_batched(instances, args, settings) -> tuple[float, float]:
    """Wall and CPU seconds to train ``instances`` in one batched run."""
    _sync(args.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    train_batched(
        instances,
        args.n_hidden,
        load_optimizer(args.optimizer),
        device=args.device,
        settings=settings,
        instances_per_pass=args.instances_per_pass,
    )
    _sync(args.device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def _median_ratio(single: list[float], batched: list[float]) -> float:
    return statistics.median(s / b for s, b in zip(single, batched))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-hidden", type=int, default=4)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--instances-per-pass",
        type=int,
        default=None,
        help="instances per forward/backward pass (default: the engine's)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device available; nothing to measure", file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(args.threads)
    instances = [generate_instance(f"bench-{i}") for i in range(args.instances)]
    timed = LoopSettings(max_epochs=args.epochs, patience=args.epochs + 1)
    warm = LoopSettings(max_epochs=1)
    time_one_at_a_time(instances[:1], args, warm)
    time_batched(instances, args, warm)

    single: list[tuple[float, float]] = []
    batched: list[tuple[float, float]] = []
    for repeat in range(args.repeats):
        if repeat % 2 == 0:
            single.append(time_one_at_a_time(instances, args, timed))
            batched.append(time_batched(instances, args, timed))
        else:
            batched.append(time_batched(instances, args, timed))
            single.append(time_one_at_a_time(instances, args, timed))
        print(
            f"repeat {repeat}: one at a time {single[-1][0]:.2f} s, "
            f"batched {batched[-1][0]:.2f} s (wall)",
            file=sys.stderr,
        )
    single_s = [wall for wall, _ in single]
    batched_s = [wall for wall, _ in batched]
    single_cpu = [cpu for _, cpu in single]
    batched_cpu = [cpu for _, cpu in batched]

    # Runs per hour at this many epochs per run; the ratio does not depend
    # on the epoch count, the absolute figures do.
    def per_hour(seconds: float) -> float:
        return args.instances * 3600.0 / seconds

    device = torch.device(args.device)
    result = {
        "benchmark": "batched_throughput",
        "device": args.device,
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "torch_threads": args.threads,
        "instances": args.instances,
        "instances_per_pass": args.instances_per_pass or args.instances,
        "epochs_per_run": args.epochs,
        "n_hidden": args.n_hidden,
        "optimizer": args.optimizer,
        "repeats": args.repeats,
        "one_at_a_time_s": single_s,
        "batched_s": batched_s,
        "one_at_a_time_runs_per_hour_median": per_hour(statistics.median(single_s)),
        "batched_runs_per_hour_median": per_hour(statistics.median(batched_s)),
        "ratio_of_medians": statistics.median(single_s) / statistics.median(batched_s),
        "ratio_median_of_repeats": _median_ratio(single_s, batched_s),
        "ratio_min_max_of_repeats": [
            min(s / b for s, b in zip(single_s, batched_s)),
            max(s / b for s, b in zip(single_s, batched_s)),
        ],
        "one_at_a_time_cpu_s": single_cpu,
        "batched_cpu_s": batched_cpu,
        "cpu_time_ratio_median_of_repeats": _median_ratio(single_cpu, batched_cpu),
        "load_average_1_5_15": list(os.getloadavg()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "command": " ".join(["python", *sys.argv]),
    }
    out = args.out or RESULTS / f"batched_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
