"""`records` and `parse_date`: a text of one record per line, as rows a model can filter.

`records(text)` finds the separator between fields (" || ", " | ", a tab, ...) from the
lines themselves and gives one dict per line: a field written `Name: value` is keyed by
its name, an unnamed one by its position (`field1`, `field2`, ...). Lines that do not
follow the format are skipped, and counted in the result's `skipped`. `parse_date` reads
the date formats records are written in, so a date range is one comparison. Standard
library only: this runs inside the REPL's process.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

SEPARATORS = (" || ", " | ", "\t", " ; ", "; ", " :: ")
SAMPLE_LINES = 400
_NAMED = re.compile(r"^([A-Za-z][\w .'/-]{0,30}?):\s?(.*)$", re.DOTALL)
_DATE_FORMATS = (
    "%Y-%m-%d",
    "%b %d, %Y",
    "%B %d, %Y",
    "%b %d %Y",
    "%B %d %Y",
    "%d %b %Y",
    "%d %B %Y",
    "%m/%d/%Y",
    "%Y/%m/%d",
    "%d.%m.%Y",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%b %Y",
    "%B %Y",
    "%Y",
)


def find_separator(lines: Sequence[str]) -> tuple[str, int] | None:
    """The separator that splits (nearly) every line into the same number of fields, and
    that number; None when no separator does."""
    filled = [line for line in lines if line.strip()]
    if not filled:
        return None
    for separator in SEPARATORS:
        counts = Counter(line.count(separator) for line in filled)
        splits, share = counts.most_common(1)[0]
        if splits and share >= 0.9 * len(filled):
            return separator, splits + 1
    return None


class Row(dict[str, str]):
    """One record: a dict whose missing field says which fields there are (a small model
    guesses field names from the question)."""

    def __missing__(self, key: str) -> str:
        raise KeyError(f"{key!r}: the records have no such field; their fields are {list(self)}")


class Rows(list[dict[str, str]]):
    """The rows of `records`: a list of dicts, plus the field names (`fields`) and how
    many lines were left out for not following the format (`skipped`)."""

    def __init__(self, rows: list[dict[str, str]], fields: list[str], skipped: int) -> None:
        super().__init__(rows)
        self.fields = fields
        self.skipped = skipped

    def __repr__(self) -> str:
        head = f"{len(self)} records with fields {self.fields}"
        if self.skipped:
            head += f" ({self.skipped} lines did not follow the format)"
        shown = "\n".join(repr(row) for row in self[:3])
        more = f"\n... and {len(self) - 3} more" if len(self) > 3 else ""
        return f"{head}\n{shown}{more}"

    __str__ = __repr__


def records(text: Any, separator: str | None = None) -> Rows:
    """One dict per line of `text`; see the module's description. `separator` overrides
    the one found."""
    if isinstance(text, (list, tuple)):
        lines = [str(line) for line in text]
    elif isinstance(text, str):
        lines = text.splitlines()
    else:
        raise TypeError(f"records: takes a str (or a list of lines), not {type(text).__name__}")
    if separator is None:
        found = find_separator(lines[:SAMPLE_LINES])
        if found is None:
            raise ValueError(
                "records: found no separator between fields (tried "
                + ", ".join(repr(s) for s in SEPARATORS)
                + "); pass one, as in records(context, separator=',')"
            )
        separator, width = found
    else:
        counts = Counter(line.count(separator) for line in lines[:SAMPLE_LINES] if line.strip())
        if not counts:
            raise ValueError("records: the text has no lines")
        width = counts.most_common(1)[0][0] + 1
    names = _names([line.split(separator) for line in lines[:SAMPLE_LINES] if line.strip()], width)
    rows: list[dict[str, str]] = []
    skipped = 0
    for line in lines:
        if not line.strip():
            continue
        parts = line.split(separator)
        if len(parts) != width:
            skipped += 1
            continue
        rows.append(
            Row((name, _value(part, name)) for name, part in zip(names, parts, strict=True))
        )
    return Rows(rows, names, skipped)


def _names(rows: list[list[str]], width: int) -> list[str]:
    """Each column's name: the `Name:` its values share, else `field<N>`."""
    names = []
    for column in range(width):
        found: Counter[str | None] = Counter()
        for parts in rows:
            if len(parts) == width:
                match = _NAMED.match(parts[column].strip())
                found[match.group(1) if match else None] += 1
        name, share = found.most_common(1)[0] if found else (None, 0)
        total = sum(found.values())
        names.append(name if name and share >= 0.9 * total else f"field{column + 1}")
    return [_unique(name, names[:i]) for i, name in enumerate(names)]


def _unique(name: str, before: list[str]) -> str:
    return name if name not in before else f"{name}_{before.count(name) + 1}"


def _value(part: str, name: str) -> str:
    text = part.strip()
    if not name.startswith("field"):
        base = name.rsplit("_", 1)[0] if re.search(r"_\d+$", name) else name
        if text.startswith(f"{base}:"):
            return text[len(base) + 1 :].strip()
    return text


def parse_date(text: Any) -> dt.date:
    """The date in `text` ("Mar 04, 2023", "2023-03-04", "4 March 2023", "03/04/2023"
    read month first, ...). A datetime or date is returned as a date."""
    if isinstance(text, dt.datetime):
        return text.date()
    if isinstance(text, dt.date):
        return text
    cleaned = re.sub(r"\s+", " ", str(text).strip().removeprefix("Date:").strip())
    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", cleaned)
    for form in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(cleaned, form).date()
        except ValueError:
            continue
    raise ValueError(f"parse_date: cannot read {str(text)[:60]!r} as a date")


def records_for_repl(namespace: Mapping[str, Any]) -> Callable[..., Rows]:
    """`records` as the REPL has it: with no text given, the REPL's `context`."""

    def records_in_repl(text: Any = None, separator: str | None = None) -> Rows:
        return records(namespace.get("context") if text is None else text, separator)

    records_in_repl.__name__ = records_in_repl.__qualname__ = "records"
    records_in_repl.__doc__ = records.__doc__
    return records_in_repl


def parse_date_for_repl(namespace: Mapping[str, Any]) -> Callable[[Any], dt.date]:
    return parse_date
