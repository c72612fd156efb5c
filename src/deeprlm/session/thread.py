"""The event loop a session lives on, in a thread of its own.

A session's REPL belongs to one event loop: its worker's pipes (in the sandbox), the loop
its cells call back into (in process). Callers do not share one loop across questions:
`session.ask` from a script, `asyncio.run(session.aask(...))` twice, a server's loop. So
the session keeps its own loop running in a daemon thread, and every call is handed to
it: the async API awaits it without blocking the caller's loop, the sync API waits for it,
and cancelling the caller's wait cancels the work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on this loop and awaits it from the caller's; cancelling the caller
        cancels it there too."""
        return await asyncio.wrap_future(self.submit(coro))

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on this loop and waits for it. Ctrl-C (KeyboardInterrupt) while
        waiting cancels it there, and is raised again at once: the work may still be
        unwinding (a cell asked to stop), so whoever goes on waits for it first."""
        future = self.submit(coro)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.in_thread():
            raise RuntimeError("a session cannot be closed from its own event loop")
        if self.alive:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
