"""Small text helpers shared by the engine, the REPL and the trace: clipping long text."""

from __future__ import annotations


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
