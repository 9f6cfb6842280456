"""curand's XORWOW generator, vectorised over many independent states.

TIG's CUDA generator gives every parameter and every sample its own curand
state, seeded with ``curand_init(seed, 0, 0)``. Here each array element is one
such state, so a whole instance is drawn with a handful of NumPy operations.
The arithmetic follows ``curand_kernel.h``: unsigned 32-bit wrap-around
integer maths, and float32 for the uniform and normal transforms.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Xorwow"]

_U32 = np.uint32


class Xorwow:
    """A batch of XORWOW states, one per seed in ``seeds`` (uint64 array)."""

    def __init__(self, seeds: np.ndarray) -> None:
        seeds = np.asarray(seeds, dtype=np.uint64)
        with np.errstate(over="ignore"):
            s0 = (seeds & np.uint64(0xFFFFFFFF)).astype(_U32) ^ _U32(0xAAD26B49)
            s1 = (seeds >> np.uint64(32)).astype(_U32) ^ _U32(0xF7DCEFDD)
            t0 = _U32(1099087573) * s0
            t1 = _U32(2591861531) * s1
            self.d = _U32(6615241) + t1 + t0
            self.v = [
                _U32(123456789) + t0,
                _U32(362436069) ^ t0,
                _U32(521288629) + t1,
                _U32(88675123) ^ t1,
                _U32(5783321) + t0,
            ]

    def next_u32(self) -> np.ndarray:
        """One ``curand()`` draw per state."""
        v = self.v
        t = v[0] ^ (v[0] >> _U32(2))
        new = (v[4] ^ (v[4] << _U32(4))) ^ (t ^ (t << _U32(1)))
        self.v = [v[1], v[2], v[3], v[4], new]
        with np.errstate(over="ignore"):
            self.d = self.d + _U32(362437)
            return new + self.d

    def uniform(self) -> np.ndarray:
        """``curand_uniform``: float32 in (0, 1]."""
        x = self.next_u32().astype(np.float32)
        return x * np.float32(2.3283064e-10) + np.float32(2.3283064e-10 / 2.0)

    def normal(self) -> np.ndarray:
        """TIG's Box-Muller normal, keeping the cosine branch only.

        TIG computes ``sqrtf(-2.0f * logf(u1)) * cosf(2.0f * M_PI * u2)``.
        ``M_PI`` is a double there, so the angle is a double product rounded
        to float when passed to ``cosf``; it is reproduced that way (a float32
        ``2 pi`` would be off by an ulp for many draws). ``logf`` and ``cosf``
        are evaluated in float64 and rounded to float32 (correctly rounded bar
        rare double-rounding cases): within an ulp of glibc's and CUDA's
        results, and independent of NumPy's CPU-specific float32 kernels.

        TIG redraws u1 while it is zero; ``curand_uniform`` is at least
        2^-33, so that loop never runs and is not reproduced here.
        """
        u1 = self.uniform()
        u2 = self.uniform()
        log_u1 = np.log(u1.astype(np.float64)).astype(np.float32)
        radius = np.sqrt(np.float32(-2.0) * log_u1)
        angle = (2.0 * np.pi * u2.astype(np.float64)).astype(np.float32)
        cos = np.cos(angle.astype(np.float64)).astype(np.float32)
        return (radius * cos).astype(np.float32)
