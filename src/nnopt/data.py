"""Challenge instances: random-Fourier-feature regression data.

An instance is a seed, a :class:`Profile` (the data's shape and constants)
and the arrays drawn from them. Draws follow TIG's CUDA generator exactly
(see ``SPEC.md`` and :mod:`nnopt.curand`):

* one curand state per (output ``o``, feature ``k``), seeded ``s64 + o*K + k``,
  draws ``a`` (normal), ``b`` (uniform * 2 pi), then ``w`` (one normal per
  input, times the frequency scale);
* one curand state per sample ``n``, seeded ``s64 + n + N`` with ``N`` the
  total sample count, draws the inputs (uniform * 2 - 1) then one normal per
  output for the noise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from nnopt.curand import Xorwow
from nnopt.seeds import Seed, parse_seed

__all__ = [
    "PROFILES",
    "Instance",
    "Profile",
    "SplitName",
    "generate_instance",
    "get_profile",
]

SplitName = Literal["train", "val", "test"]


@dataclass(frozen=True)
class Profile:
    """The shape and constants of an instance's data."""

    name: str
    n_inputs: int  # input dimensions d
    n_outputs: int  # output dimensions
    n_features: int = 128  # random Fourier features K
    lengthscale: float = 0.3  # l
    noise_std: float = 0.2  # sigma of the additive Gaussian noise
    amplitude: float = 1.0  # A, scales every feature
    n_train: int = 1000
    n_val: int = 200
    n_test: int = 250
    frequency_power: int = 2  # frequency scale is l ** -frequency_power ...
    frequency_scale_override: float | None = None  # ... unless set here

    def __post_init__(self) -> None:
        positive_ints = ("n_inputs", "n_outputs", "n_features", "n_train", "n_val")
        for field in (*positive_ints, "n_test"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"profile {field} must be a positive integer, got {value!r}"
                )
        for field in ("lengthscale", "noise_std", "amplitude"):
            value = getattr(self, field)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"profile {field} must be a positive number, got {value!r}"
                )
        scale = self.frequency_scale_override
        if scale is not None and (not math.isfinite(scale) or scale <= 0):
            raise ValueError(
                f"profile frequency_scale must be a positive number, got {scale!r}"
            )

    @property
    def frequency_scale(self) -> float:
        """Factor applied to standard-normal frequencies."""
        if self.frequency_scale_override is not None:
            return self.frequency_scale_override
        return self.lengthscale ** (-self.frequency_power)

    @property
    def n_samples(self) -> int:
        return self.n_train + self.n_val + self.n_test

    def replace(self, **overrides: Any) -> Profile:
        """A copy with some constants changed; ``frequency_scale`` is accepted."""
        if "frequency_scale" in overrides:
            overrides["frequency_scale_override"] = overrides.pop("frequency_scale")
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown profile setting(s) {', '.join(unknown)}; valid: "
                f"{', '.join(sorted(known - {'name', 'frequency_scale_override'}))}"
                ", frequency_scale"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["frequency_scale"] = self.frequency_scale
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        data = dict(data)
        data.pop("frequency_scale", None)
        return cls(**data)


PROFILES: dict[str, Profile] = {
    # What TIG's deployed code generates: 1 input, 2 outputs, w ~ N(0,1)/l^2.
    "tig": Profile("tig", n_inputs=1, n_outputs=2, frequency_power=2),
    # What the challenge text describes: 8 inputs, 1 output, w ~ N(0,1)/l.
    "spec": Profile("spec", n_inputs=8, n_outputs=1, frequency_power=1),
}


def get_profile(name: str, **overrides: Any) -> Profile:
    """A named profile, with optional constant overrides."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return profile.replace(**overrides) if overrides else profile


@dataclass(frozen=True, eq=False)
class Instance:
    """One instance's data, in generation order (train, then val, then test).

    ``x`` has shape ``(N, d)``, ``f`` (noiseless targets) and ``y`` (noisy
    targets) have shape ``(N, outputs)``; all float32.
    """

    seed: Seed
    profile: Profile
    x: np.ndarray
    f: np.ndarray
    y: np.ndarray

    def split(self, name: SplitName) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, f, y)`` of one split, as views into the full arrays."""
        p = self.profile
        bounds = {
            "train": (0, p.n_train),
            "val": (p.n_train, p.n_train + p.n_val),
            "test": (p.n_train + p.n_val, p.n_samples),
        }
        if name not in bounds:
            raise ValueError(f"unknown split {name!r}; use train, val or test")
        lo, hi = bounds[name]
        return self.x[lo:hi], self.f[lo:hi], self.y[lo:hi]


def _seed_range(s64: int, offset: int, count: int) -> np.ndarray:
    """``s64 + offset + i`` for ``i < count``, wrapping like a CUDA u64."""
    base = np.uint64((s64 + offset) % 2**64)
    with np.errstate(over="ignore"):
        return base + np.arange(count, dtype=np.uint64)


def _frequency_scale_f32(p: Profile) -> np.float32:
    """The frequency scale as the kernel computes it in float32.

    TIG's kernel uses ``1.0f / (lengthscale * lengthscale)``; powers other
    than 2 follow the same float32 product. An explicit override is used as
    given.
    """
    if p.frequency_scale_override is None and p.frequency_power >= 1:
        length = np.float32(p.lengthscale)
        denominator = length
        for _ in range(p.frequency_power - 1):
            denominator = denominator * length
        return np.float32(np.float32(1.0) / denominator)
    return np.float32(p.frequency_scale)


def generate_instance(
    seed: str | int | bytes, profile: Profile | str = "tig"
) -> Instance:
    """Draw an instance exactly as TIG's CUDA generator does."""
    seed = parse_seed(seed)
    if isinstance(profile, str):
        profile = get_profile(profile)
    p = profile
    k = p.n_features
    s64 = seed.u64

    f32 = np.float32
    params = Xorwow(_seed_range(s64, 0, p.n_outputs * k))
    a = params.normal()
    # ``curand_uniform(&state) * 2.0f * M_PI``: M_PI is a double in the
    # kernel, so (u * 2) is multiplied by pi in double, then stored as float.
    b = ((params.uniform() * f32(2.0)).astype(np.float64) * np.pi).astype(f32)
    scale = _frequency_scale_f32(p)
    w = np.stack([scale * params.normal() for _ in range(p.n_inputs)], axis=-1)
    a = a.reshape(p.n_outputs, k)
    b = b.reshape(p.n_outputs, k)
    w = w.reshape(p.n_outputs, k, p.n_inputs)

    samples = Xorwow(_seed_range(s64, p.n_samples, p.n_samples))
    x = np.stack(
        [samples.uniform() * f32(2.0) - f32(1.0) for _ in range(p.n_inputs)], axis=-1
    )
    noise = np.stack([samples.normal() for _ in range(p.n_outputs)], axis=-1)

    # The kernel's float32 sums, in its order: wx[n, o, k] = sum_d w_okd x_nd
    # accumulated over d, then f_no = sum_k a_ok cos(wx + b_ok) accumulated
    # over k (np.add.accumulate is strictly sequential, unlike np.sum).
    wx = np.zeros((p.n_samples, p.n_outputs, k), dtype=f32)
    for i in range(p.n_inputs):
        wx += x[:, None, None, i] * w[None, :, :, i]
    phase = wx + b[None]
    features = np.cos(phase.astype(np.float64)).astype(f32)  # cosf, see curand
    terms = features * a[None]
    f = np.add.accumulate(terms, axis=-1, dtype=f32)[..., -1]
    # scaling_factor = A * sqrt(2/K), computed in f32 by TIG's host code.
    coef = f32(p.amplitude) * np.sqrt(f32(2.0) / f32(k))
    f = (f * coef).astype(f32)
    y = (f + noise * f32(p.noise_std)).astype(f32)
    return Instance(seed=seed, profile=p, x=x.astype(np.float32), f=f, y=y)
