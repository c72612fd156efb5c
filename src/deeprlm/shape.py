"""The structure of a context, as the root model is told it: the tree of a dict's keys and
the format of a text's lines.

A model that sees only "a dict of 120 texts" and the first 30 keys cannot tell which
folder holds the service a question names; a model that sees only the head of a text
guesses how its records split. So a dict's keys are shown as folders with how many files
each holds (and the files themselves where there are few), a text's lines as a record
format when one repeats (`Date: <date> || User: <number> || Instance: <text>`) or as blocks
separated by blank lines when it is written that way, and a list by how its items begin.
Only the first lines are read, so describing a context of any size stays cheap.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from deeprlm.primitives.records import find_separator

TREE_LINES = 24  # lines of a folder tree, at most
FILES_SHOWN = 6  # file names listed under a folder, at most
SAMPLE_LINES = 400  # lines looked at to find a record format
_FIELD_NAME = re.compile(r"^([A-Za-z][\w .'/-]{0,30}?):\s?(.*)$")
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
# The forms of a date a field or a question writes (match case-insensitively).
DATE_PATTERN = (
    rf"\d{{4}}-\d{{1,2}}-\d{{1,2}}(?:[T ][\d:.]+Z?)?|\d{{1,2}}/\d{{1,2}}/\d{{2,4}}|"
    rf"{_MONTH} \d{{1,2}},? \d{{4}}|\d{{1,2}} {_MONTH} \d{{4}}"
)
_DATE = re.compile(rf"^(?:{DATE_PATTERN})$", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?\d[\d,_]*(?:\.\d+)?$")


# --- folders -----------------------------------------------------------------------------


@dataclass
class _Folder:
    files: list[str] = field(default_factory=list)
    folders: dict[str, _Folder] = field(default_factory=dict)

    def count(self) -> int:
        return len(self.files) + sum(f.count() for f in self.folders.values())


def folder_tree(keys: Iterable[str]) -> str:
    """The keys as a tree of folders with their file counts, `TREE_LINES` lines at most.
    Empty when the keys are not paths (no '/' in any)."""
    keys = list(keys)
    if not any("/" in key for key in keys):
        return ""
    root = _Folder()
    for key in keys:
        *parts, name = key.strip("/").split("/")
        node = root
        for part in parts:
            node = node.folders.setdefault(part, _Folder())
        node.files.append(name)
    lines: list[str] = []
    for depth in range(1, 8):
        lines = []
        _draw(root, 0, depth, lines)
        if len(lines) > TREE_LINES:
            if depth > 1:
                lines = []
                _draw(root, 0, depth - 1, lines)
            break
        if not _deeper(root, depth):
            break
    if len(lines) > TREE_LINES:
        cut = len(lines) - TREE_LINES
        lines = [*lines[:TREE_LINES], f"... and {cut} more folders"]
    return "\n".join(lines)


def _deeper(node: _Folder, depth: int) -> bool:
    if depth == 0:
        return bool(node.folders)
    return any(_deeper(child, depth - 1) for child in node.folders.values())


def _draw(node: _Folder, indent: int, depth: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, child in sorted(node.folders.items()):
        count = child.count()
        entry = f"{pad}{name}/ ({count} file{'s' if count != 1 else ''})"
        if depth > 1 and child.folders:
            lines.append(entry)
            _draw(child, indent + 1, depth - 1, lines)
            if child.files:
                lines.append(f"{pad}  {_files(child.files)}")
        elif not child.folders and child.files:
            lines.append(f"{entry}: {_files(child.files)}")
        else:
            lines.append(entry)
    if indent == 0 and node.files:
        lines.append(_files(node.files))


def _files(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:FILES_SHOWN])
    more = len(names) - FILES_SHOWN
    return f"{shown}, and {more} more" if more > 0 else shown


# --- lines -------------------------------------------------------------------------------


def line_format(text: str) -> str:
    """How the text's lines look, in a sentence or two; empty when nothing repeats."""
    lines = text.split("\n", SAMPLE_LINES + 1)[:SAMPLE_LINES]
    filled = [line for line in lines if line.strip()]
    if len(filled) < 3:
        return ""
    record = _record_format(filled)
    if record:
        return f"One record per line, like: {record}"
    blocks = text.count("\n\n")
    if blocks >= 2 and len(filled) < len(lines) * 0.9:
        return f"Blocks of lines separated by blank lines (about {blocks + 1:,} blocks)."
    return ""


def item_format(items: Sequence[str]) -> str:
    """What the items of a list look like: their usual number of lines, and how the first
    few begin."""
    if not items:
        return ""
    counts = sorted(item.count("\n") + 1 for item in items[:SAMPLE_LINES])
    typical = counts[len(counts) // 2]
    firsts = [item.strip().split("\n", 1)[0][:60] for item in items[:3]]
    shape = "one line" if typical == 1 else f"{typical} lines"
    begins = "; ".join(repr(first) for first in firsts)
    return f"Items are usually {shape} long; the first ones begin: {begins}."


def _record_format(lines: Sequence[str]) -> str:
    found = find_separator(lines)
    if found is not None:
        separator, width = found
        rows = [parts for line in lines if len(parts := line.split(separator)) == width]
        columns = list(zip(*rows, strict=True))
        return separator.join(_describe_column(column) for column in columns)
    # No separator: records may still be "Name: value" lines.
    names = Counter(m.group(1) for line in lines if (m := _FIELD_NAME.match(line)))
    if names and sum(names.values()) >= 0.9 * len(lines) and len(names) == 1:
        name = next(iter(names))
        return f"{name}: {_kind([_FIELD_NAME.match(line).group(2) for line in lines])}"  # type: ignore[union-attr]
    return ""


def _describe_column(values: Sequence[str]) -> str:
    """`Name: <kind>` when every value is named alike, else `<kind>`."""
    matches = [_FIELD_NAME.match(value.strip()) for value in values]
    names = {m.group(1) for m in matches if m}
    if len(names) == 1 and all(matches):
        name = names.pop()
        return f"{name}: {_kind([m.group(2) for m in matches if m])}"
    return _kind([value.strip() for value in values])


def _kind(values: Sequence[str]) -> str:
    if all(_DATE.match(v) for v in values):
        return f"<date, e.g. {values[0]}>"
    if all(_NUMBER.match(v) for v in values):
        return "<number>"
    distinct = Counter(values)
    if len(distinct) <= 12 and len(values) >= 3 * len(distinct):
        return "<one of: " + ", ".join(name for name, _ in distinct.most_common()) + ">"
    return "<text>"
