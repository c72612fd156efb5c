"""A served run as the server keeps it: who asked, where it stands, its trace file, and a way
to wait for news while it works.

`RunRecord.on_event` is the run's event sink: it writes the trace (one JSON line per event,
so a running run's trace can be read at any time), folds the event into the live
`Progress` the console also uses, and wakes whoever watches (`changes`). `progress_line`
says in a few words where a run stands, for streamed progress and MCP notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from deeprlm.errors import DeepRLMError, LimitError
from deeprlm.rlm import RLMResult
from deeprlm.trace.events import Event
from deeprlm.trace.jsonl import JsonlSink
from deeprlm.trace.progress import Progress, short_tokens, short_usd
from deeprlm.trace.recorder import Trace
from deeprlm.usage import UsageReport

FINISHED = ("answered", "forced", "limit", "error", "cancelled")


class RunRecord:
    def __init__(
        self,
        id: str,
        *,
        owner: str,
        model: str,
        query: str,
        context_id: str | None,
        trace_path: Path,
    ) -> None:
        self.id = id
        self.owner = owner
        self.model = model
        self.query = query
        self.context_id = context_id
        self.trace_path = trace_path
        self.created = time.time()
        self.started: float | None = None
        self.ended: float | None = None
        self.status = "queued"
        self.progress = Progress()
        self.events = 0
        self.result: RLMResult | None = None
        self.error: str | None = None
        self._sink: JsonlSink | None = None
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self.done = asyncio.Event()

    # -- the run's side

    def begin(self) -> None:
        self.status = "running"
        self.started = time.time()
        self._sink = JsonlSink(self.trace_path)
        self._wake()

    def on_event(self, event: Event) -> None:
        if self._sink is not None:
            self._sink(event)
        self.progress.apply(event)
        self.events += 1
        self._wake()

    def finish(self, result: RLMResult) -> None:
        self._end(result.status, result, result.error)

    def fail(self, err: BaseException) -> None:
        if isinstance(err, DeepRLMError) and err.result is not None:
            self._end(err.result.status, err.result, str(err))
        else:
            status = "limit" if isinstance(err, LimitError) else "error"
            self._end(status, None, str(err) or type(err).__name__)

    def cancel(self) -> None:
        self._end("cancelled", None, "cancelled: the client went away")

    def _end(self, status: str, result: RLMResult | None, error: str | None) -> None:
        if self.status in FINISHED:
            return
        if result is not None:
            # The trace is in its file; the events in memory would only pile up.
            result = replace(result, trace=Trace())
        self.status, self.result, self.error = status, result, error
        self.ended = time.time()
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        self.done.set()
        self._wake()

    def _wake(self) -> None:
        # Events may come from a cell's thread (the in-process REPL): wake the loop safely.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._changed.set()
        else:
            self._loop.call_soon_threadsafe(self._changed.set)

    # -- the watchers' side

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    async def changes(self, min_interval_s: float = 0.2) -> AsyncIterator[None]:
        """Yields whenever something happened, at most once per `min_interval_s`, until the
        run has finished."""
        while not self.finished:
            await self._changed.wait()
            self._changed.clear()
            if self.finished:
                return
            yield
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), min_interval_s)

    def usage(self) -> UsageReport:
        if self.result is not None:
            return self.result.usage
        return self.progress.usage.report()

    def describe(self) -> dict[str, Any]:
        """The run's status, as `GET /v1/runs/{id}` shows it."""
        usage = self.usage()
        root = self.progress.root
        data: dict[str, Any] = {
            "id": self.id,
            "object": "deeprlm.run",
            "status": self.status,
            "model": self.model,
            "context_id": self.context_id,
            "query": self.query,
            "created": int(self.created),
            "started": self.started,
            "ended": self.ended,
            "progress": {
                "turn": root.turn if root else 0,
                "sub_calls_done": self.progress.sub_calls_done,
                "runs": len(self.progress.runs),
                "line": progress_line(self.progress) if self.status == "running" else self.status,
            },
            "usage": usage.to_dict(),
            "error": self.error,
        }
        if self.result is not None:
            data.update(
                answer=self.result.answer,
                iterations=self.result.iterations,
                sub_calls=self.result.sub_calls,
                wall_s=round(self.result.wall_s, 3),
                forced=self.result.forced,
                notes=list(self.result.notes),
            )
        return data

    def summary(self) -> dict[str, Any]:
        """A short account of the run, for an agent: how it went, per run of its tree."""
        data = self.describe()
        data["tree"] = [
            {
                "run": run.id,
                "depth": run.depth,
                "query": run.query[:200],
                "turns": run.turn,
                "sub_calls_done": run.sub_done,
                "status": run.status or "running",
            }
            for run in self.progress.runs.values()
        ]
        data["usage_by_model"] = {
            name: u.to_dict() for name, u in self.progress.usage.by_model.items()
        }
        data["notes"] = list(dict.fromkeys(self.progress.notes))
        return data


def progress_line(progress: Progress) -> str:
    """Where a run tree stands, in one line: the root's turn, what it is doing, sub-calls
    done (of how many, in running batches), child runs going, tokens and USD so far."""
    root = progress.root
    if root is None or root.turn == 0:
        return "starting the REPL"
    parts = [f"turn {root.turn}"]
    doing = progress.running_in(root.id)
    batches = [a for a in progress.active.values() if a.kind == "batch"]
    if batches:
        done = sum(a.done for a in batches)
        size = sum(a.size for a in batches)
        parts.append(f"sub-calls {done}/{size} in batch")
    elif any(a.kind == "cell" for a in doing):
        parts.append("running code")
    elif any(a.kind == "lm" for a in doing):
        parts.append("asking the model")
    parts.append(f"{progress.sub_calls_done} sub-calls done")
    children = sum(1 for run in progress.runs.values() if run.depth > 0 and run.status is None)
    if children:
        parts.append(f"{children} child run(s) going")
    total = progress.usage.total
    parts.append(f"{short_tokens(total.tokens)} tokens")
    if total.usd:
        parts.append(short_usd(total.usd))
    return " · ".join(parts)
