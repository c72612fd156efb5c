"""The seam between the front ends and a loaded context: a session answers one question at a
time about one context, each with its own per-question settings and event sink.

`open_session` is the only place that makes one. `QuestionByQuestion` stands in for the
library's session until it lands: the same methods, each question a fresh `RLM.arun` over
the context (so its REPL is not kept warm between questions).
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
        rlm = copy.copy(self._rlm)
        rlm.on_event = on_event
        if overrides:
            rlm.settings = replace(rlm.settings, **overrides)
        async with self._lock:
            result = await rlm.arun(query, self._context, skipped=self._skipped)
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
