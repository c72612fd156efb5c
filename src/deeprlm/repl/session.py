"""One persistent Python namespace and how a cell runs in it. Shared by every REPL kind.

`Session` owns the globals the model's code sees (`context`, the functions of
`deeprlm.repl.functions`, user tools, `FINAL`, `FINAL_VAR`, `SHOW_VARS`, the `answer` dict)
and `execute(code)`, which runs a cell with its output captured, shows the value of a
trailing expression as a notebook does, turns exceptions into the last lines of a
traceback, and notices a final answer. It has no idea where sub-calls go: the REPL that
owns it hands in the transport that carries them to the host.
"""

from __future__ import annotations

import ast
import builtins
import linecache
import os
import time
import traceback
import types
from collections.abc import Callable, Mapping
from typing import Any

from deeprlm.repl.base import Cell
from deeprlm.repl.capture import OutputCapture, capturing
from deeprlm.repl.functions import Transport, repl_functions
from deeprlm.textutil import clip

TRACEBACK_LINES = 12
TRACEBACK_CHARS = 3_000
# Frames from these places are plumbing (deeprlm itself, the bridges between a cell's thread
# and the event loop), not the model's code: tracebacks leave them out.
_STDLIB = os.path.dirname(os.__file__)
_HIDDEN_PREFIXES = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.join(_STDLIB, "concurrent") + os.sep,
    os.path.join(_STDLIB, "asyncio") + os.sep,
    os.path.join(_STDLIB, "threading.py"),
)


class FinalAnswer(BaseException):
    """Raised by FINAL / FINAL_VAR to stop the cell. A BaseException so that the model's own
    `except Exception:` cannot swallow it."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


class CellInterrupted(BaseException):
    """Raised inside a running cell to stop it (a timeout, a cancelled run)."""


def answer_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class Session:
    def __init__(
        self,
        context: Any,
        transport: Transport,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        max_output_chars: int = 8_000,
    ) -> None:
        self.max_output_chars = max_output_chars
        self._cells = 0
        import json
        import math
        import re

        self.globals: dict[str, Any] = {
            "__name__": "__repl__",
            "__builtins__": builtins,
            "re": re,
            "json": json,
            "math": math,
        }
        self.globals.update(tools or {})
        self.globals.update(context=context)
        functions = repl_functions(transport, self.globals)
        self.globals.update(functions)
        # The REPL's own functions: a cell that defines one of them again (small models
        # write `def search(...)` after reading that it exists) keeps the real one.
        self._provided = frozenset(functions) | {"FINAL", "FINAL_VAR", "SHOW_VARS"}
        self._answer: dict[str, Any] = {"content": "", "ready": False}
        self.globals.update(
            FINAL=self._final,
            FINAL_VAR=self._final_var,
            SHOW_VARS=self.show_vars,
            answer=self._answer,
        )
        self._builtin_names = set(self.globals)

    # --- functions the model calls -------------------------------------------------------

    def _final(self, value: Any = "") -> None:
        raise FinalAnswer(answer_text(self._own_answer(value)))

    def _final_var(self, name: Any) -> None:
        if not isinstance(name, str):
            # Small models pass the variable itself; its value is what they meant.
            raise FinalAnswer(answer_text(self._own_answer(name)))
        key = name.strip().strip("\"'")
        if key not in self.globals:
            known = ", ".join(sorted(self.show_vars())) or "none"
            raise NameError(f"FINAL_VAR: no variable named {key!r} (variables: {known})")
        raise FinalAnswer(answer_text(self._own_answer(self.globals[key])))

    def _own_answer(self, value: Any) -> Any:
        """`value`, or the content of the REPL's `answer` dict when that is what was passed:
        the dict is the REPL's, not an answer (a run once answered with its text), and an
        empty one is an error the model can act on."""
        if value is not self._answer:
            return value
        content = value.get("content")
        if content is None or not str(content).strip():
            raise NameError(
                "'answer' holds no answer yet (answer['content'] is empty): put your answer "
                "in a variable of your own and pass that"
            )
        return content

    def show_vars(self) -> dict[str, str]:
        """The names and types of the variables the model created."""
        # A list first: a thread the code started may be assigning meanwhile.
        return {
            name: type(value).__name__
            for name, value in list(self.globals.items())
            if not name.startswith("_")
            and (name not in self._builtin_names or name == "answer")
            and not isinstance(value, types.ModuleType)
        }

    def reset_answer(self) -> None:
        """A fresh `answer` dict, for a new question."""
        self._answer = {"content": "", "ready": False}
        self.globals["answer"] = self._answer

    def user_variables(self) -> list[str]:
        return sorted(
            name
            for name in list(self.globals)
            if not name.startswith("_") and name not in self._builtin_names
        )

    def answer_state(self) -> tuple[str, bool]:
        """(content, ready) of the `answer` dict, tolerating a model that rebinds it."""
        value = self.globals.get("answer")
        if not isinstance(value, dict):
            return "", False
        content = value.get("content", "")
        return ("" if content is None else answer_text(content)), bool(value.get("ready"))

    # --- running a cell ------------------------------------------------------------------

    def execute(self, code: str) -> Cell:
        self._cells += 1
        filename = f"<cell {self._cells}>"
        capture = OutputCapture(self.max_output_chars)
        started = time.perf_counter()
        error: str | None = None
        final: str | None = None
        with capturing(capture):
            try:
                body, last, dropped = self._compile(code, filename, self._provided)
                for name in dropped:
                    if name == "context":
                        print(
                            "(Note: `context` holds the data you are asked about; this "
                            "cell's assignment to it was left out.)"
                        )
                    else:
                        print(
                            f"(Note: {name}() is already defined in the REPL; this cell's own "
                            f"definition of it was left out and the REPL's is used.)"
                        )
                exec(body, self.globals)
                if last is not None:
                    value = eval(last, self.globals)
                    if value is not None:
                        print(repr(value))
            except FinalAnswer as done:
                final = done.value
            except CellInterrupted as stop:
                error = str(stop) or "the cell was interrupted"
            except (Exception, SystemExit) as exc:
                error = format_error(exc)
        content, ready = self.answer_state()
        if final is None and ready and error is None:
            final = content
        return Cell(
            code=code,
            output=capture.text(),
            error=error,
            final=final,
            duration_s=time.perf_counter() - started,
            output_chars=capture.total,
            answer_content=content,
        )

    @staticmethod
    def _compile(
        code: str, filename: str, provided: frozenset[str] = frozenset()
    ) -> tuple[types.CodeType, types.CodeType | None, list[str]]:
        """The cell's body and its trailing expression, compiled, and the names of the
        REPL's own functions whose definitions the cell repeated (left out of it)."""
        # Registered so tracebacks can quote the model's own lines.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        tree = ast.parse(code, filename=filename, mode="exec")
        kept: list[ast.stmt] = []
        dropped: list[str] = []
        for node in tree.body:
            name = _redefined(node, provided)
            if name is None:
                kept.append(node)
            elif name not in dropped:
                dropped.append(name)
        if dropped:
            tree.body = kept or [ast.Pass()]
            ast.fix_missing_locations(tree)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body[-1].value)
            tree.body.pop()
        body = compile(tree, filename, "exec")
        return body, (compile(last, filename, "eval") if last is not None else None), dropped


def _redefined(node: ast.stmt, provided: frozenset[str]) -> str | None:
    """What a top-level statement would clobber: one of the REPL's functions (by `def`), or
    `context` replaced by made-up data (a literal: small models write an "example" context
    over the real one); None for anything else, `context = context.lower()` included."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in provided:
        return node.name
    if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(
        node.value, ast.List | ast.Tuple | ast.Dict | ast.Constant
    ):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Name) and t.id == "context" for t in targets):
            return "context"
    return None


def format_error(exc: BaseException) -> str:
    """The last lines of the traceback, without the frames of deeprlm itself."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(_HIDDEN_PREFIXES)
    ]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).rstrip("\n").splitlines()
    return clip("\n".join(text[-TRACEBACK_LINES:]), TRACEBACK_CHARS)
