"""The loop of one run, and the state a run tree shares.

`Tree` holds what every run of one query shares: settings, models, the budget, the usage
meter, the trace, and the semaphore that bounds model calls in flight. `Run` is one RLM
loop at one depth: model reply -> code blocks -> REPL cells -> outputs -> next turn, until
a final answer or a limit. A run is also the `Host` its REPL calls back for `llm_query`,
`llm_batch`, `rlm_query` and `rlm_batch`; `rlm_query` makes a child `Run` one level
deeper, sharing the tree.

Everything here is async; the sync API runs it on a private event loop (see `deeprlm.rlm`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deeprlm import prompts
from deeprlm.budget import Budget, Reservation
from deeprlm.context import ContextInfo, describe, normalize
from deeprlm.errors import DeepRLMError, LimitError, LMError
from deeprlm.lm.base import LM, Completion, Message, ToolSpec
from deeprlm.lm.provider import (
    Deadline,
    DeadlineError,
    RetryPolicy,
    call_with_retries,
    earliest,
    within,
)
from deeprlm.repl import REPL, Cell, ContextValue, REPLSettings, make_repl
from deeprlm.replies import Reply, parse_reply
from deeprlm.settings import Settings
from deeprlm.slots import ReplSlots
from deeprlm.textutil import clip
from deeprlm.tokens import CHARS_PER_TOKEN
from deeprlm.tools import answer_with_tools, tool_spec
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
from deeprlm.trace.recorder import (
    CODE_CHARS,
    OUTPUT_CHARS,
    PROMPT_CHARS,
    QUERY_CHARS,
    REPLY_CHARS,
    Trace,
)
from deeprlm.usage import UsageMeter

# Sub-calls end by this share of their cell's timeout, so the answers that made it reach
# the code (an llm_batch returns them, with an error string for the rest) before the cell
# itself would be stopped and lose them all.
SUB_CALL_SHARE = 0.9
# A retry that waits at least this long is noted in the trace (and the live display).
NOTE_WAIT_S = 5.0


@dataclass(frozen=True)
class RunOutcome:
    answer: str
    iterations: int
    forced: bool


class Tree:
    """The state shared by every run answering one query."""

    def __init__(
        self,
        settings: Settings,
        root_lm: LM,
        sub_lm: LM,
        resolve_lm: Callable[[str | LM], LM],
        models: Mapping[str, str | LM],
        tools: dict[str, Callable[..., Any]],
        sub_tools: dict[str, Callable[..., Any]],
        trace: Trace,
        usage: UsageMeter,
    ) -> None:
        self.settings = settings
        self.root_lm = root_lm
        self.sub_lm = sub_lm
        self.tools = tools
        self.sub_tools = [tool_spec(name, fn) for name, fn in sub_tools.items()]
        self.trace = trace
        self.usage = usage
        self.budget = Budget(settings, usage)
        self.semaphore = asyncio.Semaphore(settings.max_concurrency)
        self.repl_slots = ReplSlots(settings.max_repls, settings.max_depth)
        self._resolve_lm = resolve_lm
        self._models = dict(models)
        self.declared_models = tuple(self._models)
        self._named_lms: dict[str, LM] = {}

    def root_lm_at(self, depth: int) -> LM:
        """The model driving runs at `depth`. An in-process model keeps a cache per role, so
        child runs get their own and leave the root's growing conversation cached."""
        if depth == 0 or not hasattr(self.root_lm, "for_role"):
            return self.root_lm
        return self.root_lm.for_role(f"depth{depth}")

    def model_names(self) -> list[str]:
        return ["root", "sub", *self._models]

    def sub_lm_named(self, model: Any) -> LM | None:
        """The model the code named for a sub-call, among those the user configured; None
        for any other name. The code's string is a name, never a spec: the host makes no
        model (and opens no file) on the code's say."""
        if model is None or model == "sub":
            return self.sub_lm
        if model == "root":
            return self.root_lm
        if not isinstance(model, str) or model not in self._models:
            return None
        if model not in self._named_lms:
            self._named_lms[model] = self._resolve_lm(self._models[model])
        return self._named_lms[model]

    def unknown_model(self, model: Any) -> str:
        return (
            f"Error: no model named {clip(repr(model), 100)}; choose one of "
            f"{', '.join(self.model_names())}, or leave `model` out for the sub model"
        )

    def run_deadline(self) -> Deadline | None:
        if self.budget.deadline is None:
            return None
        return Deadline(self.budget.deadline, "run", "the run's time budget")

    async def call_lm(
        self,
        lm: LM,
        messages: list[Message],
        *,
        role: str,
        run_id: str,
        parent_id: str,
        prompt: str,
        tools: Sequence[ToolSpec] | None = None,
        until: Deadline | None = None,
    ) -> Completion:
        """One metered model call: its attempts, each holding a concurrency slot and a
        budget reservation while in flight, retried outside the slot (see
        `deeprlm.lm.provider.call_with_retries`); usage and a trace pair per attempt. It
        ends by the run's deadline, `until` (a sub-call's cell's) and, for a sub-call, its
        own timeout from when it is first sent."""
        self.budget.check()
        settings = self.settings
        started_once: Deadline | None = None  # a sub-call's own deadline, from its first send
        attempts = 0

        def deadline() -> Deadline | None:
            return earliest(self.run_deadline(), until, started_once)

        async def attempt() -> Completion:
            nonlocal attempts, started_once
            await within(self.semaphore.acquire(), lm.name, deadline())
            try:
                reservation = await within(
                    self.budget.reserve(lm, messages, tools), lm.name, deadline()
                )
                limit = settings.sub_call_timeout_s
                if role == "sub" and started_once is None and limit is not None:
                    what = f"the sub-call timeout of {limit:g}s (sub_call_timeout_s)"
                    started_once = Deadline.after(limit, "sub_call", what)
                attempts += 1
                return await self._attempt(
                    lm,
                    messages,
                    tools,
                    reservation,
                    attempts,
                    deadline(),
                    role,
                    run_id,
                    parent_id,
                    prompt,
                )
            finally:
                self.semaphore.release()

        def note(message: str, wait_s: float | None) -> None:
            # Each failed attempt is in the trace already; a pause a user would notice, or
            # an empty reply, is also said where the progress display shows it.
            if wait_s is None or wait_s >= NOTE_WAIT_S:
                self.trace.emit(
                    Note(self.trace.now(), self.trace.new_id("note"), run_id, parent_id, message)
                )

        try:
            return await call_with_retries(
                attempt,
                model=lm.name,
                policy=RetryPolicy(max_retries=settings.max_retries),
                deadline=deadline,
                on_retry=note,
                max_tokens=lambda: self.budget.reply_cap(lm),
            )
        except DeadlineError as err:
            if err.deadline.kind == "run":
                raise self.budget.trip(self.budget.time_error()) from None
            raise

    async def _attempt(
        self,
        lm: LM,
        messages: list[Message],
        tools: Sequence[ToolSpec] | None,
        reservation: Reservation,
        number: int,
        deadline: Deadline | None,
        role: str,
        run_id: str,
        parent_id: str,
        prompt: str,
    ) -> Completion:
        """One attempt, sent with its reservation held: recorded whatever becomes of it."""
        trace, settings = self.trace, self.settings
        call_id = trace.new_id("call")
        start = trace.now()
        completion: Completion | None = None
        usd = 0.0
        error: str | None = "cancelled"
        abandoned = True  # until the provider answers, or says why it will not
        trace.emit(
            LMCallStarted(
                start,
                call_id,
                run_id,
                parent_id,
                role,
                lm.name,
                len(prompt),
                number,
                reservation.max_tokens,
            )
        )
        limit = settings.call_timeout_s
        timeout = None
        if limit is not None:
            what = f"the call timeout of {limit:g}s (call_timeout_s)"
            timeout = Deadline.after(limit, "call", what)
        try:
            completion = await within(
                lm.acomplete(messages, tools=tools, max_tokens=reservation.max_tokens),
                lm.name,
                deadline,
                timeout,
            )
            usd = self.usage.record(completion)
            error = None
            return completion
        except DeepRLMError as err:
            error = str(err)
            # Stopped by a deadline on this side: the provider may still be working on it.
            abandoned = isinstance(err, DeadlineError) or getattr(err, "timed_out", False)
            window = getattr(err, "window_tokens", None)
            if window and reservation.max_tokens and self.budget.learn_window(lm, window):
                # The cap overflowed the model's window: ask again within it.
                raise LMError(error, transient=True, retry_after_s=0.0) from None
            raise
        except Exception as err:
            error = f"{type(err).__name__}: {err}"
            abandoned = False
            raise LMError(f"model {lm.name} failed: {error}") from err
        finally:
            if completion is None and abandoned:
                # The provider has the prompt and may bill it; the reply never came.
                completion = Completion(
                    text="", model=lm.name, input_tokens=reservation.prompt_tokens, estimated=True
                )
                usd = self.usage.record(completion)
            self.budget.settle(lm, reservation, completion if error is None else None)
            c = completion or Completion(text="", model=lm.name)
            trace.emit(
                LMCallEnded(
                    trace.now(),
                    call_id,
                    run_id,
                    parent_id,
                    role=role,
                    model=c.model,
                    start=start,
                    duration_s=round(trace.now() - start, 6),
                    prompt=clip(prompt, PROMPT_CHARS),
                    prompt_chars=len(prompt),
                    reply=clip(c.text, REPLY_CHARS),
                    input_tokens=c.input_tokens,
                    output_tokens=c.output_tokens,
                    cached_tokens=c.cached_tokens,
                    usd=usd,
                    error=error,
                    attempt=number,
                    estimated=c.estimated,
                )
            )


class Run:
    """One RLM loop at one depth. Also the `Host` of its own REPL."""

    def __init__(
        self,
        tree: Tree,
        query: str,
        context: ContextValue,
        *,
        depth: int = 0,
        parent_id: str | None = None,
        info: ContextInfo | None = None,
    ) -> None:
        self.tree = tree
        self.query = query
        self.context = context
        self.depth = depth
        self.parent_id = parent_id
        self.info = info or describe(context)
        self.lm = tree.root_lm_at(depth)
        self.family = prompts.family_of(self.lm)
        self.output_chars = prompts.output_chars(self.family, tree.settings.max_output_chars)
        self.id = tree.trace.new_id("run")
        self.iterations = 0
        self.sub_calls = 0  # made by this run's own code; the tree's total is in the budget
        self.last_reply = ""
        self.answer_content = ""
        self._cell_id: str | None = None
        self._cell_deadline: Deadline | None = None  # when the running cell's sub-calls end
        self._repl: REPL | None = None

    def partial(self) -> str:
        """The best answer available if the run has to stop early."""
        return self.answer_content or self.last_reply

    # --- the loop ------------------------------------------------------------------------

    async def execute(self) -> RunOutcome:
        tree, trace = self.tree, self.tree.trace
        settings = tree.settings
        started = trace.now()
        repl = make_repl(settings.repl)
        trace.emit(
            RunStarted(
                started,
                self.id,
                self.id,
                self.parent_id,
                depth=self.depth,
                query=clip(self.query, QUERY_CHARS),
                model=self.lm.name,
                sub_model=tree.sub_lm.name,
                repl=getattr(repl, "kind", settings.repl),
                context=self.info.to_dict(),
                settings=settings.to_dict() if self.depth == 0 else {},
            )
        )
        status, error, outcome = "error", None, None
        shown = 0
        try:
            await repl.start(
                self.context,
                self,
                REPLSettings(
                    max_output_chars=self.output_chars,
                    tools=tree.tools,
                    allow_read=settings.allow_read,
                ),
            )
            shown = len(getattr(repl, "notes", ()))
            if self.depth == 0:
                # Isolation the kernel refused (the sandbox's fallbacks) is said, not hidden.
                for message in getattr(repl, "notes", ()):
                    trace.emit(Note(trace.now(), trace.new_id("note"), self.id, self.id, message))
            self._repl = repl
            outcome = await self._loop(repl)
            status = "forced" if outcome.forced else "answered"
            return outcome
        except LimitError as err:
            status, error = "limit", str(err)
            raise
        except asyncio.CancelledError:
            out_of_time = tree.budget.remaining_s() == 0.0
            status = "limit" if out_of_time else "cancelled"
            error = str(tree.budget.time_error()) if out_of_time else "cancelled"
            raise
        except BaseException as err:
            error = f"{type(err).__name__}: {err}"
            raise
        finally:
            await repl.close()
            # What closing could not clean up, at any depth.
            for message in getattr(repl, "notes", ())[shown:]:
                trace.emit(Note(trace.now(), trace.new_id("note"), self.id, self.id, message))
            trace.emit(
                RunEnded(
                    trace.now(),
                    self.id,
                    self.id,
                    self.parent_id,
                    status=status,
                    answer=clip(outcome.answer if outcome else self.partial(), REPLY_CHARS),
                    iterations=self.iterations,
                    sub_calls=self.sub_calls,
                    wall_s=round(trace.now() - started, 6),
                    usage=tree.usage.report().to_dict() if self.depth == 0 else {},
                    error=error,
                )
            )

    def _prompt_setup(self) -> prompts.PromptSetup:
        tree = self.tree
        settings = tree.settings
        window = getattr(tree.sub_lm, "context_window", None)
        return prompts.PromptSetup(
            depth=self.depth,
            max_depth=settings.max_depth,
            max_iterations=settings.max_iterations,
            max_output_chars=self.output_chars,
            sub_calls=settings.sub_calls,
            sub_window_chars=window * CHARS_PER_TOKEN if window else None,
            tools={name: _first_line(fn) for name, fn in tree.tools.items()},
            family=self.family,
            models=tree.declared_models,
        )

    async def _loop(self, repl: REPL) -> RunOutcome:
        settings = self.tree.settings
        messages: list[Message] = [
            {"role": "system", "content": prompts.system_prompt(self._prompt_setup())},
            {"role": "user", "content": prompts.first_message(self.query, self.info)},
        ]
        previous: tuple[tuple[str, ...], list[str]] | None = None
        for iteration in range(1, settings.max_iterations + 1):
            self.iterations = iteration
            parsed = parse_reply(await self._ask(messages, "root"))
            final, cells, notes = await self._act(repl, parsed, iteration)
            if final is not None:
                return RunOutcome(final, iteration, forced=False)
            seen = (parsed.code, [f"{c.output}{c.error}" for c in cells])
            if cells and seen == previous:
                notes.append(prompts.REPEATED_NOTE)
            previous = seen
            if not cells and not notes:
                content = prompts.no_code_message()
            else:
                content = prompts.cells_message(
                    cells,
                    iteration,
                    settings.max_iterations,
                    notes,
                    family=self.family,
                    query=self.query,
                )
            messages.append({"role": "user", "content": content})
        return await self._force_final(repl, messages)

    async def _act(
        self, repl: REPL, parsed: Reply, iteration: int
    ) -> tuple[str | None, list[Cell], list[str]]:
        """Runs a reply's code blocks and resolves its final tag. Returns the final answer
        (if the reply ended the run), the cells that ran and notes for the model."""
        cells: list[Cell] = []
        notes: list[str] = []
        for code in parsed.code:
            cell = await self._run_cell(repl, code, iteration)
            if cell.final is not None:
                return cell.final, cells, notes
            cells.append(cell)
            if cell.error:
                break  # later blocks usually build on this one
        tag = parsed.final
        if tag is None:
            return None, cells, notes
        if tag.is_variable:
            cell = await self._run_cell(repl, f"FINAL_VAR({tag.argument!r})", iteration)
            if cell.final is not None:
                return cell.final, cells, notes
            cells.append(cell)
        elif not parsed.code:
            return tag.argument, cells, notes
        else:
            notes.append(prompts.HELD_FINAL_NOTE)
        return None, cells, notes

    async def _force_final(self, repl: REPL, messages: list[Message]) -> RunOutcome:
        messages.append({"role": "user", "content": prompts.forced_final_message()})
        reply = await self._ask(messages, "forced")
        parsed = parse_reply(reply, tag_anywhere=True)
        answer = None
        if parsed.final is not None and parsed.final.is_variable:
            cell = await self._run_cell(
                repl, f"FINAL_VAR({parsed.final.argument!r})", self.iterations
            )
            answer = cell.final
        elif parsed.final is not None:
            answer = parsed.final.argument
        if answer is None:
            answer = self.answer_content or reply.strip()
        return RunOutcome(answer, self.iterations, forced=True)

    async def _ask(self, messages: list[Message], role: str) -> str:
        completion = await self.tree.call_lm(
            self.lm,
            messages,
            role=role,
            run_id=self.id,
            parent_id=self.id,
            prompt=str(messages[-1]["content"]),
        )
        messages.append({"role": "assistant", "content": completion.text})
        self.last_reply = completion.text
        return completion.text

    async def _run_cell(self, repl: REPL, code: str, iteration: int) -> Cell:
        tree, trace = self.tree, self.tree.trace
        cell_id = trace.new_id("cell")
        start = trace.now()
        trace.emit(CellStarted(start, cell_id, self.id, self.id, iteration, clip(code, CODE_CHARS)))
        self._cell_id = cell_id
        self._cell_deadline = _sub_call_deadline(tree.settings.cell_timeout_s, repl)
        timeout = _min_or_none(tree.settings.cell_timeout_s, tree.budget.remaining_s())
        try:
            cell = await repl.run(code, timeout)
        finally:
            self._cell_id = None
            self._cell_deadline = None
        if cell.answer_content:
            self.answer_content = cell.answer_content
        trace.emit(
            CellEnded(
                trace.now(),
                cell_id,
                self.id,
                self.id,
                iteration=iteration,
                start=start,
                duration_s=round(trace.now() - start, 6),
                output=clip(cell.output, OUTPUT_CHARS),
                output_chars=cell.output_chars,
                error=cell.error,
                final=None if cell.final is None else clip(cell.final, REPLY_CHARS),
            )
        )
        if tree.budget.tripped is not None:
            raise tree.budget.tripped
        if tree.budget.remaining_s() == 0.0:
            raise tree.budget.trip(tree.budget.time_error())
        return cell

    # --- the Host: what the REPL's code may ask for --------------------------------------

    def _require_sub_calls(self) -> None:
        if not self.tree.settings.sub_calls:
            raise RuntimeError("sub-calls are disabled in this run")

    def _check_batch(self, name: str, size: int) -> None:
        """Before a batch creates anything: its size, and the budget for all of it."""
        limit = self.tree.settings.max_batch
        if size > limit:
            raise ValueError(f"{name}: {size:,} items is over the limit of {limit:,}; split it")
        self.tree.budget.check_sub_calls(size)

    def _take_sub_call(self) -> None:
        self.tree.budget.take_sub_call()
        self.sub_calls += 1

    async def llm_query(self, prompt: str, model: str | None = None) -> str:
        self._require_sub_calls()
        lm = self.tree.sub_lm_named(model)
        if lm is None:
            return self.tree.unknown_model(model)
        self._take_sub_call()
        text, parent = _prompt_text(prompt), self._cell_id or self.id
        return await within(self._sub_call(text, lm, parent), "llm_query", self._cell_deadline)

    async def llm_batch(self, prompts_: Sequence[Any], model: str | None = None) -> list[str]:
        self._require_sub_calls()
        self._check_batch("llm_batch", len(prompts_))
        lm = self.tree.sub_lm_named(model)
        if lm is None:
            return [self.tree.unknown_model(model)] * len(prompts_)
        texts = [_prompt_text(p) for p in prompts_]

        async def one(text: str, parent: str) -> str:
            self._take_sub_call()
            return await self._sub_call(text, lm, parent)

        return await self._batch("llm", [(one, (text,)) for text in texts])

    async def rlm_query(self, query: str, context: Any = None) -> str:
        self._require_sub_calls()
        self._take_sub_call()
        child = self._child(query, context, self._cell_id or self.id)
        return await within(child, "rlm_query", self._cell_deadline)

    async def rlm_batch(self, pairs: Sequence[Any]) -> list[str]:
        self._require_sub_calls()
        self._check_batch("rlm_batch", len(pairs))
        items = [_query_pair(pair) for pair in pairs]

        async def one(query: str, context: Any, parent: str) -> str:
            self._take_sub_call()
            return await self._child(query, context, parent)

        return await self._batch("rlm", [(one, pair) for pair in items])

    async def _batch(
        self, kind: str, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]]
    ) -> list[str]:
        """Runs jobs concurrently, answers in input order. A job that fails, is refused by
        a budget or misses its cell's deadline becomes an error string; the others still
        run to the end and keep their answers (a refusal trips the budget, so the run
        stops after this cell). Only a cancelled run stops the siblings."""
        trace = self.tree.trace
        batch_id = trace.new_id("batch")
        start = trace.now()
        parent = self._cell_id or self.id
        trace.emit(BatchStarted(start, batch_id, self.id, parent, kind, len(jobs)))
        errors = 0
        deadline = self._cell_deadline

        # Model calls wait for the tree's semaphore, child runs for a REPL slot: both bounds
        # are tree-wide, whatever mix of batches and threads asks.
        async def guarded(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
            nonlocal errors
            try:
                return await within(fn(*args, batch_id), f"{kind}_batch item", deadline)
            except Exception as err:
                errors += 1
                return f"Error: {type(err).__name__}: {err}"

        tasks = [asyncio.ensure_future(guarded(fn, args)) for fn, args in jobs]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # A limit (or a cancelled run) stops the siblings too, not only this await.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            trace.emit(
                BatchEnded(
                    trace.now(),
                    batch_id,
                    self.id,
                    parent,
                    kind=kind,
                    size=len(jobs),
                    start=start,
                    duration_s=round(trace.now() - start, 6),
                    errors=errors,
                )
            )

    async def _sub_call(self, prompt: str, lm: LM, parent: str) -> str:
        tree = self.tree
        until = self._cell_deadline

        async def call(messages: list[Message], tools: Sequence[ToolSpec] | None) -> Completion:
            return await tree.call_lm(
                lm,
                messages,
                role="sub",
                run_id=self.id,
                parent_id=parent,
                prompt=str(messages[-1].get("content") or ""),
                tools=tools,
                until=until,
            )

        if tree.sub_tools:
            return await answer_with_tools(
                call,
                prompt,
                tree.sub_tools,
                native=lm.supports_tools,
                max_turns=tree.settings.sub_tool_turns,
            )
        completion = await call([{"role": "user", "content": prompt}], None)
        return completion.text

    async def _child(self, query: str, context: Any, parent: str) -> str:
        tree = self.tree
        query = _prompt_text(query)
        context = self.context if context is None else normalize(context)
        if self.depth >= tree.settings.max_depth:
            tree.trace.emit(
                Note(
                    tree.trace.now(),
                    tree.trace.new_id("note"),
                    self.id,
                    parent,
                    message=f"depth limit {tree.settings.max_depth}: rlm_query answered by a "
                    "plain model call",
                )
            )
            prompt = prompts.sub_query_prompt(query, _context_text(context))
            return await self._sub_call(prompt, tree.sub_lm, parent)
        child = Run(tree, query, context, depth=self.depth + 1, parent_id=parent)
        async with tree.repl_slots.hold(child.depth):
            outcome = await child.execute()
        return outcome.answer


def _first_line(fn: Callable[..., Any]) -> str:
    doc = (fn.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else "(no description)"


def _sub_call_deadline(cell_timeout_s: float | None, repl: REPL) -> Deadline | None:
    """When the sub-calls of a cell starting now must end: a share of the cell's timeout,
    the stricter of the setting and the REPL's own (the sandbox stops cells too)."""
    own = getattr(getattr(repl, "settings", None), "cell_timeout_s", None)
    limit = _min_or_none(cell_timeout_s, own)
    if limit is None:
        return None
    what = f"the cell's deadline for sub-calls ({SUB_CALL_SHARE:.0%} of its {limit:g}s timeout)"
    return Deadline.after(limit * SUB_CALL_SHARE, "cell", what)


def _min_or_none(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _prompt_text(prompt: Any) -> str:
    """Prompts are str; dicts with a "prompt" key (another RLM library's convention) work too."""
    if isinstance(prompt, dict):
        prompt = prompt.get("prompt", prompt.get("content", prompt))
    return prompt if isinstance(prompt, str) else str(prompt)


def _query_pair(pair: Any) -> tuple[str, Any]:
    if isinstance(pair, str):
        return pair, None
    if isinstance(pair, dict):
        return _prompt_text(pair.get("query", pair)), pair.get("context")
    query, context = pair
    return query, context


def _context_text(context: ContextValue) -> str:
    if isinstance(context, str):
        return context
    if isinstance(context, dict):
        return "\n\n".join(f"### {name}\n{text}" for name, text in context.items())
    return "\n\n".join(context)
