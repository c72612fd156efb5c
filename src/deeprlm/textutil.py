"""Small text helpers shared by the engine, the REPL, the trace and the benchmarks: clipping
long text, and the one token estimate used where no tokenizer is at hand."""

from __future__ import annotations

import math

# Characters per token: the usual rate for English prose under BPE tokenizers. Every count
# made without a model's own tokenizer uses it (benchmark lengths, scripted usage, what
# one sub-call can read), so that they all agree.
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Tokens in `text` by the estimate: CHARS_PER_TOKEN characters of ASCII a token, rounded
    up, and a token for every other character (CJK text, emoji and accented letters take
    about one each, or more, in vocabularies built mostly from English)."""
    if text.isascii():
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / CHARS_PER_TOKEN) + len(text) - ascii_chars


def cut_note(cut: int) -> str:
    return f"\n... [{cut:,} characters cut] ...\n"


def clip(text: str, limit: int) -> str:
    """Keeps the head (two thirds) and the tail (one third) of `text` within `limit` chars,
    with a note of how much was cut in between. The tail matters: errors print last."""
    if limit <= 0 or len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return text[:head] + cut_note(len(text) - limit) + (text[-tail:] if tail else "")
