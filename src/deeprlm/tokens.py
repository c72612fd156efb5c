"""Counting a model's tokens before (or instead of) its provider: its own tokenizer where it
has one, else the project's one estimate (`deeprlm.textutil.estimate_tokens`).

Two jobs need such a count: a budget reserves a call's worst case before sending it, and a
provider that reports no usage still has to be metered. The count uses the model's
tokenizer when the LM offers one (`count_tokens(text) -> int`), else the estimate. For a
reservation (`TokenCounter.prompt`), an estimated prompt is taken as `PRIOR_SCALE` times
denser than the estimate says until the provider has counted one, since text can be denser
than prose (code, numbers); after that each model's real counts calibrate it: later
reservations never fall below the largest reported/estimated ratio seen.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from deeprlm.lm.base import Message, ToolSpec
from deeprlm.textutil import estimate_tokens

# Chat formats wrap each message in a few tokens of their own (role markers, separators).
TOKENS_PER_MESSAGE = 4
# How much denser than the estimate an unseen model's prompts are reserved as.
PRIOR_SCALE = 1.25


@runtime_checkable
class Tokenizer(Protocol):
    """An LM that can count its own tokens offers this."""

    def count_tokens(self, text: str) -> int: ...


def message_text(message: Message) -> str:
    """Everything in a message a provider will tokenize: its text and any tool calls."""
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    else:
        text = "" if content is None else str(content)
    calls = message.get("tool_calls")
    if calls:
        text += json.dumps(calls, ensure_ascii=False)
    return text


def count_text(lm: Any, text: str) -> int:
    """Tokens in `text` for `lm`: its tokenizer when it has one, else the estimate."""
    if isinstance(lm, Tokenizer):
        return lm.count_tokens(text)
    return estimate_tokens(text)


def count_prompt(
    lm: Any,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec] | None = None,
    schema: Mapping[str, Any] | None = None,
) -> int:
    """Tokens a prompt of `messages` (and tool schemas, and the reply's JSON Schema) costs
    `lm`, uncalibrated. The reply's schema is read too: a provider counts it as prompt, and
    the embedded model reads the items a pack of labels carries in it (see
    `deeprlm.local.labels`). Left out, a pack's reported prompt was several times the
    estimate, the counter learned that ratio, and the root's next prompt, estimated past
    the model's window, was sent with a reply cap of one token."""
    tokens = sum(count_text(lm, message_text(m)) + TOKENS_PER_MESSAGE for m in messages)
    for tool in tools or ():
        spec = {"name": tool.name, "description": tool.description, **tool.parameters}
        tokens += count_text(lm, json.dumps(spec))
    if schema is not None:
        tokens += count_text(lm, json.dumps(schema))
    return tokens


def reported(value: Any) -> int | None:
    """A token count as a provider sent it; None when it is missing or not a count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


class TokenCounter:
    """Counts prompts and replies for one run tree; learns from the provider's counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scale: dict[str, float] = {}  # model name -> largest reported/estimated ratio

    def prompt(
        self,
        lm: Any,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> int:
        """The prompt tokens a call will cost, as a worst case for reserving it."""
        tokens = count_prompt(lm, messages, tools, schema)
        prior = 1.0 if isinstance(lm, Tokenizer) else PRIOR_SCALE
        with self._lock:
            scale = self._scale.get(getattr(lm, "name", ""), prior)
        return math.ceil(tokens * scale)

    def learn(self, lm: Any, estimated: int, reported: int) -> None:
        """Records a prompt the provider counted; later estimates never fall below its rate."""
        if estimated <= 0 or reported <= estimated:
            return
        name = getattr(lm, "name", "")
        prior = 1.0 if isinstance(lm, Tokenizer) else PRIOR_SCALE
        with self._lock:
            # `estimated` already carries the current scale; the new one multiplies it.
            current = self._scale.get(name, prior)
            self._scale[name] = max(current, current * reported / estimated)
