"""Constrained replies for models that cannot be held to a JSON Schema: check, then ask again.

`LM.acomplete(..., schema=...)` asks for a reply that follows a JSON Schema. The embedded
model enforces it with a grammar and OpenAI-compatible servers with `response_format`;
where that is missing, rejected or ignored, the adapter checks the reply here and, if it
does not follow the schema, asks once more with the problem spelled out (`follow_up`).
The check covers the keywords replies are built from — type, enum, const, properties,
required, additionalProperties, items, minItems, maxItems, minLength, maxLength — and
ignores the others, so it never rejects a reply a full validator would accept for the
keywords it knows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from deeprlm.lm.base import Completion, Message

# How many times a reply that does not follow the schema is asked for again.
RETRIES = 1
_FENCED = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def instruction(schema: Mapping[str, Any]) -> str:
    """What to add to a prompt for a model that is not held to the schema otherwise."""
    return "Reply with JSON only, no other text, following this JSON Schema:\n" + json.dumps(
        schema, ensure_ascii=False
    )


def with_instruction(messages: Sequence[Message], schema: Mapping[str, Any]) -> list[Message]:
    """The messages with the schema's instruction appended to the last user message."""
    result = [dict(m) for m in messages]
    for message in reversed(result):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            message["content"] = f"{message['content']}\n\n{instruction(schema)}"
            return result
    result.append({"role": "user", "content": instruction(schema)})
    return result


def problem(text: str, schema: Mapping[str, Any]) -> str | None:
    """Why `text` does not follow `schema`, or None when it does."""
    match = _FENCED.match(text)
    body = match.group(1) if match else text.strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return f"the reply is not JSON ({exc.msg} at character {exc.pos})"
    return check(value, schema)


def check(value: Any, schema: Mapping[str, Any], path: str = "$") -> str | None:
    """Why `value` does not follow `schema` (the keywords listed above), or None."""
    if "const" in schema and value != schema["const"]:
        return f"{path} must be {json.dumps(schema['const'])}"
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        return f"{path} must be one of {allowed}, not {json.dumps(value)}"
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, name) for name in names):
            return f"{path} must be of type {' or '.join(names)}"
    if isinstance(value, dict):
        return _check_object(value, schema, path)
    if isinstance(value, list):
        return _check_array(value, schema, path)
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{path} must have at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{path} must have at most {schema['maxLength']} characters"
    return None


def _is(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, object))


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> str | None:
    properties = schema.get("properties") or {}
    for key in schema.get("required") or ():
        if key not in value:
            return f"{path} lacks the required key {json.dumps(key)}"
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub = properties.get(key)
        if sub is None:
            if extra is False:
                return f"{path} has a key the schema does not allow: {json.dumps(key)}"
            sub = extra if isinstance(extra, Mapping) else None
        if sub is not None:
            found = check(item, sub, f"{path}.{key}")
            if found:
                return found
    return None


def _check_array(value: list[Any], schema: Mapping[str, Any], path: str) -> str | None:
    if len(value) < schema.get("minItems", 0):
        return f"{path} must have at least {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{path} must have at most {schema['maxItems']} items"
    items = schema.get("items")
    if isinstance(items, Mapping):
        for index, item in enumerate(value):
            found = check(item, items, f"{path}[{index}]")
            if found:
                return found
    return None


def follow_up(
    messages: Sequence[Message], reply: Completion, schema: Mapping[str, Any]
) -> list[Message] | None:
    """The messages that ask again when `reply` does not follow `schema`; None when it does."""
    found = problem(reply.text, schema)
    if found is None:
        return None
    return [
        *messages,
        {"role": "assistant", "content": reply.text},
        {
            "role": "user",
            "content": f"That reply does not follow the JSON Schema: {found}. "
            + instruction(schema),
        },
    ]


def merged(first: Completion, second: Completion) -> Completion:
    """The second reply, carrying the usage of both calls."""
    cost = None
    if first.cost_usd is not None or second.cost_usd is not None:
        cost = (first.cost_usd or 0.0) + (second.cost_usd or 0.0)
    return replace(
        second,
        input_tokens=first.input_tokens + second.input_tokens,
        output_tokens=first.output_tokens + second.output_tokens,
        cached_tokens=first.cached_tokens + second.cached_tokens,
        cost_usd=cost,
    )
