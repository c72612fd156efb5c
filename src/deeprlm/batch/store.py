"""A batch's output folder: what it holds, and how it is written so that nothing is lost.

    DIR/batch.json          what the results were made with (models), checked on resume
    DIR/results.jsonl       one line per finished question, appended and synced as it ends
    DIR/traces/ID.jsonl     each question's trace
    DIR/trajectories.jsonl  with --export-trajectories: one trajectory per question
    DIR/summary.json        the counts, usage and how the batch ended, rewritten at the end

A line is written with one `write` and then `fsync`ed, so a driver killed at any moment
leaves at most one torn last line, which readers skip and the next run starts afresh after.
A question is done when its latest line has a final status; a question cancelled (Ctrl-C)
or stopped (the batch's budget ran out while it ran) has a line too, for the usage it
spent, but is not done, so a resumed batch runs it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from deeprlm.errors import InputError

BATCH_INFO = "batch.json"
RESULTS = "results.jsonl"
TRACES = "traces"
TRAJECTORIES = "trajectories.jsonl"
SUMMARY = "summary.json"

# Statuses that finish a question: its answer (or why there is none) is final.
FINAL = frozenset({"answered", "forced", "limit", "error"})
# A question the batch's budget cut short (its own limits did not): not final either.
STOPPED = "stopped"
# What must not change between runs into one folder: answers by another model are not the
# same batch.
FIXED = ("model", "sub_model", "models")


class ResultStore:
    def __init__(self, out: Path) -> None:
        self.out = out
        self._files: dict[str, int] = {}

    def open(self, info: Mapping[str, Any]) -> None:
        """Creates the folder, or checks that its results were made the same way."""
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out} exists and is not a folder")
        try:
            (self.out / TRACES).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create {self.out}: {err.strerror or err}") from None
        previous = self._read_info()
        for key in FIXED:
            if key in previous and previous[key] != info.get(key):
                raise InputError(
                    f"{self.out} holds results made with {key}={previous[key]!r}, not "
                    f"{info.get(key)!r}; use another --out"
                )
        _write_atomic(self.out / BATCH_INFO, json.dumps(dict(info), indent=2) + "\n")
        for name in (RESULTS, TRAJECTORIES):
            _end_torn_line(self.out / name)

    def _read_info(self) -> dict[str, Any]:
        try:
            info = json.loads((self.out / BATCH_INFO).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return info if isinstance(info, dict) else {}

    def records(self) -> list[dict[str, Any]]:
        """Every complete line of results.jsonl, in the order written."""
        return list(read_jsonl(self.out / RESULTS))

    def latest(self) -> dict[str, dict[str, Any]]:
        """The latest line of each question."""
        return {str(r["id"]): r for r in self.records() if "id" in r}

    def done(self) -> set[str]:
        return {qid for qid, r in self.latest().items() if r.get("status") in FINAL}

    def append(self, record: Mapping[str, Any]) -> None:
        self.append_line(RESULTS, record)

    def append_trajectory(self, trajectory: Mapping[str, Any]) -> None:
        self.append_line(TRAJECTORIES, trajectory)

    def append_line(self, name: str, data: Mapping[str, Any]) -> None:
        """Appends one JSON line to the folder's file `name` and syncs it."""
        fd = self._files.get(name)
        if fd is None:
            fd = os.open(self.out / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._files[name] = fd
        line = (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        view = memoryview(line)
        while view:  # a regular file takes it in one write; a full disk raises
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)

    def write_trace(self, qid: str, events: list[dict[str, Any]]) -> str:
        """Writes a question's trace; returns its path relative to the folder."""
        relative = f"{TRACES}/{file_name(qid)}.jsonl"
        text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events)
        _write_atomic(self.out / relative, text)
        return relative

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        _write_atomic(self.out / SUMMARY, json.dumps(dict(summary), indent=2) + "\n")

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSONL file; a torn or garbled line is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            item = json.loads(line.decode("utf-8", "replace"))
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            yield item


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def file_name(qid: str) -> str:
    """A file name for a question id: the id itself when it is safe, else a cleaned copy
    with a hash of the id, so that two ids never share a file."""
    safe = _UNSAFE.sub("_", qid)[:80].lstrip(".") or "q"
    if safe == qid:
        return safe
    return f"{safe}-{hashlib.sha256(qid.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def _end_torn_line(path: Path) -> None:
    """A driver killed mid-write leaves a partial last line: start the next one afresh."""
    if not path.exists() or not path.stat().st_size:
        return
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
    if last != b"\n":
        with path.open("ab") as handle:
            handle.write(b"\n")


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8", errors="backslashreplace")
    os.replace(temporary, path)
