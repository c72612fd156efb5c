"""Trajectories for training: each run's root conversation and its sub-calls, as one JSON
object per question (the `--export-trajectories` file), in the shape RL and fine-tuning
tools consume: chat messages, plus the code, outputs and rewards around them.

The format, version 1 (`trajectory.schema.json` beside this file is its JSON Schema):

    {"format": "deeprlm.trajectory", "version": 1,
     "id", "source": {"kind": "batch" | "bench", ...}, "query", "answer", "status", "error",
     "reward": number | null, "gold", "scorer", "meta", "usage", "wall_s",
     "runs": [                                   # the root run first, then child runs
       {"run_id", "parent_cell", "depth", "query", "model", "sub_model", "status",
        "answer", "iterations", "error",
        "messages": [...],                       # the run's conversation, OpenAI chat format
        "turns": [                               # one per model call (per attempt)
          {"call_id", "purpose": "root" | "forced", "reply", "input_tokens",
           "output_tokens", "usd", "error", "messages"?,
           "cells": [{"cell_id", "iteration", "code", "output", "error", "final",
                      "sub_calls": [SUB_CALL, ...], "child_runs": [run_id, ...]}]}],
        "sub_calls": [SUB_CALL, ...]}]}          # sub-calls made outside any cell
    SUB_CALL = {"call_id", "model", "messages": [...], "reply", "input_tokens",
                "output_tokens", "usd", "error", "complete": bool}

`messages` of a run is the conversation of its last model call, with that call's reply: the
whole dialogue a fine-tuning tool trains on. A turn whose prompt was not the start of that
conversation (a method whose calls are independent, like the summary baseline) carries its
own `messages`. The code and outputs come from the trace (clipped to its limits: 50,000
characters of code, 20,000 of output, as much as the model read with the default output
limit); the messages come from the model calls themselves, whole. A sub-call whose messages
were not seen (`complete: false`) has its prompt from the trace, clipped to 2,000 characters.

A question run again (`--retry-failed`) appends a new line: the last line of an id is the
one that counts, as in `results.jsonl`.

`CallTap` sees the messages: it wraps the models of one run tree and pairs each call with
the trace's call event, which the engine emits just before it calls the model, in the same
context (a context variable carries the call's id to the model, into any task made
between the two). A reply the sub-call cache serves instead of the model is shown to the
wrapper too (`deeprlm.cache.Watched`), after its call event.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprlm.lm.base import LM, Completion, Message, ToolSpec
from deeprlm.lm.wrapped import WrappedLM
from deeprlm.trace.events import (
    BatchStarted,
    CellEnded,
    CellStarted,
    Event,
    LMCallEnded,
    LMCallStarted,
    RunEnded,
    RunStarted,
)

FORMAT = "deeprlm.trajectory"
VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("trajectory.schema.json")
ROOT_PURPOSES = ("root", "forced")


@dataclass(frozen=True)
class Seen:
    """One model call as the model saw it."""

    messages: list[Message]
    reply: str


# The call about to be sent, in this context: (its tap, the trace's call id).
_CALL: contextvars.ContextVar[tuple[CallTap, str] | None] = contextvars.ContextVar(
    "deeprlm_trajectory_call", default=None
)


class CallTap:
    """Records the whole messages of every call of one run tree, by the trace's call id.
    Give `on_event` to the run as an event sink and its models through `wrap`."""

    def __init__(self) -> None:
        self.calls: dict[str, Seen] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, LMCallStarted):
            _CALL.set((self, event.id))

    def wrap(self, lm: LM) -> LM:
        return lm if isinstance(lm, TappedLM) else TappedLM(lm, self)

    def record(self, messages: Sequence[Message], completion: Completion) -> None:
        current = _CALL.get()
        if current is not None and current[0] is self:
            self.calls[current[1]] = Seen([dict(m) for m in messages], completion.text)


class TappedLM(WrappedLM):
    """A model whose calls a `CallTap` sees; otherwise the model itself."""

    def __init__(self, lm: LM, tap: CallTap) -> None:
        super().__init__(lm)
        self.tap = tap

    def wrap(self, lm: LM) -> LM:
        return TappedLM(lm, self.tap)

    def served(self, messages: Sequence[Message], completion: Completion) -> None:
        """A reply the cache gave in place of this model's: seen all the same."""
        self.tap.record(messages, completion)

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        completion = await super().acomplete(
            messages, tools=tools, max_tokens=max_tokens, schema=schema
        )
        self.tap.record(messages, completion)
        return completion


def build(
    *,
    id: str,
    source: Mapping[str, Any],
    query: str,
    answer: str,
    status: str,
    events: Iterable[Event],
    calls: Mapping[str, Seen],
    usage: Mapping[str, Any],
    wall_s: float,
    error: str | None = None,
    reward: float | None = None,
    gold: Any = None,
    scorer: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One trajectory from a run tree's events and the calls its tap saw."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "id": id,
        "source": dict(source),
        "query": query,
        "answer": answer,
        "status": status,
        "error": error,
        "reward": reward,
        "gold": gold,
        "scorer": scorer,
        "meta": dict(meta) if meta is not None else None,
        "usage": dict(usage),
        "wall_s": round(wall_s, 3),
        "runs": _runs(events, calls),
    }


def _runs(events: Iterable[Event], calls: Mapping[str, Seen]) -> list[dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    cells: dict[str, dict[str, Any]] = {}
    batch_cell: dict[str, str | None] = {}  # a batch's id -> the cell that started it

    def run_of(run_id: str) -> dict[str, Any]:
        # Baselines call models without a run event: their calls still form a run.
        if run_id not in runs:
            runs[run_id] = _new_run(run_id, None, 0, "", "", "")
        return runs[run_id]

    for event in events:
        if isinstance(event, RunStarted):
            run = _new_run(
                event.id, event.parent_id, event.depth, event.query, event.model, event.sub_model
            )
            runs[event.id] = run
            parent = cells.get(event.parent_id or "")
            if parent is None and event.parent_id in batch_cell:
                parent = cells.get(batch_cell[event.parent_id] or "")
            if parent is not None:
                parent["child_runs"].append(event.id)
                run["parent_cell"] = parent["cell_id"]
        elif isinstance(event, RunEnded) and event.id in runs:
            runs[event.id].update(
                status=event.status,
                answer=event.answer,
                iterations=event.iterations,
                error=event.error,
            )
        elif isinstance(event, BatchStarted):
            batch_cell[event.id] = event.parent_id if event.parent_id in cells else None
        elif isinstance(event, CellStarted):
            cell = {
                "cell_id": event.id,
                "iteration": event.iteration,
                "code": event.code,
                "output": "",
                "error": None,
                "final": None,
                "sub_calls": [],
                "child_runs": [],
            }
            cells[event.id] = cell
            turns = run_of(event.run_id)["turns"]
            if turns:
                turns[-1]["cells"].append(cell)
        elif isinstance(event, CellEnded) and event.id in cells:
            cells[event.id].update(output=event.output, error=event.error, final=event.final)
        elif isinstance(event, LMCallEnded):
            run = run_of(event.run_id)
            if event.purpose in ROOT_PURPOSES:
                run["turns"].append(_turn(event, calls.get(event.id)))
            else:
                cell_id = event.parent_id if event.parent_id in cells else None
                if cell_id is None and event.parent_id in batch_cell:
                    cell_id = batch_cell[event.parent_id]
                target = cells[cell_id]["sub_calls"] if cell_id else run["sub_calls"]
                target.append(_sub_call(event, calls.get(event.id)))
    for run in runs.values():
        _settle_messages(run)
    return list(runs.values())


def _new_run(
    run_id: str, parent_id: str | None, depth: int, query: str, model: str, sub_model: str
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "parent_cell": None,
        "depth": depth,
        "query": query,
        "model": model,
        "sub_model": sub_model,
        "status": None,
        "answer": "",
        "iterations": 0,
        "error": None,
        "messages": [],
        "turns": [],
        "sub_calls": [],
    }


def _turn(event: LMCallEnded, seen: Seen | None) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "call_id": event.id,
        "purpose": event.purpose,
        "reply": seen.reply if seen is not None else event.reply,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "usd": event.usd,
        "error": event.error,
        "cells": [],
    }
    if seen is not None:
        turn["_prompt"] = seen.messages
    return turn


def _sub_call(event: LMCallEnded, seen: Seen | None) -> dict[str, Any]:
    if seen is not None:
        messages, reply, complete = seen.messages, seen.reply, True
    else:
        messages, reply, complete = [{"role": "user", "content": event.prompt}], event.reply, False
    return {
        "call_id": event.id,
        "model": event.model,
        "messages": messages,
        "reply": reply,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "usd": event.usd,
        "error": event.error,
        "complete": complete,
    }


def _settle_messages(run: dict[str, Any]) -> None:
    """The run's conversation is its last answered call's prompt and reply; a turn whose
    prompt is not the start of it keeps its own."""
    seen = [t for t in run["turns"] if "_prompt" in t]
    answered = [t for t in seen if t["error"] is None]
    last = answered[-1] if answered else None
    conversation: list[Message] = []
    if last is not None:
        conversation = [*last["_prompt"], {"role": "assistant", "content": last["reply"]}]
    run["messages"] = conversation
    for turn in seen:
        prompt = turn.pop("_prompt")
        if prompt != conversation[: len(prompt)]:
            turn["messages"] = prompt
