"""The core both front ends share: the configured setups, the loaded contexts (each with
its sessions), the runs, and the queue in front of them.

A question goes through `start` (everything that can be refused is refused here, before a
response begins: an unknown model or context, settings a request may not raise, a full
queue) and then `execute`, which waits for its turn on the context and for a run slot,
runs it, and records how it ended. Cancelling `execute` cancels the run, which closes its
REPL (and so its sandbox worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import typing
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from deeprlm.context import ContextInfo, describe, normalize
from deeprlm.errors import InputError
from deeprlm.lm.specs import resolve_lm
from deeprlm.repl.base import ContextValue
from deeprlm.rlm import RLM, RLMResult
from deeprlm.serve.admission import Admission, Ticket
from deeprlm.serve.config import ServeConfig, Setup
from deeprlm.serve.errors import ApiError, bad_request, busy, not_found
from deeprlm.serve.runs import RunRecord
from deeprlm.serve.sessions import Session, open_session, run_once
from deeprlm.settings import Settings, bounds


@dataclass
class LoadedContext:
    id: str
    owner: str
    name: str
    value: ContextValue
    info: ContextInfo
    skipped: tuple[str, ...]
    created: float = field(default_factory=time.time)
    sessions: dict[str, Session] = field(default_factory=dict)  # per setup name
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    questions: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "deeprlm.context",
            "name": self.name,
            "created": int(self.created),
            "kind": self.info.kind,
            "chars": self.info.chars,
            "files": 1 if isinstance(self.value, str) else self.info.items,
            "skipped": list(self.skipped),
            "sha256": self.info.sha256,
            "questions": self.questions,
            "busy": self.lock.locked(),
        }


@dataclass(frozen=True)
class Question:
    """A question accepted by `start`, ready for `execute`."""

    record: RunRecord
    ticket: Ticket
    rlm: RLM
    setup: str
    context: ContextValue | None
    skipped: tuple[str, ...]
    loaded: LoadedContext | None
    overrides: dict[str, Any]


class Service:
    def __init__(self, config: ServeConfig, *, force_sandbox: bool) -> None:
        self.config = config
        self.setups = config.setups
        for setup in self.setups.values():
            if force_sandbox and setup.settings.repl != "sandbox":
                raise InputError(
                    f"model {setup.name}: served runs always run their code in the sandbox "
                    f"(Linux); this setup asks for repl={setup.settings.repl!r}"
                )
        self.rlms = {name: build_rlm(setup) for name, setup in self.setups.items()}
        limits = config.server
        self.admission = Admission(limits.max_runs, limits.max_queued)
        self.contexts: dict[str, LoadedContext] = {}
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()
        self._own_trace_dir = limits.trace_dir is None
        self.trace_dir = Path(limits.trace_dir or tempfile.mkdtemp(prefix="deeprlm-serve-"))
        self.trace_dir.mkdir(parents=True, exist_ok=True)

    # -- models

    def setup(self, name: Any) -> Setup:
        if not isinstance(name, str) or not name:
            raise bad_request("'model' is required: one of " + ", ".join(self.setups))
        if name not in self.setups:
            raise ApiError(
                404,
                f"the model {name!r} does not exist; this server has: {', '.join(self.setups)}",
                code="model_not_found",
            )
        return self.setups[name]

    # -- contexts

    def add_context(
        self, owner: str, value: Any, *, skipped: Sequence[str] = (), name: str = ""
    ) -> LoadedContext:
        try:
            value = normalize(value)
        except InputError as err:
            raise ApiError(422, str(err), code="bad_context") from None
        if len(self.contexts) >= self.config.server.max_contexts:
            raise busy(
                f"the server holds {len(self.contexts)} contexts, its most; delete one you no "
                "longer need (DELETE /v1/contexts/ID) and try again",
                60,
                code="too_many_contexts",
            )
        entry = LoadedContext(
            id=f"ctx-{uuid.uuid4().hex[:24]}",
            owner=owner,
            name=name,
            value=value,
            info=describe(value, skipped),
            skipped=tuple(skipped),
        )
        self.contexts[entry.id] = entry
        return entry

    def context(self, owner: str, context_id: Any) -> LoadedContext:
        entry = self.contexts.get(context_id) if isinstance(context_id, str) else None
        # Another key's context is as unknown as one that never was.
        if entry is None or entry.owner != owner:
            raise not_found(f"no context with id {context_id!r}", code="context_not_found")
        return entry

    def list_contexts(self, owner: str) -> list[LoadedContext]:
        return [c for c in self.contexts.values() if c.owner == owner]

    async def drop_context(self, owner: str, context_id: str) -> LoadedContext:
        entry = self.context(owner, context_id)
        del self.contexts[entry.id]
        async with entry.lock:  # a question in progress finishes first
            for session in entry.sessions.values():
                await session.aclose()
        return entry

    # -- runs

    def run(self, owner: str, run_id: str) -> RunRecord:
        record = self.runs.get(run_id)
        if record is None or record.owner != owner:
            raise not_found(f"no run with id {run_id!r}", code="run_not_found")
        return record

    def start(
        self,
        owner: str,
        model: Any,
        query: str,
        *,
        context: Any = None,
        context_id: Any = None,
        skipped: Sequence[str] = (),
        overrides: Mapping[str, Any] | None = None,
    ) -> Question:
        """Checks a question and admits it to the queue; raises an ApiError otherwise."""
        setup = self.setup(model)
        if not isinstance(query, str) or not query.strip():
            raise bad_request("the question is empty: send it as the last user message")
        loaded = None
        if context_id is not None:
            if context is not None:
                raise bad_request("give either 'context' or 'context_id', not both")
            loaded = self.context(owner, context_id)
        elif context is None:
            raise bad_request(
                "no context: send it in the messages before the question, in the 'context' "
                "field, or upload it (POST /v1/contexts) and name it in 'context_id'",
                code="missing_context",
            )
        else:
            try:
                context = normalize(context)
            except InputError as err:
                raise bad_request(str(err), code="bad_context") from None
        effective = capped_overrides(setup.settings, overrides or {})
        check_prices(self.rlms[setup.name], effective)
        ticket = self.admission.admit()
        run_id = f"run-{uuid.uuid4().hex[:24]}"
        record = RunRecord(
            run_id,
            owner=owner,
            model=setup.name,
            query=query,
            context_id=loaded.id if loaded else None,
            trace_path=self.trace_dir / f"{run_id}.jsonl",
        )
        self._remember(record)
        return Question(
            record=record,
            ticket=ticket,
            rlm=self.rlms[setup.name],
            setup=setup.name,
            context=context,
            skipped=tuple(skipped),
            loaded=loaded,
            overrides=effective,
        )

    async def execute(self, question: Question) -> RLMResult:
        """Runs an admitted question. Raises what the run raised (a DeepRLMError carrying
        its result), or CancelledError when cancelled; the record says how it ended."""
        record, loaded = question.record, question.loaded
        try:
            async with loaded.lock if loaded else contextlib.nullcontext(), question.ticket:
                record.begin()
                if loaded is not None:
                    loaded.questions += 1
                    session = loaded.sessions.get(question.setup)
                    if session is None:
                        session = open_session(question.rlm, loaded.value, skipped=loaded.skipped)
                        loaded.sessions[question.setup] = session
                    result = await session.aask(
                        record.query, on_event=record.on_event, **question.overrides
                    )
                else:
                    assert question.context is not None
                    result = await run_once(
                        question.rlm,
                        record.query,
                        question.context,
                        skipped=question.skipped,
                        on_event=record.on_event,
                        **question.overrides,
                    )
        except asyncio.CancelledError:
            record.cancel()
            raise
        except Exception as err:
            record.fail(err)
            raise
        else:
            record.finish(result)
            return result
        finally:
            question.ticket.release()  # when cancelled while still in line

    def _remember(self, record: RunRecord) -> None:
        self.runs[record.id] = record
        finished = [r for r in self.runs.values() if r.finished]
        for old in finished[: max(0, len(finished) - self.config.server.keep_runs)]:
            del self.runs[old.id]
            old.trace_path.unlink(missing_ok=True)

    async def aclose(self) -> None:
        for entry in list(self.contexts.values()):
            for session in entry.sessions.values():
                with contextlib.suppress(Exception):
                    await session.aclose()
        self.contexts.clear()
        if self._own_trace_dir:
            shutil.rmtree(self.trace_dir, ignore_errors=True)


def build_rlm(setup: Setup) -> RLM:
    """The setup's models, made once (a client, or loaded weights), and an `RLM` over them."""
    api_key = os.environ.get(setup.api_key_env) if setup.api_key_env else None

    def make(spec: str) -> Any:
        return resolve_lm(spec, base_url=setup.base_url, api_key=api_key)

    root = make(setup.model)
    sub = make(setup.sub_model) if setup.sub_model and setup.sub_model != setup.model else None
    settings = {f.name: getattr(setup.settings, f.name) for f in fields(Settings)}
    return RLM(
        root,
        sub,
        models={name: make(spec) for name, spec in setup.sub_models.items()},
        base_url=setup.base_url,
        api_key=api_key,
        prices=setup.prices,
        **settings,
    )


def check_prices(rlm: RLM, overrides: Mapping[str, Any]) -> None:
    """A USD budget a request sets needs every model's price, as the `RLM` itself checks
    for its own (else the budget would count $0 and never stop)."""
    if overrides.get("max_usd") is None or rlm.settings.max_usd is not None:
        return
    for lm in (rlm.model, rlm.sub_model, *rlm.models.values()):
        try:
            rlm.prices.require(lm)
        except InputError as err:
            raise bad_request(str(err), code="bad_setting") from None


# A request may turn sub-calls off, never on; and lower any bound, never raise it.
SWITCHES = ("allow_sub_calls",)


def capped_overrides(server: Settings, requested: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a request asked for, within what the server allows: each bound is at
    most the server's own (a request asking for more gets the server's), and nothing else
    (where code runs, what it may read) can be set by a request at all."""
    allowed = (*bounds(), *SWITCHES)
    hints = typing.get_type_hints(Settings)
    effective: dict[str, Any] = {}
    for name, value in requested.items():
        if name not in allowed:
            known = name in hints
            raise bad_request(
                f"deeprlm.{name} is set by the server, not by a request"
                if known
                else f"unknown setting deeprlm.{name}; a request may set: {', '.join(allowed)}",
                code="bad_setting",
            )
        if value is None:
            continue
        if name in SWITCHES:
            if not isinstance(value, bool):
                raise bad_request(f"deeprlm.{name} must be true or false", code="bad_setting")
            effective[name] = value and getattr(server, name)
            continue
        wants_int = int in typing.get_args(hints[name]) or hints[name] is int
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad_request(f"deeprlm.{name} must be a number", code="bad_setting")
        if wants_int and not float(value).is_integer():
            raise bad_request(f"deeprlm.{name} must be a whole number", code="bad_setting")
        value = int(value) if wants_int else float(value)
        ceiling = getattr(server, name)
        effective[name] = value if ceiling is None else min(value, ceiling)
    try:
        replace(server, **effective)
    except InputError as err:
        raise bad_request(str(err), code="bad_setting") from None
    return effective
