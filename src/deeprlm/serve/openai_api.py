"""The OpenAI Chat Completions wire format: a request read into a question, and an
`RLMResult` written back as a completion or as stream chunks.

What the request means here: the last user message is the question; the context is the
`context_id` of an uploaded context, or else the `context` field and/or the messages before
the question (as one transcript); the `deeprlm` field holds per-request settings (capped by
the server's) and how to stream progress. Other OpenAI fields (temperature, ...) are
accepted and ignored: the setup decides how its models are called.

Every response carries `usage` (prompt, completion and cached tokens of the whole run tree)
and a `deeprlm` field: the run id, USD, the status and how far the run went.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deeprlm.rlm import RLMResult
from deeprlm.serve.errors import bad_request, unprocessable
from deeprlm.serve.runs import RunRecord
from deeprlm.usage import UsageReport

PROGRESS_MODES = ("reasoning", "comments", "none")
# The run's status -> the completion's finish_reason: a limit cut the answer short.
FINISH_REASONS = {"answered": "stop", "forced": "stop", "limit": "length"}


@dataclass(frozen=True)
class ChatRequest:
    model: Any
    query: str
    context: Any
    context_id: Any
    stream: bool
    include_usage: bool
    overrides: dict[str, Any]
    progress: str


def parse_chat(body: Any) -> ChatRequest:
    if not isinstance(body, Mapping):
        raise bad_request("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", code="missing_messages")
    texts: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a 'role'")
        texts.append((message["role"], message_text(message.get("content"), i)))
    last_user = max((i for i, (role, _) in enumerate(texts) if role == "user"), default=None)
    if last_user is None:
        raise bad_request("no user message: the last user message is the question")
    query = texts[last_user][1]
    earlier = [(role, text) for role, text in texts[:last_user] if text.strip()]

    extension = body.get("deeprlm") or {}
    if not isinstance(extension, Mapping):
        raise bad_request("'deeprlm' must be an object of settings")
    overrides = dict(extension)
    progress = overrides.pop("progress", "reasoning")
    if progress not in PROGRESS_MODES:
        raise bad_request(f"deeprlm.progress must be one of {', '.join(PROGRESS_MODES)}")

    context_id = body.get("context_id")
    context = body.get("context")
    if context_id is not None:
        if not isinstance(context_id, str):
            raise bad_request("'context_id' must be a string")
        # The messages before the question are the conversation about the loaded context,
        # which its session remembers; they are not more context.
    elif earlier:
        context = _with_transcript(context, transcript(earlier))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false")
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) if isinstance(options, Mapping) else False
    return ChatRequest(
        model=body.get("model"),
        query=query,
        context=context,
        context_id=context_id,
        stream=stream,
        include_usage=include_usage,
        overrides=overrides,
        progress=progress,
    )


def message_text(content: Any, index: int) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping):
                raise bad_request(f"messages[{index}].content holds a part that is not an object")
            if part.get("type") in ("text", "input_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise unprocessable(
                    f"messages[{index}] holds a {part.get('type')!r} part; only text is read",
                    code="unsupported_content",
                )
        return "\n".join(texts)
    raise bad_request(f"messages[{index}].content must be a string or a list of parts")


def transcript(messages: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"[{role}]\n{text}" for role, text in messages)


def _with_transcript(context: Any, conversation: str) -> Any:
    """The `context` field with the earlier messages added under 'conversation'."""
    if context is None:
        return conversation
    if isinstance(context, dict):
        return (
            {**context, "conversation": conversation} if "conversation" not in context else context
        )
    if isinstance(context, list):
        return [*context, conversation]
    return {"context": context, "conversation": conversation}


# -- responses


def usage_body(report: UsageReport) -> dict[str, Any]:
    total = report.total
    return {
        "prompt_tokens": total.input_tokens,
        "completion_tokens": total.output_tokens,
        "total_tokens": total.tokens,
        "prompt_tokens_details": {"cached_tokens": total.cached_tokens},
    }


def extension(record: RunRecord, result: RLMResult | None) -> dict[str, Any]:
    """The `deeprlm` field of a response: what OpenAI's format has no place for."""
    usage = result.usage if result is not None else record.usage()
    data: dict[str, Any] = {
        "run_id": record.id,
        "status": record.status,
        "usd": round(usage.total.usd, 8),
        "context_id": record.context_id,
        "usage_by_model": {name: u.to_dict() for name, u in usage.by_model.items()},
        "trace": f"/v1/runs/{record.id}/trace",
    }
    if result is not None:
        data.update(
            iterations=result.iterations,
            sub_calls=result.sub_calls,
            wall_s=round(result.wall_s, 3),
            forced=result.forced,
            notes=list(result.notes),
            error=result.error,
        )
    return data


def completion_id(record: RunRecord) -> str:
    return "chatcmpl-" + record.id.removeprefix("run-")


def completion_body(record: RunRecord, result: RLMResult) -> dict[str, Any]:
    return {
        "id": completion_id(record),
        "object": "chat.completion",
        "created": int(record.created),
        "model": record.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": FINISH_REASONS.get(result.status, "stop"),
            }
        ],
        "usage": usage_body(result.usage),
        "deeprlm": extension(record, result),
    }


def chunk(
    record: RunRecord,
    delta: dict[str, Any],
    *,
    finish_reason: str | None = None,
    usage: UsageReport | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": completion_id(record),
        "object": "chat.completion.chunk",
        "created": int(record.created),
        "model": record.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    if extra:
        body.update(extra)
    return body


def usage_chunk(record: RunRecord, result: RLMResult | None) -> dict[str, Any]:
    """The last chunk a client that asked for `stream_options.include_usage` expects."""
    usage = result.usage if result is not None else record.usage()
    return {
        "id": completion_id(record),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": record.model,
        "choices": [],
        "usage": usage_body(usage),
        "deeprlm": extension(record, result),
    }
