"""The `Trace` a run tree writes to, and the JSONL file sink.

A `Trace` hands out ids, stamps times and passes each event to its sinks (a JSONL file, a
live console, a user callback) and keeps them for `RLMResult.trace`. Texts are clipped here,
in one place, so that no event can carry a context-sized string.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from deeprlm.errors import InputError
from deeprlm.textutil import clip
from deeprlm.trace.events import Event, event_from_dict

Sink = Callable[[Event], None]

# Limits on recorded texts, in characters.
PROMPT_CHARS = 2_000
REPLY_CHARS = 20_000
CODE_CHARS = 50_000
OUTPUT_CHARS = 20_000
QUERY_CHARS = 2_000


class Trace:
    def __init__(self, sinks: list[Sink] | None = None) -> None:
        self.sinks: list[Sink] = list(sinks or [])
        self.events: list[Event] = []
        self._t0 = time.perf_counter()
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def now(self) -> float:
        return round(time.perf_counter() - self._t0, 6)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            for sink in self.sinks:
                sink(event)

    def of_type(self, cls: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def write_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for event in self.events:
                f.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")


def check_trace_path(path: str | Path) -> Path:
    """Fails with one line unless a trace file can be written at `path`. Runs before any
    work, so a mistyped path does not cost a whole run (or the reading of its context)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"the trace path {path} is a folder; give a file, e.g. {path}/run.jsonl")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"cannot write the trace {path}: the folder {folder} {what}")
    existed = path.exists()
    try:
        # Non-blocking: a named pipe nobody reads would otherwise hang here (ENXIO instead).
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
    except OSError as err:
        raise InputError(f"cannot write the trace {path}: {err.strerror or err}") from None
    os.close(fd)
    if not existed:
        path.unlink(missing_ok=True)
    return path


class JsonlSink:
    """Writes each event as one JSON line as it happens, so a crashed run leaves a trace."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # A lone surrogate (the code printed bytes read with surrogateescape) is written as
        # its JSON escape, which reads back as the same text, rather than ending the run.
        self._file: IO[str] = open(  # noqa: SIM115
            self.path, "w", encoding="utf-8", errors="backslashreplace"
        )

    def __call__(self, event: Event) -> None:
        self._file.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_jsonl(path: str | Path) -> tuple[list[Event], list[str]]:
    """Reads a trace file back. Returns the events it could read and a note for each line it
    could not (a truncated last line, garbage), so readers can show what is there."""
    events: list[Event] = []
    problems: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                events.append(event_from_dict(json.loads(line)))
            except (ValueError, TypeError) as err:
                problems.append(f"line {number}: {clip(str(err), 200)}")
    return events, problems


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yields each line of a trace as a dict, skipping lines that do not parse."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue
