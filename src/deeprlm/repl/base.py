"""The `REPL` protocol, the `Cell` record it returns, and the `Host` it calls back.

A REPL keeps Python state across cells. The code it runs may ask the host (the engine) for
sub-calls through `Host`; how a request travels (a direct call in process, a pipe from a
sandboxed worker) is the REPL's business. The engine only sees `start`, `run`, `close`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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


class Host(Protocol):
    """What code in a REPL may ask of the engine. All calls are made on the engine's loop."""

    async def llm_query(self, prompt: str, model: str | None = None) -> str: ...

    async def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]: ...

    async def llm_map(
        self, instruction: str, items: Any, model: str | None = None
    ) -> list[str] | dict[str, str]: ...

    async def llm_classify(
        self, items: Any, labels: Sequence[str], instruction: str = "", model: str | None = None
    ) -> list[str] | dict[str, str]: ...

    async def rlm_query(self, query: str, context: Any = None) -> str: ...

    async def rlm_batch(self, pairs: Sequence[Any]) -> list[str]: ...


@dataclass(frozen=True)
class REPLSettings:
    """What every REPL kind needs to know to start."""

    max_output_chars: int = 8_000
    # User functions callable from the code (`tools=`); they always run in the host process.
    tools: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # Files and folders the code may read besides Python's own. Enforced by the sandbox;
    # code in process can read whatever the user can.
    allow_read: tuple[str, ...] = ()


class REPL(Protocol):
    """A persistent Python session holding `context` and the RLM functions."""

    kind: str

    async def start(self, context: ContextValue, host: Host, settings: REPLSettings) -> None: ...

    async def run(self, code: str, timeout: float | None = None) -> Cell: ...

    async def close(self) -> None: ...
