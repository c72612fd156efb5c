"""The one tree-wide bound on REPLs alive at once (a process each, in the sandbox).

Every run holds a slot from its REPL's start to its close; a child run waits for one. A
parent waiting on its children keeps its slot, so a run at depth d takes one only while
`max_depth - d` stay free for the levels below it: the most recent run to start can always
start its own children, and the tree cannot deadlock with every slot held by parents.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class ReplSlots:
    def __init__(self, limit: int, max_depth: int) -> None:
        # The root needs room for one run at each level below it.
        self.limit = max(limit, max_depth + 1)
        self.max_depth = max_depth
        self.used = 0
        self.peak = 0
        self._waiters: list[asyncio.Future[None]] = []

    @contextlib.asynccontextmanager
    async def hold(self, depth: int) -> AsyncIterator[None]:
        reserve = max(0, self.max_depth - depth)
        while self.limit - self.used - 1 < reserve:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        self.used += 1
        self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            self.used -= 1
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
