"""Persistent Python REPLs for the model's code: the protocol and its kinds."""

from __future__ import annotations

from collections.abc import Callable

from deeprlm.errors import InputError
from deeprlm.repl.base import REPL, Cell, ContextValue, Host, REPLSettings
from deeprlm.repl.inprocess import InProcessREPL
from deeprlm.repl.sandbox import SandboxREPL, SandboxSettings

# Each kind is made from the sandbox's settings (which the in-process kind has no use for).
REPL_KINDS: dict[str, Callable[[SandboxSettings], REPL]] = {
    "inprocess": lambda sandbox: InProcessREPL(),
    "sandbox": SandboxREPL,
}


def make_repl(kind: str, sandbox: SandboxSettings | None = None) -> REPL:
    try:
        factory = REPL_KINDS[kind]
    except KeyError:
        raise InputError(
            f"unknown REPL kind {kind!r}; choose one of: {', '.join(REPL_KINDS)}"
        ) from None
    return factory(sandbox or SandboxSettings())


__all__ = ["REPL", "REPL_KINDS", "Cell", "ContextValue", "Host", "REPLSettings", "make_repl"]
