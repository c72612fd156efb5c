"""Live progress of a run on stderr: trace sinks for `deeprlm ask`.

Two sinks share one `Progress` state. `LiveConsole` draws a `rich` panel (the turn each
run is at, what is running, N of M sub-calls done, tokens and USD per model, elapsed time,
child runs nested) that redraws itself a few times a second from its own thread; the
engine's thread only folds each event into the state, so thousands of sub-calls cost it
next to nothing. `LogLines` writes plain, timestamped lines for logs and pipes, with
sub-call progress summarised at most every few seconds instead of one line per call.
`console_sink` picks one for a stream, or none when quiet.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from deeprlm.textutil import clip
from deeprlm.trace.events import (
    BatchEnded,
    BatchStarted,
    CellEnded,
    Compacted,
    Event,
    LMCallEnded,
    Note,
    RunEnded,
    RunStarted,
)
from deeprlm.trace.progress import (
    Activity,
    Progress,
    RunProgress,
    short_seconds,
    short_tokens,
    short_usd,
)

# Running child runs drawn under one parent; the rest are counted, to keep the panel short.
MAX_CHILDREN_SHOWN = 4
QUERY_PREVIEW = 60

_STATUS_STYLE = {
    "answered": "green",
    "forced": "yellow",
    "limit": "yellow",
    "error": "red",
    "cancelled": "red",
}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# Batch kinds that pack many items into each sub-call (llm_map, llm_classify).
PACKED = frozenset({"map", "classify"})


class LiveConsole:
    """A live `rich` view of a run tree. Call it with events; `close()` leaves the last frame.

    It stops by itself when the root run ends, so that whatever the caller prints next
    (the answer) lands below the final frame.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        refresh_per_second: float = 4.0,
        auto_refresh: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress()
        self._clock = clock
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        # Maps trace time to now, so times of running things tick between events.
        self._clock_at_t0: float | None = None
        self._live = Live(
            console=self.console,
            auto_refresh=auto_refresh,
            refresh_per_second=refresh_per_second,
            transient=False,
            # The REPL captures its own output; rich must not swap sys.stdout under it.
            redirect_stdout=False,
            redirect_stderr=False,
            get_renderable=self.render,
        )

    def __call__(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            if self._clock_at_t0 is None:
                self._clock_at_t0 = self._clock() - event.t
            self.progress.apply(event)
            start = not self._started
            self._started = True
            done = (
                isinstance(event, RunEnded)
                and self.progress.root_id is not None
                and event.run_id == self.progress.root_id
            )
        # Outside the lock: Live's refresh thread takes it in `render`, and stopping joins it.
        if start:
            self._live.start()
        if done:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if started:
            self._live.stop()  # draws the final frame

    def now(self) -> float:
        """Trace time as of this moment."""
        if self._clock_at_t0 is None:
            return 0.0
        if self._closed or (self.progress.root and self.progress.root.status):
            return self.progress.last_t
        return max(self.progress.last_t, self._clock() - self._clock_at_t0)

    def render(self) -> RenderableType:
        with self._lock:
            return self._render()

    def _render(self) -> RenderableType:
        p = self.progress
        now = self.now()
        total = p.usage.total
        header = Text.assemble(
            ("deeprlm ", "bold"),
            (short_seconds(now), "cyan"),
            f" · {_count(p.sub_calls_done, 'sub-call')} done · {short_tokens(total.tokens)} tok · ",
            (short_usd(total.usd), "bold"),
        )
        if p.notes:
            header.append(f" · {_count(len(p.notes), 'note')}", "dim")
        parts: list[RenderableType] = [header]
        if p.root is not None:
            tree = Tree(self._run_label(p.root, now, root=True), guide_style="dim")
            self._fill(tree, p.root, now)
            parts.append(tree)
        if p.usage.by_model:
            parts.append(self._usage_table())
        return Group(*parts)

    def _run_label(self, run: RunProgress, now: float, *, root: bool = False) -> Text:
        label = Text()
        if root:
            label.append("run", "bold")
        else:
            label.append(f"child run {run.id}", "bold")
            label.append(f" · depth {run.depth}")
        if run.model:
            label.append(f" · {run.model}", "magenta")
        label.append(f" · turn {run.turn}")
        if run.status:
            label.append(f" · {run.status}", _STATUS_STYLE.get(run.status, ""))
            label.append(f" in {short_seconds((run.end_t or now) - run.t)}", "dim")
        if not root and run.query:
            label.append(f" · {_one_line(run.query, QUERY_PREVIEW)}", "dim italic")
        return label

    def _fill(self, tree: Tree, run: RunProgress, now: float) -> None:
        p = self.progress
        for activity in p.running_in(run.id):
            label = self._activity_label(activity, now)
            if label is not None:
                tree.add(label)
        running_subs = p.sub_calls_running(run.id)
        if running_subs or run.sub_done:
            line = Text(f"sub-calls: {run.sub_done} done")
            if running_subs:
                line.append(f", {running_subs} running")
            if run.sub_errors:
                line.append(f", {run.sub_errors} failed", "red")
            tree.add(line)
        children = [p.runs[c] for c in run.children if c in p.runs]
        running = [c for c in children if c.status is None]
        finished = len(children) - len(running)
        for child in running[:MAX_CHILDREN_SHOWN]:
            self._fill(tree.add(self._run_label(child, now)), child, now)
        if len(running) > MAX_CHILDREN_SHOWN:
            hidden = len(running) - MAX_CHILDREN_SHOWN
            tree.add(Text(f"… {_count(hidden, 'more child run')} running"))
        if finished:
            failed = sum(1 for c in children if c.status not in (None, "answered"))
            line = Text(f"{_count(finished, 'child run')} finished", "dim")
            if failed:
                line.append(f" ({failed} not answered)", "yellow")
            tree.add(line)

    def _activity_label(self, a: Activity, now: float) -> Text | None:
        elapsed = Text(f" {short_seconds(max(0.0, now - a.t))}", "cyan")
        if a.kind == "lm":
            if a.purpose == "sub":
                return None  # counted on the sub-calls line or on its batch
            what = "final answer (forced)" if a.purpose == "forced" else "model call"
            return Text.assemble(f"{what} ", (a.model, "magenta"), elapsed)
        if a.kind == "cell":
            return Text.assemble(f"cell {a.iteration} running", elapsed)
        if a.kind == "batch" and a.batch_kind == "chain":
            # A chain's links are not known ahead: it counts up, with no total.
            return Text.assemble(f"follow_chain: {_count(a.done, 'link')} read", elapsed)
        if a.kind == "batch":
            noun = "child runs" if a.batch_kind == "rlm" else "sub-calls"
            what = f"llm_{a.batch_kind}" if a.batch_kind in PACKED else "batch"
            label = Text.assemble(
                f"{what}: {a.done} of {a.size} {noun} done",
                elapsed,
            )
            if a.errors:
                label.append(f" · {a.errors} failed", "red")
            return label
        return None

    def _usage_table(self) -> Table:
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="dim")
        for name, justify in (
            ("model", "left"),
            ("calls", "right"),
            ("in tok", "right"),
            ("out tok", "right"),
            ("USD", "right"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for model, tally in sorted(self.progress.usage.by_model.items()):
            calls = str(tally.calls)
            if failed := self.progress.failed[model]:
                calls += f" ({failed} failed)"
            if tally.cache_hits:
                calls += f" (+{tally.cache_hits} cached)"
            table.add_row(
                model,
                calls,
                short_tokens(tally.input_tokens),
                short_tokens(tally.output_tokens),
                short_usd(tally.usd),
            )
        return table


class LogLines:
    """Plain progress lines, for when stderr is a file or a pipe."""

    def __init__(self, stream: TextIO | None = None, *, every_s: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.progress = Progress()
        self._lock = threading.Lock()
        self._last_summary_t = 0.0

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.progress.apply(event)
            lines = self._lines(event)
            if lines:
                self.stream.write("".join(lines))
                self.stream.flush()

    def close(self) -> None:
        """Nothing to release; here so both sinks can be closed alike."""

    def _prefix(self, event: Event) -> str:
        run = self.progress.runs.get(event.run_id)
        depth = run.depth if run else 0
        who = "" if run is None or run.id == self.progress.root_id else f"[{run.id}] "
        return f"[{event.t:8.1f}s] " + "  " * depth + who

    def _lines(self, e: Event) -> list[str]:
        p = self.progress
        text: str | None = None
        if isinstance(e, RunStarted):
            kind = "run" if e.run_id == p.root_id else f"child run (depth {e.depth})"
            text = f"{kind} started · {e.model or '?'} · {_one_line(e.query, QUERY_PREVIEW)}"
        elif isinstance(e, LMCallEnded) and e.purpose != "sub":
            run = p.runs.get(e.run_id)
            turn = run.turn if run else 0
            what = "forced final answer" if e.purpose == "forced" else f"turn {turn}"
            if e.attempt > 1:
                what += f" (attempt {e.attempt})"
            text = (
                f"{what} · {e.model} replied in {short_seconds(e.duration_s)}"
                f" · {short_tokens(e.input_tokens + e.output_tokens)} tok"
                f" · {short_usd(e.usd)}"
            )
            if e.error:
                text += f" · error: {_one_line(e.error, 120)}"
        elif isinstance(e, LMCallEnded):
            return self._summary(e)
        elif isinstance(e, CellEnded):
            text = (
                f"cell {e.iteration} ran in {short_seconds(e.duration_s)}"
                f" · {e.output_chars:,} chars of output"
            )
            if e.error:
                text += f" · error: {_one_line(e.error.strip().splitlines()[-1], 120)}"
            if e.final is not None:
                text += " · final answer"
        elif isinstance(e, BatchStarted):
            noun = "child runs" if e.kind == "rlm" else "sub-calls"
            text = f"batch of {e.size} {noun} started"
            if e.kind in PACKED:
                text = (
                    f"llm_{e.kind} of {e.items:,} items ({e.unique:,} distinct, {e.cached:,} "
                    f"cached) in {e.size} sub-calls started"
                )
        elif isinstance(e, BatchEnded):
            text = f"batch of {e.size} done in {short_seconds(e.duration_s)}"
            if e.kind in PACKED:
                text = (
                    f"llm_{e.kind} of {e.items:,} items done in {short_seconds(e.duration_s)}"
                    f" · {e.calls} sub-calls · {e.reasked} asked again"
                )
            if e.errors:
                text += f" · {e.errors} failed"
        elif isinstance(e, Note):
            text = f"note: {_one_line(e.message, 200)}"
        elif isinstance(e, Compacted):
            text = (
                f"turns {e.first_turn}-{e.last_turn} compacted · prompt "
                f"{short_tokens(e.tokens_before)} → {short_tokens(e.tokens_after)} tok"
            )
        elif isinstance(e, RunEnded):
            return self._run_ended(e)
        return [] if text is None else [self._prefix(e) + text + "\n"]

    def _summary(self, e: LMCallEnded) -> list[str]:
        if e.t - self._last_summary_t < self.every_s:
            return []
        self._last_summary_t = e.t
        p = self.progress
        total = p.usage.total
        batches = [a for a in p.active.values() if a.kind == "batch"]
        text = (
            f"{_count(p.sub_calls_done, 'sub-call')} done · {short_tokens(total.tokens)} tok"
            f" · {short_usd(total.usd)}"
        )
        if batches:
            text += " · batches " + ", ".join(f"{b.done}/{b.size}" for b in batches[:4])
        return [f"[{e.t:8.1f}s] {text}\n"]

    def _run_ended(self, e: RunEnded) -> list[str]:
        p = self.progress
        run = p.runs.get(e.run_id)
        root = e.run_id == p.root_id
        text = (
            f"{'run' if root else 'child run'} {e.status} in {short_seconds(e.wall_s)}"
            f" · {_count(e.iterations, 'turn')} · {_count(e.sub_calls, 'sub-call')}"
        )
        if e.error:
            text += f" · {clip(_one_line(e.error, 200), 200)}"
        lines = [self._prefix(e) + text + "\n"]
        if root or run is None:
            for model, tally in sorted(p.usage.by_model.items()):
                lines.append(
                    f"[{e.t:8.1f}s] usage · {model}: {_count(tally.calls, 'call')}"
                    f" · {short_tokens(tally.input_tokens)} in"
                    f" · {short_tokens(tally.output_tokens)} out · {short_usd(tally.usd)}"
                    + (
                        f" · {_count(tally.cache_hits, 'cached call')}, "
                        f"{short_tokens(tally.saved_tokens)} tok saved"
                        if tally.cache_hits
                        else ""
                    )
                    + "\n"
                )
        return lines


def console_sink(
    *, quiet: bool = False, stream: TextIO | None = None
) -> LiveConsole | LogLines | None:
    """The progress sink `deeprlm ask` should use: none when quiet, a live panel on a
    terminal, plain lines otherwise."""
    if quiet:
        return None
    stream = stream if stream is not None else sys.stderr
    console = Console(file=stream)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveConsole(console)
    return LogLines(stream)
