"""`WrappedLM`: a model around another model, for wrappers that change how a call is made
(held to a window, seen by a tap) but nothing the engine reads of the model: its name,
tools, window, prompt family, sampling (which the sub-call cache keys replies by) and
whether it computes in process are the inner model's; its role twins are wrapped the same
way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deeprlm.cache import sampling_of
from deeprlm.lm.base import LM, Completion, Message, ToolSpec


class WrappedLM:
    """Forwards everything to `lm`; a subclass overrides `acomplete` and `wrap`."""

    def __init__(self, lm: LM) -> None:
        self.lm = lm

    def wrap(self, lm: LM) -> LM:
        """The same wrapper around another model (a role twin of this one's)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.lm.name

    @property
    def supports_tools(self) -> bool:
        return self.lm.supports_tools

    @property
    def context_window(self) -> int | None:
        return self.lm.context_window

    @property
    def prompt_family(self) -> str:
        return self.lm.prompt_family

    @property
    def in_process(self) -> bool:
        # The engine holds no call timeout over a model computing in this machine.
        return bool(getattr(self.lm, "in_process", False))

    @property
    def inline_labels(self) -> bool:
        return bool(getattr(self.lm, "inline_labels", False))

    @property
    def sampling(self) -> dict[str, Any]:
        return sampling_of(self.lm)

    def for_role(self, role: str) -> LM:
        return self.wrap(self.lm.for_role(role))

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        # The schema only when there is one: adapters written before it lack the keyword.
        options: dict[str, Any] = {} if schema is None else {"schema": schema}
        return await self.lm.acomplete(messages, tools=tools, max_tokens=max_tokens, **options)
