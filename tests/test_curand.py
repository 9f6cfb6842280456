"""nnopt's NumPy XORWOW and data generator against the real curand.

The fixtures in ``tests/fixtures/curand/`` come from a host build of
NVIDIA's ``curand_kernel.h`` running TIG's generator code; see
``tools/curand_reference/README.md`` for how they were made.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnopt.curand import Xorwow
from nnopt.data import generate_instance, get_profile
from nnopt.seeds import parse_seed

FIXTURES = Path(__file__).parent / "fixtures" / "curand"
DATA_FIXTURES = sorted(FIXTURES.glob("data_*.json"))
TOLERANCE = 1e-5  # absolute, on f and y

u64s = st.integers(min_value=0, max_value=2**64 - 1)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def xorwow_scalar(seed: int, count: int) -> list[int]:
    """curand_init(seed, 0, 0) + curand(), transcribed with Python ints."""
    m = 0xFFFFFFFF
    t0 = (1099087573 * ((seed & m) ^ 0xAAD26B49)) & m
    t1 = (2591861531 * ((seed >> 32) ^ 0xF7DCEFDD)) & m
    d = (6615241 + t1 + t0) & m
    v = [(123456789 + t0) & m, 362436069 ^ t0, (521288629 + t1) & m]
    v += [88675123 ^ t1, (5783321 + t0) & m]
    out = []
    for _ in range(count):
        t = v[0] ^ (v[0] >> 2)
        new = (v[4] ^ ((v[4] << 4) & m)) ^ (t ^ ((t << 1) & m))
        v = [v[1], v[2], v[3], v[4], new]
        d = (d + 362437) & m
        out.append((new + d) & m)
    return out


# ---- the fixtures themselves ------------------------------------------------


def test_fixture_set_covers_both_profiles_and_seed_spellings():
    by_profile: dict[str, list[dict]] = {}
    for path in DATA_FIXTURES:
        data = load(path)
        by_profile.setdefault(data["profile"]["name"], []).append(data)
    assert set(by_profile) == {"tig", "spec"}
    for fixtures in by_profile.values():
        seeds = [f["seed"] for f in fixtures]
        assert len(seeds) >= 4
        assert any(len(s) == 64 for s in seeds)  # raw hex seeds
        assert {"0", "1", "tig-fixture"} <= set(seeds)  # hashed text seeds


# ---- the XORWOW core: exact ------------------------------------------------


def raw_streams() -> list[dict]:
    return load(FIXTURES / "xorwow_raw.json")["streams"]


@pytest.mark.parametrize("stream", raw_streams(), ids=lambda s: s["seed_u64"])
def test_raw_u32_matches_curand(stream):
    gen = Xorwow(np.array([int(stream["seed_u64"])], dtype=np.uint64))
    got = [int(gen.next_u32()[0]) for _ in stream["u32"]]
    assert got == stream["u32"]


def test_raw_u32_batched_matches_curand():
    streams = raw_streams()
    gen = Xorwow(np.array([int(s["seed_u64"]) for s in streams], dtype=np.uint64))
    got = np.stack([gen.next_u32() for _ in range(8)], axis=1)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, [s["u32"][:8] for s in streams])


def test_uniform_matches_curand_exactly():
    streams = raw_streams()
    gen = Xorwow(np.array([int(s["seed_u64"]) for s in streams], dtype=np.uint64))
    got = np.stack([gen.uniform() for _ in range(8)], axis=1)
    want = np.array([s["uniform"] for s in streams], dtype=np.float32)
    np.testing.assert_array_equal(got, want)


def test_normal_matches_tig_box_muller():
    streams = raw_streams()
    gen = Xorwow(np.array([int(s["seed_u64"]) for s in streams], dtype=np.uint64))
    got = np.stack([gen.normal() for _ in range(8)], axis=1)
    want = np.array([s["normal"] for s in streams], dtype=np.float32)
    # logf/cosf may differ from glibc's by an ulp.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_scalar_transcription_matches_curand():
    for stream in raw_streams():
        assert xorwow_scalar(int(stream["seed_u64"]), 8) == stream["u32"]


# ---- whole instances ---------------------------------------------------------


@pytest.mark.parametrize("path", DATA_FIXTURES, ids=lambda p: p.stem)
def test_instance_matches_reference(path):
    ref = load(path)
    name = ref["profile"]["name"]
    profile = get_profile(name)
    for key in ("n_inputs", "n_outputs", "n_features", "n_train", "n_val", "n_test"):
        assert getattr(profile, key) == ref["profile"][key], key
    for key in ("lengthscale", "noise_std", "amplitude"):
        assert np.float32(getattr(profile, key)) == np.float32(ref["profile"][key])
    assert parse_seed(ref["seed"]).u64 == int(ref["s64"])

    inst = generate_instance(ref["seed"], name)
    idx = np.array(ref["indices"])
    n_val_start = profile.n_train
    n_test_start = profile.n_train + profile.n_val
    assert (idx < n_val_start).any()
    assert ((idx >= n_val_start) & (idx < n_test_start)).any()
    assert (idx >= n_test_start).any()

    want_x = np.array(ref["x"], dtype=np.float32).reshape(len(idx), profile.n_inputs)
    want_f = np.array(ref["f"], dtype=np.float32).reshape(len(idx), profile.n_outputs)
    want_y = np.array(ref["y"], dtype=np.float32).reshape(len(idx), profile.n_outputs)
    # x is uniform * 2 - 1: exact float32 arithmetic, so bit-identical.
    np.testing.assert_array_equal(inst.x[idx], want_x)
    np.testing.assert_allclose(inst.f[idx], want_f, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(inst.y[idx], want_y, rtol=0, atol=TOLERANCE)


# ---- structural properties ---------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(seeds=st.lists(u64s, min_size=1, max_size=16), draws=st.integers(1, 12))
def test_xorwow_matches_scalar_transcription(seeds, draws):
    gen = Xorwow(np.array(seeds, dtype=np.uint64))
    got = np.stack([gen.next_u32() for _ in range(draws)], axis=1)
    assert got.tolist() == [xorwow_scalar(s, draws) for s in seeds]


@settings(max_examples=50, deadline=None)
@given(seeds=st.lists(u64s, min_size=1, max_size=64), draws=st.integers(1, 8))
def test_uniform_in_half_open_unit_interval(seeds, draws):
    gen = Xorwow(np.array(seeds, dtype=np.uint64))
    for _ in range(draws):
        u = gen.uniform()
        assert u.dtype == np.float32 and u.shape == (len(seeds),)
        assert np.all(u > 0) and np.all(u <= 1)


@settings(max_examples=50, deadline=None)
@given(seeds=st.lists(u64s, min_size=1, max_size=64))
def test_normal_finite_and_bounded(seeds):
    z = Xorwow(np.array(seeds, dtype=np.uint64)).normal()
    assert z.dtype == np.float32 and z.shape == (len(seeds),)
    # u1 >= 2^-33, so |z| <= sqrt(-2 ln 2^-33) ~ 6.76.
    assert np.all(np.isfinite(z)) and np.all(np.abs(z) <= 6.8)


@settings(max_examples=30, deadline=None)
@given(seeds=st.lists(u64s, min_size=2, max_size=8, unique=True))
def test_states_are_independent_of_batching(seeds):
    batch = Xorwow(np.array(seeds, dtype=np.uint64))
    batched = np.stack([batch.next_u32() for _ in range(4)], axis=1)
    for i, seed in enumerate(seeds):
        alone = Xorwow(np.array([seed], dtype=np.uint64))
        assert [int(alone.next_u32()[0]) for _ in range(4)] == batched[i].tolist()


@settings(max_examples=15, deadline=None)
@given(
    seed=st.one_of(
        st.text(min_size=1, max_size=20).filter(lambda s: s.strip()),
        st.binary(min_size=32, max_size=32).map(bytes.hex),
        st.integers(min_value=0, max_value=10**12),
    ),
    profile=st.sampled_from(["tig", "spec"]),
)
def test_instance_shapes_ranges_and_determinism(seed, profile):
    p = get_profile(profile)
    one = generate_instance(seed, profile)
    two = generate_instance(seed, p)
    n = p.n_samples
    assert one.x.shape == (n, p.n_inputs)
    assert one.f.shape == one.y.shape == (n, p.n_outputs)
    for arr in (one.x, one.f, one.y):
        assert arr.dtype == np.float32 and np.all(np.isfinite(arr))
    assert np.all(one.x >= -1) and np.all(one.x <= 1)
    # |f| <= A sqrt(2/K) * sum_k |a_ok| <= A sqrt(2K) * 6.8; noise <= sigma * 6.8.
    assert np.all(np.abs(one.f) <= p.amplitude * np.sqrt(2 * p.n_features) * 6.8)
    assert np.all(np.abs(one.y - one.f) <= p.noise_std * 6.8 + 1e-5)
    for a, b in ((one.x, two.x), (one.f, two.f), (one.y, two.y)):
        np.testing.assert_array_equal(a, b)
    if isinstance(seed, int):
        np.testing.assert_array_equal(generate_instance(str(seed), profile).y, one.y)
