"""Packing many short items into one sub-call, and reading the numbered answers back.

A pack is a run of items, in input order, that fits one call: at most `max_items` of them
and at most `max_chars` of item text. The prompt numbers them from 1; the reply is a JSON
object from those numbers to answers, and a JSON Schema says so, which a model adapter
that can enforce one (a llama.cpp grammar, `response_format`) turns into a guarantee. Other
models are read leniently: a JSON object or array, a truncated object, or "3: answer"
lines. Whatever stays unreadable is missing, and the caller asks for it again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)
_JSON_PAIR = re.compile(r'"(\d+)"\s*:\s*("(?:[^"\\]|\\.)*")')
_NUMBERED_LINE = re.compile(r"^\s*(?:item\s*)?\[?(\d+)\]?\s*[.:)=-]\s*(.+?)\s*$", re.I | re.M)


def plan(sizes: Sequence[int], max_items: int, max_chars: int) -> list[list[int]]:
    """Positions grouped into packs, in order: a pack closes when one more item would pass
    either limit. An item larger than `max_chars` travels alone."""
    packs: list[list[int]] = []
    current: list[int] = []
    used = 0
    for position, size in enumerate(sizes):
        if current and (len(current) >= max_items or used + size > max_chars):
            packs.append(current)
            current, used = [], 0
        current.append(position)
        used += size
    if current:
        packs.append(current)
    return packs


def numbered(items: Sequence[str]) -> str:
    """Items numbered from 1, one a line; items of several lines get a heading each so
    where one ends stays plain."""
    if any("\n" in item for item in items):
        return "\n\n".join(f"### Item {n}\n{item.strip()}" for n, item in enumerate(items, 1))
    return "\n".join(f"{n}. {item.strip()}" for n, item in enumerate(items, 1))


def described_items(schema: Mapping[str, Any] | None) -> list[str]:
    """The items a reply schema carries as its keys' descriptions (a pack of labels for a
    model that reads them in its reply); empty when it carries none."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, Mapping):
        return []
    described = [
        value.get("description") for value in properties.values() if isinstance(value, Mapping)
    ]
    if not described or not all(isinstance(item, str) for item in described):
        return []
    return [str(item) for item in described]


def reply_schema(count: int, value: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON object with the keys "1".."count", in order, each holding `value`."""
    keys = [str(n) for n in range(1, count + 1)]
    return {
        "type": "object",
        "properties": {key: dict(value) for key in keys},
        "required": keys,
        "additionalProperties": False,
    }


def parse_numbered(text: str, count: int) -> dict[int, str]:
    """Answers by item number (1..count) from a reply; numbers it does not answer are
    absent. Values that are not strings are given as JSON text."""
    body = text.strip()
    fenced = _FENCED.search(body)
    if fenced:
        body = fenced.group(1)
    answers = _from_json(body, count)
    if answers is None:
        answers = {}
        for key, raw in _JSON_PAIR.findall(body):
            try:
                answers[int(key)] = json.loads(raw)
            except ValueError:
                continue
        if not answers:
            for key, value in _NUMBERED_LINE.findall(body):
                answers.setdefault(int(key), value.strip().strip("\"'"))
    return {n: v for n, v in answers.items() if 1 <= n <= count and v.strip()}


def _from_json(body: str, count: int) -> dict[int, str] | None:
    start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(body[start:])
    except ValueError:
        return None
    if isinstance(value, dict):
        answers = {}
        for key, item in value.items():
            number = _number(key)
            if number is not None:
                answers[number] = _as_text(item)
        return answers
    if isinstance(value, list) and len(value) == count:
        return {n: _as_text(item) for n, item in enumerate(value, 1)}
    return None


def _number(key: str) -> int | None:
    match = re.fullmatch(r"\s*(?:item\s*)?(\d+)\s*", key, re.I)
    return int(match.group(1)) if match else None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
