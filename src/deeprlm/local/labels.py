"""Label replies decoded a choice at a time: the embedded model's fast path for a pack of
labels.

A classification asks for `{"1": <label>, "2": <label>, ...}` under a schema whose values
are each one of a few labels (`deeprlm.primitives.mapping`). Under a grammar, llama.cpp
writes such a reply one token per decode step, quotes, keys and commas included, though
the grammar leaves it no choice about them: about seven steps an item with labels of a few
words. Here only the choices cost a step. What the schema fixes (the keys, the
separators, the rest of a label once its first tokens single it out) is fed in one batch
with the next choice's position, and a choice is the candidate token the model scores
highest. With greedy sampling that is the grammar's reply, save two things: a label is
read in its own tokenization only (a grammar would also let the model spell it in
pieces), and the JSON is written compactly.

Pure logic over two callables, so it is tested without a model: `tokenize(text)` and
`step(tokens)`, which evaluates tokens after those before and scores the next position.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# tokens to evaluate -> the score of any token at the position after them
Step = Callable[[list[int]], Callable[[int], float]]
Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True)
class LabelObject:
    """A JSON object with these keys, in order, each holding one of its labels."""

    keys: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]


def label_object(schema: Mapping[str, Any] | None) -> LabelObject | None:
    """The label object a schema asks for; None for any other schema (whose reply then
    comes under a grammar as usual)."""
    if not schema or schema.get("type") != "object":
        return None
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return None
    keys = tuple(properties)
    if list(schema.get("required") or ()) != list(keys):
        return None
    if schema.get("additionalProperties") is not False:
        return None
    if set(schema) - {"type", "properties", "required", "additionalProperties"}:
        return None
    labels = []
    for value in properties.values():
        if not isinstance(value, Mapping) or set(value) - {"enum", "type"}:
            return None
        enum = value.get("enum")
        if value.get("type", "string") != "string" or not isinstance(enum, list) or not enum:
            return None
        if not all(isinstance(label, str) and label for label in enum):
            return None
        labels.append(tuple(dict.fromkeys(enum)))
    return LabelObject(tuple(str(key) for key in keys), tuple(labels))


def decode_labels(
    shape: LabelObject,
    tokenize: Tokenize,
    step: Step,
    limit: int,
    cancel: threading.Event,
) -> tuple[list[int], str]:
    """The reply's tokens and why it ended (stop | length | cancelled)."""
    out: list[int] = []  # tokens evaluated
    pending = tokenize(_opening(shape))  # tokens fixed but not yet evaluated
    spelled: dict[str, list[int]] = {}
    for slot, labels in enumerate(shape.labels):
        after = tokenize(_closing(shape, slot))
        for label in labels:
            if label not in spelled:
                spelled[label] = tokenize(json.dumps(label, ensure_ascii=False)[1:-1])
        alive = [spelled[label] for label in labels]
        depth = 0
        while len(alive) > 1:
            # The next token of each label still possible; a label already spelled out
            # goes on with the text after it.
            options: dict[int, list[list[int]]] = {}
            for seq in alive:
                options.setdefault(seq[depth] if depth < len(seq) else after[0], []).append(seq)
            if len(options) > 1:
                if cancel.is_set():
                    return out, "cancelled"
                scores = step(pending)
                out += pending
                pending = []
                pick = max(options, key=scores)
            else:
                pick = next(iter(options))
            alive = options[pick]
            ended = [seq for seq in alive if len(seq) == depth]
            if ended:
                alive = ended
                break
            pending.append(pick)
            depth += 1
        pending += alive[0][depth:] + after
        if len(out) + len(pending) >= limit:
            return (out + pending)[:limit], "length"
    return out + pending, "stop"


def _opening(shape: LabelObject) -> str:
    return "{" + json.dumps(shape.keys[0]) + ': "'


def _closing(shape: LabelObject, slot: int) -> str:
    if slot + 1 == len(shape.keys):
        return '"}'
    return '", ' + json.dumps(shape.keys[slot + 1]) + ': "'
