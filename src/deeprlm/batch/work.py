"""One question of a batch, answered where an executor runs it: in the driver's process or
in a Ray worker. A `QuestionJob` carries everything that needs (the question, the model
specs, the settings), pickles small, and returns a `Finished` record: the result line, the
trace's events and, when asked, the trajectory. The driver writes them; a worker on another
machine never needs the output folder.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deeprlm.batch import trajectory
from deeprlm.batch.executors import Cancelled
from deeprlm.batch.questions import Question
from deeprlm.cache import Cache
from deeprlm.engine.shared import Permits
from deeprlm.errors import DeepRLMError
from deeprlm.lm.base import LM
from deeprlm.lm.specs import resolve_lm
from deeprlm.repl.base import ContextValue
from deeprlm.rlm import RLM, RLMResult, priced_as
from deeprlm.settings import Settings
from deeprlm.trace.events import Event
from deeprlm.trace.fold import Fold
from deeprlm.usage import Price, PriceTable, UsageReport


@dataclass(frozen=True)
class Models:
    """The model specs of a batch and their prices; each worker makes its own models."""

    model: str
    sub_model: str | None = None
    named: tuple[tuple[str, str], ...] = ()
    base_url: str | None = None
    prices: tuple[tuple[str, Price], ...] = ()

    def specs(self) -> list[str]:
        return [self.model, *filter(None, [self.sub_model]), *(spec for _, spec in self.named)]

    def require_prices(self) -> None:
        """Raises InputError for a model a USD budget cannot be kept for: one without a
        price (the same rule as `RLM`'s)."""
        table = PriceTable(dict(self.prices))
        for spec in self.specs():
            table.require(priced_as(spec))

    def info(self) -> dict[str, Any]:
        return {"model": self.model, "sub_model": self.sub_model, "models": dict(self.named)}


@dataclass(frozen=True)
class Loaded:
    """A context read from files: its value and the binary files left out of it."""

    value: ContextValue
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # how files were read (not UTF-8, say)


@dataclass(frozen=True)
class Finished:
    record: dict[str, Any]
    events: list[dict[str, Any]]
    trajectory: dict[str, Any] | None = None


@dataclass(frozen=True)
class CacheChoice:
    """The sub-call cache the questions share: a file (None: `$DEEPRLM_HOME/cache.sqlite`),
    opened once per process that answers questions."""

    path: str | None = None
    sampled: bool = False

    def open(self) -> Cache:
        key = (self.path, self.sampled)
        if key not in _CACHES:
            _CACHES[key] = Cache(self.path, sampled=self.sampled)
        return _CACHES[key]


_CACHES: dict[tuple[str | None, bool], Cache] = {}


@dataclass(frozen=True)
class QuestionJob:
    question: Question
    models: Models
    settings: Settings
    trajectories: bool = False
    cache: CacheChoice | None = None
    # The batch's budget: a question never has more (so that its calls reserve their worst
    # case, which the batch's budget then holds too; see `deeprlm.batch.permits`).
    batch_max_tokens: int | None = None
    batch_max_usd: float | None = None
    # The question's run's name in the cache: the same for a run again of a question that
    # did not finish, so that it replays what its models had replied.
    cache_run: str | None = None

    @property
    def key(self) -> str:
        return self.question.id

    async def run(self, shared: Loaded | None, permits: Permits) -> Finished:
        """Answers the question over `shared` (its context read by the driver) or its inline
        context. Never raises but `Cancelled`: a failure is a result with status "error"."""
        question = self.question
        events: list[Event] = []
        tap = trajectory.CallTap() if self.trajectories else None
        started_at, started = time.time(), time.perf_counter()

        def on_event(event: Event) -> None:
            events.append(event)
            if tap is not None:
                tap.on_event(event)

        result: RLMResult | None = None
        error: str | None = None
        try:
            rlm = self._rlm(tap, on_event, permits)
            if shared is not None:
                context, skipped = shared.value, shared.skipped
            else:
                context, skipped = question.context.inline or "", ()
            result = await rlm.arun(
                question.query, context, skipped=skipped, cache_run=self.cache_run
            )
        except DeepRLMError as err:
            result, error = err.result, str(err)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise Cancelled(
                self._finish(None, "cancelled", events, tap, started_at, started)
            ) from None
        except Exception as err:  # one question's failure must not end the batch
            error = f"{type(err).__name__}: {err}"
        status = "error" if result is None else result.status
        finished = self._finish(result, status, events, tap, started_at, started, error)
        if shared is not None and shared.notes:
            finished.record["notes"] = [*shared.notes, *finished.record["notes"]]
        return finished

    def _rlm(self, tap: trajectory.CallTap | None, on_event: Any, permits: Permits) -> RLM:
        m = self.models

        def make(spec: str) -> LM:
            lm = resolve_lm(spec, base_url=m.base_url)
            return tap.wrap(lm) if tap is not None else lm

        schema = self.question.schema
        settings = {**self.settings.to_dict(), **self.question.limits}
        for name, ceiling in (
            ("max_tokens", self.batch_max_tokens),
            ("max_usd", self.batch_max_usd),
        ):
            if ceiling is not None:
                own = settings.get(name)
                settings[name] = ceiling if own is None else min(own, ceiling)
        return RLM(
            make(m.model),
            make(m.sub_model) if m.sub_model else None,
            models={name: make(spec) for name, spec in m.named},
            prices=dict(m.prices),
            on_event=on_event,
            permits=permits,
            output=dict(schema) if schema is not None else None,
            cache=self.cache.open() if self.cache is not None else None,
            **settings,
        )

    def _finish(
        self,
        result: RLMResult | None,
        status: str,
        events: Sequence[Event],
        tap: trajectory.CallTap | None,
        started_at: float,
        started: float,
        error: str | None = None,
    ) -> Finished:
        question = self.question
        usage = result.usage if result is not None else _usage_of(events)
        answer = result.answer if result is not None else ""
        wall = result.wall_s if result is not None else time.perf_counter() - started
        record: dict[str, Any] = {
            "id": question.id,
            "status": status,
            "answer": answer,
            "error": error if result is None else result.error,
            "usage": usage.to_dict(),
            "iterations": result.iterations if result is not None else 0,
            "sub_calls": result.sub_calls if result is not None else 0,
            "wall_s": round(wall, 3),
            "notes": list(result.notes) if result is not None else [],
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "started_at": round(started_at, 3),
            "finished_at": round(time.time(), 3),
        }
        if question.schema is not None:
            record["value"] = result.value if result is not None else None
        if question.meta is not None:
            record["meta"] = dict(question.meta)
        built = None
        if tap is not None:
            built = trajectory.build(
                id=question.id,
                source={"kind": "batch", "line": question.line},
                query=question.query,
                answer=answer,
                status=status,
                events=events,
                calls=tap.calls,
                usage=record["usage"],
                wall_s=wall,
                error=record["error"],
                gold=question.gold,
                scorer=question.scorer,
                meta=question.meta,
            )
        return Finished(record, [e.to_dict() for e in events], built)


def _usage_of(events: Sequence[Event]) -> UsageReport:
    """What the calls seen so far cost, for a run that ended without a result."""
    fold = Fold()
    for event in events:
        fold.apply(event)
    return fold.usage.report()
