"""The command's guard for in-process runs: a run stuck past its timeouts is ended.

Code in the in-process REPL runs in a thread of the user's process. C code that holds
Python's lock all along (a catastrophic regex, say) can be neither interrupted nor
outwaited from inside: no other Python thread runs until it returns, the event loop and
its timeouts included. So with `--repl inprocess` and a timeout, `deeprlm ask` runs in a
forked child while the parent, which shares no lock with it, watches the clock: the child
reports each cell's start and end on a pipe, and when the run passes `--timeout`, or a cell
passes `--cell-timeout`, by a margin (time for the run's own timeouts to act first), the
parent kills the child and exits with status 3. The trace file is written line by line as
the run goes, so it holds everything up to the stuck cell.

A library caller has no such guard: `RLM(..., repl="inprocess")` cannot stop such code.
Use the sandbox (the default on Linux), or run the RLM in a process of its own.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from deeprlm.trace.events import CellEnded, CellStarted, Event

# Past the run's timeout: rlm's own backstop acts 5 s after it.
RUN_MARGIN_S = 10.0
# Past a cell's timeout: the in-process REPL gives a stopped cell 2 s to return.
CELL_MARGIN_S = 5.0


@dataclass(frozen=True)
class Stuck:
    """Why the watchdog ended the run."""

    message: str


class CellReporter:
    """An event sink in the child: tells the parent when cells start and end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, event: Event) -> None:
        if isinstance(event, CellStarted):
            line = f"s {event.id}\n"
        elif isinstance(event, CellEnded):
            line = f"e {event.id}\n"
        else:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, line.encode())


def _die_with(parent: int) -> None:
    """The child ends with its parent: a `deeprlm ask` killed outright (SIGKILL, which the
    parent cannot pass on) must not leave its run going on, unseen, in an orphan."""
    if sys.platform.startswith("linux"):
        from deeprlm.repl.sandbox.isolation import die_with_parent

        with contextlib.suppress(OSError):
            die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def guarded(
    work: Callable[[CellReporter], int],
    timeout_s: float | None,
    cell_timeout_s: float | None,
) -> int | Stuck:
    """Runs `work` (which returns an exit status) in a forked child; returns that status,
    or `Stuck` when the child had to be ended."""
    read, write = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    parent = os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child, which never returns
        status = 1
        try:
            _die_with(parent)
            os.close(read)
            status = work(CellReporter(write))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(status)
    os.close(write)
    try:
        stuck = _watch(read, time.monotonic(), timeout_s, cell_timeout_s)
    except KeyboardInterrupt:
        stuck = None  # the child got the same signal from the terminal
    finally:
        os.close(read)
    if stuck is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    _, status = os.waitpid(child, 0)
    if stuck is not None:
        return stuck
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _watch(
    fd: int, started: float, timeout_s: float | None, cell_timeout_s: float | None
) -> Stuck | None:
    """Reads the child's reports until it exits (None) or a deadline passes (Stuck)."""
    cells: dict[str, float] = {}
    pending = b""
    while True:
        deadlines = []
        if timeout_s is not None:
            deadlines.append((started + timeout_s + RUN_MARGIN_S, "run", timeout_s))
        if cell_timeout_s is not None and cells:
            first = min(cells.values())
            deadlines.append((first + cell_timeout_s + CELL_MARGIN_S, "cell", cell_timeout_s))
        deadline = min(deadlines) if deadlines else None
        wait = None if deadline is None else max(0.0, deadline[0] - time.monotonic())
        if not select.select([fd], [], [], wait)[0]:
            assert deadline is not None
            _, what, limit = deadline
            return Stuck(
                f"the {what} ran past its {limit:g}s timeout in code that cannot be "
                "interrupted in process (C code holding Python's lock, such as a "
                "catastrophic regex), so deeprlm was ended; --repl sandbox stops such code"
            )
        data = os.read(fd, 4096)
        if not data:
            return None
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            kind, _, cell_id = line.decode().partition(" ")
            if kind == "s":
                cells[cell_id] = time.monotonic()
            else:
                cells.pop(cell_id, None)
