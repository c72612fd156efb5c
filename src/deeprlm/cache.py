"""The sub-call cache: model replies kept in SQLite, keyed by everything that shapes them.

A reply is stored under a key made from the model's name and what else it declares shapes
its replies (`sampling`: temperature, seed, the server), the full messages, the tools, the
reply cap and the JSON Schema it must follow. A call whose key is stored is answered from
the file: no provider, no budget, no concurrency slot; `usage` counts it as a cache hit
with the tokens and USD it saved.

Temperature decides how far an entry is shared. A model that declares temperature 0 gives
the same reply to the same request, so its entries are shared by every run and process
using the file, and identical calls in flight at once in one process are made once (the
others wait for it). Any other model samples (an undeclared temperature is the provider's
default, above 0 for the hosted APIs): its entries are shared only when the cache is asked
to (`Cache(sampled=True)`), and otherwise belong to the run tree that made them, which is
what lets that run be resumed (see `deeprlm.resume`). Sampled entries are numbered, the
n-th identical call of a run being entry n, so five identical calls asked for five
samples still get five replies, then and on a replay.

Several processes may use one file at once: SQLite in WAL mode, each process with its own
connections and a busy timeout. Identical calls made at the same moment by two processes
are both made (the second store replaces the first): a claim row would make every miss pay
a write and a wait for a rare duplicate.

Faults lose nothing and hide nothing: a file that is not a database, or is damaged, is
moved aside (its new name is said) and a fresh one started; a cache that cannot be written
(a full disk) stops storing for the rest of the process, and says so once. Every such
message reaches the run's trace and `result.notes`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from deeprlm.errors import InputError
from deeprlm.lm.base import LM, Completion, Message, ToolCall, ToolSpec
from deeprlm.local.home import deeprlm_home

# Bumped when the key or the stored reply changes shape; an older file is then refused.
FORMAT = 1
BUSY_TIMEOUT_MS = 5_000
CACHE_FILE = "cache.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    reply TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    token TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@runtime_checkable
class Sampled(Protocol):
    """A model that says what besides the messages shapes its replies. `temperature` 0
    means the same request gets the same reply; absent or None means the provider's
    default. Models without it are taken to sample."""

    @property
    def sampling(self) -> Mapping[str, Any]: ...


def default_path() -> Path:
    return deeprlm_home() / CACHE_FILE


def sampling_of(lm: LM) -> dict[str, Any]:
    return dict(lm.sampling) if isinstance(lm, Sampled) else {}


def samples(lm: LM) -> bool:
    """True unless the model declares temperature 0."""
    return sampling_of(lm).get("temperature") != 0


def request_key(
    lm: LM,
    messages: Sequence[Message],
    *,
    tools: Sequence[ToolSpec] | None,
    max_tokens: int | None,
    schema: Mapping[str, Any] | None,
) -> str:
    """The sha256 of everything that shapes the reply, as canonical JSON."""
    request = {
        "format": FORMAT,
        "model": lm.name,
        "sampling": sampling_of(lm),
        "messages": list(messages),
        "tools": [[t.name, t.description, t.parameters] for t in tools or ()],
        "max_tokens": max_tokens,
        "schema": schema,
    }
    text = json.dumps(
        request, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=repr
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _dump(completion: Completion) -> str:
    return json.dumps(asdict(completion), ensure_ascii=False)


def _load(text: str) -> Completion:
    data = json.loads(text)
    calls = tuple(ToolCall(**call) for call in data.pop("tool_calls", ()))
    return Completion(**data, tool_calls=calls)


def _is_corrupt(err: sqlite3.DatabaseError) -> bool:
    """A damaged file, as opposed to a busy one or a full disk."""
    if not isinstance(err, sqlite3.OperationalError):
        return True
    text = str(err).lower()
    return "malformed" in text or "not a database" in text


class Cache:
    """A cache file, shared by every run (and thread) of the process that holds it.

    `path` defaults to `$DEEPRLM_HOME/cache.sqlite`. `sampled=True` shares the replies of
    models that sample (temperature above 0) between runs too. The file is opened on first
    use; `notes` collects what a user should know about it (a damaged file moved aside, a
    full disk)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, sampled: bool = False):
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.sampled = sampled
        self._lock = threading.Lock()  # opening, writing, the notes
        self._read_lock = threading.Lock()
        self._read: sqlite3.Connection | None = None
        self._write: sqlite3.Connection | None = None
        self._opened = False
        self.usable = True  # False once the file could not be opened at all
        self.writable = True  # False once a store failed for want of space
        self._notes: list[str] = []

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, sampled={self.sampled})"

    # --- opening -------------------------------------------------------------------------

    def open(self) -> None:
        """Opens (or creates) the file now; safe to call again. A damaged file is moved
        aside and replaced; a file that belongs to something else is refused."""
        with self._lock:
            if self._opened:
                return
            self._opened = True
            try:
                self._connect()
            except sqlite3.DatabaseError as err:
                if not _is_corrupt(err):
                    self._give_up(f"cannot open {self.path}: {err}")
                    return
                self._close()
                self._move_aside(str(err))
                try:
                    self._connect()
                except (sqlite3.DatabaseError, OSError) as again:
                    self._give_up(f"cannot start a new cache at {self.path}: {again}")
            except OSError as err:
                self._give_up(f"cannot create {self.path}: {err.strerror or err}")

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connections = []
        for _ in range(2):
            connection = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # autocommit: each statement is its own transaction
                check_same_thread=False,
            )
            connections.append(connection)
        self._read, self._write = connections
        write = self._write
        write.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        write.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives a killed process (only a power cut can lose the last
        # commits), which is what resuming an interrupted run needs.
        write.execute("PRAGMA synchronous=NORMAL")
        version = write.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            row[0] for row in write.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if version == 0 and tables - {"replies", "runs"}:
            self._close()
            raise InputError(f"{self.path} is a database of something else, not a deeprlm cache")
        if version > FORMAT:
            self._close()
            raise InputError(f"{self.path} was written by a newer deeprlm (format {version})")
        if version < FORMAT:
            write.executescript(_SCHEMA)
            write.execute(f"PRAGMA user_version={FORMAT}")
        self._read.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Reading a page of each table finds a damaged file now rather than mid-run.
        self._read.execute("SELECT count(*) FROM (SELECT 1 FROM replies LIMIT 1)").fetchone()

    def _move_aside(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.replace(Path(f"{aside}{suffix}"))
        self._note(f"cache: {self.path} was damaged ({reason}); moved aside to {aside}")

    def _give_up(self, message: str) -> None:
        self._close()
        self.usable = False
        self._note(f"{message}; the run goes on without a cache")

    def _close(self) -> None:
        for connection in (self._read, self._write):
            if connection is not None:
                connection.close()
        self._read = self._write = None

    def close(self) -> None:
        with self._lock:
            self._close()
            self._opened = False

    def _note(self, message: str) -> None:
        self._notes.append(message)

    def take_notes(self) -> list[str]:
        """The notes not yet handed out."""
        with self._lock:
            notes, self._notes = self._notes, []
            return notes

    # --- entries -------------------------------------------------------------------------

    def get(self, key: str) -> Completion | None:
        self.open()
        if not self.usable or self._read is None:
            return None
        try:
            with self._read_lock:
                row = self._read.execute("SELECT reply FROM replies WHERE key=?", (key,)).fetchone()
        except sqlite3.DatabaseError as err:
            self._failed("read", err)
            return None
        if row is None:
            return None
        try:
            return _load(row[0])
        except (ValueError, TypeError):
            return None  # an entry this version cannot read is a miss, and is replaced

    def put(self, key: str, completion: Completion) -> None:
        self.open()
        if not (self.usable and self.writable) or self._write is None:
            return
        with self._lock:
            try:
                self._write.execute(
                    "INSERT OR REPLACE INTO replies (key, model, reply, created) "
                    "VALUES (?, ?, ?, ?)",
                    (key, completion.model, _dump(completion), time.time()),
                )
            except sqlite3.DatabaseError as err:
                self._failed("write", err)

    def put_run(self, token: str, record: Mapping[str, Any]) -> None:
        """What resuming the run `token` needs that its trace clips: the full query, the
        model specs, the context's paths."""
        self.open()
        if not (self.usable and self.writable) or self._write is None:
            return
        with self._lock:
            try:
                self._write.execute(
                    "INSERT OR REPLACE INTO runs (token, record, created) VALUES (?, ?, ?)",
                    (token, json.dumps(record, ensure_ascii=False), time.time()),
                )
            except sqlite3.DatabaseError as err:
                self._failed("write", err)

    def get_run(self, token: str) -> dict[str, Any] | None:
        self.open()
        if not self.usable or self._read is None:
            return None
        try:
            with self._read_lock:
                row = self._read.execute(
                    "SELECT record FROM runs WHERE token=?", (token,)
                ).fetchone()
        except sqlite3.DatabaseError as err:
            self._failed("read", err)
            return None
        return json.loads(row[0]) if row is not None else None

    def _failed(self, what: str, err: sqlite3.DatabaseError) -> None:
        text = str(err).lower()
        if "locked" in text or "busy" in text:
            # Another process held the file past the busy timeout: this entry only.
            self._note(f"cache: {self.path} stayed locked by another process; a {what} skipped")
        elif _is_corrupt(err):
            self.usable = False
            self._note(
                f"cache: {self.path} is damaged ({err}); the run goes on without a cache, "
                "and the next process to open it moves it aside"
            )
        elif what == "write":
            self.writable = False
            self._note(
                f"cache: cannot write {self.path} ({err}); nothing more is stored, and the "
                "run goes on as without a cache"
            )
        else:
            self.usable = False
            self._note(f"cache: cannot read {self.path} ({err}); the run goes on without it")


# How a call was served, as the trace and usage record it.
MADE, HIT, SHARED = "", "hit", "shared"


class RunCache:
    """The cache as one run tree uses it: its token (which names its own sampled entries),
    the count of identical sampled calls, and the deterministic calls in flight."""

    def __init__(self, cache: Cache, *, token: str | None = None) -> None:
        self.cache = cache
        self.token = token or uuid.uuid4().hex
        self._seen: Counter[str] = Counter()
        self._counter_lock = threading.Lock()

    def key(
        self,
        lm: LM,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None,
        max_tokens: int | None,
        schema: Mapping[str, Any] | None,
    ) -> tuple[str, bool]:
        """The entry's key, and whether identical calls in flight may share one reply."""
        base = request_key(lm, messages, tools=tools, max_tokens=max_tokens, schema=schema)
        if not samples(lm):
            return base, True
        with self._counter_lock:
            nth = self._seen[base]
            self._seen[base] += 1
        scope = "" if self.cache.sampled else f"@{self.token}"
        return f"{base}{scope}#{nth}", False

    async def call(
        self,
        lm: LM,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None,
        max_tokens: int | None,
        schema: Mapping[str, Any] | None,
        make: Callable[[], Awaitable[Completion]],
        served: Callable[[Completion, str], None],
        storable: Callable[[Completion], bool] | None = None,
    ) -> Completion:
        """The reply from the file, from an identical call in flight, or from `make()`
        (then stored, if `storable` says so). `served(completion, how)` records a reply
        that cost nothing."""
        key, shareable = self.key(lm, messages, tools=tools, max_tokens=max_tokens, schema=schema)
        stored = self.cache.get(key)
        if stored is not None:
            served(stored, HIT)
            return stored
        if not shareable:
            completion = await make()
            await self._store(key, completion, storable)
            return completion
        flights = _in_flight()
        leader = flights.get(key)
        if leader is not None:
            try:
                completion = await asyncio.shield(leader)
            except asyncio.CancelledError:
                if not leader.cancelled():
                    raise  # this caller was cancelled, not the call it waited for
            else:
                served(completion, SHARED)
                return completion
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        flights[key] = future
        try:
            completion = await make()
            # Stored before the waiters are answered, so that a caller arriving between
            # the two finds the entry rather than making the call again.
            await self._store(key, completion, storable)
        except BaseException as err:
            if isinstance(err, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(err)
                future.exception()  # retrieved here: waiters may be none
            raise
        else:
            future.set_result(completion)
            return completion
        finally:
            if flights.get(key) is future:
                del flights[key]

    async def _store(
        self,
        key: str,
        completion: Completion,
        storable: Callable[[Completion], bool] | None,
    ) -> None:
        # Stored before the reply is used: a run killed after this point replays it.
        if completion.finish_reason == "cancelled" or completion.estimated:
            return  # cut short by a limit, or never really answered
        if storable is not None and not storable(completion):
            return
        await asyncio.to_thread(self.cache.put, key, completion)


# Calls in flight, per event loop: a future belongs to the loop that made it, and each
# `RLM.run` has a loop of its own.
_FLIGHTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, asyncio.Future[Completion]]
] = weakref.WeakKeyDictionary()


def _in_flight() -> dict[str, asyncio.Future[Completion]]:
    loop = asyncio.get_running_loop()
    flights = _FLIGHTS.get(loop)
    if flights is None:
        flights = _FLIGHTS[loop] = {}
    return flights


CacheArg = Cache | str | os.PathLike[str] | bool | None


def as_cache(value: CacheArg) -> Cache | None:
    """`RLM(cache=...)`: None or False for none, True or "on" for the default file, a path,
    or a `Cache` (for its options, or to share one between RLMs)."""
    if value is None or value is False:
        return None
    if value is True:
        return Cache()
    if isinstance(value, Cache):
        return value
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if text in ("off", ""):
            return None
        return Cache(None if text == "on" else text)
    raise InputError(f"cache must be a path, 'on', 'off', True, False or a Cache, not {value!r}")
