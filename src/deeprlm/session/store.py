"""A saved session on disk: `$DEEPRLM_HOME/sessions/ID/`.

    session.json   what the session is: its models and settings, the context's identity,
                   the questions and answers, the variables kept (written last, atomically)
    vars-XXXX/     the REPL's variables, in the sandbox's snapshot format
    context.json   a copy of the context, for one that came from memory or stdin
    trace.jsonl    the questions' trace, when the command line keeps one
    lock           held while a process has the session open

A context loaded from files is reloaded from them and checked against its sha256: contexts
are often large (a 40 MB codebase, GBs of logs), and a copy per session would double the
disk used and drift from the files the user keeps editing; a changed file is caught by the
hash and refused unless the caller rebinds. A context given as a value has no other home,
so it is stored with the session.

Every file is written to a temporary name and renamed into place, so a crash leaves the
old session or the new one, never half of one. A session file that cannot be read is
moved aside (never deleted) and reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from deeprlm.context import describe, load_paths
from deeprlm.errors import InputError, SessionError
from deeprlm.local.home import deeprlm_home
from deeprlm.repl import ContextValue
from deeprlm.usage import ModelUsage, UsageReport

FORMAT = 1
SESSION_FILE = "session.json"
CONTEXT_FILE = "context.json"
TRACE_FILE = "trace.jsonl"
LOCK_FILE = "lock"
VARS_PREFIX = "vars-"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def sessions_dir() -> Path:
    return deeprlm_home() / "sessions"


def check_id(session_id: Any) -> str:
    """A session id names a folder: letters, digits, '.', '_' and '-' only (so it cannot
    climb out of the sessions folder), at most 64 characters."""
    if not isinstance(session_id, str) or not _ID.fullmatch(session_id):
        raise InputError(
            f"a session id is 1-64 letters, digits, '.', '_' or '-' (not starting with one "
            f"of the last three); got {str(session_id)[:80]!r}"
        )
    return session_id


def new_id() -> str:
    """A short id no saved session has: easy to type in `deeprlm ask --session ID`."""
    while True:
        candidate = time.strftime("%m%d-") + secrets.token_hex(3)
        if not folder_of(candidate).exists():
            return candidate


def folder_of(session_id: str) -> Path:
    return sessions_dir() / check_id(session_id)


# --- writing and reading files -------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, flushes it to disk and renames it
    over `path`: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(
        path, json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass")
    )


def move_aside(path: Path) -> Path:
    """Renames a damaged file out of the way, keeping it for whoever wants to look."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    os.replace(path, target)
    return target


def _corrupt(path: Path, why: str) -> SessionError:
    aside = move_aside(path)
    return SessionError(f"{path} is damaged ({why}); moved aside to {aside.name}")


# --- what a session file holds -------------------------------------------------------------


@dataclass(frozen=True)
class QuestionRecord:
    """One question a session answered (or tried to): what was asked, what came back, how
    it ended, what it cost, and the run id under which the trace has it."""

    query: str
    answer: str
    status: str  # answered | forced | limit | error | cancelled
    usage: UsageReport
    run_id: str
    error: str | None = None
    iterations: int = 0
    sub_calls: int = 0
    wall_s: float = 0.0
    asked_at: float = 0.0  # seconds since the epoch

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "answer": self.answer,
            "status": self.status,
            "usage": self.usage.to_dict(),
            "run_id": self.run_id,
            "error": self.error,
            "iterations": self.iterations,
            "sub_calls": self.sub_calls,
            "wall_s": round(self.wall_s, 3),
            "asked_at": round(self.asked_at, 3),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuestionRecord:
        return cls(
            query=str(data["query"]),
            answer=str(data["answer"]),
            status=str(data["status"]),
            usage=usage_from_dict(data.get("usage") or {}),
            run_id=str(data["run_id"]),
            error=None if data.get("error") is None else str(data["error"]),
            iterations=int(data.get("iterations", 0)),
            sub_calls=int(data.get("sub_calls", 0)),
            wall_s=float(data.get("wall_s", 0.0)),
            asked_at=float(data.get("asked_at", 0.0)),
        )


def usage_from_dict(data: Mapping[str, Any]) -> UsageReport:
    """A `UsageReport` read back from its `to_dict()`; fields it does not know are left out."""
    known = {f.name for f in fields(ModelUsage)}
    by_model = {
        str(name): ModelUsage(**{k: v for k, v in tally.items() if k in known})
        for name, tally in dict(data.get("by_model", {})).items()
    }
    return UsageReport(by_model)


@dataclass(frozen=True)
class ContextIdentity:
    """What a session knows of its context: its hash and size, and where to get it again
    (its paths, as given and from where; or the copy stored with the session)."""

    sha256: str
    chars: int
    kind: str
    paths: tuple[str, ...] = ()  # empty: a copy is stored
    cwd: str = ""
    skipped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "chars": self.chars,
            "kind": self.kind,
            "paths": list(self.paths),
            "cwd": self.cwd,
            "skipped": list(self.skipped),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContextIdentity:
        return cls(
            sha256=str(data["sha256"]),
            chars=int(data["chars"]),
            kind=str(data["kind"]),
            paths=tuple(str(p) for p in data.get("paths", ())),
            cwd=str(data.get("cwd", "")),
            skipped=tuple(str(p) for p in data.get("skipped", ())),
        )


@dataclass(frozen=True)
class SavedVariables:
    """The REPL's variables as last saved: the folder holding them, the REPL kind that
    wrote it (a sandbox's snapshot is loaded only in a sandbox), what it kept, what it
    could not keep, and their types."""

    folder: str = ""
    repl: str = ""
    kept: tuple[str, ...] = ()
    lost: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "repl": self.repl,
            "kept": list(self.kept),
            "lost": dict(self.lost),
            "types": dict(self.types),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SavedVariables:
        folder = str(data.get("folder", ""))
        if folder and not (folder.startswith(VARS_PREFIX) and _ID.fullmatch(folder)):
            raise ValueError(f"bad variables folder {folder[:80]!r}")
        return cls(
            folder=folder,
            repl=str(data.get("repl", "")),
            kept=tuple(str(n) for n in data.get("kept", ())),
            lost={str(k): str(v) for k, v in dict(data.get("lost", {})).items()},
            types={str(k): str(v) for k, v in dict(data.get("types", {})).items()},
        )


@dataclass(frozen=True)
class SavedSession:
    """A session file, read and checked."""

    id: str
    folder: Path
    rlm: dict[str, Any]  # model specs, base URL, settings (see `RLM.specs`)
    cache: str
    context: ContextIdentity
    variables: SavedVariables
    history: tuple[QuestionRecord, ...]
    trace: str | None
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.id,
            "created": self.created,
            "saved": round(time.time(), 3),
            "rlm": self.rlm,
            "cache": self.cache,
            "context": self.context.to_dict(),
            "variables": self.variables.to_dict(),
            "history": [record.to_dict() for record in self.history],
            "trace": self.trace,
        }


def read_session(session_id: str) -> SavedSession:
    """Reads a saved session. Raises InputError when there is none by that id, and
    SessionError (after moving the file aside) when its file is damaged."""
    folder = folder_of(session_id)
    path = folder / SESSION_FILE
    if not path.is_file():
        where = sessions_dir()
        raise InputError(f"no saved session {session_id!r} in {where}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8", "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as err:
        raise _corrupt(path, f"not JSON: {str(err)[:100]}") from None
    except OSError as err:
        raise SessionError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this deeprlm reads {FORMAT}")
        if data.get("id") != session_id:
            raise ValueError(f"it names session {str(data.get('id'))[:80]!r}")
        rlm = data["rlm"]
        if not isinstance(rlm, dict) or not isinstance(rlm.get("settings"), dict):
            raise ValueError("no models and settings")
        trace = data.get("trace")
        return SavedSession(
            id=session_id,
            folder=folder,
            rlm=rlm,
            cache=str(data.get("cache", "on")),
            context=ContextIdentity.from_dict(data["context"]),
            variables=SavedVariables.from_dict(data.get("variables") or {}),
            history=tuple(QuestionRecord.from_dict(item) for item in data.get("history", [])),
            trace=None if trace is None else str(trace),
            created=float(data.get("created", 0.0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        why = f"missing {err}" if isinstance(err, KeyError) else str(err)[:200]
        raise _corrupt(path, why) from None


# --- the context ---------------------------------------------------------------------------


def store_context(folder: Path, context: ContextValue) -> None:
    write_json(folder / CONTEXT_FILE, {"context": context})


def load_context(saved: SavedSession, *, rebind: bool) -> tuple[ContextValue, list[str]]:
    """The saved session's context, from its paths or its stored copy, checked against its
    sha256. A change is refused unless `rebind`; a stored copy that does not read back is
    moved aside."""
    identity = saved.context
    if identity.paths:
        context, skipped = reload_paths(identity.paths, identity.cwd)
        what = "its context files changed"
    else:
        path = saved.folder / CONTEXT_FILE
        try:
            data = json.loads(path.read_bytes().decode("utf-8", "surrogatepass"))
            context = data["context"]
            if not isinstance(context, (str, list, dict)):
                raise ValueError("not a context")
        except FileNotFoundError:
            raise SessionError(
                f"session {saved.id}: its stored context {path} is missing"
            ) from None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise _corrupt(path, str(err)[:100]) from None
        skipped = list(identity.skipped)
        what = "its stored context differs from what was saved"
    digest = describe(context).sha256
    if digest != identity.sha256 and not rebind:
        raise InputError(
            f"session {saved.id}: {what} since it was saved (sha256 {identity.sha256[:12]}… "
            f"is now {digest[:12]}…); pass --rebind (rebind=True) to go on with them as they "
            "are now"
        )
    return context, skipped


def reload_paths(paths: Sequence[str], cwd: str) -> tuple[ContextValue, list[str]]:
    """Loads the files a session's context came from, as they were named then: relative
    paths from the folder they were given in, keys as the model first saw them."""
    absolute = [p if os.path.isabs(p) else os.path.join(cwd, p) for p in paths]
    context, skipped = load_paths(absolute)
    if isinstance(context, dict) and len(paths) > 1:
        # Several paths key their texts by path: give the keys back their first names.
        renamed: dict[str, str] = {}
        for key, text in context.items():
            for given, full in zip(paths, absolute, strict=True):
                if key == full or key.startswith(full.rstrip("/") + "/"):
                    key = given.rstrip("/") + key[len(full.rstrip("/")) :]
                    break
            renamed[key] = text
        context = renamed
    return context, skipped


# --- variables folders ---------------------------------------------------------------------


def new_vars_folder(folder: Path) -> Path:
    path = folder / f"{VARS_PREFIX}{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    return path


def remove_other_vars(folder: Path, keep: str) -> None:
    """Removes variables folders other than `keep`, and temporary files left by a crash."""
    for entry in folder.iterdir():
        if entry.name.startswith(VARS_PREFIX) and entry.name != keep and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                entry.unlink()


# --- one process at a time -----------------------------------------------------------------


class SessionLock:
    """An advisory lock on a session's folder, held while a process has it open, so that
    two processes never write one session's history over each other. The kernel drops it
    when the process ends, however it ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        if self._file is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = open(self.folder / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()[:20]
            f.close()
            raise SessionError(
                f"session {self.folder.name} is open in another process"
                + (f" (pid {holder})" if holder else "")
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
