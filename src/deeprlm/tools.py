"""User tools: checking them, describing them to a model, and the sub-call tool loop.

`tools=` are plain functions put in the REPL for the root's code. `sub_tools=` are offered
only to sub-model calls: `llm_query` then runs a short loop (call, run the tools it asked
for, give back their results, until it answers), through the provider's native tool calling
where it has one and a plain text protocol otherwise. Tool output therefore stays in the
sub-call and never reaches the root's context, which is the point of the split.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from deeprlm.errors import InputError
from deeprlm.lm.base import Completion, Message, ToolCall, ToolSpec
from deeprlm.repl.functions import RESERVED_NAMES
from deeprlm.textutil import clip

TOOL_RESULT_CHARS = 20_000
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
_TOOL_BLOCK = re.compile(r"```tool\s*\n(.*?)(?:\n\s*```|\Z)", re.DOTALL)

ToolsArg = Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]] | None
CallLM = Callable[[list[Message], Sequence[ToolSpec] | None], Awaitable[Completion]]


def normalize_tools(tools: ToolsArg, what: str = "tools") -> dict[str, Callable[..., Any]]:
    """Accepts a dict of name -> function or a list of functions (named after themselves)."""
    if tools is None:
        return {}
    pairs = tools.items() if isinstance(tools, Mapping) else ((t.__name__, t) for t in tools)
    result: dict[str, Callable[..., Any]] = {}
    for name, fn in pairs:
        if not callable(fn):
            raise InputError(f"{what}: {name!r} is not callable")
        if not name.isidentifier():
            raise InputError(f"{what}: {name!r} is not a valid Python name")
        if name in RESERVED_NAMES:
            raise InputError(f"{what}: the name {name!r} is taken by the REPL; rename the tool")
        result[name] = fn
    return result


def _json_type(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation) or annotation
    if origin in _JSON_TYPES:
        return {"type": _JSON_TYPES[origin]}
    if origin in (list, tuple, set):
        return {"type": "array"}
    if origin is dict:
        return {"type": "object"}
    return {}


def tool_spec(name: str, fn: Callable[..., Any]) -> ToolSpec:
    """Describes a function from its signature and docstring."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        properties[param.name] = _json_type(hints.get(param.name, Any))
        if param.default is param.empty:
            required.append(param.name)
    doc = inspect.getdoc(fn) or f"The {name} tool."
    return ToolSpec(
        name=name,
        description=doc.split("\n\n")[0],
        parameters={"type": "object", "properties": properties, "required": required},
        fn=fn,
    )


def text_protocol(specs: Sequence[ToolSpec]) -> str:
    """Instructions for models without native tool calling."""
    lines = ["You can call these tools before you answer:"]
    for spec in specs:
        args = ", ".join(spec.parameters.get("properties", {}))
        lines.append(f"- {spec.name}({args}): {spec.description}")
    example = {"name": specs[0].name, "arguments": {}}
    lines += [
        "To call a tool, reply with only a block like this one:",
        "```tool",
        json.dumps(example),
        "```",
        "You will get its result. When you have what you need, reply with your answer and "
        "no tool block.",
    ]
    return "\n".join(lines)


def parse_text_call(text: str) -> ToolCall | str | None:
    """The tool call in a text reply; an error message if the block is malformed; None if
    the reply has no tool block (it is the answer)."""
    match = _TOOL_BLOCK.search(text)
    if match is None:
        return None
    try:
        data = json.loads(match.group(1))
        name, arguments = data["name"], data.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise TypeError("name must be a string and arguments an object")
    except (ValueError, KeyError, TypeError) as err:
        return f"could not read the tool call: {err}"
    return ToolCall(id="text", name=name, arguments=arguments)


async def run_tool(specs: Mapping[str, ToolSpec], call: ToolCall) -> str:
    spec = specs.get(call.name)
    if spec is None:
        return f"Error: no tool named {call.name!r}; tools: {', '.join(specs)}"
    try:
        result = await asyncio.to_thread(spec.fn, **call.arguments)
    except Exception as err:
        return f"Error: {type(err).__name__}: {err}"
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    return clip(text, TOOL_RESULT_CHARS)


async def answer_with_tools(
    call_lm: CallLM,
    prompt: str,
    specs: Sequence[ToolSpec],
    *,
    native: bool,
    max_turns: int,
) -> str:
    """Runs the sub-call tool loop and returns the model's final text."""
    by_name = {spec.name: spec for spec in specs}
    if native:
        messages: list[Message] = [{"role": "user", "content": prompt}]
    else:
        messages = [
            {"role": "system", "content": text_protocol(specs)},
            {"role": "user", "content": prompt},
        ]
    for turn in range(max_turns + 1):
        last_turn = turn == max_turns
        if last_turn:
            messages.append(
                {"role": "user", "content": "No more tool calls: answer now with what you have."}
            )
        completion = await call_lm(messages, specs if native and not last_turn else None)
        if native:
            if not completion.tool_calls or last_turn:
                return completion.text
            messages.append(_assistant_tool_message(completion))
            for tool_call in completion.tool_calls:
                result = await run_tool(by_name, tool_call)
                messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": result})
            continue
        parsed = None if last_turn else parse_text_call(completion.text)
        if parsed is None:
            return completion.text
        messages.append({"role": "assistant", "content": completion.text})
        if isinstance(parsed, str):
            messages.append({"role": "user", "content": f"Error: {parsed}"})
        else:
            result = await run_tool(by_name, parsed)
            messages.append({"role": "user", "content": f"Result of {parsed.name}:\n{result}"})
    return ""  # unreachable: the last turn always returns


def _assistant_tool_message(completion: Completion) -> Message:
    return {
        "role": "assistant",
        "content": completion.text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in completion.tool_calls
        ],
    }
