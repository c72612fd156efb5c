"""Per-cell output capture that stays correct when many cells run at once.

Cells of child runs and batches run concurrently in threads of one process, so swapping the
process-wide `sys.stdout` per cell would mix their output. Instead `sys.stdout` and
`sys.stderr` are wrapped once by a proxy that writes to the capture of whichever cell is
running in the current thread (a context variable), and to the real stream otherwise.

A capture keeps at most `limit` characters (the head and the tail), so a cell that prints a
gigabyte costs a counter, not a gigabyte.
"""

from __future__ import annotations

import contextvars
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from deeprlm.textutil import cut_note

_current: contextvars.ContextVar[OutputCapture | None] = contextvars.ContextVar(
    "deeprlm_capture", default=None
)


class OutputCapture:
    """A bounded text sink: the first two thirds of `limit`, the last third, and a count."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self._head_limit = self.limit * 2 // 3
        self._tail_limit = self.limit - self._head_limit
        self._head: list[str] = []
        self._head_len = 0
        self._tail: deque[str] = deque()
        self._tail_len = 0
        self.total = 0

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            text = str(text)
        n = len(text)
        self.total += n
        start = 0
        if self._head_len < self._head_limit:
            take = text[: self._head_limit - self._head_len]
            self._head.append(take)
            self._head_len += len(take)
            start = len(take)
        if n > start and self._tail_limit:
            # Slice only what the tail keeps: a gigabyte in one write is never copied.
            text = text[max(start, n - self._tail_limit) :]
            self._tail.append(text)
            self._tail_len += len(text)
            while self._tail and self._tail_len - len(self._tail[0]) >= self._tail_limit:
                self._tail_len -= len(self._tail.popleft())
        return n

    def text(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if self.total <= self.limit:
            return head + tail
        tail = tail[-self._tail_limit :] if self._tail_limit else ""
        return head + cut_note(self.total - len(head) - len(tail)) + tail


class _StreamProxy:
    """Stands in for sys.stdout / sys.stderr; routes writes to the current cell's capture."""

    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback

    def write(self, text: str) -> int:
        capture = _current.get()
        if capture is not None:
            return capture.write(text)
        return self._fallback.write(text)

    def flush(self) -> None:
        if _current.get() is None:
            self._fallback.flush()

    def isatty(self) -> bool:
        return False if _current.get() is not None else self._fallback.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fallback, name)


def _install() -> None:
    # Checked on every cell rather than once: test runners and notebooks replace sys.stdout
    # behind our back, and the proxy must wrap whatever stream is current.
    if not isinstance(sys.stdout, _StreamProxy):
        sys.stdout = _StreamProxy(sys.stdout)
    if not isinstance(sys.stderr, _StreamProxy):
        sys.stderr = _StreamProxy(sys.stderr)


@contextmanager
def capturing(capture: OutputCapture) -> Iterator[OutputCapture]:
    """Routes this thread's (and this context's) prints into `capture`."""
    _install()
    token = _current.set(capture)
    try:
        yield capture
    finally:
        _current.reset(token)
