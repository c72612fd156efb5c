"""`search`: find words or a regex in a context of any shape, as compact hits.

A small model writes different code for a str, a list and a dict context and often gets
one of them wrong; `search(query, where)` takes all three (and any str, list or dict of
str it made itself) and returns the same thing: `Hit`s that say where (the dict key or
list index, the line, the character offset) and show a window of whole lines around the
match.

A plain query is a set of words, matched case-insensitively inside one line. Lines holding
every word are the hits; when no line holds them all, the lines holding the most of them
are, and the header says how many of the words matched, so a query copied from a question
still finds its answer; a dotted name found nowhere (`pkg.mod.f`) is looked for by its
last part (`f`), as code calls it. A regex (`regex=True`, or a query that is plainly one) gives one
hit per match. Only the standard library is used: this runs inside the REPL's process.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_WINDOW = 200
DEFAULT_LIMIT = 10
# Words too common to say anything about where an answer is.
STOP_WORDS = frozenset(
    re.findall(
        r"\w+",
        "a an and are as at be by did do does for from has have how in is it its of on or "
        "the to was were what when where which who whom whose why with",
    )
)
_WORD = re.compile(r"[^\s\"'`,;:!?()\[\]{}<>]+")
# A line that opens a definition in code (Python, JavaScript, Go, Rust, shell, ...).
_DEFINITION = re.compile(
    r"^([ \t]*)(?:async\s+)?(?:def|class|function|func|fn|sub|interface|struct|impl)\s+"
    r"([A-Za-z_$][\w$]*)"
)
_SCOPE_LINES = 300  # how far up a definition is looked for
_REGEX_MARKS = re.compile(r"\\[a-zA-Z.\\()\[\]|*+?]|\.\*|\.\+|\[[^\]]+\]|\(\?|\{\d+(,\d*)?\}")


@dataclass(frozen=True)
class Hit:
    """One place a query matched. `key` is the dict key or list index of the text it is in
    (None for a str context); `line` is 1-based within that text; `offset` is the match's
    character offset within that text; `text` holds the whole lines around it."""

    key: str | int | None
    line: int
    offset: int
    match: str
    text: str
    # In code: the function or class the match is in (the nearest definition above it
    # that is less indented), else None.
    scope: str | None = None

    def __getitem__(self, field: str | int) -> Any:
        """`hit["text"]` as well as `hit.text`, and `hit[0]`, `hit[1]` as the pair (where,
        text): small models write all three, the last from their own searches that
        collected `(index, line)` tuples."""
        if isinstance(field, int) and -2 <= field < 2:
            return (self.key, self.text)[field]
        if field in _HIT_FIELDS:
            return getattr(self, field)
        raise KeyError(f"{field!r}: a hit has {', '.join(_HIT_FIELDS)}, or is a pair (key, text)")

    def __iter__(self) -> Iterator[Any]:
        """`key, text = hit`."""
        return iter((self.key, self.text))

    def __str__(self) -> str:
        place = _place(self.key, f"line {self.line}, offset {self.offset}", self.scope)
        return f"{place}\n{self.text}"


_HIT_FIELDS = ("key", "line", "offset", "match", "text", "scope")


def _place(key: str | int | None, where: str, scope: str | None) -> str:
    """Where a hit is, as printed: its key, its line(s) and the function it is in. In a
    Python file, also by the dotted name that code and questions use (`pkg.mod.func`,
    `module pkg.mod`): shown a file and a function, the 1.5B root matched them to the wrong
    one of a question's dotted choices."""
    module = _module_name(key)
    if key is not None:
        where = f"{key!r}, {where}"
    if scope:
        where += f", in {module}.{scope}" if module else f", in {scope}"
    elif module:
        where += f", in module {module}"
    return f"[{where}]"


def _module_name(key: str | int | None) -> str | None:
    if not isinstance(key, str) or not key.endswith(".py"):
        return None
    path = key.removesuffix(".py").removesuffix("/__init__").strip("/")
    parts = path.split("/")
    return ".".join(parts) if all(part.isidentifier() for part in parts) else None


@dataclass(frozen=True)
class _Block:
    """What the printout shows for hits whose windows overlap: their lines, once."""

    key: str | int | None
    lines: tuple[int, ...]
    text: str
    scope: str | None = None

    def __str__(self) -> str:
        if len(self.lines) == 1:
            where = f"line {self.lines[0]}"
        else:
            where = f"lines {', '.join(map(str, self.lines))} ({len(self.lines)} hits)"
        return f"{_place(self.key, where, self.scope)}\n{self.text}"


class Hits(list[Hit]):
    """The hits of one search: a list, plus how many there were in all (`total`, which can
    exceed the hits kept) and how the query matched (`how`). Printed, hits whose windows
    overlap share one window."""

    def __init__(
        self,
        hits: Iterable[Hit],
        *,
        total: int,
        how: str,
        query: str,
        blocks: Iterable[_Block] = (),
    ) -> None:
        super().__init__(hits)
        self.total = total
        self.how = how
        self.query = query
        self.blocks = list(blocks) or [_Block(h.key, (h.line,), h.text) for h in self]

    def header(self) -> str:
        shown = f", showing the first {len(self)}" if len(self) < self.total else ""
        noun = "hit" if self.total == 1 else "hits"
        return f"{self.total} {noun} for {self.query!r} ({self.how}){shown}"

    def __repr__(self) -> str:
        return "\n".join([self.header(), *(str(block) for block in self.blocks)])

    __str__ = __repr__


class _Collector:
    """Builds hits and the blocks they print as, merging windows that overlap."""

    def __init__(self, window: int, limit: int | None) -> None:
        self.window = window
        self.limit = limit
        self.hits: list[Hit] = []
        self.blocks: list[_Block] = []
        self.total = 0
        self._open: tuple[str | int | None, _Lines, int, int, list[int], str | None] | None = None

    def add(self, key: str | int | None, lines: _Lines, start: int, end: int) -> None:
        self.total += 1
        if self.limit is not None and len(self.hits) >= self.limit:
            return
        lo, hi = lines.span(start, end, self.window)
        line = lines.index(start) + 1
        text = lines.text
        scope = lines.scope(line - 1)
        window = text[lo:hi].strip("\n")
        self.hits.append(Hit(key, line, start, text[start:end], window, scope))
        current = self._open
        if (
            current is not None
            and current[0] == key
            and current[1] is lines
            and lo <= current[3]
            and current[5] == scope
        ):
            self._open = (key, lines, current[2], max(hi, current[3]), [*current[4], line], scope)
            return
        self._close()
        self._open = (key, lines, lo, hi, [line], scope)

    def _close(self) -> None:
        if self._open is not None:
            key, lines, lo, hi, numbers, scope = self._open
            block_lines = tuple(dict.fromkeys(numbers))
            self.blocks.append(_Block(key, block_lines, lines.text[lo:hi].strip("\n"), scope))
            self._open = None

    def result(self, how: str, query: str) -> Hits:
        self._close()
        return Hits(self.hits, total=self.total, how=how, query=query, blocks=self.blocks)


def search(
    query: Any,
    where: Any = None,
    *,
    regex: bool | None = None,
    window: int = DEFAULT_WINDOW,
    limit: int | None = DEFAULT_LIMIT,
) -> Hits:
    """Hits for `query` in `where` (a str, a list of str or a dict of str -> str).

    `query` is words (a str or a list of str) or a regex; `regex=None` treats it as a regex
    only when it plainly is one (`\\d`, `.*`, `[...]`, ...). `window` is about how many
    characters to show around each match; `limit` caps the hits returned (None: all).
    """
    query, where = _arguments(query, where)
    if window < 0:
        raise ValueError(f"search: window must be 0 or more, got {window}")
    if limit is not None and limit < 0:
        raise ValueError(f"search: limit must be 0 or more, got {limit}")
    texts = list(_texts(where))
    if isinstance(query, str) and (regex or (regex is None and _looks_like_regex(query))):
        try:
            pattern = re.compile(query, re.IGNORECASE | re.MULTILINE)
        except re.error as exc:
            if regex:
                raise ValueError(f"search: bad regex {query!r}: {exc}") from None
        else:
            return _regex_hits(pattern, query, texts, window, limit)
    words = _query_words(query)
    if not words:
        raise ValueError("search: the query has no words to look for")
    shown = query if isinstance(query, str) else " ".join(words)
    hits = _word_hits(words, shown, texts, window, limit)
    if hits.total == 0 and any("." in word for word in words):
        # Code names a function by its last part where it calls it (`weigh_total(`), not by
        # the dotted path a question gives (`shop.routes.weigh_total`).
        short = [word.rsplit(".", 1)[-1] for word in words]
        hits = _word_hits(list(dict.fromkeys(short)), shown, texts, window, limit)
        hits.how = f"nothing matched the dotted names; these match {' '.join(short)!r}"
    return hits


def for_repl(namespace: Mapping[str, Any]) -> Callable[..., Hits]:
    """`search` as the REPL has it: `where` defaults to the REPL's `context`."""

    def search_in_repl(
        query: Any,
        where: Any = None,
        *,
        regex: bool | None = None,
        window: int = DEFAULT_WINDOW,
        limit: int | None = DEFAULT_LIMIT,
    ) -> Hits:
        if where is None and not _haystack_like(query):
            where = namespace.get("context")
        return search(query, where, regex=regex, window=window, limit=limit)

    search_in_repl.__name__ = search_in_repl.__qualname__ = "search"
    search_in_repl.__doc__ = search.__doc__
    return search_in_repl


def _arguments(query: Any, where: Any) -> tuple[Any, Any]:
    """Accepts `search(context, "word")` as well: small models put the haystack first."""
    if where is None:
        raise TypeError("search: say where to look, as in search('word', context)")
    if _haystack_like(query) and not _haystack_like(where):
        return where, query
    return query, where


def _haystack_like(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    if isinstance(value, (list, tuple)):
        return len(value) > 20 or any(len(str(v)) >= 80 for v in value)
    return isinstance(value, str) and len(value) > 1_000


def _texts(where: Any) -> Iterator[tuple[str | int | None, str]]:
    if isinstance(where, str):
        yield None, where
    elif isinstance(where, dict):
        for key, value in where.items():
            yield key, value if isinstance(value, str) else str(value)
    elif isinstance(where, (list, tuple)):
        for index, value in enumerate(where):
            yield index, value if isinstance(value, str) else str(value)
    else:
        raise TypeError(f"search: can look in a str, a list or a dict, not {type(where).__name__}")


def _looks_like_regex(query: str) -> bool:
    return bool(_REGEX_MARKS.search(query))


def _query_words(query: Any) -> list[str]:
    raw = query if isinstance(query, (list, tuple)) else _WORD.findall(str(query))
    words = [str(w).strip(".").lower() for w in raw]
    words = [w for w in dict.fromkeys(words) if w]
    kept = [w for w in words if w not in STOP_WORDS and len(w) > 1]
    return kept or words


class _Lines:
    """Line numbers and line bounds of one text, from its newline positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.breaks = [m.start() for m in re.finditer("\n", text)]

    def index(self, offset: int) -> int:
        """0-based line of a character offset."""
        return bisect.bisect_right(self.breaks, offset - 1) if self.breaks else 0

    def start(self, line: int) -> int:
        return 0 if line == 0 else self.breaks[line - 1] + 1

    def end(self, line: int) -> int:
        return self.breaks[line] if line < len(self.breaks) else len(self.text)

    def line_text(self, line: int) -> str:
        return self.text[self.start(line) : self.end(line)]

    def scope(self, line: int) -> str | None:
        """The qualified name of the definition that encloses 0-based `line`, if any
        (`Sender.send`): the nearest definition line above it that is less indented (or
        the line itself), then each one enclosing that."""
        names: list[str] = []
        own = self.line_text(line)
        indent = len(own) - len(own.lstrip()) if own.strip() else 0
        match = _DEFINITION.match(own)
        if match:
            names.append(match.group(2))
        for above in range(line - 1, max(-1, line - _SCOPE_LINES), -1):
            if indent == 0:
                break
            text = self.line_text(above)
            if not text.strip():
                continue
            depth = len(text) - len(text.lstrip())
            if depth < indent:
                match = _DEFINITION.match(text)
                if match:
                    names.append(match.group(2))
                indent = depth
        return ".".join(reversed(names)) or None

    def span(self, start: int, end: int, size: int) -> tuple[int, int]:
        """Whole lines around [start, end), about `size` characters in all; a line too long
        to show whole is cut."""
        half = size // 2
        lo, hi = max(0, start - half), min(len(self.text), end + half)
        first, last = self.index(lo), self.index(max(lo, hi - 1))
        line_lo, line_hi = self.start(first), self.end(last)
        lo = line_lo if lo - line_lo <= half else lo
        hi = line_hi if line_hi - hi <= half else hi
        return lo, hi


def _regex_hits(
    pattern: re.Pattern[str],
    query: str,
    texts: list[tuple[str | int | None, str]],
    window: int,
    limit: int | None,
) -> Hits:
    collector = _Collector(window, limit)
    for key, text in texts:
        lines: _Lines | None = None
        for match in pattern.finditer(text):
            lines = lines or _Lines(text)
            collector.add(key, lines, *match.span())
    return collector.result("regex", query)


def _word_hits(
    words: list[str],
    query: str,
    texts: list[tuple[str | int | None, str]],
    window: int,
    limit: int | None,
) -> Hits:
    # Per text: line -> (words found on it, first match offset, its end).
    found: list[tuple[str | int | None, _Lines, dict[int, tuple[set[str], int, int]]]] = []
    best = 0
    for key, text in texts:
        lines: _Lines | None = None
        per_line: dict[int, tuple[set[str], int, int]] = {}
        for word in words:
            for match in re.finditer(re.escape(word), text, re.IGNORECASE):
                lines = lines or _Lines(text)
                line = lines.index(match.start())
                seen, first, end = per_line.get(line, (set(), match.start(), match.end()))
                seen.add(word)
                if match.start() < first:
                    first, end = match.start(), match.end()
                per_line[line] = (seen, first, end)
        if per_line and lines is not None:
            best = max(best, max(len(seen) for seen, _, _ in per_line.values()))
            found.append((key, lines, per_line))
    collector = _Collector(window, limit)
    for key, lines, per_line in found:
        for line in sorted(per_line):
            seen, first, end = per_line[line]
            if len(seen) == best:
                collector.add(key, lines, first, end)
    if len(words) == 1 or best == len(words):
        how = "every word on one line" if len(words) > 1 else "case-insensitive"
    else:
        how = f"no line has every word; these lines have {best} of the {len(words)}"
    return collector.result(how, query)
