"""Harness overhead: time per epoch of ``nnopt.loop.train`` against a plain loop.

The plain loop is what one would write by hand with ``torch.nn``: the same
network (``nn.Sequential`` of Linear, ReLU, BatchNorm1d), the same frozen
tensors, the same shuffled batches of 128, the gradient of the summed squared
error via ``backward()``, the same fused ``torch.optim`` update on the
trainable parameters, validation in eval mode after every epoch, and a copy
of the model whenever validation improves. The harness does that work plus
its own: hooks, output checks, the torch.optim adapter's shadow copy.

Both run in one process on the same instance and settings. Each repeat times
both, in alternating order, so drifting load on a shared machine hits both
alike; one untimed warm-up run of each comes first. An epoch's time covers
its batches, its validation and the model copy. Reported, as harness/plain:
the median epoch time over all repeats in wall time and in this process's
CPU time (steadier on a shared machine), their ratios, and the range of the
per-repeat ratios of median wall times.

    python benchmarks/overhead.py              # adam and sgd, tracks 4 and 10
    python benchmarks/overhead.py --optimizer sgd --n-hidden 4 --threads 2

Results go to ``benchmarks/results/overhead.txt`` (fixed-format lines) and
``overhead.json`` (every epoch time), and to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnopt.data import Instance, generate_instance
from nnopt.loop import LoopSettings, train
from nnopt.model import BN_EPS, BN_MOMENTUM, HIDDEN_WIDTH, MLP, derive_generator
from nnopt.optimizers.registry import load_optimizer

RESULTS = Path(__file__).parent / "results"

# The plain loop's optimizer for each harness spec: the same torch class and
# settings that nnopt.optimizers.builtin registers under that name.
PLAIN_OPTIMIZERS = {
    "adam": lambda ps, lr=1e-3: torch.optim.Adam(ps, lr=lr, fused=True),
    "sgd": lambda ps, lr=1e-4: torch.optim.SGD(ps, lr=lr, momentum=0.9, fused=True),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> tuple[float, float]:
    """Wall time and this process's CPU time, after the device has caught up.

    On a shared CPU the wall time includes time this process waited for a
    core; its CPU time does not, so the CPU-time ratio is the steadier one.
    """
    _sync(device)
    return time.perf_counter(), time.process_time()


def spans(marks: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(wall, cpu) seconds between consecutive marks."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


def plain_network(instance: Instance, n_hidden: int, device: torch.device):
    """TIG's MLP in ``torch.nn`` with the harness's initial weights."""
    p = instance.profile
    ref = MLP(p.n_inputs, p.n_outputs, n_hidden)
    ref.init_weights(instance.seed)
    widths = [p.n_inputs, *([HIDDEN_WIDTH] * n_hidden), p.n_outputs]
    layers: list[nn.Module] = []
    for i in range(n_hidden):
        layers += [
            nn.Linear(widths[i], widths[i + 1]),
            nn.ReLU(),
            nn.BatchNorm1d(widths[i + 1], eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    net = nn.Sequential(*layers)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    norms = [m for m in net if isinstance(m, nn.BatchNorm1d)]
    flat = [t for m in linears for t in (m.weight, m.bias)]
    flat += [
        t for m in norms for t in (m.weight, m.bias, m.running_mean, m.running_var)
    ]
    with torch.no_grad():
        for t, src in zip(flat, ref.params):
            t.copy_(src)
    for module in (linears[-1], linears[-2], norms[-1]):  # frozen
        module.requires_grad_(False)
    return net.to(device)


def plain_train(
    instance: Instance,
    n_hidden: int,
    optimizer: str,
    epochs: int,
    device: torch.device,
    lr: float | None = None,
) -> tuple[list[tuple[float, float]], list[float]]:
    """The hand-written loop; each epoch's (wall, cpu) time, and val losses."""
    net = plain_network(instance, n_hidden, device)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = PLAIN_OPTIMIZERS[optimizer](trainable, **({} if lr is None else {"lr": lr}))
    x, _, y = (torch.as_tensor(a, device=device) for a in instance.split("train"))
    xv, _, yv = (torch.as_tensor(a, device=device) for a in instance.split("val"))
    gen = derive_generator(instance.seed, "shuffle")
    best_val, best_state = float("inf"), None
    marks, val_losses = [clock(device)], []
    for _ in range(epochs):
        net.train()
        order = torch.randperm(x.shape[0], generator=gen).to(device)
        sq_err = torch.zeros((), device=device)
        for b in range(0, x.shape[0], 128):
            idx = order[b : b + 128]
            diff = net(x[idx]) - y[idx]
            loss = (diff * diff).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sq_err += loss.detach()
        train_loss = float(sq_err) / y.numel()
        net.eval()
        with torch.no_grad():
            total = torch.zeros((), dtype=torch.float64, device=device)
            for b in range(0, xv.shape[0], 128):
                diff = net(xv[b : b + 128]) - yv[b : b + 128]
                total += (diff * diff).sum(dtype=torch.float64)
        val_loss = float(total) / yv.numel()
        if math.isfinite(train_loss) and val_loss < best_val - 1e-7:
            best_val = val_loss
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        marks.append(clock(device))
        val_losses.append(val_loss)
    assert best_state is not None
    return spans(marks), val_losses


def harness_train(
    instance: Instance,
    n_hidden: int,
    optimizer: str,
    epochs: int,
    device: torch.device,
    lr: float | None = None,
) -> tuple[list[tuple[float, float]], list[float]]:
    """``nnopt.loop.train``; each epoch's (wall, cpu) time, and val losses."""
    marks: list[tuple[float, float]] = []

    def on_epoch(record: Any) -> None:
        marks.append(clock(device))

    opt = load_optimizer(optimizer, **({} if lr is None else {"lr": lr}))
    # train() takes its own start time after setup; take ours at the same
    # point, when the optimizer's state is built, just before epoch 0.
    init_state = opt.init_state

    def timed_init_state(setup):
        state = init_state(setup)
        marks.append(clock(device))
        return state

    opt.init_state = timed_init_state
    result = train(
        instance,
        n_hidden,
        opt,
        device=device,
        settings=LoopSettings(max_epochs=epochs, patience=epochs + 1),
        on_epoch=on_epoch,
    )
    return spans(marks), [r.val_loss for r in result.history]


def measure(args: argparse.Namespace, optimizer: str, n_hidden: int) -> dict[str, Any]:
    device = torch.device(args.device)
    instance = generate_instance(args.seed, args.profile)
    run = {"harness": harness_train, "plain": plain_train}
    # Warm-up: first calls pay for lazy imports and first-touch allocations.
    for fn in run.values():
        fn(instance, n_hidden, optimizer, 1, device)
    # Check that both loops see the same model, batches and validation: at
    # lr 0 their losses must agree exactly. (With training on, rounding in
    # the adapter's update, p + (shadow - p), grows chaotically on deep
    # tracks; tests/test_oracle.py compares the updates on shallow ones.)
    check = {
        name: fn(instance, n_hidden, optimizer, 2, device, lr=0.0)[1]
        for name, fn in run.items()
    }
    if check["harness"] != check["plain"]:
        raise SystemExit(f"the loops differ: val losses at lr 0 {check}")
    times: dict[str, list[tuple[float, float]]] = {"harness": [], "plain": []}
    rep_ratios = []
    for rep in range(args.repeats):
        order = ["harness", "plain"] if rep % 2 == 0 else ["plain", "harness"]
        medians = {}
        for name in order:
            epochs, _ = run[name](instance, n_hidden, optimizer, args.epochs, device)
            times[name] += epochs
            medians[name] = statistics.median(wall for wall, _ in epochs)
        rep_ratios.append(medians["harness"] / medians["plain"])

    def median_ms(name: str, which: int) -> float:
        return 1e3 * statistics.median(t[which] for t in times[name])

    out: dict[str, Any] = {"optimizer": optimizer, "n_hidden": n_hidden}
    for which, kind in enumerate(("wall", "cpu")):
        out[f"harness_{kind}_ms"] = median_ms("harness", which)
        out[f"plain_{kind}_ms"] = median_ms("plain", which)
        out[f"ratio_{kind}"] = out[f"harness_{kind}_ms"] / out[f"plain_{kind}_ms"]
    out["ratio_wall_per_repeat"] = [min(rep_ratios), max(rep_ratios)]
    out["epoch_times_s"] = {k: [list(t) for t in v] for k, v in times.items()}
    return out


def line(args: argparse.Namespace, r: dict[str, Any]) -> str:
    low, high = r["ratio_wall_per_repeat"]
    return (
        f"overhead device={args.device} optimizer={r['optimizer']} "
        f"n_hidden={r['n_hidden']} epochs={args.epochs} repeats={args.repeats} "
        f"threads={torch.get_num_threads()} "
        f"wall_ms={r['harness_wall_ms']:.2f}/{r['plain_wall_ms']:.2f} "
        f"ratio_wall={r['ratio_wall']:.3f} "
        f"cpu_ms={r['harness_cpu_ms']:.2f}/{r['plain_cpu_ms']:.2f} "
        f"ratio_cpu={r['ratio_cpu']:.3f} "
        f"ratio_wall_per_repeat=[{low:.3f},{high:.3f}]"
    )


def environment(args: argparse.Namespace) -> dict[str, Any]:
    def git(*cmd: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *cmd], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": args.device,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),  # uncommitted edits
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-hidden", type=int, nargs="+", default=[4, 10])
    parser.add_argument(
        "--optimizer",
        nargs="+",
        choices=sorted(PLAIN_OPTIMIZERS),
        default=["adam", "sgd"],
    )
    parser.add_argument("--epochs", type=int, default=10, help="timed per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", default="overhead")
    parser.add_argument("--profile", default="tig")
    parser.add_argument("--out", type=Path, default=RESULTS / "overhead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    results = [measure(args, o, n) for o in args.optimizer for n in args.n_hidden]
    lines = [line(args, r) for r in results]
    env = environment(args)
    print("\n".join(lines))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = [f"# {k}: {v}" for k, v in env.items()]
    args.out.with_suffix(".txt").write_text("\n".join(header + lines) + "\n")
    args.out.with_suffix(".json").write_text(
        json.dumps({"environment": env, "results": results}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
