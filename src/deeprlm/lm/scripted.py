"""A scripted LM: canned replies for tests, demos and oracle policies.

It is a real `LM` (usage, delays, tool calls), so the engine cannot tell it from a provider.
Replies come from a list (consumed in order, the last one repeated) or from a function of
the messages, which lets one script serve a root, its children and its sub-calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deeprlm.lm.base import Completion, LMDefaults, Message, ToolSpec
from deeprlm.textutil import estimate_tokens

Reply = str | Completion
Policy = Callable[[Sequence[Message]], Reply]


class ScriptedLM(LMDefaults):
    def __init__(
        self,
        replies: Sequence[Reply] | Policy,
        *,
        name: str = "scripted",
        delay: float = 0.0,
        temperature: float | None = None,
    ) -> None:
        self.name = name
        self.delay = delay
        # What the sub-call cache reads: 0 says the same messages get the same reply (a
        # policy that is a function of them); None, that replies may differ (a list).
        self.sampling = {"temperature": temperature}
        self._policy = replies if callable(replies) else None
        self._replies = [] if callable(replies) else list(replies)
        self._lock = threading.Lock()
        self._next = 0
        self.calls: list[list[Message]] = []
        # The JSON Schema each call asked for (None: none), in call order. Scripted replies
        # are returned as written: a test decides whether they follow it.
        self.schemas: list[Mapping[str, Any] | None] = []

    def _reply(
        self, messages: Sequence[Message], schema: Mapping[str, Any] | None = None
    ) -> Completion:
        with self._lock:
            self.calls.append([dict(m) for m in messages])
            self.schemas.append(schema)
            if self._policy is not None:
                reply = self._policy(messages)
            elif not self._replies:
                reply = ""
            else:
                reply = self._replies[min(self._next, len(self._replies) - 1)]
                self._next += 1
        if isinstance(reply, Completion):
            return reply
        prompt = "".join(str(m.get("content") or "") for m in messages)
        return Completion(
            text=reply,
            model=self.name,
            input_tokens=estimate_tokens(prompt),
            output_tokens=estimate_tokens(reply),
            finish_reason="stop",
        )

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._reply(messages, schema)
