"""The in-process REPL: the model's code runs in a thread of the user's own process.

Fast (no copy of the context, no process start) but not isolated: use it for trusted
contexts, or where the sandbox's kernel features are missing. Each cell runs in a thread of
its own so the event loop stays free to serve the cell's sub-calls; sub-call functions
bridge from that thread to the loop. A timeout or a cancelled run stops the cell by raising
`CellInterrupted` inside its thread, and cancels the sub-calls it is waiting on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import threading
from collections.abc import Coroutine
from typing import Any

from deeprlm.repl.base import Cell, ContextValue, Host, KeptVariables, REPLSettings
from deeprlm.repl.functions import REPLFunction, serve
from deeprlm.repl.sandbox.snapshot import Snapshot
from deeprlm.repl.session import CellInterrupted, Session

# How long a stopped cell may take to notice; past this its thread is abandoned (it is stuck
# in C code that cannot be interrupted) and the REPL reports it.
STOP_GRACE_S = 2.0
# A cell waiting on a sub-call wakes this often, so an interrupt reaches it promptly.
WAKE_S = 0.05


class InProcessREPL:
    kind = "inprocess"
    notes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._session: Session | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()

    async def start(self, context: ContextValue, host: Host, settings: REPLSettings) -> None:
        self._loop = asyncio.get_running_loop()

        def transport(function: REPLFunction, arguments: dict[str, Any]) -> Any:
            return self._call(serve(host, function, arguments))

        self._session = Session(context, transport, settings.tools, settings.max_output_chars)

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        with self._lock:
            self._pending.add(future)
        try:
            while True:
                try:
                    return future.result(timeout=WAKE_S)
                except concurrent.futures.TimeoutError:
                    continue
                except concurrent.futures.CancelledError:
                    raise CellInterrupted("the sub-call was cancelled") from None
        finally:
            with self._lock:
                self._pending.discard(future)

    async def run(self, code: str, timeout: float | None = None) -> Cell:
        assert self._session is not None and self._loop is not None, "start() first"
        session, loop = self._session, self._loop
        done: asyncio.Future[Cell] = loop.create_future()

        def work() -> None:
            cell = session.execute(code)

            def settle() -> None:
                if not done.done():
                    done.set_result(cell)

            # A closed loop: the cell was abandoned long ago and nobody waits for it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        thread = threading.Thread(target=work, name="deeprlm-cell", daemon=True)
        thread.start()
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            message = f"TimeoutError: the cell ran longer than {timeout:g}s and was stopped"
            cell = await self._stop(thread, done, message)
            return cell if cell is not None else Cell(code=code, output="", error=message)
        except asyncio.CancelledError:
            await self._stop(thread, done, "the run was cancelled")
            raise

    async def _stop(
        self, thread: threading.Thread, done: asyncio.Future[Cell], message: str
    ) -> Cell | None:
        with self._lock:
            for future in self._pending:
                future.cancel()
        _raise_in_thread(thread, CellInterrupted(message))
        try:
            return await asyncio.wait_for(asyncio.shield(done), STOP_GRACE_S)
        except (TimeoutError, asyncio.CancelledError):
            return None

    async def close(self) -> None:
        with self._lock:
            for future in self._pending:
                future.cancel()
        self._session = None

    # --- variables, for a session that keeps this REPL across questions ------------------
    # The sandbox's snapshot format, written and read here: the code that made these
    # values ran in this process already, so loading them trusts nothing new.

    async def variables(self, *, reset_answer: bool = False) -> dict[str, str]:
        assert self._session is not None, "start() first"
        if reset_answer:
            self._session.reset_answer()
        return {k: v for k, v in self._session.show_vars().items() if k != "answer"}

    async def save_variables(self, folder: str) -> KeptVariables:
        session = self._session
        assert session is not None, "start() first"
        snapshot = Snapshot(folder)
        await asyncio.to_thread(snapshot.save, session.globals, session.user_variables())
        return KeptVariables(tuple(sorted([*snapshot.kept, *snapshot.modules])), snapshot.lost)

    async def load_variables(self, folder: str) -> KeptVariables:
        session = self._session
        assert session is not None, "start() first"
        restored, lost = await asyncio.to_thread(Snapshot(folder).restore, session.globals)
        return KeptVariables(tuple(name for name in restored if name != "answer"), lost)


def _raise_in_thread(thread: threading.Thread, exc: BaseException) -> None:
    """Schedules `exc` to be raised in `thread` at its next bytecode."""
    if thread.ident is None or not thread.is_alive():
        return
    # The C API takes a class, not an instance; carry the message on a fresh subclass.
    message = str(exc)
    cls = type("CellInterrupted", (CellInterrupted,), {"__str__": lambda self: message})
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(cls))
