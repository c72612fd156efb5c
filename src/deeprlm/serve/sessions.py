"""The seam between the front ends and the library: a question about a context given with
it (`run_once`), and a loaded context's session, which answers one question at a time,
each with its own per-question settings and event sink (`open_session`).

`open_session` is the only place that makes a session: the library's (`deeprlm.session`),
whose REPL, and the variables its code made, last from one question to the next.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from deeprlm.repl.base import ContextValue
from deeprlm.rlm import RLM, RLMResult
from deeprlm.trace.events import Event

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
    """The library's session over a loaded context: one REPL kept warm across its
    questions, with its variables. Its sub-call cache is the setup's (none unless the
    setup names one): a server writes no cache file its operator did not ask for."""
    return rlm.session(
        context,
        skipped=skipped,
        session_id=session_id,
        cache=rlm.cache if rlm.cache is not None else "off",
    )
