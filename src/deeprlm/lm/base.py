"""The `LM` protocol every model adapter implements, and the records it trades in.

Messages are plain dicts in the OpenAI chat format (`{"role": ..., "content": ...}`, plus
`tool_calls` / `tool` messages for tool use); it is the format most users already know, and
each adapter converts it to its provider's shape at the edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    """A Python function offered to a model: its name, what it does and its JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Completion:
    """One model reply and what it cost, as the provider reported it."""

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    # Set when the provider reports the cost itself (OpenRouter does); else priced locally.
    cost_usd: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None


@runtime_checkable
class LM(Protocol):
    """A chat model. `name` identifies it in usage reports and the price table.

    `schema`, when given, is a JSON Schema the reply's text must follow: adapters enforce
    it where the model or server can (a grammar, `response_format`), and otherwise check
    the reply and ask again (see `deeprlm.lm.schema`)."""

    name: str
    # True when the provider has native tool calling; otherwise tools go through a text
    # protocol (see `deeprlm.tools`).
    supports_tools: bool

    def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion: ...

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion: ...


class SyncLM:
    """Mixin for adapters whose work is blocking (an in-process model): `acomplete` runs
    `complete` in a worker thread so the event loop stays free for the REPL and other calls."""

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        return await asyncio.to_thread(
            self.complete,  # type: ignore[attr-defined]
            messages,
            tools=tools,
            max_tokens=max_tokens,
            schema=schema,
        )
