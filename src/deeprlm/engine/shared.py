"""The state every run of one query shares, and the one metered model call.

`SharedState` holds what the root run, its child runs and their sub-calls have in common:
the settings, the models, the budget, the usage meter, the trace recorder, and the
semaphore that bounds model calls in flight. `call_lm` is the only way anything in a run
tree (or a benchmark baseline) calls a model: the sub-call cache first, when the run has
one (`deeprlm.cache`: a hit bypasses everything below and costs nothing); then attempts
retried outside their concurrency slot (`deeprlm.lm.provider.call_with_retries`), each
holding a budget reservation while in flight (`deeprlm.budget`), bounded by deadlines, and
recorded in usage and the trace, in that one function.

`Permits` is the seam for bounds wider than one tree: the questions of a batch, in one
process or across a cluster, share each model's permits and the batch's token and USD
budget (`deeprlm.batch.permits`); a single run holds none. The batch's budget is kept as the
tree's is: each attempt's reservation is held there too while in flight, then what the
attempt really cost is charged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from deeprlm.budget import Budget, Reservation
from deeprlm.cache import RunCache
from deeprlm.errors import DeepRLMError, LimitError, LMError
from deeprlm.lm.base import LM, Completion, Message, ToolSpec, computes_in_process
from deeprlm.lm.provider import (
    Deadline,
    DeadlineError,
    RetryPolicy,
    call_with_retries,
    earliest,
    within,
)
from deeprlm.settings import Settings
from deeprlm.slots import ReplSlots
from deeprlm.textutil import clip
from deeprlm.tools import tool_spec
from deeprlm.trace.recorder import Recorder
from deeprlm.usage import UsageMeter

# A retry that waits at least this long is noted in the trace (and the live display).
NOTE_WAIT_S = 5.0


class Tab:
    """What one attempt really cost, filled in once it has ended (nothing if never sent)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.usd = 0.0

    def charge(self, tokens: int, usd: float) -> None:
        self.tokens += tokens
        self.usd += usd


class Permits(Protocol):
    """Leave to send one call to a model, shared beyond one run tree. `hold(model)` is
    entered around each provider call, inside the tree's own concurrency bound; then
    `reserve(model, reservation, tab)` around the attempt once the tree's budget has
    reserved it: it holds the same worst case against a wider budget (waiting while it
    does not fit, raising a `LimitError` when it never will) and on exit counts what
    `tab` says the attempt cost."""

    def hold(self, model: str) -> AbstractAsyncContextManager[object]: ...

    def reserve(
        self, model: str, reservation: Reservation, tab: Tab
    ) -> AbstractAsyncContextManager[object]: ...


class NoPermits:
    """The default: nothing shared beyond the tree."""

    def hold(self, model: str) -> AbstractAsyncContextManager[object]:
        return contextlib.nullcontext()

    def reserve(
        self, model: str, reservation: Reservation, tab: Tab
    ) -> AbstractAsyncContextManager[object]:
        return contextlib.nullcontext()


class SharedState:
    """What every run answering one query shares."""

    def __init__(
        self,
        settings: Settings,
        root_lm: LM,
        sub_lm: LM,
        *,
        recorder: Recorder,
        usage: UsageMeter,
        resolve_lm: Callable[[str | LM], LM] | None = None,
        models: Mapping[str, str | LM] | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        sub_tools: Mapping[str, Callable[..., Any]] | None = None,
        cache: RunCache | None = None,
        permits: Permits | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        # The iteration limit the prompts state. A resumed run keeps the first run's, so
        # that its replayed turns read the same (see `deeprlm.resume`).
        self.prompt_iterations = settings.max_iterations
        self.root_lm = root_lm
        self.sub_lm = sub_lm
        self.tools = dict(tools or {})
        self.sub_tools = [tool_spec(name, fn) for name, fn in (sub_tools or {}).items()]
        self.recorder = recorder
        self.usage = usage
        self.budget = Budget(settings, usage)
        self.semaphore = asyncio.Semaphore(settings.max_concurrency)
        self.permits = permits or NoPermits()
        # Child runs each hold a REPL (a process, in the sandbox): bounded tree-wide.
        self.repl_slots = ReplSlots(settings.max_repls, settings.max_depth)
        self._resolve_lm = resolve_lm
        self._models = dict(models or {})
        self.declared_models = tuple(self._models)
        self._named_lms: dict[str, LM] = {}
        # Answers of llm_map / llm_classify items, by model, instruction, labels and item:
        # code run again (small models do that) does not ask again.
        self.item_answers: dict[Any, str] = {}

    def root_lm_at(self, depth: int) -> LM:
        """The model driving runs at `depth`: a role of its own per depth (see
        `LM.for_role`), so child runs leave the root's growing conversation cached."""
        return self.root_lm if depth == 0 else self.root_lm.for_role(f"depth{depth}")

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
            if self._resolve_lm is None:
                return None
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
        purpose: str,
        run_id: str,
        parent_id: str,
        prompt: str,
        tools: Sequence[ToolSpec] | None = None,
        until: Deadline | None = None,
        schema: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """One model call: from the cache if the run has one and it holds the reply, else
        metered (`_metered_call`) and then stored. `schema` is a JSON Schema the reply must
        follow (see `LM.acomplete`); `max_tokens` narrows the run's reply limit for this
        call, never widens it."""
        limits = [t for t in (self.settings.max_reply_tokens, max_tokens) if t is not None]
        wanted = min(limits) if limits else None

        async def make() -> Completion:
            return await self._metered_call(
                lm, messages, purpose, run_id, parent_id, prompt, tools, until, schema, wanted
            )

        if self.cache is None:
            return await make()

        def served(completion: Completion, how: str) -> None:
            saved = self.usage.record_hit(completion)
            span = self.recorder.call_started(
                run_id=run_id,
                parent_id=parent_id,
                purpose=purpose,
                model=lm.name,
                prompt_chars=len(prompt),
            )
            self.recorder.call_ended(
                span,
                purpose=purpose,
                model=completion.model,
                prompt=prompt,
                reply=completion.text,
                input_tokens=0,
                output_tokens=0,
                cached_tokens=0,
                usd=0.0,
                error=None,
                cache=how,
                saved_tokens=completion.input_tokens + completion.output_tokens,
                saved_usd=saved,
            )

        def storable(completion: Completion) -> bool:
            # Under a token or USD budget a reply may be capped below the setting to fit
            # what is left: cut short there, it is not the reply to the request as keyed.
            return not (completion.finish_reason == "length" and self.budget.metered)

        return await self.cache.call(
            lm,
            messages,
            tools=tools,
            max_tokens=wanted,
            schema=schema,
            make=make,
            served=served,
            storable=storable,
        )

    async def _metered_call(
        self,
        lm: LM,
        messages: list[Message],
        purpose: str,
        run_id: str,
        parent_id: str,
        prompt: str,
        tools: Sequence[ToolSpec] | None,
        until: Deadline | None,
        schema: Mapping[str, Any] | None,
        wanted: int | None = None,
    ) -> Completion:
        """One metered model call: its attempts, each holding a concurrency slot and then
        a budget reservation while in flight, retried outside the slot; usage and a trace
        pair per attempt. It ends by the run's deadline, `until` (a sub-call's cell's) and,
        for a sub-call, its own timeout from when it is first sent. `wanted` is the reply
        cap this call asks for (see `Budget.reply_cap`)."""
        self.budget.check()
        settings = self.settings
        started_once: Deadline | None = None  # a sub-call's own deadline, from its first send
        attempts = 0

        def deadline() -> Deadline | None:
            return earliest(self.run_deadline(), until, started_once)

        async def attempt() -> Completion:
            nonlocal attempts, started_once
            await within(self.semaphore.acquire(), lm.name, deadline())
            permit = contextlib.AsyncExitStack()
            try:
                # Then each model's permit shared beyond the tree (a batch's), if any.
                await within(
                    permit.enter_async_context(self.permits.hold(lm.name)), lm.name, deadline()
                )
                reservation = await within(
                    self.budget.reserve(lm, messages, tools, wanted, schema), lm.name, deadline()
                )
                tab = Tab()
                try:
                    # Its worst case held beyond the tree too (a batch's budget), if any.
                    await within(
                        permit.enter_async_context(self.permits.reserve(lm.name, reservation, tab)),
                        lm.name,
                        deadline(),
                    )
                except BaseException as err:
                    self.budget.settle(lm, reservation, None)
                    if isinstance(err, LimitError):
                        raise self.budget.trip(err) from None
                    raise
                limit = settings.sub_call_timeout_s
                if purpose == "sub" and started_once is None and limit is not None:
                    what = f"the sub-call timeout of {limit:g}s (sub_call_timeout_s)"
                    started_once = Deadline.after(limit, "sub_call", what)
                attempts += 1
                return await self._attempt(
                    lm,
                    messages,
                    tools,
                    reservation,
                    number=attempts,
                    deadline=deadline(),
                    purpose=purpose,
                    run_id=run_id,
                    parent_id=parent_id,
                    prompt=prompt,
                    schema=schema,
                    tab=tab,
                )
            finally:
                await permit.aclose()
                self.semaphore.release()

        def note(message: str, wait_s: float | None) -> None:
            # Each failed attempt is in the trace already; a pause a user would notice, or
            # an empty reply, is also said where the progress display shows it.
            if wait_s is None or wait_s >= NOTE_WAIT_S:
                self.recorder.note(run_id=run_id, parent_id=parent_id, message=message)

        try:
            return await call_with_retries(
                attempt,
                model=lm.name,
                policy=RetryPolicy(max_retries=settings.max_retries),
                deadline=deadline,
                on_retry=note,
                max_tokens=lambda: self.budget.reply_cap(lm, wanted=wanted),
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
        *,
        number: int,
        deadline: Deadline | None,
        purpose: str,
        run_id: str,
        parent_id: str,
        prompt: str,
        schema: Mapping[str, Any] | None = None,
        tab: Tab | None = None,
    ) -> Completion:
        """One attempt, sent with its reservation held: recorded whatever becomes of it,
        and what it cost charged to `tab`."""
        span = self.recorder.call_started(
            run_id=run_id,
            parent_id=parent_id,
            purpose=purpose,
            model=lm.name,
            prompt_chars=len(prompt),
            attempt=number,
            max_tokens=reservation.max_tokens,
        )
        completion: Completion | None = None
        usd = 0.0
        error: str | None = "cancelled"
        abandoned = True  # until the provider answers, or says why it will not
        # The call timeout is for a server that stopped answering. A model in this process
        # (llama.cpp) cannot hang that way, and on a busy CPU one long reply may rightly
        # take minutes: it is bounded by the run's and the cell's deadlines only.
        limit = None if computes_in_process(lm) else self.settings.call_timeout_s
        timeout = None
        if limit is not None:
            what = f"the call timeout of {limit:g}s (call_timeout_s)"
            timeout = Deadline.after(limit, "call", what)
        try:
            # The schema only when there is one: adapters written before it lack the keyword.
            options: dict[str, Any] = {} if schema is None else {"schema": schema}
            completion = await within(
                lm.acomplete(messages, tools=tools, max_tokens=reservation.max_tokens, **options),
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
            if tab is not None:
                tab.charge(c.input_tokens + c.output_tokens, usd)
            self.recorder.call_ended(
                span,
                purpose=purpose,
                model=c.model,
                prompt=prompt,
                reply=c.text,
                input_tokens=c.input_tokens,
                output_tokens=c.output_tokens,
                cached_tokens=c.cached_tokens,
                usd=usd,
                error=error,
                attempt=number,
                estimated=c.estimated,
            )
