"""What a run tree is doing right now, folded from its trace events as they arrive.

`Progress` is the state behind the live console: which runs are going (and at which turn),
what is in flight in each (a model call, a cell, batches with how many of their sub-calls
are done), and tokens and dollars per model so far. Applying an event costs O(1), so it can
sit in the engine's event loop even when thousands of sub-calls stream past; drawing it is
the console's business and happens elsewhere, at its own pace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deeprlm.trace.events import (
    BatchEnded,
    BatchStarted,
    CellEnded,
    CellStarted,
    Event,
    LMCallEnded,
    LMCallStarted,
    Note,
    RunEnded,
    RunStarted,
)


@dataclass
class ModelTally:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    errors: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class Activity:
    """Something started and not yet ended: a model call, a cell or a batch."""

    id: str
    kind: str  # lm | cell | batch
    run_id: str
    parent_id: str | None
    t: float
    purpose: str = ""  # for lm: root | sub | forced
    model: str = ""
    iteration: int = 0  # for cells
    batch_kind: str = ""  # for batches: llm | rlm
    size: int = 0
    done: int = 0
    errors: int = 0


@dataclass
class RunProgress:
    id: str
    depth: int
    parent_id: str | None  # the cell (or batch) that started it
    t: float
    query: str = ""
    model: str = ""
    turn: int = 0  # root model calls started so far
    status: str | None = None  # set when the run ends
    end_t: float | None = None
    sub_done: int = 0  # sub-calls made from this run's cells that have ended
    sub_errors: int = 0
    children: list[str] = field(default_factory=list)  # child run ids, in start order


class Progress:
    def __init__(self) -> None:
        self.runs: dict[str, RunProgress] = {}
        self.root_id: str | None = None
        self.active: dict[str, Activity] = {}
        self.usage: dict[str, ModelTally] = {}
        self.sub_calls_done = 0
        self.notes: list[str] = []
        self.last_t = 0.0
        # Which run an id (cell, batch, run) belongs to, to place a child run under its parent
        # even when its own parent link names a batch rather than a cell.
        self._owner: dict[str, str] = {}

    @property
    def root(self) -> RunProgress | None:
        return self.runs.get(self.root_id) if self.root_id else None

    def apply(self, event: Event) -> None:
        self.last_t = max(self.last_t, event.t)
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    # -- queries used by the displays

    def running_in(self, run_id: str) -> list[Activity]:
        return [a for a in self.active.values() if a.run_id == run_id]

    def sub_calls_running(self, run_id: str) -> int:
        """Sub-calls in flight in a run that are not part of a batch (a batch counts its own)."""
        return sum(
            1
            for a in self.active.values()
            if a.run_id == run_id
            and a.kind == "lm"
            and a.purpose == "sub"
            and not self._in_batch(a)
        )

    def parent_run(self, run: RunProgress) -> str | None:
        return self._owner.get(run.parent_id) if run.parent_id else None

    def _in_batch(self, activity: Activity) -> bool:
        parent = self.active.get(activity.parent_id or "")
        return parent is not None and parent.kind == "batch"

    # -- event handlers

    def _run_started(self, e: RunStarted) -> None:
        run = RunProgress(e.run_id, e.depth, e.parent_id, e.t, query=e.query, model=e.model)
        self.runs[e.run_id] = run
        self._owner[e.id] = e.run_id
        self._owner[e.run_id] = e.run_id
        if e.parent_id is None and self.root_id is None:
            self.root_id = e.run_id
            return
        parent = self.parent_run(run)
        if parent in self.runs:
            self.runs[parent].children.append(e.run_id)

    def _run_ended(self, e: RunEnded) -> None:
        run = self.runs.get(e.run_id)
        if run is None:
            return
        run.status = e.status
        run.end_t = e.t
        batch = self.active.get(e.parent_id or "")
        if batch is not None and batch.kind == "batch":
            batch.done += 1
            batch.errors += e.status == "error"

    def _lm_started(self, e: LMCallStarted) -> None:
        self.active[e.id] = Activity(
            e.id, "lm", e.run_id, e.parent_id, e.t, purpose=e.purpose, model=e.model
        )
        if e.purpose in ("root", "forced"):
            run = self.runs.get(e.run_id)
            if run is not None:
                run.turn += 1

    def _lm_ended(self, e: LMCallEnded) -> None:
        self.active.pop(e.id, None)
        tally = self.usage.setdefault(e.model or "?", ModelTally())
        tally.calls += 1
        tally.input_tokens += e.input_tokens
        tally.output_tokens += e.output_tokens
        tally.usd += e.usd
        tally.errors += e.error is not None
        if e.purpose != "sub":
            return
        self.sub_calls_done += 1
        batch = self.active.get(e.parent_id or "")
        if batch is not None and batch.kind == "batch":
            batch.done += 1
            batch.errors += e.error is not None
        elif (run := self.runs.get(e.run_id)) is not None:
            run.sub_done += 1
            run.sub_errors += e.error is not None

    def _cell_started(self, e: CellStarted) -> None:
        self.active[e.id] = Activity(
            e.id, "cell", e.run_id, e.parent_id, e.t, iteration=e.iteration
        )
        self._owner[e.id] = e.run_id

    def _cell_ended(self, e: CellEnded) -> None:
        self.active.pop(e.id, None)

    def _batch_started(self, e: BatchStarted) -> None:
        self.active[e.id] = Activity(
            e.id, "batch", e.run_id, e.parent_id, e.t, batch_kind=e.kind, size=e.size
        )
        self._owner[e.id] = e.run_id

    def _batch_ended(self, e: BatchEnded) -> None:
        self.active.pop(e.id, None)

    def _note(self, e: Note) -> None:
        self.notes.append(e.message)


_HANDLERS: dict[type[Event], Callable[[Progress, Any], None]] = {
    RunStarted: Progress._run_started,
    RunEnded: Progress._run_ended,
    LMCallStarted: Progress._lm_started,
    LMCallEnded: Progress._lm_ended,
    CellStarted: Progress._cell_started,
    CellEnded: Progress._cell_ended,
    BatchStarted: Progress._batch_started,
    BatchEnded: Progress._batch_ended,
    Note: Progress._note,
}


def short_tokens(n: int) -> str:
    if n < 1_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1_000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def short_usd(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


def short_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    minutes, seconds = divmod(int(s), 60)
    return f"{minutes}m{seconds:02d}s"
