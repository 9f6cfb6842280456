"""The report's figures, drawn from a :class:`~nnopt.bench.report.BenchReport`.

Four PNGs, written next to ``report.md``: quality by track, pass rate
against accuracy factor, validation curves, and quality against epochs run.
Each comes with a title and a caption that ``report.md`` prints under it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from nnopt.bench.report import CEILING_LABEL, LIMIT_LABEL  # noqa: E402
from nnopt.bench.stats import passes  # noqa: E402
from nnopt.scoring import QUALITY_CLAMP  # noqa: E402

if TYPE_CHECKING:
    from nnopt.bench.report import BenchReport

__all__ = ["Plot", "write_plots"]

LIMIT_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.2}
CEILING_STYLE = {"color": "tab:gray", "linestyle": ":", "linewidth": 1.5}
DPI = 120


@dataclass(frozen=True)
class Plot:
    """A written figure."""

    path: Path
    title: str
    caption: str


def _colors(labels: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _ok_rows(report: BenchReport, label: str, track: int) -> list[dict[str, Any]]:
    return [
        r
        for r in report.rows
        if r.get("status") == "ok"
        and r["optimizer"] == label
        and r["n_hidden"] == track
    ]


def _limit_quality(report: BenchReport) -> float:
    values = [r["quality"] for r in report.bound_rows]
    return sum(values) / len(values) if values else math.nan


HEADER_IN = 0.6  # inches above the panels for the title and a legend row
LEGEND_ROW_IN = 0.25  # inches per further legend row
LEGEND_CHAR_IN = 0.085  # inches per character of a legend label (10 pt)


def _panels(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    """A grid of ``n`` panels, one per track, three to a row."""
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols + 0.4, 3.3 * rows + HEADER_IN), squeeze=False
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _finish_panels(
    fig: plt.Figure, axes: list[plt.Axes], title: str, path: Path
) -> None:
    """Title, one legend for all panels under it, and save.

    The legend gets as many columns as fit the figure's width (long
    optimizer specs take one row each); the figure grows to hold its rows.
    """
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    widest = max((len(label) for label in handles), default=0)
    entry_in = 0.6 + LEGEND_CHAR_IN * widest
    ncol = max(1, min(len(handles), int(fig.get_figwidth() // entry_in)))
    extra_rows = max(0, math.ceil(len(handles) / ncol) - 1)
    fig.set_figheight(fig.get_figheight() + LEGEND_ROW_IN * extra_rows)
    height = fig.get_figheight()
    header = HEADER_IN + LEGEND_ROW_IN * extra_rows

    fig.suptitle(title, y=1 - 0.08 / height, va="top")
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.3 / height),
        ncol=ncol,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - header / height), pad=0.6)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _plain(value: float, _position: float = 0.0) -> str:
    return f"{value:g}"


def _plain_2_and_5(value: float, _position: float = 0.0) -> str:
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0.0
    return f"{value:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def _readable_log_axis(ax: plt.Axes) -> None:
    """Plain numbers on a log y axis, with enough labelled ticks to read it."""
    low, high = ax.get_ylim()
    decades = math.log10(high / low) if low > 0 else math.inf
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    if decades < 1:
        minor = ticker.FuncFormatter(_plain)
    elif decades < 3:
        minor = ticker.FuncFormatter(_plain_2_and_5)
    else:
        minor = ticker.NullFormatter()
    ax.yaxis.set_minor_formatter(minor)


def _quality_by_track(report: BenchReport, path: Path) -> Plot:
    labels = report.config.labels
    tracks = list(report.config.tracks)
    colors = _colors(labels)
    width = len(labels) + 1
    fig, ax = plt.subplots(
        figsize=(max(6.0, 1.0 + 0.7 * width * len(tracks)), 4.2 + HEADER_IN)
    )
    rng = np.random.default_rng(0)  # jitter only; fixed so reruns match

    groups = {
        (lb, t): [r["quality"] for r in _ok_rows(report, lb, t)]
        for lb in labels
        for t in tracks
    }
    everything = [q for values in groups.values() for q in values]
    # Runs at the quality floor (diverged, or far off) would flatten every
    # box: the axis stops above them and they are drawn on its bottom edge.
    floor = -QUALITY_CLAMP
    regular = [q for q in everything if q > floor]
    limit_q = _limit_quality(report)
    top_values = everything + ([limit_q] if math.isfinite(limit_q) else [])
    bottom = min(regular) if regular else floor
    top = max(top_values) if top_values else 1.0
    pad = 0.08 * max(top - bottom, 1e-3)
    bottom, top = bottom - pad, top + pad
    clipped = 0

    for i, track in enumerate(tracks):
        for j, label in enumerate(labels):
            values = groups[(label, track)]
            if not values:
                continue
            x = i * width + j
            ax.boxplot(
                [values],
                positions=[x],
                widths=0.6,
                showfliers=False,
                medianprops={"color": colors[label], "linewidth": 2},
            )
            shown = np.clip(values, bottom, None)
            low = np.asarray(values) < bottom
            clipped += int(low.sum())
            jitter = rng.uniform(-0.18, 0.18, len(values))
            ax.scatter(
                x + jitter[~low],
                shown[~low],
                s=12,
                alpha=0.6,
                color=colors[label],
                label=label,
            )
            if low.any():
                ax.scatter(
                    x + jitter[low],
                    np.full(low.sum(), bottom + 0.3 * pad),
                    marker="v",
                    s=18,
                    color=colors[label],
                )
        if report.bound_rows:
            track_limit = report.stats(LIMIT_LABEL, track)
            if track_limit is not None:
                ax.hlines(
                    track_limit.quality.mean,
                    i * width - 0.45,
                    i * width + len(labels) - 0.55,
                    label="Bayes limit (mean over seeds)",
                    **LIMIT_STYLE,
                )
            ceiling = report.stats(CEILING_LABEL, track)
            if ceiling is not None:
                ax.hlines(
                    ceiling.quality.mean,
                    i * width - 0.45,
                    i * width + len(labels) - 0.55,
                    label="Bayes predictor with zero mean (mean over seeds)",
                    **CEILING_STYLE,
                )

    ax.set_ylim(bottom, top)
    ax.set_xticks([i * width + (len(labels) - 1) / 2 for i in range(len(tracks))])
    ax.set_xticklabels([f"n_hidden = {t}" for t in tracks])
    ax.set_xlim(-0.8, (len(tracks) - 1) * width + len(labels) - 0.2)
    ax.set_ylabel("quality (higher is better)")
    ax.grid(axis="y", alpha=0.3)
    if clipped:
        ax.text(
            0.01,
            0.01,
            f"▼ {clipped} run(s) below the shown range",
            transform=ax.transAxes,
            fontsize=8,
            va="bottom",
        )
    _finish_panels(fig, [ax], "Quality by track and optimizer", path)
    return Plot(
        path,
        "Quality by track and optimizer",
        "One point per seed, boxes at the quartiles, whiskers to the furthest run "
        "within 1.5 IQR. The dashed line is the Bayes limit's mean quality on the "
        "same seeds, the dotted line the zero-mean reference's (the Bayes "
        "predictor without its mean, see docs/bound.md). Runs at the quality "
        "floor of -10 (diverged or far off) are drawn as ▼ on the bottom edge, "
        "below the shown range.",
    )


def _pass_rate(report: BenchReport, path: Path) -> Plot:
    labels = report.config.labels
    tracks = list(report.config.tracks)
    colors = _colors(labels)
    grid = np.arange(0, 4000, 25)
    fig, axes = _panels(len(tracks))
    for ax, track in zip(axes, tracks):
        for label in labels:
            rows = _ok_rows(report, label, track)
            if not rows:
                continue
            rate = [100 * np.mean([passes(r, af) for r in rows]) for af in grid]
            ax.plot(grid, rate, color=colors[label], label=label)
            marks = [
                100 * np.mean([passes(r, af) for r in rows])
                for af in report.accuracy_factors
            ]
            ax.plot(report.accuracy_factors, marks, "o", color=colors[label], ms=4)
        if report.bound_rows:
            rate = [
                100 * np.mean([passes(r, af) for r in report.bound_rows]) for af in grid
            ]
            ax.plot(grid, rate, label="Bayes limit", **LIMIT_STYLE)
        ax.set_title(f"n_hidden = {track}")
        ax.set_xlabel("accuracy factor")
        ax.set_ylabel("runs passing (%)")
        ax.set_ylim(-3, 103)
        ax.set_xlim(0, 4000)
        ax.grid(alpha=0.3)
    _finish_panels(fig, axes, "Pass rate against accuracy factor", path)
    return Plot(
        path,
        "Pass rate against accuracy factor",
        "Share of runs whose test loss is at most (4 - af/1000) times the "
        "instance's noise unit, for every accuracy factor af; dots mark the "
        "factors in the tables.",
    )


def _held_curves(rows: list[dict[str, Any]]) -> np.ndarray | None:
    """Runs x epochs, each curve held at its last value after it stopped;
    non-finite losses (diverged runs) become NaN and are left out."""
    curves = [r.get("val_curve") or [] for r in rows]
    curves = [c for c in curves if c]
    if not curves:
        return None
    length = max(len(c) for c in curves)
    out = np.empty((len(curves), length))
    for i, curve in enumerate(curves):
        out[i, : len(curve)] = curve
        out[i, len(curve) :] = curve[-1]
    out[~np.isfinite(out)] = np.nan
    return out


def _val_curves(report: BenchReport, path: Path) -> Plot:
    labels = report.config.labels
    tracks = list(report.config.tracks)
    colors = _colors(labels)
    fig, axes = _panels(len(tracks))
    for ax, track in zip(axes, tracks):
        for label in labels:
            curves = _held_curves(_ok_rows(report, label, track))
            if curves is None:
                continue
            epochs = np.arange(1, curves.shape[1] + 1)
            with np.errstate(all="ignore"):
                q25, q50, q75 = np.nanpercentile(curves, [25, 50, 75], axis=0)
            ax.plot(epochs, q50, color=colors[label], label=label)
            ax.fill_between(epochs, q25, q75, color=colors[label], alpha=0.2, lw=0)
        ax.set_yscale("log")
        _readable_log_axis(ax)
        ax.xaxis.set_major_locator(
            ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10])
        )
        ax.set_title(f"n_hidden = {track}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss (MSE)")
        ax.grid(alpha=0.3, which="both")
    _finish_panels(fig, axes, "Validation loss during training", path)
    return Plot(
        path,
        "Validation loss during training",
        "Median validation loss over seeds with the interquartile band. A run that "
        "stopped early is held at its last value, so every epoch counts every "
        "run; non-finite losses (diverged runs) are left out.",
    )


def _quality_vs_epochs(report: BenchReport, path: Path) -> Plot:
    labels = report.config.labels
    tracks = list(report.config.tracks)
    colors = _colors(labels)
    fig, axes = _panels(len(tracks))
    for ax, track in zip(axes, tracks):
        for label in labels:
            rows = _ok_rows(report, label, track)
            if not rows:
                continue
            ax.scatter(
                [r["epochs_run"] for r in rows],
                [r["quality"] for r in rows],
                s=14,
                alpha=0.7,
                color=colors[label],
                label=label,
            )
        track_limit = report.stats(LIMIT_LABEL, track)
        if track_limit is not None:
            ax.axhline(
                track_limit.quality.mean,
                label="Bayes limit (mean over seeds)",
                **LIMIT_STYLE,
            )
        ax.xaxis.set_major_locator(
            ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10])
        )
        ax.set_title(f"n_hidden = {track}")
        ax.set_xlabel("epochs run")
        ax.set_ylabel("quality")
        ax.grid(alpha=0.3)
    _finish_panels(fig, axes, "Quality against epochs run", path)
    loop = report.config.loop
    return Plot(
        path,
        "Quality against epochs run",
        f"One point per run: how long it trained (it stops after {loop.patience} "
        f"epochs without improvement, or at {loop.max_epochs}) against the "
        "quality it reached.",
    )


def write_plots(report: BenchReport, out_dir: Path) -> list[Plot]:
    """Draw every figure into ``out_dir``; return them in report order."""
    out_dir = Path(out_dir)
    return [
        _quality_by_track(report, out_dir / "quality_by_track.png"),
        _pass_rate(report, out_dir / "pass_rate.png"),
        _val_curves(report, out_dir / "val_curves.png"),
        _quality_vs_epochs(report, out_dir / "quality_vs_epochs.png"),
    ]
