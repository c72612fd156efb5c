"""`chunk_text`: split a context into pieces for sub-calls without cutting a record in two.

A record is a line, or a block of lines between blank lines when the text is written that
way (documents, paragraphs); a list item or a dict entry is a record of its own. Chunks
are whole records packed up to `size` (characters, or lines with `by="lines"`), and may
repeat the last records of the previous chunk (`overlap`) so that something spanning two
records is seen whole at least once. A single record longer than `size` is split at line
ends, and a single line longer than `size` at `size`, as the last resort. Standard library
only: this runs inside the REPL's process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_SIZE = 8_000
BY = ("chars", "lines")


def chunk_text(
    text: Any,
    size: int = DEFAULT_SIZE,
    overlap: int = 0,
    *,
    by: str = "chars",
    separator: str | None = None,
) -> list[str]:
    """Chunks of `text` (a str, a list of str or a dict of str -> str), records kept whole.

    `size` and `overlap` count characters, or lines with `by="lines"`. `separator` is what
    ends a record ("\\n" or "\\n\\n"); None picks blank lines when the text is made of
    blocks, else lines. Dict entries start with their key, as `# key`.
    """
    if by not in BY:
        raise ValueError(f"chunk_text: by must be 'chars' or 'lines', not {by!r}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"chunk_text: size must be a positive whole number, got {size!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < size:
        raise ValueError(f"chunk_text: overlap must be from 0 to size - 1, got {overlap!r}")
    records = _records(text, separator)
    pieces = [piece for record in records for piece in _fit(record, size, by)]
    return _pack(pieces, size, overlap, by)


def _records(text: Any, separator: str | None) -> list[str]:
    if isinstance(text, str):
        sep = separator or _separator(text)
        parts = text.split(sep)
        # Each record keeps its separator, so the chunks join back into the text.
        records = [part + sep for part in parts[:-1]] + [parts[-1]]
        return [r for r in records if r]
    if isinstance(text, dict):
        return [f"# {key}\n{value}\n\n" for key, value in text.items()]
    if isinstance(text, (list, tuple)):
        return [f"{item}\n\n" for item in text]
    raise TypeError(f"chunk_text: takes a str, a list or a dict, not {type(text).__name__}")


def _separator(text: str) -> str:
    """Blank lines when they split the text into blocks of several lines, else lines."""
    blocks = text.count("\n\n")
    lines = text.count("\n")
    return "\n\n" if blocks >= 2 and lines < 6 * blocks else "\n"


def _measure(piece: str, by: str) -> int:
    return len(piece) if by == "chars" else max(1, piece.count("\n") + (not piece.endswith("\n")))


def _fit(record: str, size: int, by: str) -> list[str]:
    """The record itself when it fits, else its lines (and a line too long, in slices)."""
    if _measure(record, by) <= size:
        return [record]
    pieces: list[str] = []
    for line in record.splitlines(keepends=True):
        if by == "chars" and len(line) > size:
            pieces.extend(line[i : i + size] for i in range(0, len(line), size))
        else:
            pieces.append(line)
    return pieces


def _pack(pieces: list[str], size: int, overlap: int, by: str) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for piece in pieces:
        cost = _measure(piece, by)
        if current and used + cost > size:
            chunks.append("".join(current))
            current, used = _tail(current, overlap, by, room=size - cost)
        current.append(piece)
        used += cost
    if current:
        chunks.append("".join(current))
    return [chunk.rstrip("\n") for chunk in chunks]


def _tail(pieces: list[str], overlap: int, by: str, room: int) -> tuple[list[str], int]:
    """The last pieces of a chunk, at most `overlap` in size, to open the next chunk with;
    never so many that the next piece would not fit beside them."""
    tail: list[str] = []
    used = 0
    for piece in reversed(pieces):
        cost = _measure(piece, by)
        if used + cost > min(overlap, room):
            break
        tail.insert(0, piece)
        used += cost
    return tail, used


def for_repl(namespace: Mapping[str, Any]) -> Callable[..., list[str]]:
    """`chunk_text` as the REPL has it (the function itself: it needs nothing of the
    REPL's namespace)."""
    return chunk_text
