"""Every setting of a run, in one table, with its default and what it bounds."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from deeprlm.errors import InputError

# The model's code runs in a locked-down worker where the kernel allows one (Linux).
DEFAULT_REPL = "sandbox" if sys.platform.startswith("linux") else "inprocess"


@dataclass(frozen=True)
class Settings:
    # The loop
    max_iterations: int = 20  # root-model turns per run; then one forced final answer
    # Cell output the model reads per turn; None: its family's default (see prompts).
    max_output_chars: int | None = None
    cell_timeout_s: float | None = None  # wall clock per cell; None: only the run's timeout
    max_reply_tokens: int | None = None  # output tokens per model call; None: provider default
    # Recursion and sub-calls
    max_depth: int = 1  # deepest child run; at the limit rlm_query falls back to llm_query
    max_concurrency: int = 16  # model calls in flight at once, across the whole tree
    sub_calls: bool = True  # False removes llm_*/rlm_* from the REPL (the paper's ablation)
    sub_tool_turns: int = 4  # tool-calling turns a sub-call may take before it must answer
    max_batch: int = 1_000  # items in one llm_batch / rlm_batch; a larger one is refused
    # REPLs alive at once across the tree (a process each, in the sandbox); child runs wait
    # for a slot. At least max_depth + 1 are kept, so that the tree can always go on.
    max_repls: int = 16
    # Model calls: deadlines and retries (429s, 5xx, dropped connections, timeouts)
    # One request to a model (None: no limit of deeprlm's); a timed-out one is tried once more.
    call_timeout_s: float | None = 120.0
    # One sub-call (llm_query, an llm_batch item) with its retries, from when it is sent.
    # Whatever this says, sub-calls end before their cell would be stopped (see engine).
    sub_call_timeout_s: float | None = None
    max_retries: int = 5  # further attempts of a failed call; waits happen outside its slot
    # Budgets shared by the whole tree; reaching one ends the run with a LimitError
    max_sub_calls: int | None = None
    max_tokens: int | None = None
    max_usd: float | None = None
    timeout_s: float | None = None
    # Where the model's code runs
    repl: str = DEFAULT_REPL
    allow_read: tuple[str, ...] = ()  # files and folders the sandboxed code may read

    def __post_init__(self) -> None:
        positive = (
            "max_iterations",
            "max_output_chars",
            "max_concurrency",
            "sub_tool_turns",
            "max_batch",
            "max_repls",
            "cell_timeout_s",
            "call_timeout_s",
            "sub_call_timeout_s",
            "max_reply_tokens",
            "max_sub_calls",
            "max_tokens",
            "max_usd",
            "timeout_s",
        )
        for f in fields(self):
            value = getattr(self, f.name)
            # nan passes every comparison below, and inf means no limit (say None for that).
            if isinstance(value, float) and not math.isfinite(value):
                raise InputError(f"{f.name} must be a finite number, got {value}")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"{name} must be positive, got {value}")
        for name in ("max_depth", "max_retries"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be 0 or more, got {getattr(self, name)}")
        paths = self.allow_read
        if isinstance(paths, (str, os.PathLike)):
            paths = (paths,)
        for path in paths:
            if not os.path.exists(path):
                raise InputError(f"allow_read: no such file or folder: {path}")
        object.__setattr__(self, "allow_read", tuple(os.path.abspath(p) for p in paths))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Settings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InputError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**kwargs)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
