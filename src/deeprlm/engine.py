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

from deeprlm import guides, prompts
from deeprlm.budget import Budget
from deeprlm.context import ContextInfo, describe, normalize
from deeprlm.errors import DeepRLMError, LimitError, LMError
from deeprlm.lm.base import LM, Completion, Message, ToolSpec
from deeprlm.primitives.mapping import MapReport, PackLimits, classify_items, map_items
from deeprlm.repl import REPL, Cell, ContextValue, REPLSettings, make_repl
from deeprlm.replies import Reply, parse_reply
from deeprlm.settings import Settings
from deeprlm.textutil import clip
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

# Characters per token assumed when telling the root how much one sub-call can read.
CHARS_PER_TOKEN = 3
# How much of the run's question goes with each packed sub-call of llm_map / llm_classify.
BACKGROUND_CHARS = 2_000


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
        resolve_lm: Callable[[str], LM],
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
        self._resolve_lm = resolve_lm
        self._named_lms: dict[str, LM] = {}
        # Answers of llm_map / llm_classify items, by model, instruction, labels and item:
        # code run again (small models do that) does not ask again.
        self.item_answers: dict[Any, str] = {}

    def root_lm_at(self, depth: int) -> LM:
        """The model driving runs at `depth`. An in-process model keeps a cache per role, so
        child runs get their own and leave the root's growing conversation cached."""
        if depth == 0 or not hasattr(self.root_lm, "for_role"):
            return self.root_lm
        return self.root_lm.for_role(f"depth{depth}")

    def sub_lm_named(self, model: str | None) -> LM:
        if model is None:
            return self.sub_lm
        if model not in self._named_lms:
            self._named_lms[model] = self._resolve_lm(model)
        return self._named_lms[model]

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
        schema: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """One model call: budget check, concurrency bound, usage, trace. `max_tokens`
        narrows the run's reply limit for this call, never widens it."""
        self.budget.check()
        trace = self.trace
        call_id = trace.new_id("call")
        start: float | None = None  # set once the call holds a slot and really starts
        completion: Completion | None = None
        usd = 0.0
        error: str | None = "cancelled"
        try:
            async with asyncio.timeout(self.budget.remaining_s()) as deadline, self.semaphore:
                start = trace.now()
                trace.emit(
                    LMCallStarted(start, call_id, run_id, parent_id, role, lm.name, len(prompt))
                )
                limit = _min_or_none(self.settings.max_reply_tokens, max_tokens)
                completion = await lm.acomplete(
                    messages,
                    tools=tools,
                    max_tokens=None if limit is None else int(limit),
                    schema=schema,
                )
            usd = self.usage.record(completion)
            error = None
            return completion
        except TimeoutError as err:
            if deadline.expired():
                limit = self.budget.trip(self.budget.time_error())
                error = str(limit)
                raise limit from None
            error = f"TimeoutError: {err}"
            raise LMError(f"model {lm.name} failed: {error}") from err
        except DeepRLMError as err:
            error = str(err)
            raise
        except Exception as err:
            error = f"{type(err).__name__}: {err}"
            raise LMError(f"model {lm.name} failed: {error}") from err
        finally:
            if start is not None:
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

    async def _route(self) -> str | None:
        """The kind of question, for a small root: one constrained call to the sub-model
        (see `deeprlm.guides`). None when the call fails; the run then goes on with the
        single-example prompt."""
        tree = self.tree
        prompt = guides.route_prompt(self.query, prompts.describe_context(self.info))
        try:
            completion = await tree.call_lm(
                tree.sub_lm,
                [{"role": "user", "content": prompt}],
                role="route",
                run_id=self.id,
                parent_id=self.id,
                prompt=prompt,
                schema=guides.route_schema(),
                max_tokens=16,
            )
        except LMError as err:
            tree.trace.emit(
                Note(tree.trace.now(), tree.trace.new_id("note"), self.id, self.id,
                     f"no kind of question picked ({err}): the general prompt is used")
            )  # fmt: skip
            return None
        return guides.read_route(completion.text)

    def _prompt_setup(self, kind: str | None = None) -> prompts.PromptSetup:
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
            kind=kind,
        )

    async def _loop(self, repl: REPL) -> RunOutcome:
        settings = self.tree.settings
        kind = await self._route() if self.family == "small" else None
        messages: list[Message] = [
            {"role": "system", "content": prompts.system_prompt(self._prompt_setup(kind))},
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
        timeout = _min_or_none(tree.settings.cell_timeout_s, tree.budget.remaining_s())
        try:
            cell = await repl.run(code, timeout)
        finally:
            self._cell_id = None
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

    def _take_sub_call(self) -> None:
        self.tree.budget.take_sub_call()
        self.sub_calls += 1

    async def llm_query(self, prompt: str, model: str | None = None) -> str:
        self._require_sub_calls()
        self._take_sub_call()
        return await self._sub_call(_prompt_text(prompt), model, self._cell_id or self.id)

    async def llm_batch(self, prompts_: Sequence[Any], model: str | None = None) -> list[str]:
        self._require_sub_calls()
        texts = [_prompt_text(p) for p in prompts_]

        async def one(text: str, parent: str) -> str:
            self._take_sub_call()
            return await self._sub_call(text, model, parent)

        return await self._batch("llm", [(one, (text,)) for text in texts])

    async def llm_map(
        self, instruction: str, items: Any, model: str | None = None
    ) -> list[str] | dict[str, str]:
        self._require_sub_calls()
        return await self._map("map", instruction, items, (), model)

    async def llm_classify(
        self, items: Any, labels: Sequence[str], instruction: str = "", model: str | None = None
    ) -> list[str] | dict[str, str]:
        self._require_sub_calls()
        if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
            raise TypeError("llm_classify: labels must be a list of label strings")
        return await self._map("classify", instruction, items, tuple(map(str, labels)), model)

    async def rlm_query(self, query: str, context: Any = None) -> str:
        self._require_sub_calls()
        self._take_sub_call()
        return await self._child(query, context, self._cell_id or self.id)

    async def rlm_batch(self, pairs: Sequence[Any]) -> list[str]:
        self._require_sub_calls()
        items = [_query_pair(pair) for pair in pairs]

        async def one(query: str, context: Any, parent: str) -> str:
            self._take_sub_call()
            return await self._child(query, context, parent)

        return await self._batch("rlm", [(one, pair) for pair in items])

    async def _batch(
        self, kind: str, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]]
    ) -> list[str]:
        """Runs jobs concurrently, answers in input order. A failing job becomes an error
        string; a reached limit stops the whole batch."""
        trace = self.tree.trace
        batch_id = trace.new_id("batch")
        start = trace.now()
        parent = self._cell_id or self.id
        trace.emit(BatchStarted(start, batch_id, self.id, parent, kind, len(jobs)))
        errors = 0
        # Child runs each hold a REPL (a process, in the sandbox), so bound them per batch.
        gate = asyncio.Semaphore(self.tree.settings.max_concurrency)

        async def guarded(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
            nonlocal errors
            async with gate:
                try:
                    return await fn(*args, batch_id)
                except LimitError:
                    raise
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

    async def _map(
        self,
        kind: str,
        instruction: str,
        items: Any,
        labels: tuple[str, ...],
        model: str | None,
    ) -> list[str] | dict[str, str]:
        """`llm_map` and `llm_classify`: packed sub-calls (see `deeprlm.primitives`), traced
        as one batch whose sub-calls are its packs."""
        name = f"llm_{kind}"
        if not isinstance(instruction, str) or (kind == "map" and not instruction.strip()):
            raise TypeError(f"{name}: the instruction must be a non-empty str")
        if isinstance(items, str) or not isinstance(items, (list, tuple, dict)):
            raise TypeError(
                f"{name}: items must be a list (or a dict), not {type(items).__name__}; "
                "split a text first, e.g. with context.splitlines() or chunk_text(context)"
            )
        keys = list(items) if isinstance(items, dict) else None
        values = list(items.values()) if isinstance(items, dict) else list(items)
        tree, trace = self.tree, self.tree.trace
        lm = tree.sub_lm_named(model)
        batch_id = trace.new_id("batch")
        parent = self._cell_id or self.id
        start = trace.now()
        started = False

        def on_plan(report: MapReport) -> None:
            nonlocal started
            started = True
            trace.emit(
                BatchStarted(
                    start,
                    batch_id,
                    self.id,
                    parent,
                    kind=kind,
                    size=len(report.packs),
                    items=report.items,
                    unique=report.unique,
                    cached=report.cached,
                    packs=tuple(report.packs),
                    instruction=clip(instruction, QUERY_CHARS),
                    labels=labels,
                )
            )

        async def call(prompt: str, schema: Mapping[str, Any] | None, tokens: int | None) -> str:
            self._take_sub_call()
            completion = await tree.call_lm(
                lm,
                [{"role": "user", "content": prompt}],
                role="sub",
                run_id=self.id,
                parent_id=batch_id,
                prompt=prompt,
                schema=schema,
                max_tokens=tokens,
            )
            return completion.text

        cache = _KeyedCache(tree.item_answers, lm.name)
        # The run's question goes with every pack: it is what tells a sub-model what the
        # labels mean when the code did not say (measured: 0.40 -> 0.55 on 40 questions
        # with the embedded model).
        background = clip(self.query, BACKGROUND_CHARS)
        report: MapReport | None = None
        try:
            if kind == "classify":
                report = await classify_items(
                    call, values, labels, instruction=instruction, background=background,
                    limits=self._pack_limits(lm), cache=cache, on_plan=on_plan,
                )  # fmt: skip
            else:
                report = await map_items(
                    call, instruction, values, background=background,
                    limits=self._pack_limits(lm), cache=cache, on_plan=on_plan,
                )  # fmt: skip
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        finally:
            if started or report is not None:
                if not started and report is not None:
                    on_plan(report)
                trace.emit(
                    BatchEnded(
                        trace.now(),
                        batch_id,
                        self.id,
                        parent,
                        kind=kind,
                        size=len(report.packs) if report else 0,
                        start=start,
                        duration_s=round(trace.now() - start, 6),
                        errors=report.errors if report else 0,
                        items=len(values),
                        calls=report.calls if report else 0,
                        reasked=report.reasked if report else 0,
                    )
                )
        answers = report.answers
        return dict(zip(keys, answers, strict=True)) if keys is not None else answers

    def _pack_limits(self, lm: LM) -> PackLimits:
        """Packs sized to the sub-model: its window bounds the item text of one call (half
        of it, leaving the rest for the instruction and the reply)."""
        window = getattr(lm, "context_window", None)
        max_chars = int(window) * CHARS_PER_TOKEN // 2 if window else PackLimits.max_chars
        return PackLimits(max_chars=max_chars, max_reply_tokens=self.tree.settings.max_reply_tokens)

    async def _sub_call(self, prompt: str, model: str | None, parent: str) -> str:
        tree = self.tree
        lm = tree.sub_lm_named(model)

        async def call(messages: list[Message], tools: Sequence[ToolSpec] | None) -> Completion:
            return await tree.call_lm(
                lm,
                messages,
                role="sub",
                run_id=self.id,
                parent_id=parent,
                prompt=str(messages[-1].get("content") or ""),
                tools=tools,
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
            return await self._sub_call(prompt, None, parent)
        child = Run(tree, query, context, depth=self.depth + 1, parent_id=parent)
        outcome = await child.execute()
        return outcome.answer


class _KeyedCache:
    """A view of the tree's item answers for one model: the same item asked of another
    model is another question."""

    def __init__(self, store: dict[Any, str], model: str) -> None:
        self.store = store
        self.model = model

    def get(self, key: Any) -> str | None:
        return self.store.get((self.model, key))

    def __setitem__(self, key: Any, value: str) -> None:
        self.store[(self.model, key)] = value


def _first_line(fn: Callable[..., Any]) -> str:
    doc = (fn.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else "(no description)"


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
