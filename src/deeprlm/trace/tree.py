"""A trace's events folded into the tree the viewer draws (on the fold the live console
shares, `deeprlm.trace.fold`, which also tallies the usage per model).

Started/ended pairs become one node each (runs, model calls, cells, batches; notes are
nodes too). A run's own model calls and cells are grouped into turns, one per root model
call. Each node carries its own numbers and its subtree's totals (model calls, tokens, USD,
errors), so the page needs no second pass over thousands of sub-calls.

A trace may be cut short or damaged. What is there is still placed: a call that never
ended is marked open, an ended event whose start is lost still makes a node, a node whose
parent is missing hangs from its run (or the top), and each repair is counted in
`problems` so the page can say what it could not show.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from deeprlm.trace.events import (
    EVENT_TYPES,
    BatchEnded,
    BatchStarted,
    CellEnded,
    CellStarted,
    Compacted,
    Event,
    LMCallEnded,
    LMCallStarted,
    Note,
    RunEnded,
    RunStarted,
)
from deeprlm.trace.fold import Fold

# Purposes of a run's own model calls; each opens a turn. Sub-calls hang from cells instead.
TURN_PURPOSES = ("root", "forced")


@dataclass
class TraceTree:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)  # top-level node indices
    usage: dict[str, dict[str, float]] = field(default_factory=dict)  # per model
    problems: list[str] = field(default_factory=list)
    end_t: float = 0.0
    events: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "roots": self.roots,
            "usage": self.usage,
            "problems": self.problems,
            "end_t": self.end_t,
            "events": self.events,
        }


def _set(node: dict[str, Any], key: str, value: Any) -> None:
    """Stores a field only when it says something, to keep big pages small."""
    if value not in (None, "", 0, 0.0, {}, []):
        node[key] = value


class _Builder(Fold):
    def __init__(self) -> None:
        super().__init__()
        self.tree = TraceTree()
        self.by_id: dict[str, int] = {}
        self.ids: list[str] = []
        self.node_run: dict[int, str] = {}  # node -> run id its event named
        self.parent_ids: list[str | None] = []
        self.repairs: Counter[str] = Counter()

    # -- nodes

    def node(self, kind: str, e: Event, start: float) -> dict[str, Any]:
        existing = self.by_id.get(e.id)
        if existing is not None:
            return self.tree.nodes[existing]
        index = len(self.tree.nodes)
        node: dict[str, Any] = {"i": index, "k": kind, "s": start, "e": None}
        self.tree.nodes.append(node)
        self.by_id[e.id] = index
        self.ids.append(e.id)
        self.node_run[index] = e.run_id
        self.parent_ids.append(e.parent_id)
        return node

    def ended(self, kind: str, e: Event, start: float) -> dict[str, Any]:
        if e.id not in self.by_id:
            self.repairs[f"{kind} ended without a recorded start"] += 1
        node = self.node(kind, e, start)
        node["e"] = e.t
        return node

    def accepts(self, e: Event) -> bool:
        self.tree.events += 1
        flaw = _flaw(e)
        if flaw is not None:
            self.repairs[f"{e.type} event skipped: {flaw}"] += 1
        return flaw is None

    def on_run_started(self, e: RunStarted) -> None:
        n = self.node("run", e, e.t)
        n["depth"] = e.depth
        for key in ("query", "model", "sub_model", "repl", "context", "settings"):
            _set(n, key, getattr(e, key))

    def on_run_ended(self, e: RunEnded) -> None:
        n = self.ended("run", e, e.t - e.wall_s)
        n["status"] = e.status
        for key in ("answer", "iterations", "sub_calls", "wall_s", "usage", "error"):
            _set(n, key, getattr(e, key))

    def on_lm_call_started(self, e: LMCallStarted) -> None:
        n = self.node("lm", e, e.t)
        n["purpose"] = e.purpose
        _set(n, "model", e.model)
        _set(n, "prompt_chars", e.prompt_chars)

    def on_lm_call_ended(self, e: LMCallEnded) -> None:
        n = self.ended("lm", e, e.start or e.t - e.duration_s)
        n["purpose"] = e.purpose
        for key in ("model", "prompt", "prompt_chars", "reply", "error"):
            _set(n, key, getattr(e, key))
        _set(n, "in", e.input_tokens)
        _set(n, "out", e.output_tokens)
        _set(n, "cached", e.cached_tokens)
        _set(n, "usd", e.usd)

    def on_cell_started(self, e: CellStarted) -> None:
        n = self.node("cell", e, e.t)
        n["iteration"] = e.iteration
        _set(n, "code", e.code)

    def on_cell_ended(self, e: CellEnded) -> None:
        n = self.ended("cell", e, e.start or e.t - e.duration_s)
        n["iteration"] = e.iteration
        for key in ("output", "output_chars", "error", "final"):
            _set(n, key, getattr(e, key))

    def on_batch_started(self, e: BatchStarted) -> None:
        n = self.node("batch", e, e.t)
        n["kind"] = e.kind
        n["size"] = e.size
        for key in ("items", "unique", "cached", "packs", "instruction", "labels"):
            _set(n, key, getattr(e, key))

    def on_batch_ended(self, e: BatchEnded) -> None:
        n = self.ended("batch", e, e.start or e.t - e.duration_s)
        n["kind"] = e.kind
        n["size"] = e.size
        _set(n, "errors", e.errors)
        for key in ("items", "calls", "reasked"):
            _set(n, key, getattr(e, key))

    def on_note(self, e: Note) -> None:
        n = self.node("note", e, e.t)
        n["e"] = e.t
        n["message"] = e.message

    def on_compacted(self, e: Compacted) -> None:
        # Shown as a note: the turns themselves stay in the tree, where they happened.
        n = self.node("note", e, e.t)
        n["e"] = e.t
        n["message"] = (
            f"turns {e.first_turn}-{e.last_turn} compacted in the model's prompt "
            f"({e.tokens_before:,} -> {e.tokens_after:,} tokens)"
        )

    # -- structure

    def finish(self) -> TraceTree:
        self.tree.end_t = self.last_t
        self.tree.usage = {
            model: {
                "calls": u.calls,
                "in": u.input_tokens,
                "out": u.output_tokens,
                "cached": u.cached_tokens,
                "usd": u.usd,
                "errors": self.failed[model],
            }
            for model, u in self.usage.by_model.items()
        }
        nodes = self.tree.nodes
        children: list[list[int]] = [[] for _ in nodes]
        run_nodes = {self.ids[n["i"]]: n["i"] for n in nodes if n["k"] == "run"}
        for n in nodes:
            i = n["i"]
            parent = self._parent(n, run_nodes)
            n["p"] = parent
            if parent is None:
                self.tree.roots.append(i)
            else:
                children[parent].append(i)
        for n in nodes[: len(children)]:  # turns appended below are complete already
            kids = sorted(children[n["i"]], key=lambda c: (nodes[c]["s"], c))
            if n["k"] == "run":
                kids = self._turns(n, kids, children)
            _set(n, "c", kids)
        self.tree.roots.sort(key=lambda c: (nodes[c]["s"], c))
        for root in self.tree.roots:
            self._totals(root)
        open_nodes = Counter(n["k"] for n in nodes if n["e"] is None and n["k"] != "turn")
        for kind, count in sorted(open_nodes.items()):
            self.repairs[f"{kind} started but never ended"] += count
        self.tree.problems.extend(f"{count} × {what}" for what, count in self.repairs.items())
        return self.tree

    def _parent(self, n: dict[str, Any], run_nodes: dict[str, int]) -> int | None:
        i = n["i"]
        parent_id = self.parent_ids[i]
        if n["k"] == "run":
            if parent_id is None:
                return None
            parent = self.by_id.get(parent_id)
            if parent is None:
                self.repairs["child run whose parent is missing"] += 1
            return parent
        if parent_id is not None and parent_id != self.node_run[i]:
            parent = self.by_id.get(parent_id)
            if parent is not None:
                return parent
            self.repairs["event whose parent is missing"] += 1
        own_run = run_nodes.get(self.node_run[i])
        if own_run is None:
            self.repairs["event of a run whose start is missing"] += 1
        return own_run

    def _turns(self, run: dict[str, Any], kids: list[int], children: list[list[int]]) -> list[int]:
        """Groups a run's own calls, cells and notes into turns; a turn opens with each
        root model call. Child items that belong to a cell stay under that cell."""
        nodes = self.tree.nodes
        out: list[int] = []
        turn: dict[str, Any] | None = None
        number = 0
        for c in kids:
            kid = nodes[c]
            opens = kid["k"] == "lm" and kid.get("purpose") in TURN_PURPOSES
            if kid["k"] == "run" or (turn is None and not opens and kid["k"] == "note"):
                out.append(c)
                continue
            if opens or turn is None:
                number += opens
                turn = {
                    "i": len(nodes),
                    "k": "turn",
                    "n": number,
                    "p": run["i"],
                    "s": kid["s"],
                    "e": kid["e"],
                    "c": [],
                }
                if kid.get("purpose") == "forced":
                    turn["forced"] = True
                nodes.append(turn)
                children.append([])
                out.append(turn["i"])
            turn["c"].append(c)
            kid["p"] = turn["i"]
            ends = [nodes[x]["e"] for x in turn["c"]]
            turn["e"] = None if None in ends else max(ends)
        return out

    def _totals(self, root: int) -> None:
        """Subtree totals, bottom-up, without recursion (deep or wide trees alike)."""
        nodes = self.tree.nodes
        order: list[int] = []
        stack = [root]
        while stack:
            i = stack.pop()
            order.append(i)
            stack.extend(nodes[i].get("c", ()))
        for i in reversed(order):
            n = nodes[i]
            calls = 1 if n["k"] == "lm" else 0
            tokens = n.get("in", 0) + n.get("out", 0)
            usd = n.get("usd", 0.0)
            errors = 1 if _is_error(n) else 0
            for c in n.get("c", ()):
                kid = nodes[c]
                calls += kid.get("calls", 0)
                tokens += kid.get("tok", 0)
                usd += kid.get("cost", 0.0)
                errors += kid.get("errs", 0)
            _set(n, "calls", calls)
            _set(n, "tok", tokens)
            _set(n, "cost", round(usd, 8))
            _set(n, "errs", errors)


def _flaw(e: Event) -> str | None:
    """What makes an event unusable, if anything. The reader rebuilds events from any JSON
    object of the right type, so a damaged file can put a string where a time should be."""
    if not isinstance(e.t, int | float) or isinstance(e.t, bool) or not math.isfinite(e.t):
        return "time is not a number"
    if not isinstance(e.id, str) or not isinstance(e.run_id, str):
        return "id is not a string"
    if e.parent_id is not None and not isinstance(e.parent_id, str):
        return "parent id is not a string"
    for name, kind in _FIELD_KINDS[type(e)]:
        value = getattr(e, name)
        if kind == "dict":
            ok = isinstance(value, dict)
        elif kind == "number":
            ok = isinstance(value, int | float) and math.isfinite(value)
        elif kind == "list":
            ok = isinstance(value, list | tuple) and all(
                isinstance(v, str | int | float) for v in value
            )
        else:
            ok = isinstance(value, str) or (kind == "str?" and value is None)
        if not ok:
            return f"{name} has the wrong type"
    return None


def _field_kinds(cls: type[Event]) -> tuple[tuple[str, str], ...]:
    """Each field past the ids and what it must hold, judged by its default."""
    kinds = []
    for f in fields(cls):
        if f.default_factory is not MISSING:
            kinds.append((f.name, "dict"))
        elif f.default is MISSING:
            continue  # t and the ids, checked on their own
        elif isinstance(f.default, int | float):
            kinds.append((f.name, "number"))
        elif isinstance(f.default, tuple):
            kinds.append((f.name, "list"))
        else:
            kinds.append((f.name, "str?" if f.default is None else "str"))
    return tuple(kinds)


# Looked up once per class, not once per event.
_FIELD_KINDS = {cls: _field_kinds(cls) for cls in EVENT_TYPES.values()}


def _is_error(n: dict[str, Any]) -> bool:
    if n["k"] == "run":
        return n.get("status") in ("error", "limit", "cancelled")
    return bool(n.get("error"))


def build_tree(events: list[Event], problems: list[str] | None = None) -> TraceTree:
    """The viewer's tree for `events` (in file order); `problems` are the reader's notes on
    lines it could not read, kept at the top of the list."""
    builder = _Builder()
    for event in events:
        builder.apply(event)
    tree = builder.finish()
    if problems:
        tree.problems[:0] = problems
    return tree
