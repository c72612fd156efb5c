"""Any OpenAI-compatible chat server through the `openai` SDK: OpenAI itself, vLLM, SGLang,
Ollama, llama.cpp's server, OpenRouter.

Only the wire format lives here; clients, the sync/async twins and error translation are
shared with the other SDK adapters in `deeprlm.lm.provider`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import openai

from deeprlm.errors import InputError, LMError
from deeprlm.lm.base import Completion, Message, ToolCall, ToolSpec
from deeprlm.lm.provider import DEFAULT_TIMEOUT_S, ProviderLM
from deeprlm.tokens import count_prompt, count_text, reported


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
        max_retries: int = 0,
        context_window: int | None = None,
        temperature: float | None = None,
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
        # OpenAI's own API wants the newer name (its reasoning models refuse `max_tokens`);
        # the servers that copy its format (vLLM, Ollama, llama.cpp) know the older one.
        openai_itself = self.base_url is None or "api.openai.com" in self.base_url
        self._cap_key = "max_completion_tokens" if openai_itself else "max_tokens"
        self.temperature = temperature  # None: the server's default (sent only when set)

    @property
    def sampling(self) -> dict[str, Any]:
        """What besides the messages shapes a reply (read by the sub-call cache)."""
        return {"temperature": self.temperature, "base_url": self.base_url}

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
        if self.temperature is not None:
            request["temperature"] = self.temperature
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
            request[self._cap_key] = max_tokens
        return request

    def _parse(self, response: Any, messages: Sequence[Message]) -> Completion:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise LMError(f"{self._where} sent a reply that is not a chat completion")
        choice = choices[0] if choices else None
        message = choice.message if choice is not None else None
        text = (message.content if message is not None else None) or ""
        calls = _tool_calls(message)
        usage = getattr(response, "usage", None)
        details = getattr(usage, "prompt_tokens_details", None)
        extra = getattr(usage, "model_extra", None) or {}
        prompt = reported(getattr(usage, "prompt_tokens", None))
        output = reported(getattr(usage, "completion_tokens", None))
        reply = text + "".join(json.dumps(c.arguments) for c in calls)
        return Completion(
            text=text,
            model=self.name,
            input_tokens=count_prompt(self, messages) if prompt is None else prompt,
            output_tokens=count_text(self, reply) if output is None else output,
            cached_tokens=reported(getattr(details, "cached_tokens", None)) or 0,
            cost_usd=_cost(extra.get("cost")),
            tool_calls=calls,
            finish_reason=choice.finish_reason if choice is not None else None,
            estimated=prompt is None or output is None,
        )

    def _send(self, client: Any, request: dict[str, Any]) -> Any:
        return client.chat.completions.create(**request)


def _cost(value: Any) -> float | None:
    """A cost the provider reported (OpenRouter does); None when absent or nonsense."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


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
