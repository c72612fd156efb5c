"""What a run tree is doing right now, folded from its trace events as they arrive.

`Progress` is the state behind the live console: which runs are going (and at which turn),
what is in flight in each (a model call, a cell, batches with how many of their sub-calls
are done), and tokens and dollars per model so far (the shared `Fold` tallies those).
Applying an event costs O(1), so it can sit in the engine's event loop even when thousands
of sub-calls stream past; drawing it is the console's business and happens elsewhere, at
its own pace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deeprlm.trace.events import (
    BatchEnded,
    BatchStarted,
    CellEnded,
    CellStarted,
    LMCallEnded,
    LMCallStarted,
    Note,
    RunEnded,
    RunStarted,
)
from deeprlm.trace.fold import Fold


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


class Progress(Fold):
    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, RunProgress] = {}
        self.root_id: str | None = None
        self.active: dict[str, Activity] = {}
        self.sub_calls_done = 0
        self.notes: list[str] = []

    @property
    def root(self) -> RunProgress | None:
        return self.runs.get(self.root_id) if self.root_id else None

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
        return self.run_of(run.parent_id)

    def _in_batch(self, activity: Activity) -> bool:
        parent = self.active.get(activity.parent_id or "")
        return parent is not None and parent.kind == "batch"

    # -- event handlers

    def on_run_started(self, e: RunStarted) -> None:
        run = RunProgress(e.run_id, e.depth, e.parent_id, e.t, query=e.query, model=e.model)
        self.runs[e.run_id] = run
        if e.parent_id is None and self.root_id is None:
            self.root_id = e.run_id
            return
        parent = self.parent_run(run)
        if parent in self.runs:
            self.runs[parent].children.append(e.run_id)

    def on_run_ended(self, e: RunEnded) -> None:
        run = self.runs.get(e.run_id)
        if run is None:
            return
        run.status = e.status
        run.end_t = e.t
        batch = self.active.get(e.parent_id or "")
        if batch is not None and batch.kind == "batch":
            batch.done += 1
            batch.errors += e.status == "error"

    def on_lm_call_started(self, e: LMCallStarted) -> None:
        self.active[e.id] = Activity(
            e.id, "lm", e.run_id, e.parent_id, e.t, purpose=e.purpose, model=e.model
        )
        if e.purpose in ("root", "forced"):
            run = self.runs.get(e.run_id)
            if run is not None:
                run.turn += 1

    def on_lm_call_ended(self, e: LMCallEnded) -> None:
        self.active.pop(e.id, None)
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

    def on_cell_started(self, e: CellStarted) -> None:
        self.active[e.id] = Activity(
            e.id, "cell", e.run_id, e.parent_id, e.t, iteration=e.iteration
        )

    def on_cell_ended(self, e: CellEnded) -> None:
        self.active.pop(e.id, None)

    def on_batch_started(self, e: BatchStarted) -> None:
        self.active[e.id] = Activity(
            e.id, "batch", e.run_id, e.parent_id, e.t, batch_kind=e.kind, size=e.size
        )

    def on_batch_ended(self, e: BatchEnded) -> None:
        self.active.pop(e.id, None)

    def on_note(self, e: Note) -> None:
        self.notes.append(e.message)


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
