"""Threshold, pass/fail and quality arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nnopt.data import Instance, generate_instance, get_profile
from nnopt.scoring import Difficulty, quality, score, threshold
from nnopt.seeds import parse_seed


def noise_sum(instance: Instance) -> float:
    """Sum over every test element (samples x outputs) of (y - f)^2."""
    _, f, y = instance.split("test")
    return float(((y.astype(np.float64) - f) ** 2).sum())


def synthetic(noise: np.ndarray) -> Instance:
    """An instance whose test split has exactly the given noise."""
    n_test, n_out = noise.shape
    profile = get_profile("tig").replace(n_outputs=n_out, n_test=n_test)
    n = profile.n_samples
    f = np.zeros((n, n_out), np.float32)
    y = f.copy()
    y[-n_test:] = noise
    return Instance(parse_seed(0), profile, np.zeros((n, 1), np.float32), f, y)


def test_threshold_sums_over_every_test_element() -> None:
    # 2 outputs, 250 samples: noise 0.1 on output 0 and 0.3 on output 1.
    noise = np.tile(np.array([[0.1, 0.3]], np.float32), (250, 1))
    inst = synthetic(noise)
    total = 250 * (0.1**2 + 0.3**2)
    assert threshold(inst, 4.0) == pytest.approx(4.0 / 250 * total, rel=1e-6)
    assert threshold(inst, 1.5) == pytest.approx(1.5 / 250 * total, rel=1e-6)
    # Per element, that is n_outputs * alpha times the mean squared noise.
    assert threshold(inst, 4.0) == pytest.approx(2 * 4.0 * 0.05, rel=1e-6)


@pytest.mark.parametrize("profile", ["tig", "spec"])
def test_threshold_on_generated_data(profile) -> None:
    inst = generate_instance("scoring", profile)
    assert threshold(inst, 4.0) == pytest.approx(4.0 / 250 * noise_sum(inst))
    # The noise has std 0.2, so per element the threshold is near
    # n_outputs * alpha * 0.04.
    per_element = threshold(inst, 1.0) / inst.profile.n_outputs
    assert per_element == pytest.approx(0.04, rel=0.25)


@given(st.integers(0, 3999))
def test_alpha(af) -> None:
    assert Difficulty(4, af).alpha == 4 - af / 1000


def test_score_passes_at_or_below_threshold() -> None:
    inst = synthetic(np.full((250, 2), 0.2, np.float32))
    eps2 = threshold(inst, 3.0)
    diff = Difficulty(4, 1000)
    assert score(inst, eps2, diff).passed
    assert score(inst, eps2 * 0.99, diff).passed
    assert not score(inst, eps2 * 1.01, diff).passed
    s = score(inst, 0.1, diff)
    assert s.threshold == pytest.approx(eps2)
    assert s.test_loss == 0.1
    assert s.to_dict() == {
        "test_loss": 0.1,
        "threshold": s.threshold,
        "passed": s.passed,
        "quality": s.quality,
    }


def test_quality_uses_alpha_4_whatever_the_difficulty() -> None:
    inst = synthetic(np.full((250, 2), 0.2, np.float32))
    eps2 = threshold(inst, 4.0)  # 2 * 4 * 0.04 = 0.32
    assert eps2 == pytest.approx(0.32, rel=1e-6)
    loss = 0.08
    assert quality(loss, inst) == pytest.approx((eps2 - loss) / eps2)
    assert quality(loss, inst) == pytest.approx(0.75, rel=1e-5)
    assert score(inst, loss, Difficulty(4, 0)).quality == quality(loss, inst)
    assert score(inst, loss, Difficulty(4, 3500)).quality == quality(loss, inst)
    assert quality(0.0, inst) == pytest.approx(1.0)
    assert quality(eps2, inst) == pytest.approx(0.0, abs=1e-12)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_quality_is_clamped(loss) -> None:
    inst = synthetic(np.full((250, 2), 0.2, np.float32))
    q = quality(loss, inst)
    assert -10.0 <= q <= 10.0
    eps2 = threshold(inst, 4.0)
    unclamped = (eps2 - loss) / eps2
    assert q == pytest.approx(max(-10.0, min(10.0, unclamped)))


def test_quality_floor() -> None:
    inst = synthetic(np.full((250, 2), 0.2, np.float32))
    assert quality(100.0, inst) == -10.0
    assert quality(11 * threshold(inst, 4.0), inst) == -10.0


def test_quality_ceiling_when_noise_is_tiny() -> None:
    inst = synthetic(np.full((250, 1), 1e-3, np.float32))
    assert quality(-1.0, inst) == 10.0  # only reachable with a negative loss


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_fails_with_the_floor(loss) -> None:
    inst = synthetic(np.full((250, 2), 0.2, np.float32))
    s = score(inst, loss, Difficulty(4, 0))
    assert s.passed is False
    assert s.quality == -10.0


@pytest.mark.parametrize(
    ("n_hidden", "af", "match"),
    [
        (1, 0, "n_hidden must be between 2 and 64"),
        (0, 0, "n_hidden must be between"),
        (65, 0, "n_hidden must be between"),
        (4.0, 0, "n_hidden must be an integer"),
        (True, 0, "n_hidden must be an integer"),
        (4, 4000, r"accuracy_factor must be in \[0, 4000\)"),
        (4, 10_000, "accuracy_factor must be in"),
        (4, -1, "accuracy_factor must be in"),
        (4, math.nan, "accuracy_factor must be in"),
        (4, "1", "accuracy_factor must be a number"),
    ],
)
def test_bad_difficulty_raises(n_hidden, af, match) -> None:
    with pytest.raises(ValueError, match=match):
        Difficulty(n_hidden, af)


def test_tracks_are_valid_difficulties() -> None:
    from nnopt.scoring import TRACKS

    for n in TRACKS:
        assert Difficulty(n, 3999).alpha == pytest.approx(0.001)
