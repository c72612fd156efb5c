"""Counting tokens without the provider: the project's one estimate, and a model's own
tokenizer where it has one.

Two jobs need a count before (or instead of) the provider's: a budget reserves a call's
worst case before sending it, and a provider that reports no usage still has to be metered.
Both go through `TokenCounter`. It uses the model's tokenizer when the LM offers one
(`count_tokens(text) -> int`); otherwise `estimate_tokens`, built on `CHARS_PER_TOKEN`,
deliberately on the short side of what BPE tokenizers give English text (about 4
characters a token), so estimates over-count and a budget errs on the safe side. Each
model's real counts, once reported, calibrate the estimate: if a provider counts more
tokens than estimated for a prompt, later estimates for that model scale up by the largest
ratio seen.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from deeprlm.lm.base import Message, ToolSpec

# Characters per token when no tokenizer is at hand: the project's one estimate.
CHARS_PER_TOKEN = 3
# Chat formats wrap each message in a few tokens of their own (role markers, separators).
TOKENS_PER_MESSAGE = 4


@runtime_checkable
class Tokenizer(Protocol):
    """An LM that can count its own tokens offers this."""

    def count_tokens(self, text: str) -> int: ...


def estimate_tokens(text: str) -> int:
    """Tokens in `text` by the project's estimate: CHARS_PER_TOKEN characters of ASCII a
    token, and a token for every other character (CJK text, emoji and accented letters
    take about one each, or more, in BPE vocabularies built mostly from English)."""
    if text.isascii():
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / CHARS_PER_TOKEN) + len(text) - ascii_chars


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
    lm: Any, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None
) -> int:
    """Tokens a prompt of `messages` (and tool schemas) costs `lm`, uncalibrated."""
    tokens = sum(count_text(lm, message_text(m)) + TOKENS_PER_MESSAGE for m in messages)
    for tool in tools or ():
        schema = {"name": tool.name, "description": tool.description, **tool.parameters}
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
        self, lm: Any, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None
    ) -> int:
        """The prompt tokens a call will cost, as a worst case for reserving it."""
        tokens = count_prompt(lm, messages, tools)
        with self._lock:
            scale = self._scale.get(getattr(lm, "name", ""), 1.0)
        return math.ceil(tokens * scale)

    def learn(self, lm: Any, estimated: int, reported: int) -> None:
        """Records a prompt the provider counted; later estimates never fall below its rate."""
        if estimated <= 0 or reported <= estimated:
            return
        name = getattr(lm, "name", "")
        with self._lock:
            # `estimated` already carries the current scale; the new one multiplies it.
            current = self._scale.get(name, 1.0)
            self._scale[name] = max(current, current * reported / estimated)
