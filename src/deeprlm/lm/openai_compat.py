"""Any OpenAI-compatible chat server through the `openai` SDK: OpenAI itself, vLLM, SGLang,
Ollama, llama.cpp's server, OpenRouter.

Only the wire format lives here; clients, the sync/async twins and error translation are
shared with the other SDK adapters in `deeprlm.lm.provider`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import openai

from deeprlm.errors import InputError, LMError
from deeprlm.lm.base import Completion, Message, ToolCall, ToolSpec
from deeprlm.lm.provider import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, ProviderLM


class OpenAICompatibleLM(ProviderLM):
    sdk = openai
    async_client = "AsyncOpenAI"
    # `response_format` with a JSON Schema; a server that refuses it is asked without.
    native_schema = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_RETRIES,
        context_window: int | None = None,
    ) -> None:
        if not model:
            raise InputError("openai/NAME needs a model name after 'openai/'")
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if api_key is None:
            if self.base_url is None:
                raise InputError(
                    f"openai/{model}: OPENAI_API_KEY is not set (or pass --base-url for a "
                    "local OpenAI-compatible server)"
                )
            api_key = "unused"  # local servers ignore it, the SDK insists on one
        options = {
            "base_url": self.base_url,
            "api_key": api_key,
            "timeout": timeout_s,
            "max_retries": max_retries,
        }
        super().__init__(model, self.base_url or "the OpenAI API", options, context_window)

    def __repr__(self) -> str:
        return f"OpenAICompatibleLM({self.name!r}, base_url={self.base_url!r})"

    def _request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None,
        max_tokens: int | None,
        schema: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.name, "messages": list(messages)}
        if schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": dict(schema), "strict": True},
            }
        if tools:
            request["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        return request

    def _parse(self, response: Any) -> Completion:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise LMError(f"{self._where} sent a reply that is not a chat completion")
        choice = choices[0] if choices else None
        message = choice.message if choice is not None else None
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None)
        extra = getattr(usage, "model_extra", None) or {}
        cost = extra.get("cost")
        return Completion(
            text=(message.content if message is not None else None) or "",
            model=self.name,
            input_tokens=(usage.prompt_tokens or 0) if usage else 0,
            output_tokens=(usage.completion_tokens or 0) if usage else 0,
            cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0,
            cost_usd=float(cost) if isinstance(cost, (int, float)) else None,
            tool_calls=_tool_calls(message),
            finish_reason=choice.finish_reason if choice is not None else None,
        )

    def _send(self, client: Any, request: dict[str, Any]) -> Any:
        return client.chat.completions.create(**request)


def _tool_calls(message: Any) -> tuple[ToolCall, ...]:
    calls = getattr(message, "tool_calls", None) or ()
    result = []
    for call in calls:
        function = getattr(call, "function", None)
        if function is None:
            continue
        try:
            arguments = json.loads(function.arguments or "{}")
        except ValueError:
            arguments = {}
        result.append(
            ToolCall(
                id=call.id,
                name=function.name,
                arguments=arguments if isinstance(arguments, dict) else {},
            )
        )
    return tuple(result)
