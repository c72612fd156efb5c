"""`SandboxREPL`: the `REPL` protocol over a locked-down worker process.

The host side of the channel: it sends cells, makes the sub-calls and tool calls the worker
asks for (on the engine's loop, through `Host`, so budgets and the trace see them as in
process), and turns every way a cell can go wrong into a `Cell` with a message rather than
an exception: a timeout first asks the worker to stop the cell (its variables survive);
a worker that does not stop in time, crashes or is killed is replaced by a fresh one, which
gets `context`, the functions and the variables of its last snapshot back. The message
names what was lost. Loading the snapshot runs code the model wrote, so it happens after
the new worker's handshake, bounded like a cell; a snapshot that cannot be loaded is
dropped by yet another worker, and the run goes on without those variables.

Everything the worker sends is checked and clipped here, whatever it claims: the worker
runs the model's code and is not trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import time
import weakref
from dataclasses import dataclass
from typing import Any

from deeprlm.errors import SandboxError
from deeprlm.repl.base import Cell, ContextValue, Host, REPLSettings
from deeprlm.repl.functions import host_served, serve
from deeprlm.repl.sandbox.config import SandboxSettings
from deeprlm.repl.sandbox.process import Ready, WorkerProcess, Workspace
from deeprlm.repl.sandbox.protocol import MAX_FRAME, ProtocolError, error_payload
from deeprlm.repl.session import TRACEBACK_CHARS
from deeprlm.textutil import clip

# A hostile worker could ask for calls faster than they finish; past this many, refuse.
MAX_CALLS_IN_FLIGHT = 1024
# Requests (their frames' bytes) the host holds at once for one worker: past this, it reads
# no more until some are answered, and the worker's sends wait (backpressure).
MAX_CALL_BYTES = 2 * MAX_FRAME
# What the host keeps of a cell's texts, whatever size the worker reports: the error (a
# traceback is clipped to TRACEBACK_CHARS in the worker), and the final answer and the
# answer's content (which end the run, or stand in for it when a limit stops it).
ERROR_CHARS = TRACEBACK_CHARS + 1_000
ANSWER_CHARS = 1 << 20
NAME_CHARS = 100
MAX_NAMES = 1000
# Loading saved variables into a fresh worker, before any cell has given a wall clock.
RESTORE_S = 60.0


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
        self._call_bytes = 0  # the frames of the calls in flight
        self._room: asyncio.Future[None] | None = None  # set when _call_bytes drops
        self._cleanup: set[asyncio.Task[Any]] = set()
        self._seq = 0
        self._waiting: tuple[int, asyncio.Future[Any]] | None = None
        self._finalizer: weakref.finalize | None = None
        # The finalizer's view of the current worker (it must not hold the REPL itself).
        self._current: list[WorkerProcess | None] = [None]
        self._notes: list[str] = []
        self._limit = RESTORE_S  # the running cell's wall clock, for a restore

    @property
    def notes(self) -> tuple[str, ...]:
        """Isolation the kernel refused, and what close() could not clean up: the engine
        reports these in the trace."""
        return tuple(dict.fromkeys(self._notes))

    # --- the protocol ------------------------------------------------------------------

    async def start(self, context: ContextValue, host: Host, settings: REPLSettings) -> None:
        if not sys.platform.startswith("linux"):
            raise SandboxError("the sandbox needs Linux; use repl='inprocess' here")
        self._context, self._host, self._repl_settings = context, host, settings
        self._workspace = await asyncio.to_thread(Workspace, self.settings)
        self._finalizer = weakref.finalize(self, _abandon, self._workspace, self._current)
        try:
            ready = await self._spawn()
        except BaseException:
            await self.close()
            raise
        notes = (*self._workspace.notes, *ready.notes)
        self.isolation = Isolation(ready.namespaces, ready.landlock_abi, ready.uid, notes)
        self._notes.extend(notes)

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
        limit = None if timeout is None else max(0.0, timeout)
        if limit is not None:
            self._limit = limit
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
            self._notes.extend(await asyncio.to_thread(self._workspace.remove))
            self._workspace = None
        if self._finalizer is not None:
            self._finalizer.detach()

    # --- workers -----------------------------------------------------------------------

    async def _spawn(self, forget: bool = False) -> Ready:
        assert self._workspace is not None
        settings, repl = self.settings, self._repl_settings
        context_bytes = _rough_size(self._context)
        config = {
            "namespaces": settings.namespaces,
            "landlock": settings.landlock,
            "allow_read": list(repl.allow_read),
            "work": self._workspace.work,
            "state": self._workspace.state,
            "rootfs": self._workspace.rootfs,
            "forget": forget,
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
        await self._spawn()
        kept, lost, failure = await self._restore()
        if failure:
            # The snapshot itself is what fails (or a value in it that runs code when
            # loaded): a worker that drops it unloaded takes over, and the run goes on.
            await self._end_worker()
            ready = await self._spawn(forget=True)
            kept = []
            lost = {name: f"could not be loaded again: {failure}" for name in ready.forgotten}
        kept = [name for name in kept if name != "answer"]
        lost = {name: why for name, why in lost.items() if name != "answer"}
        text = f"{what}. A fresh worker took its place: `context` and the functions are there"
        if kept:
            text += f"; variables kept from the last finished cell: {', '.join(kept)}"
        if lost:
            text += "; lost: " + ", ".join(f"{name} ({why})" for name, why in lost.items())
        return clip(text + "; whatever the stopped cell assigned is lost.", ERROR_CHARS)

    async def _restore(self) -> tuple[list[str], dict[str, str], str]:
        """Asks the fresh worker to load the last snapshot, as a cell. Returns the names
        loaded, those lost (and why), and why loading failed as a whole ("" if it did not)."""
        worker = self._worker
        assert worker is not None
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting = (seq, future)
        worker.send({"op": "restore", "seq": seq})
        limit = self._limit
        try:
            result = await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            self._waiting = None
            return [], {}, f"loading them took longer than {limit:g}s"
        if isinstance(result, _Died):
            await worker.wait(1.0)
            return [], {}, result.reason or f"the worker {worker.describe_exit()} loading them"
        try:
            names = result.get("restored", [])
            reasons = result.get("lost", {})
            kept = [clip(str(name), NAME_CHARS) for name in list(names)[:MAX_NAMES]]
            lost = {
                clip(str(name), NAME_CHARS): clip(str(why), NAME_CHARS * 2)
                for name, why in list(dict(reasons).items())[:MAX_NAMES]
            }
        except (TypeError, ValueError):
            return [], {}, "the worker gave a malformed answer"
        return kept, lost, ""

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
                await worker.drain()
                while self._call_bytes > MAX_CALL_BYTES:
                    self._room = asyncio.get_running_loop().create_future()
                    await self._room
                message, size = await worker.receive()
                op = message["op"]
                if op in ("cell", "restored"):
                    waiting = self._waiting
                    if waiting is not None and message.get("seq") == waiting[0]:
                        self._waiting = None
                        if not waiting[1].done():
                            waiting[1].set_result(message)
                elif op == "call":
                    self._start_call(worker, message, size)
                else:
                    raise ProtocolError(f"unexpected frame {op!r}")
        except (asyncio.IncompleteReadError, ConnectionError):
            reason = worker.broken
            if reason:
                await worker.kill()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Whatever the frame did (a ProtocolError, or anything else it broke), the
            # worker is replaced and the run goes on.
            detail = clip(str(exc), 200)
            reason = f"The sandbox worker broke the channel's protocol ({detail}) and was killed"
            await worker.kill()
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(_Died(reason))

    def _start_call(self, worker: WorkerProcess, message: dict[str, Any], size: int) -> None:
        call_id = message.get("id")
        if len(self._calls) >= MAX_CALLS_IN_FLIGHT:
            error = RuntimeError(f"more than {MAX_CALLS_IN_FLIGHT} sub-calls at once")
            worker.send({"op": "reply", "id": call_id, "error": error_payload(error)})
            return
        task = asyncio.ensure_future(self._answer(worker, call_id, message))
        self._calls.add(task)
        self._call_bytes += size

        def done(task: asyncio.Task[None]) -> None:
            self._calls.discard(task)
            self._call_bytes -= size
            if self._room is not None and not self._room.done():
                self._room.set_result(None)

        task.add_done_callback(done)

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
        except (TypeError, ValueError, RecursionError) as exc:
            error = TypeError(f"the result cannot be sent to the sandbox: {clip(str(exc), 300)}")
            worker.send({"op": "reply", "id": call_id, "error": error_payload(error)})

    async def _dispatch(self, message: dict[str, Any]) -> Any:
        host = self._host
        assert host is not None
        fn, args = message.get("fn"), message.get("args")
        function = host_served(fn)
        if function is not None:
            return await serve(host, function, function.from_wire(args))
        if not isinstance(args, list):
            raise TypeError("the arguments must be a list")
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
        output = clip(_text(result.get("output")) or "", limit + 100)
        error = _clipped(result.get("error"), ERROR_CHARS)
        if replaced:
            error = f"{replaced}\n{error}" if error else replaced
        output_chars = result.get("output_chars")
        if type(output_chars) is not int or output_chars < len(output):
            output_chars = len(output)
        return Cell(
            code=code,
            output=output,
            error=error,
            final=_clipped(result.get("final"), ANSWER_CHARS),
            duration_s=duration,
            output_chars=output_chars,
            answer_content=_clipped(result.get("answer_content"), ANSWER_CHARS) or "",
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None if value is None else str(value)


def _clipped(value: Any, limit: int) -> str | None:
    text = _text(value)
    return None if text is None else clip(text, limit)


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
    if worker is not None:
        worker.kill_now()
        with contextlib.suppress(Exception):
            worker.process.wait(5)
    workspace.remove()
