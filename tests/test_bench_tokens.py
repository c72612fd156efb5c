"""Length spelling and the token estimate."""

import pytest

from deeprlm.errors import InputError
from deeprlm.textutil import estimate_tokens
from deeprlm_bench.tokens import format_length, parse_length


@pytest.mark.parametrize(
    ("spec", "tokens"),
    [("8k", 8192), ("8K", 8192), ("1m", 1048576), ("10m", 10485760), ("5000", 5000), ("0.5k", 512)],
)
def test_parse_length(spec, tokens):
    assert parse_length(spec) == tokens


@pytest.mark.parametrize("spec", ["", "8q", "k", "-3k", "0", "0.3"])
def test_bad_lengths_are_input_errors(spec):
    with pytest.raises(InputError):
        parse_length(spec)


@pytest.mark.parametrize("tokens", [8192, 131072, 1048576, 5000, 3000])
def test_format_length_round_trips(tokens):
    assert parse_length(format_length(tokens)) == tokens


def test_estimate_tokens_is_four_characters_rounded_up():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
