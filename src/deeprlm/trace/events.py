"""The trace's events: one frozen record per thing that happened in a run tree.

Every event has an `id`, the `run_id` of the run it belongs to and a `parent_id`, which
makes the tree: a run's parent is the cell that started it (None for the root); a root
model call's and a cell's parent is their run; a sub-call's parent is its cell, or its
batch when it was part of one. `t` is seconds since the trace began. Started/ended pairs
share their `id`, so a live view can show what is running and a viewer can draw a timeline.

Events are built in one place, `deeprlm.trace.recorder.Recorder`, which also clips their
texts: the context itself appears once, as `ContextInfo` (size, sha256, a short preview), so
a trace never grows with it. Fields are keyword-only, so that adding one never shifts the
meaning of another.

Adding an event kind: a class here, listed in `EVENT_TYPES`; a method that builds it on the
`Recorder`; and, where the live console or the viewer shows it, an `on_<type>` handler in
their fold (`deeprlm.trace.progress`, `deeprlm.trace.tree`, both on `deeprlm.trace.fold`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class Event:
    type: ClassVar[str] = "event"
    t: float
    id: str
    run_id: str
    parent_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    depth: int = 0
    query: str = ""
    model: str = ""
    sub_model: str = ""
    repl: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # a ContextInfo as a dict
    settings: dict[str, Any] = field(default_factory=dict)  # the root only
    # The root only, when the run used the sub-call cache: its file ("path"), the run's
    # token ("run", naming its own entries) and "sampled"; what `--resume` reads back.
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RunEnded(Event):
    type: ClassVar[str] = "run_ended"
    # answered | forced | limit | error | cancelled
    status: str = "answered"
    answer: str = ""
    iterations: int = 0
    sub_calls: int = 0  # made by this run's own code, not its children's
    wall_s: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)  # the whole tree's, on the root
    error: str | None = None
    limit: str = ""  # with status "limit": which one (tokens, usd, time, sub_calls)


@dataclass(frozen=True, kw_only=True)
class LMCallStarted(Event):
    """One attempt of a model call, sent once it holds a concurrency slot (and, under a
    token or USD budget, its reservation). A retried call has one pair per attempt."""

    type: ClassVar[str] = "lm_call_started"
    # What the call is for: root (a turn of a run), forced (the forced last turn), sub (a
    # sub-call from the REPL, or one turn of its tool loop).
    purpose: str = "root"
    model: str = ""
    prompt_chars: int = 0
    attempt: int = 1
    max_tokens: int | None = None  # the reply cap sent (None: the provider's default)


@dataclass(frozen=True, kw_only=True)
class LMCallEnded(Event):
    type: ClassVar[str] = "lm_call_ended"
    purpose: str = "root"
    model: str = ""
    start: float = 0.0
    duration_s: float = 0.0
    # For a root call, the newest message it answered; for a sub-call, its prompt (clipped).
    prompt: str = ""
    prompt_chars: int = 0
    reply: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    usd: float = 0.0
    error: str | None = None
    attempt: int = 1
    # The tokens were counted here: the provider reported none, or the attempt was
    # abandoned in flight (a deadline, a cancelled run) and is charged its prompt.
    estimated: bool = False
    # "hit" (served from the sub-call cache) or "shared" (an identical call in flight
    # answered it): free, so the tokens and USD above are 0 and these say what it saved.
    cache: str = ""
    saved_tokens: int = 0
    saved_usd: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CellStarted(Event):
    type: ClassVar[str] = "cell_started"
    iteration: int = 0
    code: str = ""


@dataclass(frozen=True, kw_only=True)
class CellEnded(Event):
    type: ClassVar[str] = "cell_ended"
    iteration: int = 0
    start: float = 0.0
    duration_s: float = 0.0
    output: str = ""
    output_chars: int = 0
    error: str | None = None
    final: str | None = None


@dataclass(frozen=True, kw_only=True)
class BatchStarted(Event):
    """Concurrent sub-calls: `llm_batch` / `rlm_batch` (kind llm | rlm, one call per item),
    or a packed `llm_map` / `llm_classify` (kind map | classify), whose `size` is the calls
    planned for its `items`: `packs` holds how many items each call carries; or the links
    of a `follow_chain` (kind chain, its question in `instruction`), one call after another,
    counted when it ends."""

    type: ClassVar[str] = "batch_started"
    kind: str = "llm"  # llm | rlm | map | classify | chain
    size: int = 0
    items: int = 0  # map | classify: items given (size: the calls planned)
    unique: int = 0  # distinct items among them
    cached: int = 0  # distinct items answered before, not asked again
    packs: tuple[int, ...] = ()  # items per planned call
    instruction: str = ""  # map | classify: what was asked of each item (clipped)
    labels: tuple[str, ...] = ()  # classify: the label set


@dataclass(frozen=True, kw_only=True)
class BatchEnded(Event):
    type: ClassVar[str] = "batch_ended"
    kind: str = "llm"
    size: int = 0
    start: float = 0.0
    duration_s: float = 0.0
    errors: int = 0  # items whose answer is an error value
    items: int = 0
    calls: int = 0  # map | classify: the calls made, asking again included
    reasked: int = 0  # map | classify: distinct items asked again (missing from a reply)


@dataclass(frozen=True, kw_only=True)
class Compacted(Event):
    """A run's older turns left its model's prompt (they stay in the trace as they were)."""

    type: ClassVar[str] = "compacted"
    first_turn: int = 0
    last_turn: int = 0
    tokens_before: int = 0  # the prompt, by the project's estimate
    tokens_after: int = 0


@dataclass(frozen=True, kw_only=True)
class Note(Event):
    """Something a reader of the trace should know: a fallback taken, a tag ignored."""

    type: ClassVar[str] = "note"
    message: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunStarted,
        RunEnded,
        LMCallStarted,
        LMCallEnded,
        CellStarted,
        CellEnded,
        BatchStarted,
        BatchEnded,
        Compacted,
        Note,
    )
}


# Looked up once per class: reading a large trace rebuilds hundreds of thousands of events.
_FIELD_NAMES = {cls: frozenset(f.name for f in fields(cls)) for cls in EVENT_TYPES.values()}


# Fields renamed since traces were first written: old name -> new name.
_RENAMED = {"role": "purpose"}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuilds an event read back from JSONL; unknown keys are ignored, so older readers
    keep working on newer traces, and renamed fields are read under their new name."""
    cls = EVENT_TYPES.get(data.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    names = _FIELD_NAMES[cls]
    values = {_RENAMED.get(k, k): v for k, v in data.items()}
    return cls(**{k: v for k, v in values.items() if k in names})
