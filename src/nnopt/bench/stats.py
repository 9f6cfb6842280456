"""Statistics of bench results: pure functions on result rows.

A row is a dict as :func:`nnopt.bench.jobs.run_job` returns it. Only rows
with ``status == "ok"`` enter averages; the others are counted as errors.

* Mean quality comes with a two-sided 95% confidence interval from the
  t-distribution (n - 1 degrees of freedom); with one run it is undefined
  (NaN).
* Percentiles interpolate linearly between order statistics (NumPy's
  default, "type 7").
* A row passes at accuracy factor ``af`` if its test loss is at most
  ``(4 - af/1000) * threshold_unit``, TIG's rule; a non-finite loss fails.
* Head to head, two optimizers are compared on the seeds where both
  finished: the mean of the paired quality differences with its t-interval,
  and the win rate (ties count one half).

The t quantile is computed here, from the regularized incomplete beta
function, so SciPy is not needed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Comparison",
    "GroupStats",
    "Interval",
    "compare",
    "group_stats",
    "head_to_head",
    "mean_interval",
    "pass_rate",
    "passes",
    "percentile",
    "summarize",
    "t_cdf",
    "t_quantile",
]

Row = dict[str, Any]
LEVEL = 0.95  # confidence level of every interval


# --- the t-distribution -----------------------------------------------------


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a - 1.0 + m2) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b)
        - math.lgamma(a)
        - math.lgamma(b)
        + a * math.log(x)
        + b * math.log1p(-x)
    )
    # The fraction converges fast only on one side of the mean; use symmetry.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(x: float, df: float) -> float:
    """The CDF of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom.

    Found by bisection on :func:`t_cdf`, to about 1e-12 relative.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --- intervals and percentiles ----------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided confidence interval."""

    mean: float
    low: float  # NaN with fewer than two values
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return 0.5 * (self.high - self.low)


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean with a t-interval; NaN where undefined (no values, or one)."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    sd = statistics.stdev(values)
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between order statistics."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    weight = position - below
    return ordered[below] + weight * (ordered[above] - ordered[below])


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


# --- pass rates ---------------------------------------------------------------


def passes(row: Row, accuracy_factor: float) -> bool:
    """Whether a row's test loss meets the threshold at ``accuracy_factor``."""
    loss = row["test_loss"]  # None when the loss was not finite
    limit = (4.0 - accuracy_factor / 1000.0) * row["threshold_unit"]
    return loss is not None and math.isfinite(loss) and loss <= limit


def pass_rate(rows: Sequence[Row], accuracy_factor: float) -> float:
    """The share of ``ok`` rows that pass; NaN without any."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return math.nan
    return sum(passes(r, accuracy_factor) for r in ok) / len(ok)


# --- per group ----------------------------------------------------------------


@dataclass(frozen=True)
class GroupStats:
    """One optimizer on one track."""

    optimizer: str
    n_hidden: int
    n: int  # ok runs
    n_errors: int  # runs that raised, not in any average
    quality: Interval
    p10_quality: float
    pass_rate: dict[int, float] = field(default_factory=dict)  # by accuracy factor
    median_epochs_run: float = math.nan
    median_epochs_used: float = math.nan  # epochs to the best validation loss
    mean_wall_time_s: float = math.nan  # training time per run

    def to_dict(self) -> dict[str, Any]:
        """A flat record (one CSV row)."""
        out: dict[str, Any] = {
            "optimizer": self.optimizer,
            "n_hidden": self.n_hidden,
            "n": self.n,
            "n_errors": self.n_errors,
            "mean_quality": self.quality.mean,
            "ci_low": self.quality.low,
            "ci_high": self.quality.high,
            "p10_quality": self.p10_quality,
        }
        for af, rate in self.pass_rate.items():
            out[f"pass_rate_af{af}"] = rate
        out.update(
            median_epochs_run=self.median_epochs_run,
            median_epochs_used=self.median_epochs_used,
            mean_wall_time_s=self.mean_wall_time_s,
        )
        return out


def _values(rows: Iterable[Row], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) is not None]


def group_stats(
    rows: Sequence[Row],
    optimizer: str,
    n_hidden: int,
    accuracy_factors: Sequence[int],
) -> GroupStats:
    """Statistics of the rows of one optimizer on one track."""
    ok = [r for r in rows if r.get("status") == "ok"]
    qualities = _values(ok, "quality")
    return GroupStats(
        optimizer=optimizer,
        n_hidden=n_hidden,
        n=len(ok),
        n_errors=len(rows) - len(ok),
        quality=mean_interval(qualities),
        p10_quality=percentile(qualities, 10),
        pass_rate={af: pass_rate(ok, af) for af in accuracy_factors},
        median_epochs_run=_median(_values(ok, "epochs_run")),
        median_epochs_used=_median(_values(ok, "epochs_used")),
        mean_wall_time_s=_mean(_values(ok, "wall_time_s")),
    )


def _groups(rows: Iterable[Row]) -> dict[tuple[str, int], list[Row]]:
    groups: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row["optimizer"], int(row["n_hidden"])), []).append(row)
    return groups


def _group_keys(
    groups: dict[tuple[str, int], list[Row]],
    optimizers: Sequence[str] | None,
    tracks: Sequence[int] | None,
) -> list[tuple[str, int]]:
    """Track-major order: every combination asked for, else those with rows
    (by track, then optimizers in the order first seen)."""
    if optimizers is None or tracks is None:
        return sorted(groups, key=lambda k: k[1])  # stable: keeps first sight
    return [(label, track) for track in tracks for label in optimizers]


def summarize(
    rows: Iterable[Row],
    accuracy_factors: Sequence[int],
    *,
    optimizers: Sequence[str] | None = None,
    tracks: Sequence[int] | None = None,
) -> list[GroupStats]:
    """Statistics per optimizer and track.

    With ``optimizers`` and ``tracks``, one entry per combination in that
    order, also for those without rows; else one per group found.
    """
    groups = _groups(rows)
    return [
        group_stats(groups.get(key, []), *key, accuracy_factors)
        for key in _group_keys(groups, optimizers, tracks)
    ]


# --- head to head -----------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """``optimizer`` against ``baseline`` on one track, paired by seed."""

    optimizer: str
    baseline: str
    n_hidden: int
    difference: Interval  # mean of optimizer - baseline quality; n = pairs
    win_rate: float  # share of seeds where optimizer is better; ties count 1/2

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "baseline": self.baseline,
            "n_hidden": self.n_hidden,
            "n_pairs": self.difference.n,
            "mean_difference": self.difference.mean,
            "ci_low": self.difference.low,
            "ci_high": self.difference.high,
            "win_rate": self.win_rate,
        }


def _quality_by_seed(rows: Iterable[Row]) -> dict[str, float]:
    return {r["seed"]: float(r["quality"]) for r in rows if r.get("status") == "ok"}


def compare(
    rows: Sequence[Row],
    baseline_rows: Sequence[Row],
    *,
    optimizer: str,
    baseline: str,
    n_hidden: int,
) -> Comparison:
    """Paired comparison of two sets of rows on the seeds both finished."""
    mine = _quality_by_seed(rows)
    theirs = _quality_by_seed(baseline_rows)
    seeds = [s for s in mine if s in theirs]
    diffs = [mine[s] - theirs[s] for s in seeds]
    wins = sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in diffs)
    return Comparison(
        optimizer=optimizer,
        baseline=baseline,
        n_hidden=n_hidden,
        difference=mean_interval(diffs),
        win_rate=wins / len(diffs) if diffs else math.nan,
    )


def head_to_head(
    rows: Iterable[Row],
    baseline: str,
    *,
    optimizers: Sequence[str] | None = None,
    tracks: Sequence[int] | None = None,
) -> list[Comparison]:
    """Every other optimizer against ``baseline``, per track (order as in
    :func:`summarize`)."""
    groups = _groups(rows)
    return [
        compare(
            groups.get((label, track), []),
            groups.get((baseline, track), []),
            optimizer=label,
            baseline=baseline,
            n_hidden=track,
        )
        for label, track in _group_keys(groups, optimizers, tracks)
        if label != baseline
    ]
