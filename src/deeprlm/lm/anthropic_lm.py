"""Anthropic's models through the `anthropic` SDK (the optional `anthropic` extra).

Messages arrive in the OpenAI chat format and are converted here: system messages become
the `system` parameter, tool calls become `tool_use` blocks and tool results `tool_result`
blocks. Prompt caching is switched on for every call: the root conversation only grows, so
each turn reads the previous turns from cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from deeprlm.errors import InputError, LMError
from deeprlm.lm.base import Completion, Message, ToolCall, ToolSpec
from deeprlm.lm.provider import DEFAULT_TIMEOUT_S, ProviderLM
from deeprlm.tokens import count_prompt, count_text, reported

DEFAULT_MAX_TOKENS = 8_192


def _sdk() -> ModuleType:
    try:
        import anthropic
    except ImportError:
        raise InputError(
            "anthropic/NAME needs the anthropic extra: pip install 'deeprlm[anthropic]'"
        ) from None
    return anthropic


class AnthropicLM(ProviderLM):
    async_client = "AsyncAnthropic"
    default_max_tokens = DEFAULT_MAX_TOKENS  # the API needs a cap on every request

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 0,
        context_window: int | None = 200_000,
    ) -> None:
        if not model:
            raise InputError("anthropic/NAME needs a model name after 'anthropic/'")
        self.sdk = _sdk()
        api_key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if api_key is None:
            raise InputError(f"anthropic/{model}: ANTHROPIC_API_KEY is not set")
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        options = {
            "api_key": api_key,
            "base_url": self.base_url,
            "timeout": timeout_s,
            "max_retries": max_retries,
        }
        super().__init__(model, self.base_url or "the Anthropic API", options, context_window)

    def _request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None,
        max_tokens: int | None,
        schema: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        # No native schema: `ProviderLM` puts it in the prompt and checks the reply.
        system, converted = convert_messages(messages)
        request: dict[str, Any] = {
            "model": self.name,
            "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
            "messages": converted,
            "cache_control": {"type": "ephemeral"},
        }
        if system:
            request["system"] = system
        if tools:
            request["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
        return request

    def _parse(self, response: Any, messages: Sequence[Message]) -> Completion:
        if not hasattr(response, "content"):
            raise LMError(f"{self._where} sent a reply that is not a message")
        texts, calls = [], []
        for block in response.content or ():
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                calls.append(ToolCall(block.id, block.name, dict(block.input or {})))
        text = "".join(texts)
        usage = getattr(response, "usage", None)
        read = reported(getattr(usage, "cache_read_input_tokens", None)) or 0
        written = reported(getattr(usage, "cache_creation_input_tokens", None)) or 0
        fresh = reported(getattr(usage, "input_tokens", None))
        output = reported(getattr(usage, "output_tokens", None))
        # Anthropic counts cached and cache-writing prompt tokens apart; add them up so
        # input_tokens means the whole prompt, as with every other provider.
        prompt = count_prompt(self, messages) if fresh is None else fresh + read + written
        reply = text + "".join(json.dumps(c.arguments) for c in calls)
        return Completion(
            text=text,
            model=self.name,
            input_tokens=prompt,
            output_tokens=count_text(self, reply) if output is None else output,
            cached_tokens=read,
            tool_calls=tuple(calls),
            finish_reason=response.stop_reason,
            estimated=fresh is None or output is None,
        )

    def _send(self, client: Any, request: dict[str, Any]) -> Any:
        return client.messages.create(**request)


def convert_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """OpenAI-format messages -> (system text, Anthropic messages)."""
    system: list[str] = []
    result: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Anthropic wants user and assistant turns to alternate; merge neighbours.
        if result and result[-1]["role"] == role:
            result[-1]["content"].extend(blocks)
        else:
            result.append({"role": role, "content": blocks})

    for message in messages:
        role, content = message["role"], message.get("content")
        if role == "system":
            system.append(str(content or ""))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": str(content or ""),
            }
            add("user", [block])
        elif role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
            for call in message.get("tool_calls") or ():
                function = call["function"]
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": function["name"],
                        "input": json.loads(function.get("arguments") or "{}"),
                    }
                )
            add("assistant", blocks or [{"type": "text", "text": "(empty)"}])
        else:
            add("user", [{"type": "text", "text": str(content or "")}])
    return "\n\n".join(system), result
