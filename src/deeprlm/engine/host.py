"""What the REPL's code may ask of its run: the host side of `llm_query`, `llm_batch`,
`rlm_query` and `rlm_batch` (the `Host` protocol of `deeprlm.repl`).

Every sub-call goes through the shared metered call and counts against the tree's
sub-call budget; a batch runs its items concurrently, answers in input order, and turns an
item that failed, was refused by a budget or missed its deadline into an error string while
the others run on and keep their answers. Sub-calls end by `SUB_CALL_SHARE` of their cell's
timeout, so the answers that made it reach the code before the cell would be stopped. An
`rlm_query` starts a child run one level deeper (through `spawn`), or, at the depth limit,
is answered by a plain model call. What the model's code passes in is accepted loosely
(see `prompt_text` and `query_pair`): the model wrote it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from deeprlm import prompts
from deeprlm.context import as_text, normalize
from deeprlm.engine.shared import SharedState
from deeprlm.lm.base import LM, Completion, Message, ToolSpec
from deeprlm.lm.provider import Deadline, within
from deeprlm.repl.base import ContextValue
from deeprlm.tools import answer_with_tools

# (query, context, parent id) -> the child run's answer.
Spawn = Callable[[str, ContextValue, str], Awaitable[str]]

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
