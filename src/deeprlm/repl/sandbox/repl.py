"""`SandboxREPL`: the `REPL` protocol over a locked-down worker process.

The host side of the channel: it sends cells, makes the sub-calls and tool calls the worker
asks for (on the engine's loop, through `Host`, so budgets and the trace see them as in
process), and turns every way a cell can go wrong into a `Cell` with a message rather than
an exception: a timeout first asks the worker to stop the cell (its variables survive);
a worker that does not stop in time, crashes or is killed is replaced by a fresh one, which
gets `context`, the functions and the variables of its last snapshot back. The message
names what was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from deeprlm.errors import SandboxError
from deeprlm.repl.base import Cell, ContextValue, Host, REPLSettings
from deeprlm.repl.sandbox.config import SandboxSettings
from deeprlm.repl.sandbox.process import WorkerProcess, Workspace
from deeprlm.repl.sandbox.protocol import ProtocolError, error_payload
from deeprlm.textutil import clip

# A hostile worker could ask for calls faster than they finish; past this many, refuse.
MAX_CALLS_IN_FLIGHT = 1024
HOST_FUNCTIONS = frozenset(
    {"llm_query", "llm_batch", "llm_map", "llm_classify", "rlm_query", "rlm_batch"}
)


@dataclass(frozen=True)
class Isolation:
    """What the kernel actually gave the worker."""

    namespaces: tuple[str, ...]
    landlock_abi: int
    uid: int
    notes: tuple[str, ...]

    def summary(self) -> str:
        parts = [
            f"namespaces: {', '.join(self.namespaces) or 'none'}",
            f"Landlock ABI {self.landlock_abi}" if self.landlock_abi else "no Landlock",
            f"uid {self.uid}",
        ]
        return "sandbox: " + "; ".join(parts)


class _Died:
    """Put where a cell's result was expected when the worker went away."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class SandboxREPL:
    kind = "sandbox"

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        self.isolation: Isolation | None = None
        self._context: ContextValue = ""
        self._host: Host | None = None
        self._repl_settings = REPLSettings()
        self._workspace: Workspace | None = None
        self._worker: WorkerProcess | None = None
        self._reader: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._cleanup: set[asyncio.Task[Any]] = set()
        self._seq = 0
        self._waiting: tuple[int, asyncio.Future[Any]] | None = None
        self._finalizer: weakref.finalize | None = None
        # The finalizer's view of the current worker (it must not hold the REPL itself).
        self._current: list[WorkerProcess | None] = [None]

    @property
    def notes(self) -> tuple[str, ...]:
        """Isolation the kernel refused: the engine reports these in the trace."""
        return self.isolation.notes if self.isolation is not None else ()

    # --- the protocol ------------------------------------------------------------------

    async def start(self, context: ContextValue, host: Host, settings: REPLSettings) -> None:
        if not sys.platform.startswith("linux"):
            raise SandboxError("the sandbox needs Linux; use repl='inprocess' here")
        self._context, self._host, self._repl_settings = context, host, settings
        if settings.allow_read:
            extra = (*self.settings.allow_read, *settings.allow_read)
            self.settings = replace(self.settings, allow_read=extra)
        self._workspace = Workspace()
        self._finalizer = weakref.finalize(self, _abandon, self._workspace, self._current)
        try:
            ready = await self._spawn(restore=False)
        except BaseException:
            await self.close()
            raise
        self.isolation = Isolation(ready.namespaces, ready.landlock_abi, ready.uid, ready.notes)

    async def run(self, code: str, timeout: float | None = None) -> Cell:
        assert self._workspace is not None, "start() first"
        started = time.perf_counter()
        await self._settle()
        replaced = ""
        # No await from here to `self._waiting = ...`: a worker that ends after this check
        # is seen by its reader, which then answers the cell with _Died.
        if self._worker is None or not self._worker.alive() or self._reader_done():
            why = self._worker.describe_exit() if self._worker is not None else "was stopped"
            replaced = await self._replace(f"The sandbox worker {why} after the last cell")
        worker = self._worker
        assert worker is not None
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting = (seq, future)
        limit = self.settings.cell_timeout_s
        if timeout is not None:
            limit = min(limit, max(0.0, timeout))
        worker.send({"op": "run", "seq": seq, "code": code})
        try:
            result = await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            message = f"TimeoutError: the cell ran longer than {limit:g}s and was stopped"
            result = await self._stop(worker, seq, future, message)
        except asyncio.CancelledError:
            self._stop_soon(worker, seq, future, "the run was cancelled")
            raise
        if isinstance(result, _Died):
            result = await self._replace_after(worker, result.reason)
        return self._cell(code, result, time.perf_counter() - started, replaced)

    def _reader_done(self) -> bool:
        return self._reader is None or self._reader.done()

    async def close(self) -> None:
        for task in [*self._calls, *self._cleanup]:
            task.cancel()
        await asyncio.gather(*self._calls, *self._cleanup, return_exceptions=True)
        await self._end_worker()
        if self._workspace is not None:
            self._workspace.remove()
            self._workspace = None
        if self._finalizer is not None:
            self._finalizer.detach()

    # --- workers -----------------------------------------------------------------------

    async def _spawn(self, restore: bool) -> Any:
        assert self._workspace is not None
        settings, repl = self.settings, self._repl_settings
        context_bytes = _rough_size(self._context)
        config = {
            "namespaces": settings.namespaces,
            "landlock": settings.landlock,
            "allow_read": list(settings.allow_read),
            "work": self._workspace.work,
            "state": self._workspace.state,
            "restore": restore,
            "max_output_chars": repl.max_output_chars,
            "tools": {name: inspect.getdoc(fn) for name, fn in repl.tools.items()},
            "limits": {
                "memory_bytes": settings.memory_bytes(context_bytes),
                "cpu_s": settings.cpu_s,
                "processes": settings.processes,
                "file_size_bytes": settings.file_size_mb << 20,
                "open_files": settings.open_files,
            },
        }
        worker = await WorkerProcess.spawn(
            self._workspace, self._context, config, settings.start_timeout_s
        )
        self._worker = self._current[0] = worker
        self._reader = asyncio.ensure_future(self._read(worker))
        assert worker.ready is not None
        return worker.ready

    async def _replace(self, what: str) -> str:
        """Ends the current worker (if any) and starts a fresh one that restores the last
        snapshot. Returns the sentence telling the model what it kept and lost."""
        await self._end_worker()
        ready = await self._spawn(restore=True)
        kept = [name for name in ready.restored if name != "answer"]
        lost = {name: why for name, why in ready.lost.items() if name != "answer"}
        text = f"{what}. A fresh worker took its place: `context` and the functions are there"
        if kept:
            text += f"; variables kept from the last finished cell: {', '.join(kept)}"
        if lost:
            text += "; lost: " + ", ".join(f"{name} ({why})" for name, why in lost.items())
        return text + "; whatever the stopped cell assigned is lost."

    async def _replace_after(self, worker: WorkerProcess, reason: str) -> dict[str, Any]:
        await worker.wait(1.0)
        text = await self._replace(reason or f"The sandbox worker {worker.describe_exit()}")
        return {"error": text}

    async def _end_worker(self) -> None:
        worker, self._worker = self._worker, None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if worker is not None:
            await worker.kill()

    async def _stop(
        self, worker: WorkerProcess, seq: int, future: asyncio.Future[Any], message: str
    ) -> Any:
        """Asks the worker to stop the cell; replaces the worker if it does not in time."""
        worker.send({"op": "interrupt", "seq": seq, "reason": message})
        self._cancel_calls()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.settings.stop_grace_s)
        except TimeoutError:
            text = await self._replace(
                f"{message}. It did not stop within {self.settings.stop_grace_s:g}s, so its "
                "sandbox worker was killed"
            )
            return {"error": text}

    def _stop_soon(
        self, worker: WorkerProcess, seq: int, future: asyncio.Future[Any], message: str
    ) -> None:
        """On cancellation: ask the cell to stop now, kill the worker if it has not stopped
        after the grace period. The next run() (if any) waits for this to settle."""
        worker.send({"op": "interrupt", "seq": seq, "reason": message})
        self._cancel_calls()

        async def enforce() -> None:
            try:
                await asyncio.wait_for(asyncio.shield(future), self.settings.stop_grace_s)
            except TimeoutError:
                if self._worker is worker:
                    await self._end_worker()

        task = asyncio.ensure_future(enforce())
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)

    async def _settle(self) -> None:
        if self._cleanup:
            await asyncio.gather(*self._cleanup, return_exceptions=True)

    def _cancel_calls(self) -> None:
        for task in self._calls:
            task.cancel()

    # --- the channel ---------------------------------------------------------------------

    async def _read(self, worker: WorkerProcess) -> None:
        reason = ""
        try:
            while True:
                message = await worker.receive()
                op = message["op"]
                if op == "cell":
                    waiting = self._waiting
                    if waiting is not None and message.get("seq") == waiting[0]:
                        self._waiting = None
                        if not waiting[1].done():
                            waiting[1].set_result(message)
                elif op == "call":
                    self._start_call(worker, message)
                else:
                    raise ProtocolError(f"unexpected frame {op!r}")
        except (asyncio.IncompleteReadError, ConnectionError):
            reason = ""
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            reason = f"The sandbox worker broke the channel's protocol ({exc}) and was killed"
            await worker.kill()
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(_Died(reason))

    def _start_call(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        call_id = message.get("id")
        if len(self._calls) >= MAX_CALLS_IN_FLIGHT:
            error = RuntimeError(f"more than {MAX_CALLS_IN_FLIGHT} sub-calls at once")
            worker.send({"op": "reply", "id": call_id, "error": error_payload(error)})
            return
        task = asyncio.ensure_future(self._answer(worker, call_id, message))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _answer(self, worker: WorkerProcess, call_id: Any, message: dict[str, Any]) -> None:
        try:
            value = await self._dispatch(message)
            reply: dict[str, Any] = {"op": "reply", "id": call_id, "value": value}
        except asyncio.CancelledError:
            reply = {"op": "reply", "id": call_id, "cancelled": True}
        except Exception as exc:
            reply = {"op": "reply", "id": call_id, "error": error_payload(exc)}
        try:
            worker.send(reply)
        except (TypeError, ValueError) as exc:
            error = TypeError(f"the result cannot be sent to the sandbox: {exc}")
            worker.send({"op": "reply", "id": call_id, "error": error_payload(error)})

    async def _dispatch(self, message: dict[str, Any]) -> Any:
        host = self._host
        assert host is not None
        fn, args = message.get("fn"), message.get("args")
        if not isinstance(args, list):
            raise TypeError("the arguments must be a list")
        if fn in HOST_FUNCTIONS:
            if fn in ("llm_batch", "rlm_batch") and not isinstance(args[0], list):
                raise TypeError(f"{fn} takes a list")
            call: Callable[..., Awaitable[Any]] = getattr(host, fn)
            return await call(*args)
        if fn == "tool":
            name, kwargs = message.get("tool"), message.get("kwargs") or {}
            tool = self._repl_settings.tools.get(name) if isinstance(name, str) else None
            if tool is None or not isinstance(kwargs, dict):
                raise NameError(f"no tool named {name!r}")
            # As in process, a tool runs outside the event loop (there, in the cell's thread).
            value = await asyncio.to_thread(tool, *args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            return value
        raise NameError(f"no host function {fn!r}")

    # --- results ---------------------------------------------------------------------------

    def _cell(self, code: str, result: dict[str, Any], duration: float, replaced: str) -> Cell:
        """A Cell from the worker's report, checked: the worker is not trusted."""
        limit = self._repl_settings.max_output_chars
        output = _text(result.get("output")) or ""
        error = _text(result.get("error"))
        if replaced:
            error = f"{replaced}\n{error}" if error else replaced
        output_chars = result.get("output_chars")
        return Cell(
            code=code,
            output=clip(output, limit + 100),
            error=error,
            final=_text(result.get("final")),
            duration_s=duration,
            output_chars=output_chars if isinstance(output_chars, int) else len(output),
            answer_content=_text(result.get("answer_content")) or "",
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None if value is None else str(value)


def _rough_size(context: ContextValue) -> int:
    if isinstance(context, str):
        return len(context)
    if isinstance(context, dict):
        return sum(len(k) + len(v) for k, v in context.items())
    return sum(len(item) for item in context)


def _abandon(workspace: Workspace, holder: list[WorkerProcess | None]) -> None:
    """Last resort when a REPL is dropped without close(): kill its worker, remove its
    folder. Runs at garbage collection or interpreter exit, outside any event loop."""
    worker = holder[0]
    if worker is not None and worker.process.poll() is None:
        if worker.ready is not None and worker.ready.pid != worker.process.pid:
            with contextlib.suppress(OSError):
                os.kill(worker.ready.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                worker.process.wait(1)
        if worker.process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(worker.process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            worker.process.wait(5)
    workspace.remove()
