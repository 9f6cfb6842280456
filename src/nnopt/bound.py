"""The Bayes-optimal limit: the best test loss a learner can expect.

An instance's targets are ``y = f(x) + xi`` with ``xi ~ N(0, sigma^2)`` and,
for each output independently,

    f(x) = A * sqrt(2/K) * sum_k a_k cos(w_k . x + b_k),
    a_k ~ N(0, 1),  b_k ~ U(0, 2 pi),  w_k ~ N(0, s^2 I),

where ``s`` is the profile's frequency scale. Averaged over ``a``, ``b`` and
``w`` the covariance of ``f`` is

    Cov(f(x), f(x')) = A^2 (2/K) sum_k E[cos(w.x + b) cos(w.x' + b)]
                     = A^2 E_w[cos(w . (x - x'))]
                     = A^2 exp(-s^2 |x - x'|^2 / 2),

an RBF kernel with variance ``A^2`` and lengthscale ``1 / s``, for every
``K`` (the average over ``b`` kills the ``cos(w.(x + x') + 2b)`` term, and
``E[cos(w.u)]`` is the characteristic function of ``N(0, s^2 I)``). The
lengthscale therefore follows from the frequency scale, not from the
profile's ``lengthscale`` field: ``tig`` draws ``w ~ N(0, 1) / l^2``, so its
kernel lengthscale is ``l^2 = 0.09``; ``spec`` draws ``w ~ N(0, 1) / l``, so
its kernel lengthscale is ``l = 0.3``.

This RBF kernel is what "the kernel the data was generated from" means here.
Given one instance's ``w`` and ``b``, ``f`` is a Gaussian process with the
rank-``K`` kernel ``A^2 (2/K) sum_k cos(w_k.x + b_k) cos(w_k.x' + b_k)``,
whose expectation over ``w`` and ``b`` is the RBF kernel above; a learner
does not know ``w`` and ``b``, so it sees their average. The Gaussian-process
posterior mean with that kernel and the known noise variance ``sigma^2`` is
the best predictor linear in the training targets, and exactly Bayes-optimal
only as ``K -> infinity`` (then ``f`` is Gaussian). At ``K = 128`` a learner
that could infer ``w`` and ``b`` from the data could do better: an oracle
told them reaches the noise floor on both profiles (``docs/bound.md``). On
``tig`` the two agree to about 1%, so the result is the ceiling; on ``spec``
the true limit lies somewhere between the oracle and this result.

:func:`bayes_bound` fits on the training split only (what a learner trains
on), solves exactly in float64 with a Cholesky factorisation, and scores the
posterior mean on the test split like the challenge scores a model.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from nnopt import scoring
from nnopt.data import Instance, Profile

__all__ = [
    "MAX_TRAIN_POINTS",
    "BoundResult",
    "RbfKernel",
    "bayes_bound",
    "generating_kernel",
    "gp_posterior_mean",
]

logger = logging.getLogger(__name__)

# The n x n kernel matrix takes 8 n^2 bytes and the factorisation n^3 / 3
# flops: 10 000 points is 800 MB and some seconds. Larger requests are refused.
MAX_TRAIN_POINTS = 10_000

# Relative jitter tried, in turn, when K + sigma^2 I is not numerically
# positive definite (only possible with a noise level far below TIG's).
_JITTERS = (0.0, 1e-12, 1e-10, 1e-8, 1e-6)


@dataclass(frozen=True)
class RbfKernel:
    """``variance * exp(-|x - x'|^2 / (2 lengthscale^2))``."""

    lengthscale: float
    variance: float

    def __post_init__(self) -> None:
        for field in ("lengthscale", "variance"):
            value = getattr(self, field)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"kernel {field} must be a positive number, got {value!r}"
                )

    def __call__(self, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        """The ``(len(x1), len(x2))`` kernel matrix of two ``(n, d)`` arrays."""
        a = np.asarray(x1, dtype=np.float64)
        b = np.asarray(x2, dtype=np.float64)
        # |a - b|^2 without an (n, m, d) intermediate; clamp rounding below 0.
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        np.maximum(sq, 0.0, out=sq)
        return self.variance * np.exp(-0.5 * sq / self.lengthscale**2)


def generating_kernel(profile: Profile) -> RbfKernel:
    """The RBF kernel ``f`` is drawn from: lengthscale ``1/s``, variance ``A^2``."""
    return RbfKernel(
        lengthscale=1.0 / profile.frequency_scale, variance=profile.amplitude**2
    )


def gp_posterior_mean(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    kernel: RbfKernel,
    noise_variance: float,
) -> np.ndarray:
    """``k(X*, X) (k(X, X) + noise_variance I)^-1 Y``, zero prior mean, float64.

    ``y_train`` is ``(n,)`` or ``(n, outputs)``; each output is its own
    independent regression sharing the kernel and inputs. The result has
    ``y_train``'s trailing shape.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    y = np.asarray(y_train, dtype=np.float64)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            "x_train and x_test must be 2-D with the same number of columns, "
            f"got shapes {x_train.shape} and {x_test.shape}"
        )
    if y.shape[:1] != x_train.shape[:1] or y.ndim not in (1, 2):
        raise ValueError(
            f"y_train must have shape ({x_train.shape[0]},) or "
            f"({x_train.shape[0]}, outputs), got {y.shape}"
        )
    if not math.isfinite(noise_variance) or noise_variance <= 0:
        raise ValueError(
            f"noise_variance must be a positive number, got {noise_variance!r}"
        )
    n = x_train.shape[0]
    if n > MAX_TRAIN_POINTS:
        raise ValueError(
            f"{n} training points is more than the exact solve handles "
            f"({MAX_TRAIN_POINTS}); its kernel matrix alone needs {8 * n * n / 1e9:.1f}"
            " GB"
        )

    gram = torch.from_numpy(kernel(x_train, x_train))
    gram.diagonal().add_(noise_variance)
    for jitter in _JITTERS:
        attempt = gram
        if jitter:
            attempt = gram + jitter * kernel.variance * torch.eye(n, dtype=gram.dtype)
        chol, info = torch.linalg.cholesky_ex(attempt)
        if int(info) == 0:
            break
        logger.warning("kernel matrix not positive definite; adding jitter")
    else:
        raise ArithmeticError(
            "the kernel matrix is not positive definite even with jitter "
            f"{_JITTERS[-1]:g} * variance; is noise_variance tiny?"
        )

    rhs = torch.from_numpy(y.reshape(n, -1))
    weights = torch.cholesky_solve(rhs, chol).numpy()
    mean = kernel(x_test, x_train) @ weights
    return mean.reshape((x_test.shape[0], *y.shape[1:]))


@dataclass(frozen=True)
class BoundResult:
    """What the Bayes-optimal predictor reaches on one instance's test split."""

    seed: str  # the seed as the user spelled it
    profile: str  # profile name
    test_loss: float  # per-element MSE of the GP posterior mean vs noisy targets
    quality: float  # TIG's quality score of test_loss: the quality ceiling
    # Largest accuracy factor at which test_loss still passes:
    # 1000 * (4 - test_loss / eps_unit) with eps_unit the threshold at alpha 1.
    # Not clamped below: a negative value means it fails even at 0. It is
    # below 4000 whenever test_loss > 0. TIG's factors are integers; the
    # largest passing one is floor(max_accuracy_factor).
    max_accuracy_factor: float
    noise_floor: float  # per-element mean of (y - f)^2 on the test split
    f_variance: float  # variance of f over all test elements
    kernel_lengthscale: float  # 1 / frequency_scale
    kernel_variance: float  # amplitude^2
    noise_variance: float  # noise_std^2
    n_train: int  # points the posterior conditions on
    # The zero-mean reference (docs/bound.md): the same predictor with its
    # mean over the input distribution removed. The challenge's MLP outputs
    # batch mean exactly 0 in training mode (readout bias and the last
    # BatchNorm's beta are frozen at 0); its eval-mode mean moves only through
    # the gap between batch and running BatchNorm statistics.
    zero_mean_test_loss: float = float("nan")
    zero_mean_quality: float = float("nan")

    @property
    def passes_at_zero(self) -> bool:
        """Whether the predictor passes at accuracy factor 0 (alpha = 4)."""
        return self.max_accuracy_factor >= 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bayes_bound(instance: Instance) -> BoundResult:
    """Score the GP posterior mean (generating kernel, train split) on test."""
    if not isinstance(instance, Instance):
        raise TypeError(
            "bayes_bound expects an nnopt.data.Instance (see generate_instance), "
            f"got {type(instance).__name__}"
        )
    p = instance.profile
    kernel = generating_kernel(p)
    noise_variance = p.noise_std**2
    x_train, _, y_train = instance.split("train")
    x_test, f_test, y_test = instance.split("test")

    start = time.perf_counter()
    # Test inputs and the training inputs (a sample of the input
    # distribution, to estimate the predictor's mean over it) in one solve.
    both = gp_posterior_mean(
        x_train,
        y_train,
        np.concatenate([x_test, x_train]),
        kernel=kernel,
        noise_variance=noise_variance,
    )
    prediction, on_train = both[: x_test.shape[0]], both[x_test.shape[0] :]
    zero_mean = prediction - on_train.mean(axis=0)
    logger.info(
        "GP posterior on %d points took %.3f s",
        x_train.shape[0],
        time.perf_counter() - start,
    )

    y_test = y_test.astype(np.float64)
    f_test = f_test.astype(np.float64)
    test_loss = float(np.mean((prediction - y_test) ** 2))
    zero_mean_loss = float(np.mean((zero_mean - y_test) ** 2))
    eps_unit = scoring.threshold(instance, 1.0)
    return BoundResult(
        seed=instance.seed.text,
        profile=p.name,
        test_loss=test_loss,
        quality=scoring.quality(test_loss, instance),
        max_accuracy_factor=1000.0 * (4.0 - test_loss / eps_unit),
        noise_floor=float(np.mean((y_test - f_test) ** 2)),
        f_variance=float(np.var(f_test)),
        kernel_lengthscale=kernel.lengthscale,
        kernel_variance=kernel.variance,
        noise_variance=noise_variance,
        n_train=int(x_train.shape[0]),
        zero_mean_test_loss=zero_mean_loss,
        zero_mean_quality=scoring.quality(zero_mean_loss, instance),
    )
