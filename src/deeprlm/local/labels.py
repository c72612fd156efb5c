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

When the schema carries the items (a model that reads them inline), each is read alone:
after the prompt, as the first key of the object, and forgotten before the next. A label
then depends on its item and the prompt only, never on the pack's other items or the
labels written for them, which a small model copies: 0.80 and 0.72 of 160 instances right
read in one run, 0.88 and 0.89 read alone, at the same cost a token
(`benchmarks/classify_accuracy.py`, seeds 0 and 1, embedded model).

Read alone, every item follows the same prompt, and what the prompt says sways every
label alike: a question that names one label ("how many records have the label
'location'?") gives it a quarter more of the items. That lean is measured once per prompt
on neutral items (random words of the items, as long as one) and half of it taken back
from each first choice: on ten prompts (two samples of 160 instances, five requests each)
0.77 of instances right as read, 0.84 moved by half the lean, 0.83 by all of it, which
over-corrects where the lean is strong. Each kind of neutral item leans its own way:
random words read as things (a label for objects takes a fifth to a half of them), empty
items as no thing, so the lean is the mean, in log, of the two measures. On fifteen
prompts (three samples), random words alone 0.844 right (worst count error 12.3 of 160),
the mean of both 0.856 (9.9). Twelve random-word items keep the measure steady from one
draw of words to the next; six were at the mercy of the draw.

Pure logic over three callables, so it is tested without a model: `tokenize(text)`,
`step(tokens)`, which evaluates tokens after those before and scores the next position,
and `rewind()`, which forgets every token evaluated since the prompt.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from deeprlm.primitives import packing

# tokens to evaluate -> the score of any token at the position after them
Step = Callable[[list[int]], Callable[[int], float]]
Tokenize = Callable[[str], list[int]]
# forgets what was evaluated after the prompt
Rewind = Callable[[], None]

# How many neutral items measure a prompt's lean, and how much of it a choice is moved
# against (see the module's docstring). The count is for steadiness: on the ten prompts,
# eight draws of six items gave 0.79 to 0.85 of instances right, two draws of twelve 0.83
# and 0.84, and more items no better (0.83 from 24 and 48).
NEUTRAL_ITEMS = 12
LEAN_WEIGHT = 0.5
# Items that say nothing at all, the other measure of the lean (see the module's
# docstring).
CONTENT_FREE = ("", "N/A")


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
    read before each choice), and why it ended (stop | length | cancelled)."""

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
    rewind: Rewind,
    limit: int,
    cancel: threading.Event,
    leans: MutableMapping[tuple[int, ...], Mapping[int, float]] | None = None,
) -> Decoded:
    """Chooses each key's label. With `items`, the model reads each item alone just before
    its label, as the key of an object of labels (`{"<item>": "`), and the next item
    replaces it: a small model labels an item it has just read better than one it must find
    by number in a list above, and one read alone better than one read after others and
    their labels (see the module's docstring). Without items, the model reads the reply as
    it is written, each key before its label."""
    chosen: list[str] = []
    evaluated = 0  # tokens fed to the model
    written = 0  # tokens of the reply as compact JSON
    pending: list[int] = []  # tokens fixed but not yet fed
    quote = tokenize('"')
    spelled: dict[str, list[int]] = {}
    items = shape.items

    def lean(items: Sequence[str], firsts: tuple[int, ...]) -> Mapping[int, float]:
        # Kept by the caller for the prompt, so a classification's packs measure it once.
        if leans is None:
            return {}
        if firsts not in leans:
            # Each kind of neutral item has a lean of its own (see `CONTENT_FREE`): the
            # mean of the two, in log, is the prompt's.
            measured = [
                mean_choice(CONTENT_FREE, firsts),
                mean_choice(neutral_items(items), firsts),
            ]
            leans[firsts] = {
                token: sum(math.log(m[token]) for m in measured) / len(measured) for token in firsts
            }
        return leans[firsts]

    def mean_choice(texts: Sequence[str], firsts: tuple[int, ...]) -> dict[int, float]:
        # The mean probability of each first token, read after each text alone.
        nonlocal evaluated
        mean = dict.fromkeys(firsts, 0.0)
        for text in texts:
            rewind()
            head = tokenize(_item_head(text))
            scores = step(head)
            evaluated += len(head)
            for token, p in zip(firsts, _softmax([scores(t) for t in firsts]), strict=True):
                mean[token] += p / len(texts)
        return mean

    def ended(reason: str) -> Decoded:
        # Read alone, no token of the reply is fed: all the model evaluated is items.
        read = evaluated if items is not None else max(0, evaluated - written)
        return Decoded(chosen, written, read, reason)

    for slot, labels in enumerate(shape.labels):
        compact = tokenize(_compact_head(shape, slot))
        for label in labels:
            if label not in spelled:
                spelled[label] = tokenize(json.dumps(label, ensure_ascii=False)[1:-1])
        prior: Mapping[int, float] = {}
        if items is None:
            pending += compact
        else:
            firsts = tuple(dict.fromkeys(spelled[label][0] for label in labels))
            if len(firsts) > 1:
                prior = lean(items, firsts)
            rewind()
            pending = tokenize(_item_head(items[slot]))
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
                against = prior if depth == 0 else {}
                pick = max(
                    options,
                    key=lambda t: scores(t) - LEAN_WEIGHT * against.get(t, 0.0),
                )
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
        if items is None:
            pending += seq[depth:] + quote
        cost = len(compact) + len(seq) + 1
        if written + cost > limit:
            return ended("length")
        written += cost
        chosen.append(label)
    return ended("stop")


def neutral_items(items: Sequence[str], count: int = NEUTRAL_ITEMS) -> list[str]:
    """Items that say nothing, in the items' own words: each as many words as an item has
    on average, drawn at random (a fixed seed, so a pack's labels are reproducible)."""
    words = [word for item in items for word in item.split()]
    if not words:
        return [""]
    size = max(1, round(len(words) / max(1, len(items))))
    rng = random.Random(0)
    return [" ".join(rng.choices(words, k=size)) for _ in range(count)]


def _softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    weights = [math.exp(logit - top) for logit in logits]
    total = sum(weights)
    return [weight / total for weight in weights]


def _item_head(item: str) -> str:
    """What the model reads before an item's label: the item, as the first key."""
    return "{" + json.dumps(item, ensure_ascii=False) + ': "'


def _compact_head(shape: LabelObject, slot: int) -> str:
    """What comes before a key's label in the reply."""
    return ("{" if slot == 0 else ", ") + json.dumps(shape.keys[slot]) + ': "'
