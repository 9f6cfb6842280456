"""Seed parsing: 64 hex digits are raw bytes, anything else is hashed."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nnopt.seeds import Seed, derive_seeds, parse_seed

HEX = "00112233445566778899aabbccddeeff" * 2


def test_hex_seed_is_taken_as_raw_bytes() -> None:
    seed = parse_seed(HEX)
    assert bytes(seed) == bytes.fromhex(HEX)
    assert seed.text == HEX
    assert parse_seed(HEX.upper()) == seed
    assert parse_seed(HEX.upper()).text == HEX


def test_u64_is_the_first_eight_bytes_little_endian() -> None:
    assert parse_seed(HEX).u64 == 0x7766554433221100
    assert parse_seed("ff" + "00" * 31).u64 == 255


def test_text_seed_is_hashed() -> None:
    seed = parse_seed("hello")
    assert bytes(seed) == hashlib.sha256(b"hello").digest()
    assert seed.text == "hello"


def test_integer_and_its_text_name_the_same_seed() -> None:
    assert parse_seed(7) == parse_seed("7") == parse_seed(" 7 ")
    assert parse_seed(7) != parse_seed(8)


def test_almost_hex_is_hashed() -> None:
    assert bytes(parse_seed(HEX[:-1])) == hashlib.sha256(HEX[:-1].encode()).digest()
    assert bytes(parse_seed(HEX + "0")) == hashlib.sha256((HEX + "0").encode()).digest()


def test_bytes_and_seeds_pass_through() -> None:
    raw = bytes(range(32))
    seed = parse_seed(raw)
    assert bytes(seed) == raw
    assert parse_seed(seed) is seed
    assert repr(seed) == f"Seed({raw.hex()!r})"


@given(st.text())
def test_any_text_gives_32_bytes(text) -> None:
    if not text.strip():
        with pytest.raises(ValueError, match="seed is empty"):
            parse_seed(text)
        return
    seed = parse_seed(text)
    assert len(seed) == 32
    stripped = text.strip()
    if len(stripped) == 64 and all(c in "0123456789abcdefABCDEF" for c in stripped):
        assert bytes(seed) == bytes.fromhex(stripped)
    else:
        assert bytes(seed) == hashlib.sha256(stripped.encode()).digest()
    assert parse_seed(text) == seed


@given(st.binary(min_size=32, max_size=32))
def test_hex_round_trip(raw) -> None:
    assert bytes(parse_seed(raw.hex())) == raw
    assert parse_seed(raw.hex()).u64 == int.from_bytes(raw[:8], "little")


@pytest.mark.parametrize("value", [True, 1.5, None, [1]])
def test_wrong_types_raise_type_error(value) -> None:
    with pytest.raises(TypeError, match="seed must be a string or an integer"):
        parse_seed(value)


@pytest.mark.parametrize("raw", [b"", b"x" * 31, b"x" * 33])
def test_wrong_byte_length_raises(raw) -> None:
    with pytest.raises(ValueError, match="a seed is 32 bytes"):
        Seed(raw)


def test_derive_seeds() -> None:
    seeds = derive_seeds("bench", 3)
    assert seeds == ["bench-0", "bench-1", "bench-2"]
    assert len({bytes(parse_seed(s)) for s in seeds}) == 3
    with pytest.raises(ValueError, match="at least 1"):
        derive_seeds("bench", 0)
