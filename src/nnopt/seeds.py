"""Instance seeds.

TIG identifies an instance by 32 raw bytes. Users rarely have those at hand,
so :func:`parse_seed` accepts two spellings:

* exactly 64 hexadecimal digits: taken as the raw 32 bytes, so seeds copied
  from TIG reproduce TIG's instance;
* anything else (a decimal integer, a word, ...): its UTF-8 text is hashed
  with SHA-256 to 32 bytes. ``"7"`` and ``7`` name the same seed.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["Seed", "derive_seeds", "parse_seed"]

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class Seed(bytes):
    """32 raw seed bytes that remember how the user spelled them."""

    text: str

    def __new__(cls, raw: bytes, text: str | None = None) -> Seed:
        if len(raw) != 32:
            raise ValueError(f"a seed is 32 bytes, got {len(raw)}")
        obj = super().__new__(cls, raw)
        obj.text = raw.hex() if text is None else text
        return obj

    @property
    def u64(self) -> int:
        """The first 8 bytes, little-endian, as TIG's generator reads them."""
        return int.from_bytes(self[:8], "little")

    def __repr__(self) -> str:
        return f"Seed({self.text!r})"


def parse_seed(value: str | int | bytes) -> Seed:
    """Turn a user's seed into 32 bytes (see the module docstring for the rules)."""
    if isinstance(value, Seed):
        return value
    if isinstance(value, bytes):
        return Seed(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(
            f"seed must be a string or an integer, got {type(value).__name__}"
        )
    text = str(value).strip()
    if not text:
        raise ValueError("seed is empty: pass 64 hex digits or any non-empty text")
    if _HEX64.match(text):
        return Seed(bytes.fromhex(text), text.lower())
    return Seed(hashlib.sha256(text.encode("utf-8")).digest(), text)


def derive_seeds(base: str, count: int) -> list[str]:
    """``count`` seed strings derived deterministically from ``base``."""
    if count < 1:
        raise ValueError(f"seed count must be at least 1, got {count}")
    return [f"{base}-{i}" for i in range(count)]
