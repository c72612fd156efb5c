"""Every setting of a run, in one table: its default, what it bounds, and how it is checked.

Each field's metadata carries its help text, its section and its check; the command line's
flags are made from it (`deeprlm.flags`), so a new setting is one field here. The sandbox's
own knobs are one field too (`sandbox`, a `SandboxSettings`), settable from `RLM(...)` as a
`SandboxSettings` or a dict.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from typing import Any

from deeprlm.errors import InputError
from deeprlm.lm.base import LM
from deeprlm.lm.specs import any_in_process
from deeprlm.repl import REPL_KINDS
from deeprlm.repl.sandbox.config import SandboxSettings

# The model's code runs in a locked-down worker where the kernel allows one (Linux).
DEFAULT_REPL = "sandbox" if sys.platform.startswith("linux") else "inprocess"

# Sections of the table, in the order the command line's help shows them.
LOOP = "the loop"
RECURSION = "recursion and sub-calls"
CALLS = "model calls: deadlines and retries (429s, 5xx, dropped connections, timeouts)"
BUDGETS = "budgets shared by the whole run tree (reaching one ends the run with a LimitError)"
CODE = "where the model's code runs"
SESSION = "sessions (totals across a session's questions; reaching one ends the question)"

# A model computing on this machine's CPU (llama.cpp, in process) labels about two short
# items a second on 2 cores, so one map over the records of a 16k-token input takes minutes:
# past the usual cell timeout, which would turn the last items into errors. Its runs get
# this one unless the caller sets it.
IN_PROCESS_CELL_TIMEOUT_S = 1800.0


def setting(
    default: Any = MISSING,
    *,
    help: str,
    section: str,
    check: str | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    default_factory: Any = MISSING,
    per_question: bool = True,
) -> Any:
    """One row of the table. `check` is "positive" or "non-negative" (None passes); `flag`
    overrides the command-line flag made from the name, "" gives the setting none.
    `per_question=False`: a session is made with it and keeps it (its REPL, its totals),
    so a question cannot change it."""
    metadata = {
        "help": help,
        "section": section,
        "check": check,
        "flag": flag,
        "per_question": per_question,
    }
    if metavar is not None:
        metadata["metavar"] = metavar
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    max_iterations: int = setting(
        20,
        help="root-model turns per run; then one forced final answer",
        section=LOOP,
        check="positive",
    )
    max_output_chars: int | None = setting(
        None,
        help="cell output the model reads per turn (default: 8000; 2000 for small models)",
        section=LOOP,
        check="positive",
        per_question=False,
    )
    cell_timeout_s: float | None = setting(
        300.0,
        help="wall clock per cell, wherever the code runs; a cell over it is stopped and the "
        f"run goes on ({IN_PROCESS_CELL_TIMEOUT_S:g} with a model run in this process, whose "
        "maps take minutes on a CPU)",
        section=LOOP,
        check="positive",
    )
    max_reply_tokens: int | None = setting(
        None,
        help="output tokens per model call (default: the provider's; under a token or USD "
        "budget, the model's own cap, else 8192)",
        section=LOOP,
        check="positive",
    )
    compact_tokens: int | None = setting(
        None,
        help="past this many tokens (estimated) of a run's conversation, its older turns "
        "are compacted into a digest (default: 60% of the model's window, when known)",
        section=LOOP,
        check="positive",
    )
    output_retries: int = setting(
        2,
        help="with a typed answer (--schema, RLM(output=...)): how many times a final answer "
        "that does not follow the schema is sent back to the root model, with what is "
        "wrong, before the run fails",
        section=LOOP,
        check="non-negative",
    )
    max_depth: int = setting(
        1,
        help="deepest child run; at the limit rlm_query falls back to a plain model call",
        section=RECURSION,
        check="non-negative",
    )
    max_concurrency: int = setting(
        16,
        help="model calls in flight at once, across the whole tree",
        section=RECURSION,
        check="positive",
    )
    allow_sub_calls: bool = setting(
        True,
        help="the REPL's code may make sub-calls (llm_query, rlm_query, ...); without them the "
        "root works by code alone (the paper's ablation)",
        section=RECURSION,
        flag="--no-sub-calls",
    )
    sub_tool_turns: int = setting(
        4,
        help="tool-calling turns a sub-call may take before it must answer",
        section=RECURSION,
        check="positive",
    )
    max_batch: int = setting(
        1_000,
        help="items in one llm_batch / rlm_batch; a larger one is refused before anything is made",
        section=RECURSION,
        check="positive",
    )
    max_repls: int = setting(
        16,
        help="REPLs alive at once across the tree (a process each, in the sandbox); child "
        "runs wait for a slot, and max_depth + 1 are always kept so the tree can go on",
        section=RECURSION,
        check="positive",
    )
    call_timeout_s: float | None = setting(
        120.0,
        help="one request to a model; a timed-out one is tried once more (not for the "
        "embedded model, which runs in this process)",
        section=CALLS,
        check="positive",
    )
    sub_call_timeout_s: float | None = setting(
        None,
        help="one sub-call (an llm_query, an llm_batch item) with its retries, from when it "
        "is sent (default: none of its own; sub-calls always end by 90% of their cell's "
        "timeout, so the answers that made it reach the code)",
        section=CALLS,
        check="positive",
    )
    max_retries: int = setting(
        5,
        help="further attempts of a failed model call; the wait between them happens "
        "outside the call's concurrency slot",
        section=CALLS,
        check="non-negative",
    )
    max_sub_calls: int | None = setting(
        None, help="sub-calls across the run tree", section=BUDGETS, check="positive"
    )
    max_tokens: int | None = setting(
        None, help="tokens across the run tree", section=BUDGETS, check="positive"
    )
    max_usd: float | None = setting(
        None, help="USD across the run tree", section=BUDGETS, check="positive"
    )
    timeout_s: float | None = setting(
        None, help="wall clock for the whole run", section=BUDGETS, check="positive"
    )
    repl: str = setting(
        DEFAULT_REPL,
        help="where the model's code runs: a locked-down worker, or this process (trusted "
        "contexts only; not isolated, and C code that holds Python's lock, a catastrophic "
        "regex say, cannot be interrupted there: the command then ends, with status 3, some "
        "seconds past --timeout or --cell-timeout)",
        section=CODE,
        per_question=False,
    )
    allow_read: tuple[str, ...] = setting(
        (),
        help="a file or folder the sandboxed code may read (repeatable)",
        section=CODE,
        metavar="PATH",
        per_question=False,
    )
    sandbox: SandboxSettings = setting(
        help="the sandbox's limits (memory, CPU, processes, ...)",
        section=CODE,
        flag="",
        default_factory=SandboxSettings,
        per_question=False,
    )
    session_max_tokens: int | None = setting(
        None,
        help="tokens across all of a session's questions",
        section=SESSION,
        check="positive",
        per_question=False,
    )
    session_max_usd: float | None = setting(
        None,
        help="USD across all of a session's questions",
        section=SESSION,
        check="positive",
        per_question=False,
    )

    def __post_init__(self) -> None:
        check_rows(self)
        if self.repl not in REPL_KINDS:
            raise InputError(
                f"unknown REPL kind {self.repl!r}; choose one of: {', '.join(REPL_KINDS)}"
            )
        object.__setattr__(self, "allow_read", resolve_read_paths(self.allow_read))
        if isinstance(self.sandbox, Mapping):
            known = {f.name for f in fields(SandboxSettings)}
            unknown = sorted(str(key) for key in self.sandbox if key not in known)
            if unknown:
                raise InputError(f"unknown sandbox setting(s): {', '.join(unknown)}")
            object.__setattr__(self, "sandbox", SandboxSettings(**self.sandbox))
        elif not isinstance(self.sandbox, SandboxSettings):
            raise InputError("sandbox must be a SandboxSettings or a dict of its fields")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InputError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def for_models(
    settings: Settings, given: Iterable[str], models: Iterable[str | LM | None]
) -> Settings:
    """`settings` with the defaults that depend on the models, for each setting not in
    `given`: a longer cell timeout when one of `models` (specs or LM objects; None for one
    not given) computes in this process, known without making them."""
    if "cell_timeout_s" not in set(given) and any_in_process(models):
        return replace(settings, cell_timeout_s=IN_PROCESS_CELL_TIMEOUT_S)
    return settings


def check_rows(table: Any) -> None:
    """Checks each row of a table made with `setting(...)` against its `check`."""
    for f in fields(table):
        value, check = getattr(table, f.name), f.metadata.get("check")
        # nan passes every comparison, and inf means no limit (which None says).
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{f.name} must be a finite number, got {value}")
        if value is None or check is None:
            continue
        if (check == "positive" and value <= 0) or (check == "non-negative" and value < 0):
            wanted = "positive" if check == "positive" else "0 or more"
            raise InputError(f"{f.name} must be {wanted}, got {value}")


def bounds() -> tuple[str, ...]:
    """The settings that bound what one question may use (those with a check, but for those
    a session keeps for all its questions): a caller may lower them, never raise them past
    what the owner of the `RLM` set (see `deeprlm.serve`)."""
    return tuple(
        row.name
        for row in table()
        if row.metadata["check"] is not None and row.metadata["per_question"]
    )


def table() -> tuple[Field[Any], ...]:
    """The rows of the settings table, in order."""
    return fields(Settings)


def resolve_read_paths(paths: str | os.PathLike[str] | Iterable[Any]) -> tuple[str, ...]:
    """Absolute, symlink-free paths, each checked to exist: a typo must not silently allow
    nothing (or, worse, something else)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = (paths,)
    resolved = []
    for path in paths:
        real = os.path.realpath(os.path.expanduser(os.fspath(path)))
        if not os.path.exists(real):
            raise InputError(f"allow_read: no such file or folder: {path}")
        resolved.append(real)
    return tuple(resolved)
