"""One run: one RLM loop at one depth, from its REPL's start to its `run_ended` event.

A `Run` starts its REPL with the context and its host (`RunHost`), drives the turn loop
(`TurnLoop`) with the root-model prompts, runs each cell with the time the budget leaves,
and records how it ended: answered, forced, a limit, an error or cancelled. A child run is
the same thing one level deeper, sharing the `SharedState`. A small root model is taught
one kind of question only, picked from the context's structure (see `deeprlm.guides`).

A root run may instead be given a REPL that is already going (`AttachedREPL`: a session's,
kept across questions with its variables): it then neither starts nor closes it, and
points the REPL's relay at its own host for as long as it runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deeprlm import guides, prompts
from deeprlm.context import ContextInfo, describe
from deeprlm.engine.host import HostRelay, RunHost, sub_call_deadline
from deeprlm.engine.loop import Compaction, Outcome, TurnLoop, Wording
from deeprlm.engine.shared import SharedState
from deeprlm.errors import LimitError, OutputError
from deeprlm.lm.base import Message
from deeprlm.output import Checked, OutputSchema
from deeprlm.repl import REPL, Cell, ContextValue, REPLSettings, make_repl
from deeprlm.settings import Settings
from deeprlm.textutil import CHARS_PER_TOKEN

# Of a sub-model's window, the share the root is told one sub-call can read: the rest is
# headroom for the prompt's own words and for text denser than prose (code, non-English).
SUB_WINDOW_SHARE = 0.75
# Of the root model's window, the share its conversation may fill before older turns are
# compacted (unless `compact_tokens` says): the rest is for its reply and the estimate's
# error on text denser than prose.
COMPACT_SHARE = 0.6


@dataclass
class AttachedREPL:
    """A started REPL that outlives the runs made on it, and the relay its host calls go
    through (`HostRelay`)."""

    repl: REPL
    relay: HostRelay


def repl_settings(settings: Settings, family: str, tools: dict[str, Any]) -> REPLSettings:
    """What a REPL is started with, for a root model of prompt family `family`."""
    return REPLSettings(
        max_output_chars=prompts.output_chars(family, settings.max_output_chars),
        tools=tools,
        allow_read=settings.allow_read,
    )


class Run:
    def __init__(
        self,
        shared: SharedState,
        query: str,
        context: ContextValue,
        *,
        depth: int = 0,
        parent_id: str | None = None,
        info: ContextInfo | None = None,
        wording: Wording | None = None,
        output: OutputSchema | None = None,
        cache_facts: dict[str, Any] | None = None,
        attached: AttachedREPL | None = None,
        recap: str = "",
    ) -> None:
        self.shared = shared
        self.output = output  # the root's typed answer, if any
        self.cache_facts = cache_facts or {}  # the root's: what `--resume` reads back
        self._checked: Checked | None = None  # the last final answer held to it
        self._last_final = ""
        self._refusals = 0
        self.query = query
        self.context = context
        self.depth = depth
        self.parent_id = parent_id
        self.info = info or describe(context)
        self.lm = shared.root_lm_at(depth)
        self.family = self.lm.prompt_family
        self.output_chars = prompts.output_chars(self.family, shared.settings.max_output_chars)
        self.id = shared.recorder.new_id("run")
        self.host = RunHost(
            shared, run_id=self.id, depth=depth, context=context, spawn=self._spawn_child
        )
        self.recap = recap
        self.host.query = query
        # The root-model prompts of a small model wait for the kind of question.
        self._routed = wording is None and self.family == "small"
        self.loop = TurnLoop(
            self._ask,
            self._run_cell,
            wording or self._root_wording(),
            max_iterations=shared.settings.max_iterations,
            after_cell=self._check_budget,
            compaction=self._compaction(),
            on_compact=self._compacted,
            accept=self._accept if output is not None else None,
        )
        self._attached = attached
        self._repl: REPL | None = None

    @property
    def iterations(self) -> int:
        return self.loop.iterations

    def partial(self) -> str:
        """The best answer available if the run has to stop early."""
        if self._checked is not None and self._checked.problem is not None:
            return self._last_final
        return self.loop.partial()

    def _accept(self, answer: str) -> str | None:
        """Holds a final answer to the output schema: None accepts it; else the note that
        sends it back, until `output_retries` notes have been sent."""
        assert self.output is not None
        self._last_final = answer
        self._checked = checked = self.output.check(answer)
        if checked.problem is None:
            return None
        recorder = self.shared.recorder
        recorder.note(
            run_id=self.id,
            parent_id=self.id,
            message=f"the final answer does not follow the output schema: {checked.problem}",
        )
        limit = self.shared.settings.output_retries
        if self._refusals >= limit:
            raise OutputError(
                f"the final answer did not follow the output schema after {limit + 1} "
                f"tries: {checked.problem}"
            )
        self._refusals += 1
        return self.output.retry_note(checked.problem)

    async def execute(self) -> Outcome:
        shared, recorder = self.shared, self.shared.recorder
        settings = shared.settings
        attached = self._attached
        repl = attached.repl if attached else make_repl(settings.repl, settings.sandbox)
        span = recorder.run_started(
            run_id=self.id,
            parent_id=self.parent_id,
            depth=self.depth,
            query=self.query,
            model=self.lm.name,
            sub_model=shared.sub_lm.name,
            repl=repl.kind,
            context=self.info.to_dict(),
            settings=settings.to_dict() if self.depth == 0 else {},
            cache=self.cache_facts,
        )
        status, error, outcome, limit = "error", None, None, ""
        shown = 0
        try:
            if attached:
                attached.relay.current = self.host
            else:
                await repl.start(
                    self.context, self.host, repl_settings(settings, self.family, shared.tools)
                )
            shown = len(repl.notes)
            if self.depth == 0:
                # Isolation the kernel refused (the sandbox's fallbacks) is said, not hidden.
                for message in repl.notes:
                    recorder.note(run_id=self.id, parent_id=self.id, message=message)
            self._repl = repl
            if self._routed:
                self.loop.wording = self._root_wording(self._pick_kind())
                first_move = self.loop.wording.first_move()
                if first_move:
                    recorder.note(
                        run_id=self.id,
                        parent_id=self.id,
                        message=f"the first turn runs the kind's first step: {first_move}",
                    )
            outcome = await self.loop.run()
            if self._checked is not None:
                outcome = dataclasses.replace(
                    outcome, answer=self._checked.answer, value=self._checked.value
                )
            elif self.family == "small":
                lettered = guides.as_choice_letter(self.query, outcome.answer)
                if lettered is not None:
                    outcome = dataclasses.replace(outcome, answer=lettered)
            status = "forced" if outcome.forced else "answered"
            return outcome
        except LimitError as err:
            status, error, limit = "limit", str(err), err.limit
            raise
        except asyncio.CancelledError:
            out_of_time = shared.budget.remaining_s() == 0.0
            status = "limit" if out_of_time else "cancelled"
            error = str(shared.budget.time_error()) if out_of_time else "cancelled"
            limit = "time" if out_of_time else ""
            raise
        except BaseException as err:
            error = f"{type(err).__name__}: {err}"
            raise
        finally:
            self._repl = None
            if attached:
                attached.relay.current = None
            else:
                await repl.close()
            # What closing could not clean up, at any depth.
            for message in repl.notes[shown:]:
                recorder.note(run_id=self.id, parent_id=self.id, message=message)
            recorder.run_ended(
                span,
                status=status,
                answer=outcome.answer if outcome else self.partial(),
                iterations=self.iterations,
                sub_calls=self.host.sub_calls,
                usage=shared.usage.report().to_dict() if self.depth == 0 else {},
                error=error,
                limit=limit,
            )

    def _pick_kind(self) -> str:
        """The kind of question a small root is taught for (see `deeprlm.guides`), said in
        the trace."""
        pick = guides.pick_kind(self.query, self.info)
        self.shared.recorder.note(
            run_id=self.id, parent_id=self.id, message=f"kind of question: {pick.kind} ({pick.why})"
        )
        return pick.kind

    def _root_wording(self, kind: str | None = None) -> prompts.RootWording:
        shared = self.shared
        settings = shared.settings
        window = shared.sub_lm.context_window
        setup = prompts.PromptSetup(
            depth=self.depth,
            max_depth=settings.max_depth,
            max_iterations=shared.prompt_iterations,
            max_output_chars=self.output_chars,
            allow_sub_calls=settings.allow_sub_calls,
            sub_window_chars=int(window * CHARS_PER_TOKEN * SUB_WINDOW_SHARE) if window else None,
            tools={name: _first_line(fn) for name, fn in shared.tools.items()},
            family=self.family,
            models=shared.declared_models,
            kind=kind,
            shape=self.info.kind,
            query=self.query,
        )
        answer_format = self.output.instruction() if self.output is not None else None
        more_turns = settings.max_iterations
        return prompts.RootWording(
            setup,
            self.query,
            self.info,
            answer_format,
            recap=self.recap,
            more_turns=more_turns if more_turns != shared.prompt_iterations else None,
        )

    def _compaction(self) -> Compaction | None:
        limit = self.shared.settings.compact_tokens
        if limit is None and self.lm.context_window:
            limit = int(self.lm.context_window * COMPACT_SHARE)
        return Compaction(limit) if limit else None

    def _compacted(self, first: int, last: int, before: int, after: int) -> None:
        self.shared.recorder.compacted(
            run_id=self.id,
            first_turn=first,
            last_turn=last,
            tokens_before=before,
            tokens_after=after,
        )

    async def _ask(
        self, messages: list[Message], purpose: str, schema: Mapping[str, Any] | None = None
    ) -> str:
        completion = await self.shared.call_lm(
            self.lm,
            messages,
            purpose=purpose,
            run_id=self.id,
            parent_id=self.id,
            prompt=str(messages[-1]["content"]),
            schema=schema,
        )
        return completion.text

    async def _run_cell(self, code: str, iteration: int) -> Cell:
        assert self._repl is not None, "cells run only while the run executes"
        shared, recorder = self.shared, self.shared.recorder
        span = recorder.cell_started(run_id=self.id, iteration=iteration, code=code)
        self.host.cell_id = span.id
        self.host.cell_deadline = sub_call_deadline(shared.settings.cell_timeout_s)
        timeout = _min_or_none(shared.settings.cell_timeout_s, shared.budget.remaining_s())
        try:
            cell = await self._repl.run(code, timeout)
        finally:
            self.host.cell_id = None
            self.host.cell_deadline = None
        recorder.cell_ended(
            span,
            iteration=iteration,
            output=cell.output,
            output_chars=cell.output_chars,
            error=cell.error,
            final=cell.final,
        )
        return cell

    def _check_budget(self) -> None:
        """After a cell: a limit reached inside it (even one its code swallowed) ends the
        run now, as does a clock that ran out while it ran."""
        budget = self.shared.budget
        if budget.tripped is not None:
            raise budget.tripped
        if budget.remaining_s() == 0.0:
            raise budget.trip(budget.time_error())

    async def _spawn_child(self, query: str, context: ContextValue, parent_id: str) -> str:
        child = Run(self.shared, query, context, depth=self.depth + 1, parent_id=parent_id)
        return (await child.execute()).answer


def _first_line(fn: Callable[..., Any]) -> str:
    doc = (fn.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else "(no description)"


def _min_or_none(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None
