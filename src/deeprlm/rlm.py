"""The public entry point: `RLM(...).run(query, context)` and its async twin `arun`.

`RLM` holds the configuration (models, settings, tools, prices, trace sinks); each call of
`run`/`arun` builds a fresh run tree, so one `RLM` can answer many queries, one after the
other or concurrently. The sync `run` drives the same async core on a private event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeprlm.blocking import run_blocking
from deeprlm.context import describe, normalize
from deeprlm.engine import Run, SharedState
from deeprlm.errors import DeepRLMError, InputError, LimitError
from deeprlm.lm.base import LM
from deeprlm.lm.specs import DEFAULT_MODEL, check_spec, resolve_lm
from deeprlm.settings import Settings
from deeprlm.tools import ToolsArg, normalize_tools
from deeprlm.trace.events import Event, Note
from deeprlm.trace.jsonl import JsonlSink
from deeprlm.trace.recorder import Recorder, Trace
from deeprlm.usage import Price, PriceTable, UsageMeter, UsageReport


@dataclass(frozen=True)
class RLMResult:
    answer: str
    usage: UsageReport
    iterations: int  # turns of the root model
    sub_calls: int  # llm_query / rlm_query calls across the whole tree
    wall_s: float
    forced: bool  # the iteration limit forced the answer
    status: str  # answered | forced | limit | error
    trace: Trace = field(repr=False)
    trace_path: str | None = None
    # What a user should know about how the answer was reached: a sandbox that fell back,
    # a depth limit that turned rlm_query into a plain call.
    notes: tuple[str, ...] = ()
    error: str | None = None  # why the run stopped early (status limit or error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "status": self.status,
            "forced": self.forced,
            "usage": self.usage.to_dict(),
            "iterations": self.iterations,
            "sub_calls": self.sub_calls,
            "wall_s": round(self.wall_s, 3),
            "trace": self.trace_path,
            "notes": list(self.notes),
            "error": self.error,
        }


class RLM:
    """A Recursive Language Model over any chat model.

    `model` and `sub_model` are model specs (`local`, `gguf:PATH`, `hf:REPO/FILE`,
    `openai/NAME`, `anthropic/NAME`) or LM objects; the sub model defaults to the root's.
    `models` names more models the code may pick for a sub-call (`llm_query(p, model="fast")`
    with `models={"fast": "openai/gpt-5-mini"}`); besides those, only "root" and "sub". The
    code never makes the host build a model from a spec of its own.
    Keyword settings are those of `deeprlm.settings.Settings` (max_iterations, max_depth,
    max_concurrency, budgets, repl, ...).
    """

    def __init__(
        self,
        model: str | LM = DEFAULT_MODEL,
        sub_model: str | LM | None = None,
        *,
        models: Mapping[str, str | LM] | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        tools: ToolsArg = None,
        sub_tools: ToolsArg = None,
        prices: Mapping[str, Price] | None = None,
        trace_path: str | Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        **settings: Any,
    ) -> None:
        self.settings = Settings.from_kwargs(**settings)
        self._resolve = lambda spec: resolve_lm(spec, base_url=base_url, api_key=api_key)
        self.model = self._resolve(model)
        self.sub_model = self._resolve(sub_model) if sub_model is not None else self.model
        if self.sub_model is self.model:
            # An in-process model keeps one cache per role, so sub-calls leave the root's
            # growing conversation cached (see `LM.for_role`).
            self.sub_model = self.model.for_role("sub")
        self.models = check_models(models or {})
        self.tools = normalize_tools(tools, "tools")
        self.sub_tools = normalize_tools(sub_tools, "sub_tools")
        self.prices = PriceTable(prices)
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self.on_event = on_event

    def run(self, query: str, context: Any, *, skipped: Sequence[str] = ()) -> RLMResult:
        """Answers `query` over `context` (str, list of str, or dict of str -> str).
        `skipped` names files left out of the context (binary), for its description."""
        return run_blocking(self.arun(query, context, skipped=skipped))

    async def arun(self, query: str, context: Any, *, skipped: Sequence[str] = ()) -> RLMResult:
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query is empty")
        context = normalize(context)
        info = describe(context, skipped)
        sinks: list[Callable[[Event], None]] = []
        jsonl = JsonlSink(self.trace_path) if self.trace_path is not None else None
        if jsonl is not None:
            sinks.append(jsonl)
        if self.on_event is not None:
            sinks.append(self.on_event)
        trace = Trace(sinks)
        shared = SharedState(
            self.settings,
            self.model,
            self.sub_model,
            recorder=Recorder(trace),
            usage=UsageMeter(self.prices),
            resolve_lm=self._resolve,
            models=self.models,
            tools=self.tools,
            sub_tools=self.sub_tools,
        )
        root = Run(shared, query, context, info=info)
        started = time.perf_counter()

        def result(
            answer: str, status: str, forced: bool = False, error: str | None = None
        ) -> RLMResult:
            return RLMResult(
                answer=answer,
                usage=shared.usage.report(),
                iterations=root.iterations,
                sub_calls=shared.budget.sub_calls,
                wall_s=time.perf_counter() - started,
                forced=forced,
                status=status,
                trace=trace,
                trace_path=str(self.trace_path) if self.trace_path else None,
                notes=tuple(dict.fromkeys(note.message for note in trace.of_type(Note))),
                error=error,
            )

        # Each call and cell is bounded by the time left, so the limit normally surfaces
        # there, with the partial answer; this outer bound is the backstop for the rest.
        backstop = None if self.settings.timeout_s is None else self.settings.timeout_s + 5.0
        try:
            async with asyncio.timeout(backstop) as deadline, shared.repl_slots.hold(0):
                outcome = await root.execute()
        except TimeoutError:
            if not deadline.expired():
                raise
            failure: DeepRLMError = shared.budget.trip(shared.budget.time_error())
        except DeepRLMError as err:
            # A limit, a provider that failed, a sandbox that could not start: the run ends
            # either way, and what it produced travels with the error.
            failure = err
        else:
            status = "forced" if outcome.forced else "answered"
            return result(outcome.answer, status, outcome.forced)
        finally:
            if jsonl is not None:
                jsonl.close()
        failure.partial_answer = root.partial()
        failure.usage = shared.usage.report()
        status = "limit" if isinstance(failure, LimitError) else "error"
        failure.result = result(failure.partial_answer, status, error=str(failure))
        raise failure


# Names the code always has for llm_query's `model`: the root model and the sub model.
BUILTIN_MODEL_NAMES = ("root", "sub")


def check_models(models: Mapping[str, str | LM]) -> dict[str, str | LM]:
    """The user's named models, checked without loading any (a spec is made into a model
    the first time the code asks for it)."""
    checked: dict[str, str | LM] = {}
    for name, spec in models.items():
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise InputError(f"models: a model name must be a non-empty word, got {name!r}")
        if name in BUILTIN_MODEL_NAMES:
            raise InputError(f"models: {name!r} is taken (it names the {name} model)")
        if isinstance(spec, str):
            check_spec(spec)
        else:
            resolve_lm(spec)  # an LM object is checked against the protocol, not made
        checked[name] = spec
    return checked
