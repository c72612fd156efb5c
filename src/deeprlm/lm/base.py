"""The `LM` protocol every model adapter implements, and the records it trades in.

A model is asynchronous: the engine awaits `acomplete`. Everything else the engine needs of
a model is in the protocol too: its window, the prompt family it reads best, and a twin
for another conversation (`for_role`). `LMDefaults` gives an adapter that has nothing
special to say about those the usual answers; `complete_sync` serves the few callers that
must block.

Messages are plain dicts in the OpenAI chat format (`{"role": ..., "content": ...}`, plus
`tool_calls` / `tool` messages for tool use); it is the format most users already know, and
each adapter converts it to its provider's shape at the edge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from deeprlm.blocking import run_blocking

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
    # True when the provider reported no usage (or nonsense) and the tokens were counted on
    # this side instead (see `deeprlm.tokens`).
    estimated: bool = False


@runtime_checkable
class LM(Protocol):
    """A chat model. Its attributes are read, never set, by the engine."""

    @property
    def name(self) -> str:
        """Identifies it in usage reports and the price table."""
        ...

    @property
    def supports_tools(self) -> bool:
        """True when the provider has native tool calling; otherwise tools go through a
        text protocol (see `deeprlm.tools`)."""
        ...

    @property
    def context_window(self) -> int | None:
        """The window in tokens, when known: the root is told how much one sub-call can
        read."""
        ...

    @property
    def prompt_family(self) -> str:
        """Which prompts suit it (see `deeprlm.prompts`): "default", or "small" for models
        of a few billion parameters, which follow a worked example better than rules."""
        ...

    def for_role(self, role: str) -> LM:
        """The same model for another conversation ("sub", "depth1", ...). A model that
        caches what it has read (in process) gives each role its own cache, so sub-calls
        and child runs never evict the root's growing conversation; others return self."""
        ...

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        """One reply. `schema`, when given, is a JSON Schema the reply's text must follow:
        adapters enforce it where the model or server can (a grammar, `response_format`),
        and otherwise check the reply and ask again (see `deeprlm.lm.schema`)."""
        ...


def reads_items_inline(lm: LM) -> bool:
    """Whether `lm` labels a pack's items from its reply schema: given an object of
    numbered keys, each one of a few labels and described by the item it labels, it reads
    each item (alone) just before choosing its label, so the prompt need not list them (the
    embedded model does; see `deeprlm.local.labels`). An optional attribute,
    `inline_labels`: a model without it gets the items in the prompt."""
    return bool(getattr(lm, "inline_labels", False))


def computes_in_process(lm: LM) -> bool:
    """Whether `lm` computes in this process, on this machine's CPU (llama.cpp): it cannot
    hang like a server that stopped answering, and it is slow, so the engine holds no call
    timeout over it and gives its cells longer (see `deeprlm.settings.for_models`). An
    optional attribute, `in_process`."""
    return bool(getattr(lm, "in_process", False))


class LMDefaults:
    """The usual answers for an adapter with nothing special to say: no native tool calling,
    an unknown window, the default prompts, one conversation for every role."""

    supports_tools: bool = False
    context_window: int | None = None
    prompt_family: str = "default"

    def for_role(self, role: str) -> Any:
        return self


def complete_sync(
    lm: LM,
    messages: Sequence[Message],
    *,
    tools: Sequence[ToolSpec] | None = None,
    max_tokens: int | None = None,
    schema: Mapping[str, Any] | None = None,
) -> Completion:
    """One call of `lm` from blocking code (a script, a notebook cell)."""
    return run_blocking(lm.acomplete(messages, tools=tools, max_tokens=max_tokens, schema=schema))
