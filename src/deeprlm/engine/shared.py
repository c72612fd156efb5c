"""The state every run of one query shares, and the one metered model call.

`SharedState` holds what the root run, its child runs and their sub-calls have in common:
the settings, the models, the budget, the usage meter, the trace recorder, and the
semaphore that bounds model calls in flight. `call_lm` is the only way anything in a run
tree (or a benchmark baseline) calls a model: budget check, concurrency bound, usage and
trace, in that one function.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deeprlm.budget import Budget
from deeprlm.errors import DeepRLMError, LMError
from deeprlm.lm.base import LM, Completion, Message, ToolSpec
from deeprlm.settings import Settings
from deeprlm.slots import ReplSlots
from deeprlm.textutil import clip
from deeprlm.tools import tool_spec
from deeprlm.trace.recorder import Recorder, Span
from deeprlm.usage import UsageMeter


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
    ) -> None:
        self.settings = settings
        self.root_lm = root_lm
        self.sub_lm = sub_lm
        self.tools = dict(tools or {})
        self.sub_tools = [tool_spec(name, fn) for name, fn in (sub_tools or {}).items()]
        self.recorder = recorder
        self.usage = usage
        self.budget = Budget(settings, usage)
        self.semaphore = asyncio.Semaphore(settings.max_concurrency)
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
        schema: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """One model call: budget check, concurrency bound, usage, trace. `schema` is a JSON
        Schema the reply must follow; `max_tokens` narrows the run's reply limit for this
        call, never widens it."""
        self.budget.check()
        span: Span | None = None  # set once the call holds a slot and really starts
        completion: Completion | None = None
        usd = 0.0
        error: str | None = "cancelled"
        try:
            async with asyncio.timeout(self.budget.remaining_s()) as deadline, self.semaphore:
                span = self.recorder.call_started(
                    run_id=run_id,
                    parent_id=parent_id,
                    purpose=purpose,
                    model=lm.name,
                    prompt_chars=len(prompt),
                )
                limits = [t for t in (self.settings.max_reply_tokens, max_tokens) if t is not None]
                # `schema` only when asked for: a model written before it still serves every
                # other call.
                extra = {"schema": schema} if schema is not None else {}
                completion = await lm.acomplete(
                    messages, tools=tools, max_tokens=min(limits) if limits else None, **extra
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
            if span is not None:
                c = completion or Completion(text="", model=lm.name)
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
                )
