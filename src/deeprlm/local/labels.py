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

from deeprlm.primitives import packing

# tokens to evaluate -> the score of any token at the position after them
Step = Callable[[list[int]], Callable[[int], float]]
Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True)
class LabelObject:
    """A JSON object with these keys, in order, each holding one of its labels; `items`
    are the keys' descriptions, when each has one (the text the key labels)."""

    keys: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    items: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Decoded:
    """The labels chosen, one per key in order (fewer when cut short), how many tokens the
    reply holds written as compact JSON, how many the model read beyond those (the items
    written before each choice), and why it ended (stop | length | cancelled)."""

    labels: list[str]
    reply_tokens: int
    read_tokens: int
    reason: str

    def text(self, shape: LabelObject) -> str:
        """The reply: a JSON object of the keys answered."""
        return json.dumps(dict(zip(shape.keys, self.labels, strict=False)), ensure_ascii=False)


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
        if not isinstance(value, Mapping) or set(value) - {"enum", "type", "description"}:
            return None
        enum = value.get("enum")
        if value.get("type", "string") != "string" or not isinstance(enum, list) or not enum:
            return None
        if not all(isinstance(label, str) and label for label in enum):
            return None
        labels.append(tuple(dict.fromkeys(enum)))
    items = packing.described_items(schema)
    return LabelObject(tuple(str(key) for key in keys), tuple(labels), tuple(items) or None)


def decode_labels(
    shape: LabelObject,
    tokenize: Tokenize,
    step: Step,
    limit: int,
    cancel: threading.Event,
) -> Decoded:
    """Chooses each key's label. With `items`, the model reads each item just before its
    label, as the key of an object of labels (`{"<item>": "<label>", "<item>": "`): a small
    model labels an item it has just read better than one it must find by number in a list
    above (0.78 of 160 instances right against 0.74-0.77, `benchmarks/classify_accuracy.py`
    with the embedded model). The item as its key costs 13 tokens where
    `}, "12": {"item": ..., "label": "` cost 22 (an item of 7), at about the same accuracy,
    and evaluating them is what a label costs on a CPU (0.31-0.33 s an item on 2 cores
    against 0.43-0.44)."""
    chosen: list[str] = []
    evaluated = 0  # tokens fed to the model
    written = 0  # tokens of the reply as compact JSON
    pending: list[int] = []  # tokens fixed but not yet fed
    quote = tokenize('"')
    spelled: dict[str, list[int]] = {}
    items = shape.items

    def ended(reason: str) -> Decoded:
        return Decoded(chosen, written, max(0, evaluated - written), reason)

    for slot, labels in enumerate(shape.labels):
        compact = tokenize(_compact_head(shape, slot))
        pending += compact if items is None else tokenize(_item_head(slot, items[slot]))
        for label in labels:
            if label not in spelled:
                spelled[label] = tokenize(json.dumps(label, ensure_ascii=False)[1:-1])
        alive = {label: spelled[label] for label in labels}
        depth = 0
        while len(alive) > 1:
            # The next token of each label still possible; a label already spelled out
            # goes on with its closing quote.
            options: dict[int, dict[str, list[int]]] = {}
            for label, seq in alive.items():
                token = seq[depth] if depth < len(seq) else quote[0]
                options.setdefault(token, {})[label] = seq
            if len(options) > 1:
                if cancel.is_set():
                    return ended("cancelled")
                scores = step(pending)
                evaluated += len(pending)
                pending = []
                pick = max(options, key=scores)
            else:
                pick = next(iter(options))
            alive = options[pick]
            complete = {label: seq for label, seq in alive.items() if len(seq) == depth}
            if complete:
                alive = complete
                break
            pending.append(pick)
            depth += 1
        label, seq = next(iter(alive.items()))
        pending += seq[depth:] + quote
        cost = len(compact) + len(seq) + 1
        if written + cost > limit:
            return ended("length")
        written += cost
        chosen.append(label)
    return ended("stop")


def _item_head(slot: int, item: str) -> str:
    """What comes before a key's label in what the model reads: the item, as its key."""
    return ("{" if slot == 0 else ", ") + json.dumps(item, ensure_ascii=False) + ': "'


def _compact_head(shape: LabelObject, slot: int) -> str:
    """What comes before a key's label in the reply."""
    return ("{" if slot == 0 else ", ") + json.dumps(shape.keys[slot]) + ': "'
