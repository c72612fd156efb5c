"""The `REPL` protocol and the `Cell` record it returns.

A REPL keeps Python state across cells. The code it runs may ask the host (the engine) for
sub-calls through `Host` (declared with the table of REPL functions, `deeprlm.repl.functions`);
how a request travels (a direct call in process, a pipe from a sandboxed worker) is the
REPL's business. The engine only sees `start`, `run`, `close`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from deeprlm.repl.functions import Host

# What a context may be once loaded: one text, many texts, or named texts.
ContextValue = str | list[str] | dict[str, str]


@dataclass(frozen=True)
class Cell:
    """The outcome of running one block of code."""

    code: str
    output: str  # stdout and stderr as the model will read them (already truncated)
    error: str | None = None  # the last lines of the traceback, if the cell raised
    final: str | None = None  # set when the cell ended the run (FINAL, FINAL_VAR, answer)
    duration_s: float = 0.0
    output_chars: int = 0  # size of the output before truncation
    # The REPL's progress on `answer["content"]`, even when `ready` is still false.
    answer_content: str = ""


@dataclass(frozen=True)
class REPLSettings:
    """What every REPL kind needs to know to start."""

    max_output_chars: int = 8_000
    # User functions callable from the code (`tools=`); they always run in the host process.
    tools: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # Files and folders the code may read besides Python's own, as absolute, resolved paths
    # (`deeprlm.settings.resolve_read_paths`). Enforced by the sandbox; code in process can
    # read whatever the user can.
    allow_read: tuple[str, ...] = ()


class REPL(Protocol):
    """A persistent Python session holding `context` and the RLM functions."""

    kind: str  # "inprocess", "sandbox": what the trace records

    @property
    def notes(self) -> tuple[str, ...]:
        """What a user should know about how the code runs here (isolation the kernel
        refused, say); the engine writes each into the trace."""
        ...

    async def start(self, context: ContextValue, host: Host, settings: REPLSettings) -> None: ...

    async def run(self, code: str, timeout: float | None = None) -> Cell:
        """Runs one cell; past `timeout` seconds (None: no limit) it is stopped, and the
        returned cell says so."""
        ...

    async def close(self) -> None: ...


__all__ = ["REPL", "Cell", "ContextValue", "Host", "REPLSettings"]
