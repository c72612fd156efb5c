"""The `Trace` a run tree writes to, and the `Recorder` that builds its events.

A `Trace` hands out ids, stamps times, passes each event to its sinks (a JSONL file, a live
console, a user callback) and keeps them for `RLMResult.trace`. The `Recorder` is the only
place events are made: one method per thing that happens, arguments by keyword, and every
text clipped to `TRACE_LIMITS` on the way in, so that no event can carry a context-sized
string whoever emits it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from deeprlm.textutil import clip
from deeprlm.trace.events import (
    BatchEnded,
    BatchStarted,
    CellEnded,
    CellStarted,
    Compacted,
    Event,
    LMCallEnded,
    LMCallStarted,
    Note,
    RunEnded,
    RunStarted,
)

Sink = Callable[[Event], None]
E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class TraceLimits:
    """The most characters a trace keeps of each kind of text."""

    query: int = 2_000
    prompt: int = 2_000  # a sub-call's prompt, or the newest message a root call answered
    reply: int = 20_000  # model replies, answers, final values
    code: int = 50_000
    output: int = 20_000  # a cell's output, as the model read it
    message: int = 20_000  # errors and notes


TRACE_LIMITS = TraceLimits()


class Trace:
    """`id_prefix` and `t0` let several run trees share one file without their ids
    clashing, on one clock (a session's questions: "q2.run0", seconds since it began)."""

    def __init__(
        self, sinks: list[Sink] | None = None, *, id_prefix: str = "", t0: float | None = None
    ) -> None:
        self.sinks: list[Sink] = list(sinks or [])
        self.events: list[Event] = []
        self._t0 = time.perf_counter() if t0 is None else t0
        self._prefix = id_prefix
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def now(self) -> float:
        return round(time.perf_counter() - self._t0, 6)

    def new_id(self, prefix: str) -> str:
        return f"{self._prefix}{prefix}{next(self._ids)}"

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            for sink in self.sinks:
                sink(event)

    def of_type(self, cls: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, cls)]


@dataclass(frozen=True)
class Span:
    """Something started and not yet ended: its id, where it hangs, when it began."""

    id: str
    run_id: str
    parent_id: str | None
    start: float


def _optional(text: str | None, limit: int) -> str | None:
    return None if text is None else clip(text, limit)


class Recorder:
    """Builds and emits every event of a run tree."""

    def __init__(self, trace: Trace, limits: TraceLimits = TRACE_LIMITS) -> None:
        self.trace = trace
        self.limits = limits

    def new_id(self, prefix: str) -> str:
        return self.trace.new_id(prefix)

    def _start(self, cls: type[Event], span: Span, **fields: Any) -> Span:
        self.trace.emit(
            cls(t=span.start, id=span.id, run_id=span.run_id, parent_id=span.parent_id, **fields)
        )
        return span

    def _end(self, cls: type[Event], span: Span, *, timed: bool = True, **fields: Any) -> None:
        """An ended event, stamped now; `timed` adds its start and duration."""
        now = self.trace.now()
        if timed:
            fields.update(start=span.start, duration_s=round(now - span.start, 6))
        self.trace.emit(
            cls(t=now, id=span.id, run_id=span.run_id, parent_id=span.parent_id, **fields)
        )

    def _span(self, prefix: str, run_id: str, parent_id: str | None) -> Span:
        return Span(self.new_id(prefix), run_id, parent_id, self.trace.now())

    # --- runs ----------------------------------------------------------------------------

    def run_started(
        self,
        *,
        run_id: str,
        parent_id: str | None,
        depth: int,
        query: str,
        model: str,
        sub_model: str,
        repl: str,
        context: Mapping[str, Any],
        settings: Mapping[str, Any],
        cache: Mapping[str, Any] | None = None,
    ) -> Span:
        return self._start(
            RunStarted,
            Span(run_id, run_id, parent_id, self.trace.now()),
            depth=depth,
            query=clip(query, self.limits.query),
            model=model,
            sub_model=sub_model,
            repl=repl,
            context=dict(context),
            settings=dict(settings),
            cache=dict(cache or {}),
        )

    def run_ended(
        self,
        span: Span,
        *,
        status: str,
        answer: str,
        iterations: int,
        sub_calls: int,
        usage: Mapping[str, Any],
        error: str | None,
        limit: str = "",
    ) -> None:
        self._end(
            RunEnded,
            span,
            timed=False,  # a run carries its wall time instead
            status=status,
            answer=clip(answer, self.limits.reply),
            iterations=iterations,
            sub_calls=sub_calls,
            wall_s=round(self.trace.now() - span.start, 6),
            usage=dict(usage),
            error=_optional(error, self.limits.message),
            limit=limit,
        )

    # --- model calls ---------------------------------------------------------------------

    def call_started(
        self,
        *,
        run_id: str,
        parent_id: str,
        purpose: str,
        model: str,
        prompt_chars: int,
        attempt: int = 1,
        max_tokens: int | None = None,
    ) -> Span:
        return self._start(
            LMCallStarted,
            self._span("call", run_id, parent_id),
            purpose=purpose,
            model=model,
            prompt_chars=prompt_chars,
            attempt=attempt,
            max_tokens=max_tokens,
        )

    def call_ended(
        self,
        span: Span,
        *,
        purpose: str,
        model: str,
        prompt: str,
        reply: str,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int,
        usd: float,
        error: str | None,
        attempt: int = 1,
        estimated: bool = False,
        cache: str = "",
        saved_tokens: int = 0,
        saved_usd: float = 0.0,
    ) -> None:
        self._end(
            LMCallEnded,
            span,
            purpose=purpose,
            model=model,
            prompt=clip(prompt, self.limits.prompt),
            prompt_chars=len(prompt),
            reply=clip(reply, self.limits.reply),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            usd=usd,
            error=_optional(error, self.limits.message),
            attempt=attempt,
            estimated=estimated,
            cache=cache,
            saved_tokens=saved_tokens,
            saved_usd=saved_usd,
        )

    # --- cells ---------------------------------------------------------------------------

    def cell_started(self, *, run_id: str, iteration: int, code: str) -> Span:
        return self._start(
            CellStarted,
            self._span("cell", run_id, run_id),
            iteration=iteration,
            code=clip(code, self.limits.code),
        )

    def cell_ended(
        self,
        span: Span,
        *,
        iteration: int,
        output: str,
        output_chars: int,
        error: str | None,
        final: str | None,
    ) -> None:
        self._end(
            CellEnded,
            span,
            iteration=iteration,
            output=clip(output, self.limits.output),
            output_chars=output_chars,
            error=_optional(error, self.limits.message),
            final=_optional(final, self.limits.reply),
        )

    # --- batches and notes ---------------------------------------------------------------

    def batch_started(
        self,
        *,
        run_id: str,
        parent_id: str,
        kind: str,
        size: int,
        items: int = 0,
        unique: int = 0,
        cached: int = 0,
        packs: tuple[int, ...] = (),
        instruction: str = "",
        labels: tuple[str, ...] = (),
    ) -> Span:
        """A batch of sub-calls; the rest describe a packed map (see `BatchStarted`)."""
        return self._start(
            BatchStarted,
            self._span("batch", run_id, parent_id),
            kind=kind,
            size=size,
            items=items,
            unique=unique,
            cached=cached,
            packs=packs,
            instruction=clip(instruction, self.limits.query),
            labels=labels,
        )

    def batch_ended(
        self,
        span: Span,
        *,
        kind: str,
        size: int,
        errors: int,
        items: int = 0,
        calls: int = 0,
        reasked: int = 0,
    ) -> None:
        self._end(
            BatchEnded,
            span,
            kind=kind,
            size=size,
            errors=errors,
            items=items,
            calls=calls,
            reasked=reasked,
        )

    def compacted(
        self,
        *,
        run_id: str,
        first_turn: int,
        last_turn: int,
        tokens_before: int,
        tokens_after: int,
    ) -> None:
        self._start(
            Compacted,
            self._span("compact", run_id, run_id),
            first_turn=first_turn,
            last_turn=last_turn,
            tokens_before=tokens_before,
            tokens_after=tokens_after,
        )

    def note(self, *, run_id: str, parent_id: str, message: str) -> None:
        self._start(
            Note,
            self._span("note", run_id, parent_id),
            message=clip(message, self.limits.message),
        )
