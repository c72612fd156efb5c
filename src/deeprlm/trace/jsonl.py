"""Traces as files: one event per line of JSON, written as they happen and read back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

from deeprlm.errors import InputError
from deeprlm.textutil import clip
from deeprlm.trace.events import Event, event_from_dict


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
