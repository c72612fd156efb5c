"""What a running batch shows on stderr: a live bar on a terminal (done, failed, running,
tokens and USD so far), a line per finished question otherwise, no progress with --quiet.
Notes (a skipped line, a lost worker, the budget reached) are always shown."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

FAILED = frozenset({"error"})
UNDONE = frozenset({"cancelled", "stopped"})


@dataclass
class Tally:
    """The batch so far: statuses of finished questions (earlier runs included), what is
    running, and everything the folder's results have spent."""

    total: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    running: int = 0
    tokens: int = 0
    usd: float = 0.0

    @property
    def done(self) -> int:
        # Cancelled and stopped questions run again: not done.
        return sum(n for status, n in self.statuses.items() if status not in UNDONE)

    @property
    def failed(self) -> int:
        return sum(self.statuses[status] for status in FAILED)

    def line(self) -> str:
        return (
            f"done {self.done}  failed {self.failed}  running {self.running}  "
            f"{self.tokens:,} tokens  ${self.usd:.4f}"
        )


class BatchProgress:
    def __init__(self, mode: str, stream: IO[str] | None = None) -> None:
        """`mode`: "auto" (a bar on a terminal, lines otherwise), "lines", "quiet" (notes
        only) or "silent" (nothing: the library's default)."""
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode = mode
        self._progress: Any = None
        self._bar: Any = None

    def start(self, tally: Tally, where: str) -> None:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
            )
            self._bar = self._progress.add_task(
                "batch", total=tally.total, completed=tally.done, status=tally.line()
            )
            self._progress.start()
            self._progress.console.print(f"deeprlm batch: {where}")
        elif self.mode == "lines":
            self._print(
                f"deeprlm batch: {tally.total - tally.done} to run of {tally.total}; {where}"
            )

    def update(self, tally: Tally, record: dict[str, Any] | None = None) -> None:
        if self.mode == "bar":
            self._progress.update(self._bar, completed=tally.done, status=tally.line())
        elif self.mode == "lines" and record is not None:
            usage = record.get("usage", {}).get("total", {})
            tokens = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
            error = f": {record['error']}" if record.get("error") else ""
            self._print(
                f"[{tally.done}/{tally.total}] {record['id']} {record['status']} "
                f"({record.get('wall_s', 0):.1f}s, {tokens:,} tokens, "
                f"${usage.get('usd', 0.0):.4f}){error}"
            )

    def note(self, message: str) -> None:
        if self.mode == "silent":
            return
        if self._progress is not None:
            self._progress.console.print(f"deeprlm: {message}")
        else:
            self._print(f"deeprlm: {message}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
