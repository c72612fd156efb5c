"""The public entry point: `RLM(...).run(query, context)` and its async twin `arun`.

`RLM` holds the configuration (models, settings, tools, prices, trace sinks, the sub-call
cache, the answer's schema); each call of `run`/`arun` builds a fresh run tree, so one
`RLM` can answer many queries, one after the other or concurrently. `resume`/`aresume`
continue a run that stopped early from its trace (see `deeprlm.resume`). The sync twins
drive the same async core on a private event loop. `rlm.session(context)` keeps one REPL
and its variables across many questions (see `deeprlm.session`); each run, and each of a
session's questions, is one `RunTree`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from deeprlm import resume as resuming
from deeprlm.blocking import run_blocking
from deeprlm.cache import Cache, CacheArg, RunCache, as_cache
from deeprlm.context import ContextInfo, describe, normalize
from deeprlm.engine import Run, SharedState
from deeprlm.engine.run import AttachedREPL
from deeprlm.engine.shared import Permits
from deeprlm.errors import DeepRLMError, InputError, LimitError
from deeprlm.lm.base import LM
from deeprlm.lm.specs import DEFAULT_MODEL, check_spec, resolve_lm
from deeprlm.output import OutputSchema, as_output
from deeprlm.repl import ContextValue
from deeprlm.settings import Settings, for_models
from deeprlm.tools import ToolsArg, normalize_tools
from deeprlm.trace.events import Event, Note
from deeprlm.trace.jsonl import JsonlSink, check_trace_path
from deeprlm.trace.recorder import Recorder, Trace
from deeprlm.usage import Price, PriceTable, UsageMeter, UsageReport, as_prices

if TYPE_CHECKING:
    from deeprlm.session import Session


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
    # With `RLM(output=...)`: the parsed answer (a model instance for a pydantic type);
    # `answer` is then its JSON. None otherwise, and when the run did not answer.
    value: Any = None
    # The JSON form of `value`, for `to_dict`; set by the RLM with `value`.
    value_json: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "value": self.value_json,
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
    max_concurrency, budgets, deadlines, repl, ...). `prices` maps model names to `Price`
    (USD per million tokens), or is the path of a TOML prices file (`load_prices`); a USD
    budget is refused here for a model without a price. A `trace_path` that cannot be
    written is refused here too, before any work.

    `cache` keeps model replies so that no identical call is paid twice and a run can be
    resumed: None/False (the default) for none, True for `$DEEPRLM_HOME/cache.sqlite`, a
    path, or a `deeprlm.cache.Cache` (`Cache(path, sampled=True)` also shares the replies
    of models that sample). `output` holds the final answer to a JSON Schema (a dict) or
    a type pydantic checks (a `BaseModel`, ...): `result.value` is then the parsed object
    and `result.answer` its JSON; a schema that is not valid JSON Schema is refused here.
    `permits` bounds each model's calls beyond this run tree (see
    `deeprlm.engine.shared.Permits`), as the questions of a batch share them.
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
        prices: Mapping[str, Price] | str | os.PathLike[str] | None = None,
        trace_path: str | Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        cache: CacheArg = None,
        output: Any = None,
        permits: Permits | None = None,
        **settings: Any,
    ) -> None:
        self.settings = Settings.from_kwargs(**settings)
        if trace_path is not None:
            check_trace_path(trace_path)
        given_prices = as_prices(prices)
        self.prices = PriceTable(given_prices)
        self.output: OutputSchema | None = as_output(output)
        self.cache: Cache | None = as_cache(cache)
        # The specs, as given, for a resumed run or a reopened session to make the same
        # models: the names of those given as objects (which cannot be made again), the
        # server and the prices the caller gave; never a key.
        self.specs: dict[str, Any] = {
            "model": model if isinstance(model, str) else None,
            "sub_model": sub_model if isinstance(sub_model, str) else None,
            "models": {k: v for k, v in (models or {}).items() if isinstance(v, str)},
            "base_url": base_url,
            "objects": [
                name
                for name, spec in (
                    ("model", model),
                    ("sub_model", sub_model),
                    *(models or {}).items(),
                )
                if spec is not None and not isinstance(spec, str)
            ],
            "prices": {name: asdict(price) for name, price in given_prices.items()},
        }
        self._resolve = lambda spec: resolve_lm(spec, base_url=base_url, api_key=api_key)
        self.model = self._resolve(model)
        self.sub_model = self._resolve(sub_model) if sub_model is not None else self.model
        if self.sub_model is self.model:
            # An in-process model keeps one cache per role, so sub-calls leave the root's
            # growing conversation cached (see `LM.for_role`).
            self.sub_model = self.model.for_role("sub")
        self.models = check_models(models or {})
        self.settings = for_models(
            self.settings, settings, (self.model, self.sub_model, *self.models.values())
        )
        self.tools = normalize_tools(tools, "tools")
        self.sub_tools = normalize_tools(sub_tools, "sub_tools")
        if self.settings.max_usd is not None or self.settings.session_max_usd is not None:
            # Else the budget would count $0 for it and never stop.
            for lm in (self.model, self.sub_model, *self.models.values()):
                self.prices.require(priced_as(lm))
        self.trace_path = Path(trace_path) if trace_path is not None else None
        self.on_event = on_event
        self.permits = permits

    def run(
        self,
        query: str,
        context: Any,
        *,
        skipped: Sequence[str] = (),
        sources: Sequence[str] = (),
        cache_run: str | None = None,
    ) -> RLMResult:
        """Answers `query` over `context` (str, list of str, or dict of str -> str).
        `skipped` names files left out of the context (binary), for its description;
        `sources` the paths it was loaded from, kept with a cached run for `resume`.
        `cache_run` names the run in the cache (default: a new name): a run given the name
        of an earlier one replays, in order, the replies that one's sampling models gave
        (as `deeprlm batch` names each question's run, so that one run again after an
        interrupt pays only for what it had not done)."""
        return run_blocking(
            self.arun(query, context, skipped=skipped, sources=sources, cache_run=cache_run)
        )

    async def arun(
        self,
        query: str,
        context: Any,
        *,
        skipped: Sequence[str] = (),
        sources: Sequence[str] = (),
        cache_run: str | None = None,
    ) -> RLMResult:
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query is empty")
        return await self._arun(query, normalize(context), skipped, sources, None, cache_run)

    def resume(
        self, trace: str | os.PathLike[str], context: Any, *, skipped: Sequence[str] = ()
    ) -> RLMResult:
        """Continues the run recorded in `trace` (made with a cache) over the same
        `context`: its calls replay from the cache, its cells run again, and it goes on
        from where it stopped, with the limit that stopped it raised (doubled, unless this
        RLM's setting is higher). Its own trace goes to this RLM's `trace_path`."""
        return run_blocking(self.aresume(trace, context, skipped=skipped))

    async def aresume(
        self, trace: str | os.PathLike[str], context: Any, *, skipped: Sequence[str] = ()
    ) -> RLMResult:
        recorded = resuming.read(os.fspath(trace), self.cache)
        context = normalize(context)
        if describe(context, skipped).sha256 != recorded.context_sha256:
            raise InputError(
                f"the context is not the one the run in {recorded.trace} read (its sha256 "
                "differs); give the same context to resume it"
            )
        return await self._arun(recorded.query, context, skipped, (), recorded)

    async def _arun(
        self,
        query: str,
        context: Any,
        skipped: Sequence[str],
        sources: Sequence[str],
        resumed: resuming.Recorded | None,
        cache_run: str | None = None,
    ) -> RLMResult:
        info = describe(context, skipped)
        sinks: list[Callable[[Event], None]] = []
        jsonl = JsonlSink(self.trace_path) if self.trace_path is not None else None
        if jsonl is not None:
            sinks.append(jsonl)
        if self.on_event is not None:
            sinks.append(self.on_event)
        try:
            tree = RunTree(
                self,
                query,
                context,
                info,
                sinks=sinks,
                sources=sources,
                resumed=resumed,
                output=self.output,
                cache_run=cache_run,
            )
            return await tree.execute()
        finally:
            if jsonl is not None:
                jsonl.close()

    def session(
        self,
        context: Any,
        *,
        skipped: Sequence[str] = (),
        session_id: str | None = None,
        cache: CacheArg = "on",
    ) -> Session:
        """A session over `context`: one REPL kept across questions, with its variables
        (see `deeprlm.session.Session`). `context` is a value as for `run`, or a path (a
        `pathlib.Path`, or a list of them) to load, which a saved session reloads from
        there. `cache`: the sub-call cache its questions use; "on" (the default) is this
        RLM's cache, or the default file when it has none; "off", or a path."""
        from deeprlm.session import Session

        return Session(self, context, skipped=skipped, session_id=session_id, cache=cache)


class RunTree:
    """One query's run tree, from its root run to its `RLMResult`: the shared state, the
    cache, the trace, and how an ending (an answer, a limit, a failure) becomes a result.
    `arun` and `aresume` make one per call; a session makes one per question, over its own
    REPL (`attached`), with a recap of its earlier questions and trace ids of their own."""

    def __init__(
        self,
        rlm: RLM,
        query: str,
        context: ContextValue,
        info: ContextInfo,
        *,
        sinks: list[Callable[[Event], None]],
        sources: Sequence[str] = (),
        resumed: resuming.Recorded | None = None,
        settings: Settings | None = None,
        cache: Cache | bool | None = True,
        attached: AttachedREPL | None = None,
        recap: str = "",
        trace: Trace | None = None,
        output: OutputSchema | None = None,
        session_id: str | None = None,
        cache_run: str | None = None,
    ) -> None:
        """`cache`: True for the RLM's own; a `Cache`, or None for none. `output`: the
        schema the answer must follow, if any. `session_id`: the session whose question
        this is, kept in the trace so that resuming names the session instead.
        `cache_run`: the run's name in the cache (see `RLM.run`)."""
        self.rlm = rlm
        self.output = output
        settings = settings or rlm.settings
        used = rlm.cache if cache is True else cache or None
        if resumed is not None:
            settings = resuming.raised(settings, resumed)
            if used is None or str(used.path) != resumed.cache_path:
                used = Cache(resumed.cache_path, sampled=resumed.sampled)
        self.settings = settings
        self.trace = trace or Trace(sinks)
        self.run_cache: RunCache | None = None
        if used is not None:
            used.open()
            self.run_cache = RunCache(used, token=resumed.token if resumed else cache_run)
        self.shared = shared = SharedState(
            settings,
            rlm.model,
            rlm.sub_model,
            recorder=Recorder(self.trace),
            usage=UsageMeter(rlm.prices),
            resolve_lm=rlm._resolve,
            models=rlm.models,
            tools=rlm.tools,
            sub_tools=rlm.sub_tools,
            cache=self.run_cache,
            permits=rlm.permits,
        )
        if resumed is not None:
            shared.prompt_iterations = resumed.prompt_iterations
        cache_facts: dict[str, Any] = {}
        if self.run_cache is not None:
            cache_facts = {
                "path": str(self.run_cache.cache.path),
                "run": self.run_cache.token,
                "sampled": self.run_cache.cache.sampled,
                "prompt_iterations": shared.prompt_iterations,
            }
            if session_id is not None:
                cache_facts["session"] = session_id
            record = dict(resumed.record) if resumed is not None else {}
            record.setdefault("query", query)
            record.setdefault("specs", rlm.specs)
            record.setdefault("sources", list(sources))
            record.setdefault("output", output.schema if output else None)
            self.run_cache.cache.put_run(self.run_cache.token, record)
        self.root = Run(
            shared,
            query,
            context,
            info=info,
            output=output,
            cache_facts=cache_facts,
            attached=attached,
            recap=recap,
        )
        if resumed is not None:
            shared.recorder.note(
                run_id=self.root.id,
                parent_id=self.root.id,
                message=resuming.note(resumed, settings),
            )
        self.started = time.perf_counter()

    def _cache_notes(self) -> None:
        # What the cache file had to say (moved aside, full) goes into the trace.
        if self.run_cache is not None:
            for message in self.run_cache.cache.take_notes():
                self.shared.recorder.note(
                    run_id=self.root.id, parent_id=self.root.id, message=message
                )

    def result(
        self,
        answer: str,
        status: str,
        forced: bool = False,
        error: str | None = None,
        value: Any = None,
    ) -> RLMResult:
        self._cache_notes()
        output = self.output
        trace_path = self.rlm.trace_path
        return RLMResult(
            answer=answer,
            usage=self.shared.usage.report(),
            iterations=self.root.iterations,
            sub_calls=self.shared.budget.sub_calls,
            wall_s=time.perf_counter() - self.started,
            forced=forced,
            status=status,
            trace=self.trace,
            trace_path=str(trace_path) if trace_path else None,
            notes=tuple(dict.fromkeys(note.message for note in self.trace.of_type(Note))),
            error=error,
            value=value,
            value_json=(
                output.to_json_value(value) if output is not None and value is not None else None
            ),
        )

    async def execute(self) -> RLMResult:
        """Runs the tree. An error that ends it carries the partial answer, the usage and
        the result (see `DeepRLMError`)."""
        shared = self.shared
        # Each call and cell is bounded by the time left, so the limit normally surfaces
        # there, with the partial answer; this outer bound is the backstop for the rest.
        backstop = None if self.settings.timeout_s is None else self.settings.timeout_s + 5.0
        try:
            async with asyncio.timeout(backstop) as deadline, shared.repl_slots.hold(0):
                outcome = await self.root.execute()
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
            return self.result(outcome.answer, status, outcome.forced, value=outcome.value)
        finally:
            self._cache_notes()
        failure.partial_answer = self.root.partial()
        failure.usage = shared.usage.report()
        status = "limit" if isinstance(failure, LimitError) else "error"
        failure.result = self.result(failure.partial_answer, status, error=str(failure))
        raise failure


# Names the code always has for llm_query's `model`: the root model and the sub model.
BUILTIN_MODEL_NAMES = ("root", "sub")


def priced_as(spec: str | LM) -> Any:
    """What a model is priced as, without making it: a provider spec's model name; a model
    that runs in process is free."""
    if not isinstance(spec, str):
        return spec
    for prefix in ("openai/", "anthropic/"):
        if spec.startswith(prefix):
            return SimpleNamespace(name=spec.removeprefix(prefix))
    return SimpleNamespace(name=spec, price=Price(0.0, 0.0))


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
