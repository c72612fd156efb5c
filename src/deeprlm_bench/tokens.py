"""How the benchmarks count tokens and spell lengths.

Generators must hit a target length without a tokenizer (none can be downloaded here, and
each model splits text its own way), so a token is the library's estimate, four characters
(`deeprlm.textutil.estimate_tokens`). Every length in `deeprlm bench` — the target a generator
aims for, the `--lengths` grid, the lengths in reports — uses this count.
Lengths are spelled with binary suffixes, as the paper's grid is powers of two: `8k` is 8,192
tokens, `1m` is 1,048,576.
"""

from __future__ import annotations

import re

from deeprlm.errors import InputError
from deeprlm.textutil import CHARS_PER_TOKEN

_SUFFIX = {"": 1, "k": 1024, "m": 1024 * 1024}
_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def chars_for(tokens: int) -> int:
    return tokens * CHARS_PER_TOKEN


def parse_length(spec: str) -> int:
    """`"8k"` -> 8192, `"1m"` -> 1048576, `"5000"` -> 5000."""
    match = _LENGTH.match(spec)
    if not match:
        raise InputError(f"bad length {spec!r}: use a number with an optional k or m, e.g. 8k")
    value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if value < 1 or value != int(value):
        raise InputError(f"bad length {spec!r}: it must be a whole number of tokens")
    return int(value)


def format_length(tokens: int) -> str:
    """The shortest spelling `parse_length` reads back: 8192 -> "8k"."""
    for suffix in ("m", "k"):
        unit = _SUFFIX[suffix]
        if tokens % unit == 0:
            return f"{tokens // unit}{suffix}"
    return str(tokens)
