"""The seam between the front ends and the library: a question about a context given with
it (`run_once`), and a loaded context's session, which answers one question at a time,
each with its own per-question settings and event sink (`open_session`).

`open_session` is the only place that makes a session. `QuestionByQuestion` stands in for
the library's session until it lands: the same methods, each question a fresh run over the
context (so its REPL is not kept warm between questions).
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from deeprlm.repl.base import ContextValue
from deeprlm.rlm import RLM, RLMResult
from deeprlm.trace.events import Event
from deeprlm.trace.recorder import Trace

EventSink = Callable[[Event], None]


class Session(Protocol):
    """What the front ends need of a session (see `open_session`)."""

    @property
    def id(self) -> str: ...

    async def aask(
        self, query: str, on_event: EventSink | None = None, **overrides: Any
    ) -> RLMResult: ...

    def variables(self) -> dict[str, str]: ...

    async def aclose(self) -> None: ...


async def run_once(
    rlm: RLM,
    query: str,
    context: ContextValue,
    *,
    skipped: Sequence[str] = (),
    on_event: EventSink | None = None,
    **overrides: Any,
) -> RLMResult:
    """One run over `context` with this question's settings and sink (the `RLM` is shared
    by every request for its setup, so it is copied, not changed)."""
    configured = copy.copy(rlm)
    configured.on_event = on_event
    if overrides:
        configured.settings = replace(rlm.settings, **overrides)
    return await configured.arun(query, context, skipped=skipped)


def open_session(
    rlm: RLM, context: ContextValue, *, skipped: Sequence[str] = (), session_id: str | None = None
) -> Session:
    return QuestionByQuestion(rlm, context, skipped=skipped, session_id=session_id)


class QuestionByQuestion:
    """A session that runs each question as a run of its own over the same context."""

    def __init__(
        self,
        rlm: RLM,
        context: ContextValue,
        *,
        skipped: Sequence[str] = (),
        session_id: str | None = None,
    ) -> None:
        self._rlm = rlm
        self._context = context
        self._skipped = tuple(skipped)
        self._id = session_id or uuid.uuid4().hex
        self._lock = asyncio.Lock()
        self.history: list[tuple[str, RLMResult]] = []

    @property
    def id(self) -> str:
        return self._id

    async def aask(
        self, query: str, on_event: EventSink | None = None, **overrides: Any
    ) -> RLMResult:
        async with self._lock:
            result = await run_once(
                self._rlm,
                query,
                self._context,
                skipped=self._skipped,
                on_event=on_event,
                **overrides,
            )
        # Kept without its events (they went to `on_event`), so a long session stays small.
        self.history.append((query, replace(result, trace=Trace())))
        return result

    def variables(self) -> dict[str, str]:
        return {}

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> QuestionByQuestion:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
