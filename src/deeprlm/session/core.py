"""`Session`: one context and one REPL kept across many questions.

    session = rlm.session(context)          # or Session.open(session_id) to go on later
    result = await session.aask(query)      # session.ask(query) from blocking code
    session.variables(), session.history, session.save(), session.close()

Each question is a root run (`deeprlm.rlm.RunTree`) over the session's REPL: the variables
earlier questions made are still there, and the root is told, in a short recap, what those
questions found and which variables exist, not their whole conversations. Questions run
one at a time; sessions are independent of each other. A question that ends early (a limit,
a failing provider, a cancel) ends with its result, as a run does, and the session goes on.

Budgets: a question's own come from its overrides (`max_usd=...`) over the session's
settings; the session's totals (`session_max_tokens`, `session_max_usd`) bound all its
questions together, each question getting at most what is left.

The session lives on an event loop of its own (`LoopThread`), so it can be used from any
thread or loop, and from blocking code, one call after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeprlm import prompts
from deeprlm.cache import Cache, CacheArg
from deeprlm.context import ContextInfo, describe, load_paths, normalize
from deeprlm.engine.host import HostRelay
from deeprlm.engine.run import AttachedREPL, repl_settings
from deeprlm.errors import (
    CostLimitError,
    DeepRLMError,
    InputError,
    LimitError,
    TokenLimitError,
)
from deeprlm.lm.specs import DEFAULT_MODEL
from deeprlm.output import OutputSchema, as_output
from deeprlm.repl import ContextValue, make_repl
from deeprlm.session.store import (
    CONTEXT_FILE,
    SESSION_FILE,
    ContextIdentity,
    QuestionRecord,
    SavedSession,
    SavedVariables,
    SessionLock,
    check_id,
    folder_of,
    load_context,
    new_id,
    new_vars_folder,
    read_session,
    remove_other_vars,
    store_context,
    write_json,
)
from deeprlm.session.thread import LoopThread
from deeprlm.settings import Settings, table
from deeprlm.trace.events import Event
from deeprlm.trace.jsonl import JsonlSink
from deeprlm.trace.recorder import Trace
from deeprlm.usage import Price, UsageReport, UsageTally

if TYPE_CHECKING:
    from deeprlm.rlm import RLM, RLMResult

PRICE_FIELDS = {f.name for f in dataclasses.fields(Price)}
# Settings a question cannot change: the session's REPL was made with them, or they are
# the session's own totals.
FIXED = tuple(row.name for row in table() if not row.metadata.get("per_question", True))


class Session:
    """A context, a REPL and its variables, kept across questions. Made by
    `RLM.session(context)`, or `Session.open(session_id)` for a saved one."""

    def __init__(
        self,
        rlm: RLM,
        context: Any,
        *,
        skipped: Sequence[str] = (),
        session_id: str | None = None,
        cache: CacheArg = "on",
        _saved: SavedSession | None = None,
    ) -> None:
        self.rlm = rlm
        self.settings: Settings = rlm.settings
        # The sub-call cache of its questions: "on" (the RLM's own, else the default file),
        # "off", or a path; kept as said, so that a reopened session uses the same.
        self.cache, self._cache = _check_cache(cache)
        if session_id is None:
            self.id = new_id()
        else:
            self.id = check_id(session_id)
            if _saved is None and (folder_of(self.id) / SESSION_FILE).exists():
                raise InputError(
                    f"a saved session {self.id!r} exists already; open it with "
                    "Session.open(session_id), or choose another id"
                )
        # What a user should know: files decoded from another encoding, the sandbox's
        # fallbacks.
        self.notes: list[str] = []
        paths = _as_paths(context)
        if paths is not None:
            if "-" in paths:
                raise InputError("a session's context cannot be stdin: give it as files")
            context, skipped = load_paths(paths, notes=self.notes)
        self.context: ContextValue = normalize(context)
        self.info: ContextInfo = describe(self.context, skipped)
        if _saved is not None:
            identity = dataclasses.replace(
                _saved.context, sha256=self.info.sha256, chars=self.info.chars
            )
        else:
            identity = ContextIdentity(
                sha256=self.info.sha256,
                chars=self.info.chars,
                kind=self.info.kind,
                paths=tuple(paths or ()),
                cwd=os.getcwd() if paths else "",
                skipped=tuple(skipped),
            )
        self._identity = identity
        self._history: list[QuestionRecord] = list(_saved.history) if _saved else []
        self._saved_vars = _saved.variables if _saved else SavedVariables()
        self._created = _saved.created if _saved else round(time.time(), 3)
        self._variables: dict[str, str] = {
            name: kind
            for name, kind in self._saved_vars.types.items()
            if name in self._saved_vars.kept
        }
        # Variables a save could not keep, and those a reopen could not load again, with
        # why; the root is told of those that are gone.
        self.lost: dict[str, str] = dict(self._saved_vars.lost)
        self._to_load = bool(_saved and self._saved_vars.folder)
        self._lock_file = SessionLock(folder_of(self.id))
        if _saved is not None:
            self._lock_file.acquire()
        self._repl: AttachedREPL | None = None
        self._lock: asyncio.Lock | None = None
        self._thread: LoopThread | None = None
        self._closed = False
        self._t0 = time.perf_counter()

    # --- what a session knows ------------------------------------------------------------

    @property
    def history(self) -> tuple[QuestionRecord, ...]:
        """The questions asked, oldest first (those of earlier processes included)."""
        return tuple(self._history)

    @property
    def usage(self) -> UsageReport:
        """Usage of all the session's questions together."""
        tally = UsageTally()
        for record in self._history:
            for model, usage in record.usage.by_model.items():
                tally.add(model, usage)
        return tally.report()

    @property
    def folder(self) -> Path:
        """Where `save()` writes the session."""
        return folder_of(self.id)

    def variables(self) -> dict[str, str]:
        """The REPL's user variables, name -> type, as of the end of the last question (or
        as saved, for a reopened session that has not been asked anything yet)."""
        return dict(self._variables)

    # --- asking --------------------------------------------------------------------------

    async def aask(
        self,
        query: str,
        on_event: Callable[[Event], None] | None = None,
        *,
        output: Any = None,
        **overrides: Any,
    ) -> RLMResult:
        """Answers `query` over the session's context and REPL. `overrides` are settings for
        this question only (max_iterations, max_usd, timeout_s, ...); `output` a schema its
        answer must follow (as `RLM(output=...)`; by default the RLM's). `on_event` gets
        this question's trace events, on the caller's loop. Raises as `RLM.arun` does; the
        session stays usable."""
        schema = self._output(output)
        caller = asyncio.get_running_loop()
        relay = None
        if on_event is not None:
            callback = on_event

            def relay(event: Event) -> None:
                caller.call_soon_threadsafe(callback, event)

        return await self._loop_thread().run_async(self._ask(query, relay, overrides, schema))

    def ask(
        self,
        query: str,
        on_event: Callable[[Event], None] | None = None,
        *,
        output: Any = None,
        **overrides: Any,
    ) -> RLMResult:
        """The blocking twin of `aask` (`on_event` is called from the session's thread). A
        KeyboardInterrupt while it runs cancels the question, waits for it to stop, and is
        raised again: the session goes on."""
        schema = self._output(output)
        thread = self._loop_thread()
        try:
            return thread.run_sync(self._ask(query, on_event, overrides, schema))
        except KeyboardInterrupt:
            thread.run_sync(self._idle())
            raise

    async def _ask(
        self,
        query: str,
        on_event: Callable[[Event], None] | None,
        overrides: Mapping[str, Any],
        output: OutputSchema | None,
    ) -> RLMResult:
        from deeprlm.rlm import RunTree

        if self._closed:
            raise InputError("the session is closed")
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query is empty")
        settings = self.question_settings(**overrides)
        async with self._question_lock():
            settings, binding = self._within_session_budget(settings, query)
            attached = await self._start(query)
            number = len(self._history) + 1
            try:
                types = await attached.repl.variables(reset_answer=True)
            except DeepRLMError as err:
                raise _before_run(err, query) from None
            self._variables = types
            earlier = [prompts.EarlierQuestion(r.query, r.answer, r.status) for r in self._history]
            # Named as lost: what a reopen could not load and the code has not made again.
            gone = {name: why for name, why in self.lost.items() if name not in types}
            recap = prompts.session_recap(earlier, types, gone)
            sinks: list[Callable[[Event], None]] = []
            jsonl = None
            if self.rlm.trace_path is not None:
                jsonl = JsonlSink(self.rlm.trace_path, append=True)
                sinks.append(jsonl)
            if self.rlm.on_event is not None:
                sinks.append(self.rlm.on_event)
            if on_event is not None:
                sinks.append(on_event)
            trace = Trace(sinks, id_prefix=f"q{number}.", t0=self._t0)
            tree = RunTree(
                self.rlm,
                query,
                self.context,
                self.info,
                sinks=sinks,
                settings=settings,
                attached=attached,
                recap=recap,
                trace=trace,
                cache=self._question_cache(),
                output=output,
                session_id=self.id,
            )
            asked_at = time.time()
            try:
                result = await tree.execute()
            except DeepRLMError as err:
                err = self._session_limit(err, binding)
                if err.result is not None:
                    self._record(query, err.result, tree.root.id, asked_at)
                await self._refresh_variables()
                raise err from None
            except asyncio.CancelledError:
                self._record(
                    query,
                    tree.result(tree.root.partial(), "cancelled", error="cancelled"),
                    tree.root.id,
                    asked_at,
                )
                raise
            finally:
                if jsonl is not None:
                    jsonl.close()
            self._record(query, result, tree.root.id, asked_at)
            await self._refresh_variables()
            return result

    def _output(self, output: Any) -> OutputSchema | None:
        """A question's schema: its own (checked before anything runs), else the RLM's."""
        return as_output(output) if output is not None else self.rlm.output

    def set_cache(self, cache: CacheArg) -> None:
        """Changes the sub-call cache of the questions to come ("on", "off", a path or a
        `Cache`)."""
        self.cache, self._cache = _check_cache(cache)

    def _question_cache(self) -> Cache | None:
        if self._cache is None and self.cache != "off":
            on = self.cache == "on"
            self._cache = (self.rlm.cache or Cache()) if on else Cache(self.cache)
        return self._cache

    def question_settings(self, **overrides: Any) -> Settings:
        """The settings a question with these overrides runs with (before the session's
        totals cut its budgets). Raises InputError for an unknown setting, or one fixed
        for the session (its REPL's kind and limits, its totals)."""
        known = {row.name for row in table()}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown setting(s): {', '.join(unknown)}")
        settings = dataclasses.replace(self.settings, **overrides)
        for name in FIXED:
            if name in overrides and getattr(settings, name) != getattr(self.settings, name):
                raise InputError(
                    f"{name} is fixed for the session (its REPL and totals were made with "
                    "it); a question cannot change it"
                )
        return settings

    def _within_session_budget(self, settings: Settings, query: str) -> tuple[Settings, set[str]]:
        """The question's settings with its token and USD budgets cut to what the session
        has left; and which of them the session's totals now bind. Raises the LimitError
        when nothing is left."""
        spent = self.usage.total
        changes: dict[str, Any] = {}
        binding: set[str] = set()
        limits = (
            ("max_tokens", self.settings.session_max_tokens, spent.tokens, "tokens"),
            ("max_usd", self.settings.session_max_usd, spent.usd, "usd"),
        )
        for name, limit, used, kind in limits:
            if limit is None:
                continue
            left = limit - used
            if left <= 0:
                raise _before_run(self._session_limit_error(kind), query)
            own = getattr(settings, name)
            if own is None or left < own:
                changes[name] = left if kind == "usd" else int(left)
                binding.add(kind)
        return dataclasses.replace(settings, **changes), binding

    def _session_limit_error(self, kind: str) -> LimitError:
        spent = self.usage.total
        asked = len(self._history)
        across = f"across {asked} question{'s' if asked != 1 else ''}"
        if kind == "tokens":
            return TokenLimitError(
                f"session token budget reached: {spent.tokens:,} of "
                f"{self.settings.session_max_tokens:,} used {across}"
            )
        return CostLimitError(
            f"session cost budget reached: ${spent.usd:.4f} of "
            f"${self.settings.session_max_usd:.4f} spent {across}"
        )

    def _session_limit(self, err: DeepRLMError, binding: set[str]) -> DeepRLMError:
        """A question stopped by a budget the session's totals had cut is told so."""
        kind = getattr(err, "limit", None)
        if not isinstance(err, LimitError) or kind not in binding:
            return err
        usage = err.usage or UsageReport()
        # The totals the message gives include this question's usage.
        spent = self.usage.total + usage.total
        limit = (
            self.settings.session_max_tokens if kind == "tokens" else self.settings.session_max_usd
        )
        asked = len(self._history) + 1
        if kind == "tokens":
            message = (
                f"session token budget reached: {spent.tokens:,} of {limit:,} used across "
                f"{asked} questions"
            )
        else:
            message = (
                f"session cost budget reached: ${spent.usd:.4f} of ${limit:.4f} spent "
                f"across {asked} questions"
            )
        replaced = type(err)(message, partial_answer=err.partial_answer, usage=err.usage)
        if err.result is not None:
            replaced.result = dataclasses.replace(err.result, error=message)
        return replaced

    def _record(self, query: str, result: RLMResult, run_id: str, asked_at: float) -> None:
        self._history.append(
            QuestionRecord(
                query=query,
                answer=result.answer,
                status=result.status,
                usage=result.usage,
                run_id=run_id,
                error=result.error,
                iterations=result.iterations,
                sub_calls=result.sub_calls,
                wall_s=result.wall_s,
                asked_at=asked_at,
            )
        )

    async def _refresh_variables(self) -> None:
        if self._repl is None:
            return
        with contextlib.suppress(DeepRLMError):
            self._variables = await self._repl.repl.variables()

    # --- the REPL ------------------------------------------------------------------------

    def _question_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _idle(self) -> None:
        """Returns once no question is running (a cancelled one has finished stopping)."""
        async with self._question_lock():
            pass

    async def _start(self, query: str = "") -> AttachedREPL:
        """Starts the session's REPL on first use, and loads the variables of a saved
        session into it."""
        if self._repl is not None:
            return self._repl
        settings = self.settings
        repl = make_repl(settings.repl, settings.sandbox)
        relay = HostRelay()
        family = self.rlm.model.prompt_family
        try:
            await repl.start(self.context, relay, repl_settings(settings, family, self.rlm.tools))
        except DeepRLMError as err:
            raise _before_run(err, query) from None
        self._repl = AttachedREPL(repl, relay)
        self.notes.extend(repl.notes)
        if self._to_load:
            self._to_load = False
            await self._load_variables(repl.kind)
        with contextlib.suppress(DeepRLMError):
            self._variables = await repl.variables()
        return self._repl

    async def _load_variables(self, kind: str) -> None:
        assert self._repl is not None
        saved = self._saved_vars
        folder = self.folder / saved.folder
        if saved.repl == "sandbox" and kind != "sandbox":
            # Unpickling runs code: what the sandbox's code pickled is loaded only there.
            why = "saved from the sandbox, and loaded only in one (this REPL is in process)"
            self.lost.update({name: why for name in saved.kept})
            return
        if not folder.is_dir():
            self.lost.update({name: "its saved copy is missing" for name in saved.kept})
            return
        try:
            loaded = await self._repl.repl.load_variables(str(folder))
        except (DeepRLMError, OSError) as err:
            why = f"could not be loaded again ({err})"
            self.lost.update({name: why for name in saved.kept})
            return
        self.lost.update(loaded.lost)
        # A damaged snapshot index loads nothing and says nothing: name what it held.
        for name in saved.kept:
            if name not in loaded.kept and name not in loaded.lost:
                self.lost[name] = "could not be loaded again (its saved copy is damaged)"

    async def astart(self) -> None:
        """Starts the REPL now (and loads a saved session's variables), rather than at the
        first question; `lost` then names what could not be loaded."""
        await self._loop_thread().run_async(self._start_locked())

    def start(self) -> None:
        self._loop_thread().run_sync(self._start_locked())

    async def _start_locked(self) -> None:
        async with self._question_lock():
            await self._start()

    def _loop_thread(self) -> LoopThread:
        if self._closed:
            raise InputError("the session is closed")
        if self._thread is None or not self._thread.alive:
            self._thread = LoopThread(f"deeprlm-session-{self.id}")
        return self._thread

    # --- saving and reopening ------------------------------------------------------------

    async def asave(self) -> Path:
        """Saves the session under `$DEEPRLM_HOME/sessions/ID/` and returns that folder:
        its history, its context's identity (and a copy of a context given as a value),
        and the REPL's variables that can be kept (`lost` names the rest)."""
        return await self._loop_thread().run_async(self._save())

    def save(self) -> Path:
        return self._loop_thread().run_sync(self._save())

    async def _save(self) -> Path:
        async with self._question_lock():
            folder = self.folder
            self._lock_file.acquire()
            if not self._identity.paths and not (folder / CONTEXT_FILE).exists():
                await asyncio.to_thread(store_context, folder, self.context)
            saved = self._saved_vars
            if self._repl is not None:
                target = new_vars_folder(folder)
                try:
                    kept = await self._repl.repl.save_variables(str(target))
                except BaseException:
                    shutil.rmtree(target, ignore_errors=True)
                    raise
                types = dict(self._variables)
                saved = SavedVariables(
                    folder=target.name,
                    repl=self._repl.repl.kind,
                    kept=kept.kept,
                    lost=dict(kept.lost),
                    types={name: types.get(name, "module") for name in kept.kept},
                )
            record = SavedSession(
                id=self.id,
                folder=folder,
                rlm={**self.rlm.specs, "settings": _settings_dict(self.settings)},
                cache=self.cache,
                context=self._identity,
                variables=saved,
                history=tuple(self._history),
                trace=str(self.rlm.trace_path) if self.rlm.trace_path else None,
                created=self._created,
            )
            await asyncio.to_thread(write_json, folder / SESSION_FILE, record.to_dict())
            self._saved_vars = saved
            if self._repl is not None:
                self.lost = dict(saved.lost)
            await asyncio.to_thread(remove_other_vars, folder, saved.folder)
            return folder

    @classmethod
    def open(cls, session_id: str, rlm: RLM | None = None, *, rebind: bool = False) -> Session:
        """Reopens a saved session, in this process or another. `rlm`: the RLM to answer
        with (by default one made from the saved model specs and settings). A context file
        that changed since the save is refused unless `rebind`; a damaged session file is
        moved aside and reported (SessionError)."""
        saved = read_session(check_id(session_id))
        rlm = rlm if rlm is not None else rlm_from(saved)
        context, skipped = load_context(saved, rebind=rebind)
        return cls(
            rlm,
            context,
            skipped=skipped,
            session_id=saved.id,
            cache=saved.cache,
            _saved=saved,
        )

    # --- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Waits for a running question, stops the REPL (the session stays saved as it
        was last saved) and the session's thread."""
        if self._closed:
            return
        if self._thread is not None and self._thread.alive:
            await self._thread.run_async(self._close())
            await asyncio.to_thread(self._thread.stop)
        self._finish()

    def close(self) -> None:
        if self._closed:
            return
        if self._thread is not None and self._thread.alive:
            self._thread.run_sync(self._close())
            self._thread.stop()
        self._finish()

    async def _close(self) -> None:
        async with self._question_lock():
            if self._repl is not None:
                repl, self._repl = self._repl, None
                await repl.repl.close()

    def _finish(self) -> None:
        self._closed = True
        self._lock_file.release()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Session {self.id}: {len(self._history)} questions>"


def rlm_from(saved: SavedSession, **overrides: Any) -> RLM:
    """An RLM made from a saved session's model specs, prices and settings. `overrides`:
    model, sub_model, base_url, trace_path or output to use instead of the saved ones, and
    prices to add to theirs. Models given as objects cannot be made again: such a session
    is reopened with `Session.open(session_id, rlm=...)`."""
    from deeprlm.rlm import RLM

    specs = saved.rlm
    objects = [
        name
        for name in specs.get("objects") or ()
        if not (name in ("model", "sub_model") and overrides.get(name))
    ]
    if objects:
        given = (
            "was given as a model object" if len(objects) == 1 else "were given as model objects"
        )
        raise InputError(
            f"session {saved.id}: its {', '.join(map(str, objects))} {given}, not specs; "
            "reopen it with Session.open(session_id, rlm=...)"
        )
    known = {row.name for row in table()}
    settings = {k: v for k, v in saved.rlm["settings"].items() if k in known}
    prices = {
        str(name): Price(**{k: v for k, v in dict(rates).items() if k in PRICE_FIELDS})
        for name, rates in dict(specs.get("prices") or {}).items()
    }
    prices.update(overrides.get("prices") or {})
    return RLM(
        overrides.get("model") or specs.get("model") or DEFAULT_MODEL,
        overrides.get("sub_model") or specs.get("sub_model"),
        models=dict(specs.get("models") or {}),
        base_url=overrides.get("base_url") or specs.get("base_url"),
        prices=prices,
        trace_path=overrides.get("trace_path") or saved.trace,
        output=overrides.get("output"),
        **settings,
    )


def _settings_dict(settings: Settings) -> dict[str, Any]:
    data = settings.to_dict()
    data["allow_read"] = list(settings.allow_read)
    return data


def _as_paths(context: Any) -> list[str] | None:
    """The paths of a context given as files (a PathLike, or a list or tuple of them)."""
    if isinstance(context, os.PathLike):
        return [os.fspath(context)]
    if (
        isinstance(context, (list, tuple))
        and context
        and all(isinstance(item, os.PathLike) for item in context)
    ):
        return [os.fspath(item) for item in context]
    return None


def _check_cache(cache: Any) -> tuple[str, Cache | None]:
    """A session's cache as it is saved ("on", "off" or a path), and the `Cache` when one
    was given as such."""
    if isinstance(cache, Cache):
        return str(cache.path), cache
    if cache is True:
        return "on", None
    if cache is None or cache is False:
        return "off", None
    if isinstance(cache, os.PathLike):
        return os.fspath(cache), None
    if not isinstance(cache, str) or not cache.strip():
        raise InputError(f"cache must be 'on', 'off', a path or a Cache, not {cache!r}")
    return cache.strip(), None


def _before_run(err: DeepRLMError, query: str) -> DeepRLMError:
    """An error that stops a question before its run starts carries an empty result, like
    one that stops it later (see `DeepRLMError`)."""
    from deeprlm.rlm import RLMResult

    if err.result is None and not isinstance(err, InputError):
        status = "limit" if isinstance(err, LimitError) else "error"
        err.usage = err.usage or UsageReport()
        err.result = RLMResult(
            answer="",
            usage=err.usage,
            iterations=0,
            sub_calls=0,
            wall_s=0.0,
            forced=False,
            status=status,
            trace=Trace(),
            error=str(err),
        )
    return err
