"""What the REPL's code may ask of its run: the host side of `llm_query`, `llm_batch`,
`llm_map`, `llm_classify`, `rlm_query`, `rlm_batch` and `follow_chain` (the `Host`
protocol of `deeprlm.repl`).

Every sub-call goes through the shared metered call and counts against the tree's
sub-call budget; a batch runs its items concurrently, answers in input order, and turns an
item that failed, was refused by a budget or missed its deadline into an error string while
the others run on and keep their answers. Sub-calls end by `SUB_CALL_SHARE` of their cell's
timeout, so the answers that made it reach the code before the cell would be stopped. A map
or a classification packs many items into each sub-call (`deeprlm.primitives.mapping`): the
host gives it the metered call (so budgets, the sub-call cache, retries and the cell's
deadline apply to each pack), the pack limits (from the sub-model's window) and the tree's
answer cache, and traces it as one batch whose sub-calls are its packs; `follow_chain`
(`deeprlm.primitives.chain`) is traced the same way, one sub-call per link. An
`rlm_query` starts a child run one level deeper (through `spawn`), or, at the depth limit,
is answered by a plain model call. What the model's code passes in is accepted loosely
(see `prompt_text` and `query_pair`): the model wrote it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from deeprlm import prompts
from deeprlm.context import as_text, normalize
from deeprlm.engine.shared import SharedState
from deeprlm.lm.base import LM, Completion, Message, ToolSpec, reads_items_inline
from deeprlm.lm.provider import Deadline, within
from deeprlm.primitives import packing
from deeprlm.primitives.chain import follow_chain
from deeprlm.primitives.mapping import MapReport, PackLimits, classify_items, map_items
from deeprlm.repl.base import ContextValue
from deeprlm.textutil import CHARS_PER_TOKEN, clip
from deeprlm.tools import answer_with_tools

# How much of the run's question goes with each packed sub-call of llm_map / llm_classify:
# it is what tells a sub-model what the labels mean when the code did not say (measured
# with the embedded model on 40 questions: 0.40 -> 0.55 labelled right in packs of 20).
BACKGROUND_CHARS = 2_000

# (query, context, parent id) -> the child run's answer.
Spawn = Callable[[str, ContextValue, str], Awaitable[str]]

# A link of follow_chain answers with one name or number the documents write.
CHAIN_REPLY_TOKENS = 64

# Sub-calls end by this share of their cell's timeout: an llm_batch then returns the
# answers that came back (an error string for the rest) before the cell is stopped and
# loses them all.
SUB_CALL_SHARE = 0.9


def sub_call_deadline(cell_timeout_s: float | None) -> Deadline | None:
    """When the sub-calls of a cell starting now must end."""
    if cell_timeout_s is None:
        return None
    what = (
        f"the cell's deadline for sub-calls ({SUB_CALL_SHARE:.0%} of its "
        f"{cell_timeout_s:g}s timeout)"
    )
    return Deadline.after(cell_timeout_s * SUB_CALL_SHARE, "cell", what)


class RunHost:
    """Serves one run's REPL. `cell_id` is the cell running now, the parent of the calls it
    makes, and `cell_deadline` when they must end; `sub_calls` counts this run's own (the
    tree's total is in the budget)."""

    def __init__(
        self,
        shared: SharedState,
        *,
        run_id: str,
        depth: int,
        context: ContextValue,
        spawn: Spawn,
    ) -> None:
        self.shared = shared
        self.run_id = run_id
        self.depth = depth
        self.context = context
        self.spawn = spawn
        self.cell_id: str | None = None
        self.cell_deadline: Deadline | None = None
        self.sub_calls = 0
        self.query = ""  # the run's question, said to packed sub-calls (set by the run)

    @property
    def _parent(self) -> str:
        return self.cell_id or self.run_id

    def _require_sub_calls(self) -> None:
        if not self.shared.settings.allow_sub_calls:
            raise RuntimeError("sub-calls are disabled in this run")

    def _check_batch(self, name: str, size: int) -> None:
        """Before a batch creates anything: its size, and the budget for all of it."""
        limit = self.shared.settings.max_batch
        if size > limit:
            raise ValueError(f"{name}: {size:,} items is over the limit of {limit:,}; split it")
        self.shared.budget.check_sub_calls(size)

    def _take_sub_call(self) -> None:
        self.shared.budget.take_sub_call()
        self.sub_calls += 1

    # --- the Host protocol -------------------------------------------------------------

    async def llm_query(self, prompt: Any, model: str | None = None) -> str:
        self._require_sub_calls()
        lm = self.shared.sub_lm_named(model)
        if lm is None:
            return self.shared.unknown_model(model)
        self._take_sub_call()
        call = self._sub_call(prompt_text(prompt), lm, self._parent)
        return await within(call, "llm_query", self.cell_deadline)

    async def llm_batch(self, prompts: Sequence[Any], model: str | None = None) -> list[str]:
        self._require_sub_calls()
        self._check_batch("llm_batch", len(prompts))
        lm = self.shared.sub_lm_named(model)
        if lm is None:
            return [self.shared.unknown_model(model)] * len(prompts)
        texts = [prompt_text(p) for p in prompts]

        async def one(text: str, parent: str) -> str:
            self._take_sub_call()
            return await self._sub_call(text, lm, parent)

        return await self._batch("llm", [(one, (text,)) for text in texts])

    async def llm_map(
        self, instruction: Any, items: Any, model: str | None = None
    ) -> list[str] | dict[str, str]:
        self._require_sub_calls()
        return await self._map("map", instruction, items, (), model)

    async def llm_classify(
        self, items: Any, labels: Any, instruction: Any = "", model: str | None = None
    ) -> list[str] | dict[str, str]:
        self._require_sub_calls()
        if isinstance(labels, str) or not isinstance(labels, list | tuple):
            raise TypeError("llm_classify: labels must be a list of label strings")
        return await self._map("classify", instruction, items, tuple(map(str, labels)), model)

    async def rlm_query(self, query: Any, context: Any = None) -> str:
        self._require_sub_calls()
        self._take_sub_call()
        child = self._child(query, context, self._parent)
        return await within(child, "rlm_query", self.cell_deadline)

    async def rlm_batch(self, pairs: Sequence[Any]) -> list[str]:
        self._require_sub_calls()
        self._check_batch("rlm_batch", len(pairs))
        items = [query_pair(pair) for pair in pairs]

        async def one(query: str, context: Any, parent: str) -> str:
            self._take_sub_call()
            return await self._child(query, context, parent)

        return await self._batch("rlm", [(one, pair) for pair in items])

    async def follow_chain(self, question: Any, where: Any = None) -> str:
        self._require_sub_calls()
        if not isinstance(question, str) or not question.strip():
            raise TypeError("follow_chain: the question must be a non-empty str")
        where = self.context if where is None else where
        lm = self.shared.sub_lm
        recorder = self.shared.recorder
        span = recorder.batch_started(
            run_id=self.run_id, parent_id=self._parent, kind="chain", size=0,
            instruction=question,
        )  # fmt: skip
        calls = 0

        async def ask(prompt: str, schema: dict[str, Any]) -> str:
            nonlocal calls
            calls += 1
            return await self._held_call(lm, prompt, span.id, schema, CHAIN_REPLY_TOKENS)

        failed = 1
        try:
            result = await within(
                follow_chain(question, where, ask), "follow_chain", self.cell_deadline
            )
            failed = 0
        finally:
            recorder.batch_ended(span, kind="chain", size=calls, errors=failed, calls=calls)
        return result.answer

    # --- how they are served -----------------------------------------------------------

    async def _batch(
        self, kind: str, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]]
    ) -> list[str]:
        """Runs jobs concurrently, answers in input order. A job that fails, is refused by
        a budget or misses its cell's deadline becomes an error string; the others run to
        the end and keep their answers (a refusal trips the budget, so the run stops after
        this cell). Only a cancelled run stops the siblings."""
        recorder = self.shared.recorder
        span = recorder.batch_started(
            run_id=self.run_id, parent_id=self._parent, kind=kind, size=len(jobs)
        )
        errors = 0
        deadline = self.cell_deadline

        # Model calls wait for the tree's semaphore, child runs for a REPL slot: both bounds
        # are tree-wide, whatever mix of batches and threads asks.
        async def guarded(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
            nonlocal errors
            try:
                return await within(fn(*args, span.id), f"{kind}_batch item", deadline)
            except Exception as err:
                errors += 1
                return f"Error: {type(err).__name__}: {err}"

        tasks = [asyncio.ensure_future(guarded(fn, args)) for fn, args in jobs]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # A cancelled run (a cell stopped, time up) stops the siblings too.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            recorder.batch_ended(span, kind=kind, size=len(jobs), errors=errors)

    async def _map(
        self, kind: str, instruction: Any, items: Any, labels: tuple[str, ...], model: Any
    ) -> list[str] | dict[str, str]:
        name = f"llm_{kind}"
        if not isinstance(instruction, str) or (kind == "map" and not instruction.strip()):
            raise TypeError(f"{name}: the instruction must be a non-empty str")
        if isinstance(items, str) or not isinstance(items, list | tuple | dict):
            raise TypeError(
                f"{name}: items must be a list (or a dict), not {type(items).__name__}; "
                "split a text first, e.g. with context.splitlines() or chunk_text(context)"
            )
        keys = list(items) if isinstance(items, dict) else None
        values = list(items.values()) if isinstance(items, dict) else list(items)
        lm = self.shared.sub_lm_named(model)
        if lm is None:
            error = self.shared.unknown_model(model)
            return dict.fromkeys(keys, error) if keys is not None else [error] * len(values)
        recorder = self.shared.recorder
        parent = self._parent
        spans = []

        def started(report: MapReport) -> None:
            # Before the first call: the packs it plans are what the limits bound.
            if report.packs:
                self._check_batch(name, len(report.packs))
            spans.append(
                recorder.batch_started(
                    run_id=self.run_id,
                    parent_id=parent,
                    kind=kind,
                    size=len(report.packs),
                    items=report.items,
                    unique=report.unique,
                    cached=report.cached,
                    packs=tuple(report.packs),
                    instruction=instruction,
                    labels=labels,
                )
            )

        async def call(prompt: str, schema: Mapping[str, Any] | None, tokens: int | None) -> str:
            # The trace shows a pack's items even when they travel in its schema.
            items = packing.described_items(schema)
            shown = (
                f"{prompt}\n\nItems (in the reply schema):\n{packing.numbered(items)}"
                if items
                else None
            )
            return await self._held_call(lm, prompt, spans[0].id, schema, tokens, shown=shown)

        window = lm.context_window
        limits = PackLimits(
            # Half the window for the items, the rest for the instruction and the reply.
            max_chars=int(window * CHARS_PER_TOKEN) // 2 if window else PackLimits.max_chars,
            max_reply_tokens=self.shared.settings.max_reply_tokens,
        )
        options: dict[str, Any] = {
            "background": clip(self.query, BACKGROUND_CHARS),
            "limits": limits,
            "cache": _ModelCache(self.shared.item_answers, lm.name),
            "on_plan": started,
            "inline": reads_items_inline(lm),
        }
        report: MapReport | None = None
        try:
            if kind == "classify":
                report = await classify_items(
                    call, values, labels, instruction=instruction, **options
                )
            else:
                report = await map_items(call, instruction, values, **options)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        finally:
            if report is not None and not spans:
                started(report)  # every item answered before: a batch of no calls
            if spans:
                recorder.batch_ended(
                    spans[0],
                    kind=kind,
                    size=len(report.packs) if report else 0,
                    errors=report.errors if report else 0,
                    items=len(values),
                    calls=report.calls if report else 0,
                    reasked=report.reasked if report else 0,
                )
        answers = report.answers
        return dict(zip(keys, answers, strict=True)) if keys is not None else answers

    async def _held_call(
        self,
        lm: LM,
        prompt: str,
        parent: str,
        schema: Mapping[str, Any] | None,
        max_tokens: int | None,
        shown: str | None = None,
    ) -> str:
        """One counted sub-call whose reply may be held to a JSON Schema (a map's pack, a
        chain's link). `shown`: the prompt as the trace shows it, when not as sent."""
        self._take_sub_call()
        completion = await self.shared.call_lm(
            lm,
            [{"role": "user", "content": prompt}],
            purpose="sub",
            run_id=self.run_id,
            parent_id=parent,
            prompt=shown or prompt,
            until=self.cell_deadline,
            schema=schema,
            max_tokens=max_tokens,
        )
        return completion.text

    async def _sub_call(self, prompt: str, lm: LM, parent: str) -> str:
        shared = self.shared
        until = self.cell_deadline

        async def call(messages: list[Message], tools: Sequence[ToolSpec] | None) -> Completion:
            return await shared.call_lm(
                lm,
                messages,
                purpose="sub",
                run_id=self.run_id,
                parent_id=parent,
                prompt=str(messages[-1].get("content") or ""),
                tools=tools,
                until=until,
            )

        if shared.sub_tools:
            return await answer_with_tools(
                call,
                prompt,
                shared.sub_tools,
                native=lm.supports_tools,
                max_turns=shared.settings.sub_tool_turns,
            )
        completion = await call([{"role": "user", "content": prompt}], None)
        return completion.text

    async def _child(self, query: Any, context: Any, parent: str) -> str:
        settings = self.shared.settings
        query = prompt_text(query)
        context = self.context if context is None else normalize(context)
        if self.depth >= settings.max_depth:
            self.shared.recorder.note(
                run_id=self.run_id,
                parent_id=parent,
                message=f"depth limit {settings.max_depth}: rlm_query answered by a plain "
                "model call",
            )
            prompt = prompts.sub_query_prompt(query, as_text(context))
            return await self._sub_call(prompt, self.shared.sub_lm, parent)
        async with self.shared.repl_slots.hold(self.depth + 1):
            return await self.spawn(query, context, parent)


class _ModelCache:
    """The tree's item answers as one model's: the same item asked of another model is
    another question."""

    def __init__(self, store: dict[Any, str], model: str) -> None:
        self.store = store
        self.model = model

    def get(self, key: Any) -> str | None:
        return self.store.get((self.model, key))

    def __setitem__(self, key: Any, value: str) -> None:
        self.store[(self.model, key)] = value


def prompt_text(prompt: Any) -> str:
    """Prompts are str; dicts with a "prompt" key (another RLM library's convention) work too."""
    if isinstance(prompt, dict):
        prompt = prompt.get("prompt", prompt.get("content", prompt))
    return prompt if isinstance(prompt, str) else str(prompt)


def query_pair(pair: Any) -> tuple[str, Any]:
    """An rlm_batch item: a query, a (query, context) pair, or a dict with those keys."""
    if isinstance(pair, str):
        return pair, None
    if isinstance(pair, dict):
        return prompt_text(pair.get("query", pair)), pair.get("context")
    query, context = pair
    return query, context


class HostRelay:
    """The host of a REPL that outlives its runs (a session's): each call goes to the host
    of the run going on now. Set `current` when a run starts on the REPL, clear it when it
    ends; a call in between (a thread the code left running) fails like any host error."""

    def __init__(self) -> None:
        self.current: RunHost | None = None

    def __getattr__(self, name: str) -> Any:
        # Only the Host methods reach here (`current` is an instance attribute), so every
        # REPL function, today's and those added to the table later, is relayed.
        if name.startswith("_"):
            raise AttributeError(name)
        current = self.__dict__.get("current")
        if current is None:
            raise RuntimeError(f"{name}: no question is being answered now")
        return getattr(current, name)
