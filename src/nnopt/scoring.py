"""Difficulty, threshold, pass/fail and TIG's quality score.

With ``N_test`` test samples and the sum over every test element
(``N_test x outputs`` of them)::

    eps*^2 = alpha / N_test * sum (y - f)^2,   alpha = 4 - accuracy_factor / 1000

A run passes if its test loss (per-element MSE against the noisy targets) is at
most ``eps*^2``. Quality is ``(eps*^2 - test_loss) / eps*^2`` at alpha = 4,
clamped to [-10, 10]. Because the sum runs over outputs while the loss averages
over them, with 2 outputs the threshold is ``2 * alpha`` times the noise level
and quality cannot exceed about 0.875.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nnopt.data import Instance

__all__ = [
    "MAX_ACCURACY_FACTOR",
    "MIN_HIDDEN",
    "TRACKS",
    "Difficulty",
    "Score",
    "quality",
    "score",
    "threshold",
]

TRACKS = (4, 7, 10, 14, 18)  # TIG's tracks, by number of hidden layers
MIN_HIDDEN = 2  # two Linear layers are frozen; one must stay trainable
MAX_HIDDEN = 64
MAX_ACCURACY_FACTOR = 4000  # alpha = 4 - af/1000 must stay positive
QUALITY_ALPHA = 4.0
QUALITY_CLAMP = 10.0


@dataclass(frozen=True)
class Difficulty:
    """How hard an instance is: model depth and how tight the threshold."""

    n_hidden: int = 4  # hidden layers of width 256
    accuracy_factor: int = 0  # tightens the pass threshold; quality ignores it

    def __post_init__(self) -> None:
        n = self.n_hidden
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"n_hidden must be an integer, got {n!r}")
        if not MIN_HIDDEN <= n <= MAX_HIDDEN:
            raise ValueError(
                f"n_hidden must be between {MIN_HIDDEN} and {MAX_HIDDEN}, got {n}: "
                "the last two Linear layers are frozen, so at least 2 hidden "
                "layers are needed to leave one trainable"
            )
        af = self.accuracy_factor
        if isinstance(af, bool) or not isinstance(af, (int, float)):
            raise ValueError(f"accuracy_factor must be a number, got {af!r}")
        if not (0 <= af < MAX_ACCURACY_FACTOR):
            raise ValueError(
                f"accuracy_factor must be in [0, {MAX_ACCURACY_FACTOR}), got {af}: "
                "alpha = 4 - accuracy_factor/1000 must stay positive"
            )

    @property
    def alpha(self) -> float:
        return 4.0 - self.accuracy_factor / 1000.0


@dataclass(frozen=True)
class Score:
    """A test loss judged against an instance's threshold."""

    test_loss: float
    threshold: float  # eps*^2 at the difficulty's alpha
    passed: bool
    quality: float  # TIG's quality score, alpha = 4, in [-10, 10]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _noise_sum(instance: Instance) -> float:
    _, f, y = instance.split("test")
    diff = y.astype(np.float64) - f.astype(np.float64)
    return float(np.sum(diff * diff))


def threshold(instance: Instance, alpha: float) -> float:
    """``eps*^2 = alpha / N_test * sum over all test elements of (y - f)^2``."""
    return alpha / instance.profile.n_test * _noise_sum(instance)


def quality(test_loss: float, instance: Instance) -> float:
    """TIG's quality score; NaN or infinite losses score the floor, -10."""
    eps2 = threshold(instance, QUALITY_ALPHA)
    if not math.isfinite(test_loss):
        return -QUALITY_CLAMP
    q = (eps2 - test_loss) / eps2
    return max(-QUALITY_CLAMP, min(QUALITY_CLAMP, q))


def score(instance: Instance, test_loss: float, difficulty: Difficulty) -> Score:
    """Threshold, pass/fail and quality of ``test_loss`` on ``instance``."""
    eps2 = threshold(instance, difficulty.alpha)
    passed = math.isfinite(test_loss) and test_loss <= eps2
    return Score(
        test_loss=float(test_loss),
        threshold=eps2,
        passed=bool(passed),
        quality=quality(test_loss, instance),
    )
