"""Time a bench-sized batched run: one optimizer, every track, many seeds.

Runs the jobs of ``nnopt bench`` (optimizer x tracks x seeds, the full loop
with early stopping) through the batched backend, one chunk per track, and
records per track: wall time, runs per hour, epochs run (the chunk lasts as
long as its longest run) and mean quality. With ``--reference-seeds k`` it
also times k seeds per track one at a time on the same device, for a runs
per hour ratio under real early stopping.

    python benchmarks/batched_bench_timing.py --device cuda            # 32 seeds
    python benchmarks/batched_bench_timing.py --seeds 2 --tracks 2 --max-epochs 2

Results go to ``benchmarks/results/batched_bench_<device>.json`` and stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nnopt.bench.batched_backend import BatchedBackend
from nnopt.bench.jobs import Job, run_job
from nnopt.loop import LoopSettings
from nnopt.optimizers.registry import parse_spec
from nnopt.scoring import TRACKS

RESULTS = Path(__file__).parent / "results"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_track(jobs: list[Job], batch_size: int) -> tuple[float, list[dict]]:
    rows: list[dict[str, Any]] = []
    _sync(jobs[0].device)
    start = time.perf_counter()
    BatchedBackend(workers=1, batch_size=batch_size).run(jobs, rows.append)
    _sync(jobs[0].device)
    return time.perf_counter() - start, rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument(
        "--tracks", type=int, default=len(TRACKS), help="the first N of 4,7,10,14,18"
    )
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--reference-seeds", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device available; nothing to measure", file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(1)
    spec = parse_spec(args.optimizer)
    loop = LoopSettings(max_epochs=args.max_epochs)
    seeds = [f"bench-{i}" for i in range(args.seeds)]
    # Warm-up (CUDA context, kernels): one tiny chunk, untimed.
    time_track(
        [Job(spec, 4, "warm-up", device=args.device, loop=LoopSettings(max_epochs=1))],
        1,
    )

    tracks = []
    for n_hidden in TRACKS[: args.tracks]:
        jobs = [Job(spec, n_hidden, s, device=args.device, loop=loop) for s in seeds]
        wall, rows = time_track(jobs, batch_size=args.seeds)
        ok = [r for r in rows if r["status"] == "ok"]
        entry: dict[str, Any] = {
            "n_hidden": n_hidden,
            "seeds": args.seeds,
            "failed": len(rows) - len(ok),
            "batched_wall_s": wall,
            "batched_runs_per_hour": args.seeds * 3600.0 / wall,
            "epochs_run_max": max((r["epochs_run"] for r in ok), default=0),
            "epochs_run_median": statistics.median(r["epochs_run"] for r in ok)
            if ok
            else 0,
            "quality_mean": statistics.fmean(r["quality"] for r in ok) if ok else None,
        }
        if args.reference_seeds:
            _sync(args.device)
            start = time.perf_counter()
            reference = [run_job(job) for job in jobs[: args.reference_seeds]]
            _sync(args.device)
            ref_wall = time.perf_counter() - start
            entry["one_at_a_time_wall_s"] = ref_wall
            entry["one_at_a_time_runs"] = len(reference)
            entry["one_at_a_time_runs_per_hour"] = len(reference) * 3600.0 / ref_wall
            entry["runs_per_hour_ratio"] = (
                entry["batched_runs_per_hour"] / entry["one_at_a_time_runs_per_hour"]
            )
        print(json.dumps(entry), file=sys.stderr)
        tracks.append(entry)

    device = torch.device(args.device)
    result = {
        "benchmark": "batched_bench_timing",
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "optimizer": spec.label,
        "max_epochs": args.max_epochs,
        "tracks": tracks,
        "total_batched_wall_s": sum(t["batched_wall_s"] for t in tracks),
        "torch": torch.__version__,
        "command": " ".join(["python", *sys.argv]),
    }
    out = args.out or RESULTS / f"batched_bench_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
