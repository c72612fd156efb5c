"""`map_items` and `classify_items`: one instruction applied to many items, packed.

Both run over `SubCall`, a metered sub-call the engine hands in (prompt, JSON Schema,
reply tokens -> reply text), so budgets, traces and providers stay the engine's business.
The steps: items are made text; equal items are asked once; items a cache already answers
are not asked; the rest are packed (see `deeprlm.primitives.packing`) and the packs sent
concurrently; answers are read by number; items missing from a reply (or whose pack
failed) are asked again in smaller packs, up to `rounds` times; what is still missing
becomes an error value ("Error: ...") in its place, never an exception, so one bad item
does not cost the others. A budget that runs out (`LimitError`) or a deadline that passes
(`DeadlineError`) is final: the packs in flight keep their answers, the rest become error
values and nothing is asked again (a refusal trips the run's budget, so the run stops
after the cell, as it does after an `llm_batch`).

A classification is a map whose answers must be one of a label set: the schema is an enum
of the labels, and a reply from a model that cannot be held to it is matched to a label
leniently (case, quotes, a unique prefix) or asked again. For a model that reads a pack's
items in its reply (`inline_labels`, the embedded one), each item is its key's description
in the schema and the prompt does not list them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from deeprlm.errors import LimitError
from deeprlm.lm.provider import DeadlineError
from deeprlm.primitives import packing

# prompt, JSON Schema of the reply (or None), reply tokens (or None) -> reply text
SubCall = Callable[[str, Mapping[str, Any] | None, int | None], Awaitable[str]]
ERROR_PREFIX = "Error: "


class AnswerCache(Protocol):
    """Where answers are kept between calls (a dict will do)."""

    def get(self, key: Any) -> str | None: ...

    def __setitem__(self, key: Any, value: str) -> None: ...


# Reply tokens allowed per item beyond its answer: the key, quotes and separators.
_OVERHEAD_TOKENS = 8
_CHARS_PER_TOKEN = 3


@dataclass(frozen=True)
class PackLimits:
    """How items are packed into calls."""

    max_items: int = 8  # items per call; small models label more reliably in short packs
    max_chars: int = 24_000  # item text per call, from the sub-model's window
    answer_tokens: int = 64  # reply tokens allowed for one free-text answer
    max_reply_tokens: int | None = None  # the most one reply may hold (a run setting)
    rounds: int = 2  # times items missing from replies are asked again

    def __post_init__(self) -> None:
        for name in ("max_items", "max_chars", "answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.rounds < 0:
            raise ValueError(f"rounds must be 0 or more, got {self.rounds}")


@dataclass
class MapReport:
    """What one map did: its answers, in input order, and how it got them."""

    answers: list[str]
    items: int = 0
    unique: int = 0  # distinct items
    cached: int = 0  # distinct items a cache answered
    calls: int = 0  # sub-calls made, re-asks included
    packs: list[int] = field(default_factory=list)  # items in each first-round pack
    reasked: int = 0  # distinct items asked again
    errors: int = 0  # items whose answer is an error value


@dataclass(frozen=True)
class Task:
    """What is asked of every item: the instruction, the label set of a classification
    (empty for a free-text map), and the background the instruction belongs to (the
    question the whole run answers), which tells a sub-model what the labels mean when
    the code that called it did not say."""

    instruction: str
    labels: tuple[str, ...] = ()
    background: str = ""
    # Labels asked of a model that reads each item in its reply just before labelling it
    # (see `inline_labels` in `deeprlm.lm.base`): the items go in the schema, not the prompt.
    inline: bool = False

    def cache_key(self, item: str) -> tuple[str, tuple[str, ...], str, str]:
        return (self.instruction, self.labels, self.background, item)

    @property
    def items_inline(self) -> bool:
        return self.inline and bool(self.labels)

    def schema(self, items: Sequence[str]) -> dict[str, Any]:
        value: dict[str, Any] = {"enum": list(self.labels)} if self.labels else {"type": "string"}
        schema = packing.reply_schema(len(items), value)
        if self.items_inline:
            for key, item in zip(schema["properties"], items, strict=True):
                schema["properties"][key]["description"] = item
        return schema

    def prompt(self, items: Sequence[str]) -> str:
        # The instruction comes first so every pack shares a prefix a model may have cached.
        intro = ""
        if self.background:
            intro = (
                "You are doing one step of the work on this question about a large text:\n"
                f"<question>\n{self.background}\n</question>\n\nYour step: "
            )
        if self.labels:
            labels = "; ".join(self.labels)
            head = (
                f"{self.instruction}\n\nGive each numbered item exactly one of these labels: "
                f"{labels}."
            )
            form = "a JSON object mapping each item number to its label"
        else:
            head = f"{self.instruction}\n\nDo this for each numbered item on its own."
            form = "a JSON object mapping each item number to its answer (a short string)"
        if self.items_inline:
            return (
                f"{intro}{head}\n\nThe items come in your reply, one at a time: reply with a "
                "JSON object mapping each item, in order, to its label."
            )
        return f"{intro}{head}\n\nItems:\n{packing.numbered(items)}\n\nReply with {form}."

    def reply_tokens(self, count: int) -> int:
        if self.labels:
            longest = max(len(label) for label in self.labels)
            return count * (longest // _CHARS_PER_TOKEN + 1 + _OVERHEAD_TOKENS) + 8
        return 0  # set from the limits: see `_answer_tokens`

    def accept(self, answer: str) -> str | None:
        """The answer as it is kept, or None when it does not do (asked again)."""
        if not self.labels:
            return answer.strip() or None
        return match_label(answer, self.labels)


def match_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer names: exactly (ignoring case, quotes and punctuation around
    it), else the one label it starts with or that starts with it; None when unclear."""
    cleaned = _clean(answer)
    by_clean = {_clean(label): label for label in labels}
    if cleaned in by_clean:
        return by_clean[cleaned]
    if not cleaned:
        return None
    near = [label for key, label in by_clean.items()
            if cleaned.startswith(key) or key.startswith(cleaned)]  # fmt: skip
    return near[0] if len(near) == 1 else None


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip("\"'`*.,;:!()[]{} ").lower())


async def map_items(
    call: SubCall,
    instruction: str,
    items: Sequence[Any],
    *,
    labels: Sequence[str] = (),
    background: str = "",
    limits: PackLimits | None = None,
    cache: AnswerCache | None = None,
    on_plan: Callable[[MapReport], None] | None = None,
    inline: bool = False,
) -> MapReport:
    """Answers `instruction` for every item (labels it, when `labels` are given).
    `background` is said before the instruction in every call; `inline` puts a pack's
    items in its reply schema rather than its prompt, for a model that reads them there
    (see `Task`)."""
    limits = limits or PackLimits()
    task = Task(instruction.strip(), tuple(labels), background.strip(), inline)
    texts = [item if isinstance(item, str) else str(item) for item in items]
    report = MapReport(answers=[], items=len(texts))
    distinct = list(dict.fromkeys(texts))
    report.unique = len(distinct)
    found: dict[str, str] = {}
    if cache is not None:
        for text in distinct:
            hit = cache.get(task.cache_key(text))
            if hit is not None:
                found[text] = hit
    report.cached = len(found)
    failures: dict[str, str] = {}
    todo = [text for text in distinct if text not in found]
    too_long = [text for text in todo if len(text) > limits.max_chars]
    for text in too_long:
        failures[text] = (
            f"the item has {len(text):,} characters; one sub-call takes at most "
            f"{limits.max_chars:,} (split it, e.g. with chunk_text)"
        )
    todo = [text for text in todo if len(text) <= limits.max_chars]
    max_items = _pack_size(task, limits)
    first = True
    for _ in range(limits.rounds + 1):
        if not todo:
            break
        packs = [
            [todo[i] for i in pack]
            for pack in packing.plan([len(t) for t in todo], max_items, limits.max_chars)
        ]
        if first:
            report.packs = [len(pack) for pack in packs]
            if on_plan is not None:
                on_plan(report)
            first = False
        else:
            report.reasked += len(todo)
        results = await asyncio.gather(*(_ask(call, task, pack, limits) for pack in packs))
        report.calls += len(packs)
        missing: list[str] = []
        final = False
        for pack, (answers, problem, stop) in zip(packs, results, strict=True):
            final = final or stop
            for position, text in enumerate(pack, 1):
                answer = answers.get(position)
                if answer is None:
                    missing.append(text)
                    failures[text] = problem or "the reply had no usable answer for this item"
                else:
                    found[text] = answer
                    failures.pop(text, None)
                    if cache is not None:
                        cache[task.cache_key(text)] = answer
        todo = missing
        if final:
            break
        # Smaller packs the next time: long packs are where a model drops items.
        max_items = max(1, max_items // 2)
    for text in todo:
        failures.setdefault(text, "the reply had no usable answer for this item")
    report.answers = [
        found[text] if text in found else f"{ERROR_PREFIX}{failures[text]}" for text in texts
    ]
    report.errors = sum(text not in found for text in texts)
    return report


def _pack_size(task: Task, limits: PackLimits) -> int:
    """Items per call: the limit, and no more than one reply can hold."""
    size = limits.max_items
    if limits.max_reply_tokens is not None:
        per_item = _answer_tokens(task, limits)
        size = min(size, max(1, (limits.max_reply_tokens - 8) // per_item))
    return size


def _answer_tokens(task: Task, limits: PackLimits) -> int:
    if task.labels:
        return task.reply_tokens(1) - 8
    return limits.answer_tokens + _OVERHEAD_TOKENS


async def _ask(
    call: SubCall, task: Task, pack: list[str], limits: PackLimits
) -> tuple[dict[int, str], str | None, bool]:
    """One pack's answers by number, what went wrong if the call failed, and whether that
    failure is final (a budget or a deadline: asking again cannot help)."""
    tokens = len(pack) * _answer_tokens(task, limits) + 8
    if limits.max_reply_tokens is not None:
        tokens = min(tokens, limits.max_reply_tokens)
    try:
        reply = await call(task.prompt(pack), task.schema(pack), tokens)
    except (LimitError, DeadlineError) as exc:
        return {}, f"{type(exc).__name__}: {exc}", True
    except Exception as exc:
        return {}, f"{type(exc).__name__}: {exc}", False
    answers: dict[int, str] = {}
    for number, raw in packing.parse_numbered(reply, len(pack)).items():
        accepted = task.accept(raw)
        if accepted is not None:
            answers[number] = accepted
    return answers, None, False


async def classify_items(
    call: SubCall,
    items: Sequence[Any],
    labels: Sequence[str],
    *,
    instruction: str = "",
    background: str = "",
    limits: PackLimits | None = None,
    cache: AnswerCache | None = None,
    on_plan: Callable[[MapReport], None] | None = None,
    inline: bool = False,
) -> MapReport:
    """One label from `labels` per item; see `map_items`."""
    clean = [str(label).strip() for label in labels]
    if len(clean) < 2 or any(not label for label in clean):
        raise ValueError("labels must be at least two non-empty strings")
    if len({label.lower() for label in clean}) != len(clean):
        raise ValueError("labels must differ from one another")
    return await map_items(
        call,
        instruction or "Label each item.",
        items,
        labels=clean,
        background=background,
        limits=limits,
        cache=cache,
        on_plan=on_plan,
        inline=inline,
    )
