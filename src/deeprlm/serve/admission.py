"""How many runs a server takes on: `max_runs` at once, `max_queued` more waiting in line
(first come, first served), and a 429 with `Retry-After` for anything past that.

A request is admitted (`admit`, which either hands out a `Ticket` or refuses at once), and
the ticket then waits for a run slot (`async with ticket:`); leaving the block, or dropping
an unused ticket with `release`, frees its place. `Retry-After` is guessed from how long
recent runs took.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from deeprlm.serve.errors import busy

RECENT_RUNS = 20
# When no run has finished yet, the guess for how long one takes.
FIRST_GUESS_S = 5.0


class Admission:
    def __init__(self, max_runs: int, max_queued: int) -> None:
        self.max_runs = max_runs
        self.max_queued = max_queued
        self._slots = asyncio.Semaphore(max_runs)
        self.admitted = 0  # running or waiting
        self.running = 0
        self._durations: deque[float] = deque(maxlen=RECENT_RUNS)

    def admit(self) -> Ticket:
        if self.admitted >= self.max_runs + self.max_queued:
            raise busy(
                f"the server is busy: {self.running} run(s) going and {self.waiting} waiting "
                f"(at most {self.max_runs} and {self.max_queued}); try again later",
                self.retry_after(),
            )
        self.admitted += 1
        return Ticket(self)

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    def retry_after(self) -> int:
        """Seconds until a place is likely to free up: a run's typical time, spread over the
        slots, for each run ahead in line."""
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else None
        per_run = typical if typical is not None else FIRST_GUESS_S
        ahead = self.waiting + 1
        return max(1, min(300, math.ceil(per_run * ahead / self.max_runs)))


class Ticket:
    """One admitted request's place: in line, then in a run slot."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._released = False
        self._started: float | None = None

    async def __aenter__(self) -> Ticket:
        await self._admission._slots.acquire()
        self._admission.running += 1
        self._started = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        admission = self._admission
        admission.running -= 1
        admission._slots.release()
        if self._started is not None:
            admission._durations.append(time.monotonic() - self._started)
        self.release()

    def release(self) -> None:
        """Gives up the place in line (safe to call twice)."""
        if not self._released:
            self._released = True
            self._admission.admitted -= 1
