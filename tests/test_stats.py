"""Bench statistics against values worked out by hand or tabulated."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnopt.bench.stats import (
    compare,
    group_stats,
    head_to_head,
    mean_interval,
    pass_rate,
    passes,
    percentile,
    summarize,
    t_cdf,
    t_quantile,
)

# Two-sided 95% critical values of Student's t, from standard tables.
T_975 = {
    1: 12.706204736,
    2: 4.302652730,
    3: 3.182446305,
    4: 2.776445105,
    5: 2.570581836,
    10: 2.228138852,
    30: 2.042272456,
    100: 1.983971519,
}


@pytest.mark.parametrize(("df", "expected"), sorted(T_975.items()))
def test_t_quantile_matches_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-8)


def test_t_quantile_other_levels_and_symmetry() -> None:
    assert t_quantile(0.995, 1) == pytest.approx(63.656741163, abs=1e-6)
    assert t_quantile(0.9, 7) == pytest.approx(1.414923928, abs=1e-8)
    assert t_quantile(0.025, 4) == pytest.approx(-2.776445105, abs=1e-8)
    assert t_quantile(0.5, 3) == 0.0
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959966, abs=1e-5)  # normal


@pytest.mark.parametrize(("p", "df"), [(0.0, 3), (1.0, 3), (0.9, 0)])
def test_t_quantile_rejects_bad_arguments(p: float, df: float) -> None:
    with pytest.raises(ValueError):
        t_quantile(p, df)


@settings(max_examples=50, deadline=None)
@given(
    p=st.floats(min_value=0.001, max_value=0.999),
    df=st.integers(min_value=1, max_value=500),
)
def test_t_cdf_inverts_t_quantile(p: float, df: int) -> None:
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)


def test_mean_interval_by_hand() -> None:
    # mean 2.5, sd = sqrt(5/3) = 1.290994, t(0.975, 3) = 3.182446:
    # half-width = 3.182446 * 1.290994 / 2 = 2.054260.
    interval = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert interval.mean == 2.5
    assert interval.n == 4
    assert interval.half_width == pytest.approx(2.054260, abs=1e-6)
    assert interval.low == pytest.approx(2.5 - 2.054260, abs=1e-6)


def test_mean_interval_undefined_cases() -> None:
    one = mean_interval([0.7])
    assert one.mean == 0.7 and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(mean_interval([]).mean)


def test_percentile_by_hand_and_against_numpy() -> None:
    assert percentile([1, 2, 3, 4, 5], 10) == pytest.approx(1.4)
    assert percentile([10, 20], 10) == pytest.approx(11.0)
    assert percentile([3.0], 10) == 3.0
    assert math.isnan(percentile([], 10))
    rng = np.random.default_rng(0)
    for n in (2, 7, 33):
        values = list(rng.normal(size=n))
        for q in (0, 10, 50, 90, 100):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def _row(**fields) -> dict:
    base = {
        "status": "ok",
        "optimizer": "a",
        "n_hidden": 4,
        "seed": "s",
        "threshold_unit": 0.1,
        "epochs_run": 10,
        "epochs_used": 5,
        "wall_time_s": 1.0,
    }
    return {**base, **fields}


def test_passes_follows_tig_threshold() -> None:
    row = _row(test_loss=0.3)  # threshold (4 - af/1000) * 0.1
    assert passes(row, 0)  # 0.4
    assert passes(row, 1000)  # 0.3: equal passes
    assert not passes(row, 1500)  # 0.25
    assert not passes(_row(test_loss=math.nan), 0)
    assert not passes(_row(test_loss=math.inf), 0)


def test_group_stats_by_hand() -> None:
    rows = [
        _row(seed="1", quality=0.1, test_loss=0.36, epochs_run=10, wall_time_s=1.0),
        _row(seed="2", quality=0.2, test_loss=0.32, epochs_run=20, wall_time_s=2.0),
        _row(seed="3", quality=0.3, test_loss=0.28, epochs_run=30, wall_time_s=3.0),
        _row(seed="4", quality=0.4, test_loss=0.24, epochs_run=40, wall_time_s=6.0),
        {"status": "error", "optimizer": "a", "n_hidden": 4, "seed": "5"},
    ]
    s = group_stats(rows, "a", 4, [0, 1000, 1500])
    assert (s.n, s.n_errors) == (4, 1)
    assert s.quality.mean == pytest.approx(0.25)
    # sd of 0.1..0.4 is 0.129099; half-width 3.182446 * 0.129099 / 2.
    assert s.quality.half_width == pytest.approx(0.2054260, abs=1e-6)
    assert s.p10_quality == pytest.approx(0.13)  # 0.1 + 0.3 * (0.2 - 0.1)
    assert s.pass_rate == {0: 1.0, 1000: 0.5, 1500: 0.25}  # limits .4, .3, .25
    assert s.median_epochs_run == 25
    assert s.median_epochs_used == 5
    assert s.mean_wall_time_s == pytest.approx(3.0)
    assert s.to_dict()["pass_rate_af1000"] == 0.5


def test_group_of_errors_only_has_nan_statistics() -> None:
    s = group_stats([{"status": "error"}], "a", 4, [0])
    assert (s.n, s.n_errors) == (0, 1)
    assert math.isnan(s.quality.mean) and math.isnan(s.pass_rate[0])
    assert math.isnan(pass_rate([], 0))


def test_head_to_head_pairs_by_seed() -> None:
    rows = [
        _row(optimizer="a", seed="1", quality=0.5),
        _row(optimizer="a", seed="2", quality=0.5),
        _row(optimizer="a", seed="3", quality=0.5),
        _row(optimizer="b", seed="1", quality=0.6),
        _row(optimizer="b", seed="2", quality=0.4),
        _row(optimizer="b", seed="3", quality=0.5),
        _row(optimizer="b", seed="4", quality=0.9),  # a has no seed 4
        {"status": "error", "optimizer": "a", "n_hidden": 4, "seed": "4"},
    ]
    (c,) = head_to_head(rows, baseline="a")
    assert (c.optimizer, c.baseline, c.n_hidden) == ("b", "a", 4)
    assert c.difference.n == 3
    assert c.difference.mean == pytest.approx(0.0, abs=1e-12)
    # diffs 0.1, -0.1, 0: sd 0.1, half-width 4.302653 * 0.1 / sqrt(3).
    assert c.difference.half_width == pytest.approx(0.2484138, abs=1e-6)
    assert c.win_rate == pytest.approx(0.5)  # one win, one loss, one tie


def test_compare_without_common_seeds() -> None:
    c = compare(
        [_row(seed="1", quality=0.5)], [], optimizer="b", baseline="a", n_hidden=4
    )
    assert c.difference.n == 0 and math.isnan(c.win_rate)


def test_summarize_orders_by_track_then_first_sight() -> None:
    rows = [
        _row(optimizer="b", n_hidden=7, quality=0.1, test_loss=0.1),
        _row(optimizer="a", n_hidden=4, quality=0.1, test_loss=0.1),
        _row(optimizer="b", n_hidden=4, quality=0.1, test_loss=0.1),
    ]
    order = [(s.optimizer, s.n_hidden) for s in summarize(rows, [0])]
    assert order == [("a", 4), ("b", 4), ("b", 7)]


def test_summarize_and_head_to_head_in_a_given_order_with_empty_groups() -> None:
    rows = [
        _row(optimizer="a", n_hidden=4, seed="1", quality=0.5, test_loss=0.1),
        _row(optimizer="b", n_hidden=4, seed="1", quality=0.7, test_loss=0.1),
    ]
    stats = summarize(rows, [0], optimizers=["b", "a"], tracks=[4, 7])
    assert [(s.optimizer, s.n_hidden, s.n) for s in stats] == [
        ("b", 4, 1),
        ("a", 4, 1),
        ("b", 7, 0),
        ("a", 7, 0),
    ]
    versus = head_to_head(rows, "a", optimizers=["b", "a"], tracks=[4, 7])
    assert [(c.n_hidden, c.difference.n) for c in versus] == [(4, 1), (7, 0)]
    assert versus[0].difference.mean == pytest.approx(0.2)
